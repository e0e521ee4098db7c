import { clip, finishNotice, NOTICE_MAX, statusBarText } from '../notices';
import { IRunStatus } from '../state';

const run = (overrides: Partial<IRunStatus> = {}): IRunStatus => ({
  run_id: 'r17',
  path: 'nb.ipynb',
  backend: 'local',
  state: 'running',
  started_at: 1000,
  steps: [
    { name: 'load', state: 'succeeded' },
    { name: 'train', state: 'running' },
    { name: 'report', state: 'pending' }
  ],
  ...overrides
});

describe('status bar', () => {
  it('counts finished steps and shows the clock while a run goes on', () => {
    expect(statusBarText(run(), 0, true, 1072)).toEqual({
      text: '⟳ Pipeline 1/3 · 01:12',
      state: 'running',
      title: 'Show the Pipeline sidebar'
    });
  });

  it('says how long a run that succeeded took', () => {
    const done = run({ state: 'succeeded', duration_s: 42 });
    expect(statusBarText(done, 0, true, 2000)?.text).toBe('✓ Pipeline 42 s');
  });

  it('names the step that failed', () => {
    const failed = run({
      state: 'failed',
      steps: [
        { name: 'load', state: 'succeeded' },
        { name: 'train', state: 'failed' },
        { name: 'report', state: 'skipped' }
      ]
    });
    expect(statusBarText(failed, 0, true, 2000)).toMatchObject({
      text: '✗ Pipeline failed: train',
      state: 'failed'
    });
  });

  it('puts compile problems first once no run goes on', () => {
    expect(statusBarText(null, 2, true, 0)).toMatchObject({ text: '2 problems', state: 'problems' });
    expect(statusBarText(null, 1, true, 0)?.text).toBe('1 problem');
    expect(statusBarText(run({ state: 'succeeded' }), 1, true, 0)?.text).toBe('1 problem');
    expect(statusBarText(run(), 1, true, 1010)?.text).toBe('⟳ Pipeline 1/3 · 00:10');
  });

  it('shows nothing for a notebook with no steps and no run', () => {
    expect(statusBarText(null, 0, false, 0)).toBeNull();
    expect(statusBarText(null, 0, true, 0)).toMatchObject({ text: 'Pipeline', state: 'pending' });
  });

  it('says a cancelled run was cancelled', () => {
    expect(statusBarText(run({ state: 'cancelled' }), 0, true, 0)?.text).toBe('Pipeline cancelled');
  });
});

describe('end-of-run toasts', () => {
  it('tells a success with its duration and size', () => {
    expect(finishNotice(run({ state: 'succeeded', duration_s: 2.2 }))).toEqual({
      type: 'success',
      message: 'Pipeline run r17 succeeded in 2.2 s (3 steps).'
    });
  });

  it('names the failed step and its error', () => {
    const failed = run({
      state: 'failed',
      steps: [
        { name: 'load', state: 'succeeded' },
        { name: 'train', state: 'failed', message: 'ValueError: total 55 is over the limit 50' },
        { name: 'report', state: 'skipped' }
      ]
    });
    expect(finishNotice(failed)).toEqual({
      type: 'error',
      message: 'Step train failed: ValueError: total 55 is over the limit 50',
      step: 'train'
    });
  });

  it('keeps messages under the length JupyterLab shows', () => {
    const long = 'x'.repeat(500);
    const failed = run({ state: 'failed', steps: [{ name: 'a', state: 'failed', message: long }] });
    const message = finishNotice(failed)!.message;
    expect(message.length).toBeLessThanOrEqual(NOTICE_MAX);
    expect(message.endsWith('…')).toBe(true);
  });

  it('is informative for a cancel and silent for a run still going', () => {
    expect(finishNotice(run({ state: 'cancelled' }))).toMatchObject({ type: 'info' });
    expect(finishNotice(run())).toBeNull();
  });

  it('folds whitespace when it clips', () => {
    expect(clip('a\n  b', 10)).toBe('a b');
  });
});
