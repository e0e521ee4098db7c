import {
  compareRuns,
  flatMetrics,
  metricSeries,
  numericMetrics,
  pythonLiteral,
  stepText
} from '../compare';
import { IRunStatus } from '../state';

const run = (id: string, started: number, extra: Partial<IRunStatus> = {}): IRunStatus => ({
  run_id: id,
  path: 'nb.ipynb',
  backend: 'local',
  state: 'succeeded',
  started_at: started,
  duration_s: 4.2,
  steps: [
    { name: 'load', state: 'succeeded', duration_s: 1.5 },
    { name: 'train', state: 'succeeded', duration_s: 2.5 }
  ],
  ...extra
});

describe('compareRuns', () => {
  const a = run('r1', 100, { parameters: {}, metrics: { train: { accuracy: 0.91234 } } });
  const b = run('r2', 200, {
    parameters: { n: 10 },
    metrics: { train: { accuracy: 0.95 } },
    steps: [
      { name: 'load', state: 'cached', cached: true, duration_s: 0 },
      { name: 'train', state: 'succeeded', duration_s: 3.1 }
    ]
  });
  const table = compareRuns([a, b], { n: '50', seed: '0' });
  const column = (key: string) => table.columns.find(c => c.key === key)!;

  it('shows a parameter a run did not set as the notebook default', () => {
    expect(column('param:n').values).toEqual(['50', '10']);
    expect(column('param:n').differs).toBe(true);
    expect(column('param:seed').values).toEqual(['0', '0']);
    expect(column('param:seed').differs).toBe(false);
  });

  it('marks a metric whose value changed', () => {
    expect(column('metric:accuracy').values).toEqual(['0.9123', '0.95']);
    expect(column('metric:accuracy').differs).toBe(true);
  });

  it('says whether each step ran or was reused, and marks a changed state', () => {
    expect(column('step:load').values).toEqual(['succeeded · 1.5 s · ran', 'cached · reused']);
    expect(column('step:load').differs).toBe(true);
    // Same state, another duration: not a difference worth marking.
    expect(column('step:train').differs).toBe(false);
  });

  it('lists columns as parameters, metrics, steps, then the duration, never marked', () => {
    expect(table.columns.map(c => c.group)).toEqual([
      'parameter',
      'parameter',
      'metric',
      'step',
      'step',
      'duration'
    ]);
    expect(column('duration').differs).toBe(false);
  });
});

describe('metrics', () => {
  it('qualifies a name two steps record', () => {
    const r = run('r', 1, { metrics: { a: { loss: 1 }, b: { loss: 2, acc: 0.5 } } });
    expect([...flatMetrics(r).keys()].sort()).toEqual(['a.loss', 'acc', 'b.loss']);
  });

  it('charts one point per run that recorded the metric, oldest first', () => {
    const runs = [
      run('new', 300, { metrics: { m: { acc: 0.9 } } }),
      run('none', 250, { metrics: {} }),
      run('old', 100, { metrics: { m: { acc: 0.8, label: 'x' } } })
    ];
    expect(metricSeries(runs, 'acc')).toEqual({ runIds: ['old', 'new'], values: [0.8, 0.9] });
    expect(numericMetrics(runs)).toEqual(['acc']);
  });
});

describe('text', () => {
  it('writes values as Python literals', () => {
    expect(pythonLiteral('a')).toBe("'a'");
    expect(pythonLiteral(true)).toBe('True');
    expect(pythonLiteral(null)).toBe('None');
    expect(pythonLiteral([1, 'b'])).toBe("[1, 'b']");
    expect(pythonLiteral({ k: 2 })).toBe("{'k': 2}");
  });

  it('words a step missing from a run', () => {
    expect(stepText(undefined)).toBe('not in this run');
    expect(stepText({ name: 'x', state: 'failed' })).toBe('failed');
  });
});
