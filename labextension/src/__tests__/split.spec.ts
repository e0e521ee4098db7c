import {
  cellRanges,
  ISplitPlan,
  renameStepsInTags,
  splitNameProblems,
  splitTags,
  stepNameFromPath,
  wholeNotebookTags
} from '../split';
import { assignSteps } from '../tags';

const plan: ISplitPlan = {
  level: 2,
  steps: [
    { name: 'setup', heading: null, cells: ['a'], numbers: [1] },
    { name: 'load_data', heading: 'Load data', cells: ['c', 'd'], numbers: [3, 4] },
    { name: 'train', heading: 'Train', cells: ['f'], numbers: [6] }
  ],
  imports: ['b'],
  tags: {
    a: ['step:setup'],
    b: ['imports'],
    c: ['step:load_data', 'hide-input'],
    d: [],
    f: ['step:train']
  }
};

describe('splitNameProblems', () => {
  it('accepts valid, distinct names', () => {
    expect(splitNameProblems(['setup', 'load_data', 'train'])).toEqual([]);
  });

  it('names an invalid name at its index', () => {
    const problems = splitNameProblems(['setup', '2nd', 'train']);
    expect(problems[0]).toBeNull();
    expect(problems[1]).toContain('not a valid step name');
    expect(problems[2]).toBeNull();
  });

  it('rejects names that clash, also where only Kubernetes would see it', () => {
    expect(splitNameProblems(['train', 'train'])[1]).toContain('step 1');
    expect(splitNameProblems(['load_data', 'load-data'])[1]).toContain('step 1');
    expect(splitNameProblems(['Train', 'train'])[1]).toContain('step 1');
  });

  it('asks for a name when one is blank', () => {
    expect(splitNameProblems(['setup', ' '])[1]).toBe('Enter a step name.');
  });
});

describe('splitTags', () => {
  it('writes the plan as proposed when no name was edited', () => {
    const tags = splitTags(plan, plan.steps.map(s => s.name));
    expect(Object.fromEntries(tags)).toEqual(plan.tags);
  });

  it('uses the edited names and keeps foreign tags', () => {
    const tags = splitTags(plan, ['setup', 'load', 'fit']);
    expect(tags.get('c')).toEqual(['step:load', 'hide-input']);
    expect(tags.get('f')).toEqual(['step:fit']);
    expect(tags.get('d')).toEqual([]);
    expect(tags.get('b')).toEqual(['imports']);
  });

  it('swaps two names in one pass', () => {
    const tags = splitTags(plan, ['setup', 'train', 'load_data']);
    expect(tags.get('c')).toEqual(['step:train', 'hide-input']);
    expect(tags.get('f')).toEqual(['step:load_data']);
  });
});

describe('renameStepsInTags', () => {
  it('renames step and prev tags of either prefix, nothing else', () => {
    const renames = new Map([['load', 'ingest']]);
    expect(
      renameStepsInTags(['block:load', 'prev:load', 'after:load', 'load', 'prev:loader'], renames)
    ).toEqual(['block:ingest', 'prev:ingest', 'after:ingest', 'load', 'prev:loader']);
  });
});

describe('cellRanges', () => {
  it('joins consecutive numbers', () => {
    expect(cellRanges([3, 4, 5])).toBe('cells 3–5');
    expect(cellRanges([7])).toBe('cell 7');
    expect(cellRanges([2, 4, 5, 6])).toBe('cells 2, 4–6');
    expect(cellRanges([])).toBe('no cells');
  });
});

describe('Make the whole notebook one step', () => {
  it('names the step after the notebook, made valid', () => {
    expect(stepNameFromPath('work/wine.ipynb')).toBe('wine');
    expect(stepNameFromPath('My analysis (v2).ipynb')).toBe('My_analysis_v2');
    expect(stepNameFromPath('2024 report.ipynb')).toBe('report');
    expect(stepNameFromPath('2024.ipynb')).toBe('main');
  });

  it('tags the first code cell that runs; later cells continue it; roles stay', () => {
    const cells = [
      { id: 'md', type: 'markdown', source: '# Title', tags: [] },
      { id: 'imp', type: 'code', source: 'import os', tags: ['imports'] },
      { id: 'empty', type: 'code', source: '  ', tags: [] },
      { id: 'a', type: 'code', source: 'x = 1', tags: ['hide-input'] },
      { id: 'b', type: 'code', source: 'print(x)', tags: [] },
      { id: 'm', type: 'code', source: 'print(x)', tags: ['pipeline-metrics'] }
    ];
    const tags = wholeNotebookTags(cells, 'wine');
    expect(Object.fromEntries(tags)).toEqual({
      a: ['hide-input', 'step:wine'],
      m: ['pipeline-metrics', 'step:wine']
    });
    const after = assignSteps(cells.map(c => ({ ...c, tags: tags.get(c.id) ?? c.tags })));
    expect(after.steps.map(s => [s.name, s.cells])).toEqual([['wine', ['a', 'b', 'm']]]);
  });

  it('uses the prefix asked for (Kale’s block:)', () => {
    const tags = wholeNotebookTags([{ id: 'a', type: 'code', source: 'x = 1', tags: [] }], 'nb', 'block:');
    expect(tags.get('a')).toEqual(['block:nb']);
  });

  it('changes nothing in a notebook without code to run', () => {
    expect(wholeNotebookTags([{ id: 'm', type: 'markdown', source: '# x', tags: [] }], 'nb').size).toBe(0);
  });
});
