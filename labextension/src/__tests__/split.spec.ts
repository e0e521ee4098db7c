import { cellRanges, ISplitPlan, renameStepsInTags, splitNameProblems, splitTags } from '../split';

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
