import {
  assignSteps,
  clearStep,
  dropDanglingPrev,
  ICellInfo,
  notebookStepPrefix,
  parseTags,
  renameInTags,
  setResources,
  setRole,
  setStep,
  stepNameProblem,
  toggleSkip
} from '../tags';

const code = (id: string, tags: string[] = [], source = 'x = 1'): ICellInfo => ({
  id,
  type: 'code',
  source,
  tags
});
const markdown = (id: string): ICellInfo => ({ id, type: 'markdown', source: '# t', tags: [] });

describe('parseTags', () => {
  it('reads step, dependencies, role, metrics and resources', () => {
    const parsed = parseTags([
      'step:train',
      'prev:load',
      'after:clean',
      'metrics',
      'limit:cpu:2',
      'limit:memory:4Gi',
      'gpu:1',
      'image:python:3.11',
      'packages:numpy,pandas==2.2',
      'retry:3',
      'timeout:600',
      'hide-input'
    ]);
    expect(parsed.step).toBe('train');
    expect(parsed.after).toEqual(['load', 'clean']);
    expect(parsed.metrics).toBe(true);
    expect(parsed.role).toBeNull();
    expect(parsed.resources).toEqual({
      cpu: '2',
      memory: '4Gi',
      gpu: '1',
      image: 'python:3.11',
      packages: 'numpy,pandas==2.2',
      retry: '3',
      timeout: '600'
    });
  });

  it("accepts Kale's spellings", () => {
    expect(parseTags(['block:load']).step).toBe('load');
    expect(parseTags(['pipeline-parameters']).role).toBe('parameters');
    expect(parseTags(['pipeline-metrics']).metrics).toBe(true);
  });
});

describe('setStep', () => {
  it('writes step: and prev: and keeps foreign tags where they were', () => {
    expect(setStep(['hide-input', 'step:old', 'prev:x', 'remove-output'], 'train', ['load'])).toEqual(
      ['hide-input', 'step:train', 'prev:load', 'remove-output']
    );
  });

  it("keeps the cell's own block: prefix", () => {
    expect(setStep(['block:old'], 'train', [])).toEqual(['block:train']);
  });

  it("uses the notebook's prefix for a new step tag", () => {
    expect(setStep(['hide-input'], 'train', ['load'], 'block:')).toEqual([
      'hide-input',
      'block:train',
      'prev:load'
    ]);
  });

  it('drops role tags: a step cell is not imports or skip', () => {
    expect(setStep(['skip', 'imports', 'metrics'], 'train', [])).toEqual(['metrics', 'step:train']);
  });

  it('never makes a step depend on itself', () => {
    expect(setStep([], 'train', ['train', 'load'])).toEqual(['step:train', 'prev:load']);
  });
});

describe('other edits', () => {
  it('clearStep makes the cell continue the step above', () => {
    expect(clearStep(['step:a', 'prev:b', 'skip', 'hide-input', 'limit:cpu:1'])).toEqual([
      'hide-input',
      'limit:cpu:1'
    ]);
  });

  it('setRole replaces the step by the role, keeping Kale spelling', () => {
    expect(setRole(['step:a', 'prev:b'], 'imports')).toEqual(['imports']);
    expect(setRole(['pipeline-parameters'], 'parameters')).toEqual(['pipeline-parameters']);
  });

  it('skip keeps the step tag so un-skipping restores the cell', () => {
    expect(setRole(['step:a'], 'skip')).toEqual(['step:a', 'skip']);
    expect(toggleSkip(toggleSkip(['step:a']))).toEqual(['step:a']);
  });

  it('setResources writes and removes only the given keys', () => {
    expect(setResources(['limit:cpu:1', 'gpu:1', 'x'], { cpu: '2', gpu: '' })).toEqual([
      'limit:cpu:2',
      'x'
    ]);
    expect(setResources([], { memory: '2Gi', retry: '3' })).toEqual(['limit:memory:2Gi', 'retry:3']);
  });

  it('renameInTags follows the step in step: and prev: tags only', () => {
    expect(renameInTags(['prev:load', 'block:load', 'load', 'prev:loader'], 'load', 'read')).toEqual(
      ['prev:read', 'block:read', 'load', 'prev:loader']
    );
  });

  it('dropDanglingPrev counts what it removed', () => {
    expect(dropDanglingPrev(['prev:a', 'prev:gone', 'x'], new Set(['a']))).toEqual({
      tags: ['prev:a', 'x'],
      dropped: 1
    });
  });
});

describe('step names and prefixes', () => {
  it.each(['train', 'Load_2', 'a-b'])('accepts %s', name => {
    expect(stepNameProblem(name)).toBeNull();
  });

  it.each(['2fast', 'has space', 'dot.name', ''])('rejects %j with a message', name => {
    expect(stepNameProblem(name)).toMatch(name ? /not a valid step name/ : /Enter a step name/);
  });

  it('uses block: only where the notebook already does', () => {
    expect(notebookStepPrefix([['block:a'], []])).toBe('block:');
    expect(notebookStepPrefix([['block:a'], ['step:b']])).toBe('step:');
    expect(notebookStepPrefix([[]])).toBe('step:');
  });
});

describe('assignSteps (mirrors the engine)', () => {
  it('untagged code cells continue the step above; cells before any tag form main', () => {
    const { cells, steps } = assignSteps([
      code('c0'),
      markdown('m1'),
      code('c2', ['step:load']),
      code('c3'),
      code('c4', ['step:train', 'prev:load'])
    ]);
    expect(cells.map(c => c.step)).toEqual(['main', null, 'load', 'load', 'train']);
    expect(cells.filter(c => c.first).map(c => c.id)).toEqual(['c0', 'c2', 'c4']);
    expect(steps.map(s => [s.name, s.cells, s.after])).toEqual([
      ['main', ['c0'], []],
      ['load', ['c2', 'c3'], []],
      ['train', ['c4'], ['load']]
    ]);
  });

  it('role, skipped and empty cells belong to no step and do not end one', () => {
    const { cells } = assignSteps([
      code('i', ['imports']),
      code('a', ['step:a']),
      code('s', ['skip']),
      code('e', [], '  \n'),
      code('b')
    ]);
    expect(cells.map(c => [c.step, c.role])).toEqual([
      [null, 'imports'],
      ['a', 'step'],
      [null, 'skip'],
      [null, 'empty'],
      ['a', 'step']
    ]);
  });

  it('a metrics cell without a step tag starts the metrics step', () => {
    const { cells } = assignSteps([code('a', ['step:a']), code('m', ['metrics'])]);
    expect(cells[1].step).toBe('metrics');
  });

  it('collects resources per step', () => {
    const { steps } = assignSteps([code('a', ['step:a', 'gpu:1']), code('b', ['retry:2'])]);
    expect(steps[0].resources.gpu).toBe('1');
    expect(steps[0].resources.retry).toBe('2');
  });
});
