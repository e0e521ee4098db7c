import {
  applyEvent,
  countSteps,
  countsText,
  formatDuration,
  hookState,
  IRunStatus,
  isTerminal,
  keepEarliestStart,
  newlyFinished,
  runSummary,
  stepLabel,
  toState,
  upsertRun
} from '../state';

const run = (overrides: Partial<IRunStatus> = {}): IRunStatus => ({
  run_id: 'r1',
  path: 'nb.ipynb',
  backend: 'local',
  state: 'running',
  started_at: 1000,
  steps: [
    { name: 'load', state: 'pending' },
    { name: 'train', state: 'pending' }
  ],
  ...overrides
});

describe('states', () => {
  it('keeps the engine states and maps unknown words to pending', () => {
    expect(toState('cached')).toBe('cached');
    expect(toState('completed')).toBe('pending');
    expect(toState(undefined)).toBe('pending');
  });

  it('knows which states end a step', () => {
    expect(['succeeded', 'failed', 'cached', 'skipped', 'cancelled'].every(isTerminal)).toBe(true);
    expect(isTerminal('running') || isTerminal('pending')).toBe(false);
  });

  it('words each state as the sidebar shows it', () => {
    expect(stepLabel(undefined, 0)).toBe('not run');
    expect(stepLabel({ name: 'a', state: 'pending' }, 0)).toBe('waiting');
    expect(stepLabel({ name: 'a', state: 'running', started_at: 100 }, 114)).toBe('running 00:14');
    expect(stepLabel({ name: 'a', state: 'succeeded', duration_s: 2.14 }, 0)).toBe('2.1 s');
    expect(stepLabel({ name: 'a', state: 'skipped' }, 0)).toBe('skipped: upstream failed');
    expect(stepLabel({ name: 'a', state: 'failed' }, 0)).toBe('failed');
  });

  it('formats durations for people', () => {
    expect(formatDuration(0.42)).toBe('0.4 s');
    expect(formatDuration(42.4)).toBe('42 s');
    expect(formatDuration(72)).toBe('01:12');
    expect(formatDuration(3723)).toBe('1:02:03');
    expect(formatDuration(null)).toBe('');
  });
});

describe('live events', () => {
  it('a step event updates that step only', () => {
    const next = applyEvent(run(), { run_id: 'r1', step: 'load', state: 'running', attempt: 1, ts: 1001 });
    expect(next.steps.map(s => s.state)).toEqual(['running', 'pending']);
    expect(next.steps[0].started_at).toBe(1001);
    const done = applyEvent(next, { run_id: 'r1', step: 'load', state: 'succeeded', ts: 1003.5 });
    expect(done.steps[0].duration_s).toBeCloseTo(2.5);
  });

  it('a run event updates the run state; other runs are ignored', () => {
    expect(applyEvent(run(), { run_id: 'r1', state: 'failed', ts: 1010 }).state).toBe('failed');
    expect(applyEvent(run(), { run_id: 'r2', state: 'failed', ts: 1010 }).state).toBe('running');
  });

  it('reports the steps that just finished, once', () => {
    const a = run();
    const b = applyEvent(a, { run_id: 'r1', step: 'load', state: 'succeeded', ts: 1002 });
    expect(newlyFinished(a, b).map(s => s.name)).toEqual(['load']);
    expect(newlyFinished(b, b)).toEqual([]);
  });

  it('summarises the run for the status line', () => {
    const r = run({ steps: [{ name: 'load', state: 'succeeded' }, { name: 'train', state: 'running' }] });
    expect(runSummary(r, 1014)).toBe('Running · 1/2 · 00:14');
    const failed = run({
      state: 'failed',
      duration_s: 3.2,
      steps: [{ name: 'load', state: 'failed' }, { name: 'train', state: 'skipped' }]
    });
    expect(runSummary(failed, 0)).toBe('Failed · 2/2 · 3.2 s · failed: load');
  });
});

describe('the status clock', () => {
  it('never goes back when the server replaces the creation time by the driver start', () => {
    // Created at 1000; the driver said "running" at 1001.4; the poll now reports that.
    const created = run({ started_at: 1000 });
    const polled = run({ started_at: 1001.4 });
    const shown = keepEarliestStart(created, polled);
    expect(shown.started_at).toBe(1000);
    expect(runSummary(created, 1001.5)).toBe('Running · 0/2 · 00:01');
    expect(runSummary(shown, 1001.9)).toBe('Running · 0/2 · 00:01');
  });

  it('takes the server time when it has none yet, or when it is earlier', () => {
    expect(keepEarliestStart(run({ started_at: null }), run({ started_at: 1001 })).started_at).toBe(1001);
    expect(keepEarliestStart(run({ started_at: 1001 }), run({ started_at: 999 })).started_at).toBe(999);
    expect(keepEarliestStart(null, run({ started_at: 1001 })).started_at).toBe(1001);
  });

  it('starts afresh for another run', () => {
    const other = run({ run_id: 'r2', started_at: 2000 });
    expect(keepEarliestStart(run({ started_at: 1000 }), other).started_at).toBe(2000);
  });
});

describe('history rows', () => {
  it('count the steps by state, succeeded as ✓', () => {
    const r = run({
      state: 'succeeded',
      steps: [
        { name: 'load', state: 'cached' },
        { name: 'check', state: 'succeeded' },
        { name: 'report', state: 'succeeded' }
      ]
    });
    expect(countsText(countSteps(r))).toBe('2 ✓ · 1 cached');
  });

  it('use the list endpoint summary when the row carries no steps', () => {
    const listed = run({ steps: [], step_counts: { succeeded: 1, failed: 1, skipped: 1 } });
    expect(countsText(countSteps(listed))).toBe('1 ✓ · 1 failed · 1 skipped');
  });

  it('say nothing rather than "0 ✓" when the counts are unknown', () => {
    expect(countSteps(run({ steps: [] }))).toBeNull();
    expect(countsText(countSteps(run({ steps: [], step_counts: {} })))).toBe('');
  });

  it('list a run that just started first, and replace a listed run in place', () => {
    const older = [run({ run_id: 'r2', state: 'succeeded' }), run({ run_id: 'r1', state: 'failed' })];
    const started = run({ run_id: 'r3' });
    expect(upsertRun(older, started).map(r => r.run_id)).toEqual(['r3', 'r2', 'r1']);
    const resumed = upsertRun(older, run({ run_id: 'r1', state: 'running' }));
    expect(resumed.map(r => [r.run_id, r.state])).toEqual([
      ['r2', 'succeeded'],
      ['r1', 'running']
    ]);
    expect(upsertRun(older, started, false).map(r => r.run_id)).toEqual(['r2', 'r1']);
  });
});

describe('hookState', () => {
  it('carries pending when no run is shown, so hooks only ever hold DESIGN states', () => {
    expect(hookState('idle')).toBe('pending');
  });

  it('carries every engine state as it is', () => {
    for (const state of ['pending', 'running', 'succeeded', 'failed', 'cached'] as const) {
      expect(hookState(state)).toBe(state);
    }
  });
});
