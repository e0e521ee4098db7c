/**
 * Run and step states as the engine reports them, and how the UI words them. States are
 * shown exactly as reported (never "completed" for a failed run); `idle` is the UI's own
 * word for "no run of this notebook is shown".
 */

export const STATES = [
  'pending',
  'running',
  'succeeded',
  'failed',
  'cached',
  'skipped',
  'cancelled'
] as const;
export type State = (typeof STATES)[number];
export type ShownState = State | 'idle';

const TERMINAL: ReadonlySet<string> = new Set([
  'succeeded',
  'failed',
  'cached',
  'skipped',
  'cancelled'
]);

/**
 * The state a UI hook (`data-cellpipe-state`) carries: only DESIGN's states, so with no run
 * shown it is `pending` (the row reads "not run"; the CSS keeps `idle` for that look).
 */
export function hookState(state: ShownState): State {
  return state === 'idle' ? 'pending' : state;
}

/** Map anything the server sends to a state we show; an unknown word is kept visible as pending. */
export function toState(value: string | null | undefined): State {
  return (STATES as readonly string[]).includes(value ?? '') ? (value as State) : 'pending';
}

export function isTerminal(state: string): boolean {
  return TERMINAL.has(state);
}

/** A step as `GET /runs/{id}` describes it (models.py DescribeStep). */
export interface IStepStatus {
  name: string;
  state: string;
  duration_s?: number | null;
  attempts?: number;
  cached?: boolean;
  message?: string;
  cell?: number | null;
  cell_id?: string | null;
  started_at?: number | null;
  ended_at?: number | null;
  /** The part of a composed notebook the step comes from (`notebook_a`); null: the main's. */
  group?: string | null;
  /** That part's notebook, relative to the main notebook. */
  notebook?: string | null;
  /** A foreach step's progress, `{done, total}`. */
  iterations?: Record<string, number> | null;
}

/** A run as `GET /runs/{id}` describes it (models.py DescribeRun). */
export interface IRunStatus {
  run_id: string;
  path: string | null;
  backend: string;
  state: string;
  message?: string;
  parameters?: Record<string, unknown>;
  started_at?: number | null;
  ended_at?: number | null;
  duration_s?: number | null;
  steps: IStepStatus[];
  /** Steps per state; the run list carries this summary instead of `steps`. */
  step_counts?: Record<string, number>;
  metrics?: Record<string, Record<string, unknown>>;
}

/** One event of the `https://events.cellpipe.dev/run-state` schema. */
export interface IRunStateEvent {
  run_id: string;
  step?: string | null;
  state: string;
  attempt?: number;
  message?: string;
  path?: string | null;
  ts: number;
}

/** "0.4 s", "2.1 s", "42 s", "01:12", "1:02:03". */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const mm = String(m).padStart(2, '0');
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

/** Elapsed clock for a running step or run: "00:14". */
export function formatClock(seconds: number): string {
  const total = Math.max(0, Math.floor(seconds));
  const m = Math.floor(total / 60);
  const s = total % 60;
  return `${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}

/** The words a step row shows for its state (UX §3). `now` is seconds since the epoch. */
export function stepLabel(step: IStepStatus | undefined, now: number): string {
  if (!step) {
    return 'not run';
  }
  const state = toState(step.state);
  switch (state) {
    case 'pending':
      return 'waiting';
    case 'running':
      return step.started_at ? `running ${formatClock(now - step.started_at)}` : 'running';
    case 'succeeded':
      return formatDuration(step.duration_s) || 'succeeded';
    case 'failed':
      return 'failed';
    case 'cached':
      return 'cached';
    case 'skipped':
      return 'skipped: upstream failed';
    case 'cancelled':
      return 'cancelled';
  }
}

/** "2/5": steps that ended, of all the run's steps. */
export function stepProgress(run: IRunStatus): string {
  return `${run.steps.filter(s => isTerminal(s.state)).length}/${run.steps.length}`;
}

/** The first step of the run that failed, the one a user fixes first. */
export function failedStep(run: IRunStatus): IStepStatus | undefined {
  return run.steps.find(s => s.state === 'failed');
}

/** The run's status line: "Running · 2/5 · 00:14", "Succeeded · 5/5 · 42 s", ... */
export function runSummary(run: IRunStatus, now: number): string {
  const state = toState(run.state);
  const word = state.charAt(0).toUpperCase() + state.slice(1);
  const parts = [word, stepProgress(run)];
  if (state === 'running' || state === 'pending') {
    if (run.started_at) {
      parts.push(formatClock(now - run.started_at));
    }
  } else {
    const d = formatDuration(run.duration_s);
    if (d) {
      parts.push(d);
    }
  }
  let line = parts.join(' · ');
  if (state === 'failed') {
    const failed = failedStep(run);
    if (failed) {
      line += ` · failed: ${failed.name}`;
    }
  }
  return line;
}

/**
 * Apply one live event to a run's status. Events are the same facts `GET /runs/{id}`
 * derives from events.jsonl, so applying them gives the same answer sooner; the poll
 * corrects anything missed.
 */
export function applyEvent(run: IRunStatus, ev: IRunStateEvent): IRunStatus {
  if (ev.run_id !== run.run_id) {
    return run;
  }
  if (!ev.step) {
    return {
      ...run,
      state: ev.state,
      message: ev.message ?? run.message,
      started_at: run.started_at ?? (ev.state === 'running' ? ev.ts : null),
      ended_at: isTerminal(ev.state) ? ev.ts : null,
      duration_s:
        isTerminal(ev.state) && run.started_at ? ev.ts - run.started_at : run.duration_s
    };
  }
  let found = false;
  const steps = run.steps.map(s => {
    if (s.name !== ev.step) {
      return s;
    }
    found = true;
    const startedAt = ev.state === 'running' ? ev.ts : s.started_at;
    return {
      ...s,
      state: ev.state,
      attempts: ev.attempt && ev.attempt > (s.attempts ?? 0) ? ev.attempt : s.attempts,
      message: ev.message ?? s.message,
      cached: ev.state === 'cached' || s.cached,
      started_at: startedAt,
      ended_at: isTerminal(ev.state) ? ev.ts : null,
      duration_s: isTerminal(ev.state) && startedAt ? ev.ts - startedAt : s.duration_s
    };
  });
  if (!found) {
    steps.push({
      name: ev.step,
      state: ev.state,
      attempts: ev.attempt ?? 0,
      message: ev.message ?? '',
      started_at: ev.state === 'running' ? ev.ts : null
    });
  }
  return { ...run, steps };
}

/** Steps that reached a terminal state in `next` but had not in `prev`. */
export function newlyFinished(prev: IRunStatus | null, next: IRunStatus): IStepStatus[] {
  const before = new Map((prev?.steps ?? []).map(s => [s.name, s.state]));
  return next.steps.filter(
    s => isTerminal(s.state) && !(before.has(s.name) && isTerminal(before.get(s.name)!))
  );
}

/**
 * `next` with the start time the clock already counts from. The server reports a run's
 * creation time until its driver says "running", then that later time; counting from the
 * earliest start seen for the run keeps the elapsed time from going backwards.
 */
export function keepEarliestStart(prev: IRunStatus | null, next: IRunStatus): IRunStatus {
  const earlier = prev?.run_id === next.run_id ? prev.started_at : null;
  if (!earlier || (next.started_at && next.started_at <= earlier)) {
    return next;
  }
  return { ...next, started_at: earlier };
}

/** Steps per state: counted from `steps` when known, else the list's `step_counts`. */
export function countSteps(run: IRunStatus): Record<string, number> | null {
  if (run.steps.length) {
    const counts: Record<string, number> = {};
    for (const s of run.steps) {
      counts[s.state] = (counts[s.state] ?? 0) + 1;
    }
    return counts;
  }
  return run.step_counts && Object.keys(run.step_counts).length ? run.step_counts : null;
}

const COUNT_WORDS: [string, string][] = [
  ['succeeded', '✓'],
  ['cached', 'cached'],
  ['running', 'running'],
  ['failed', 'failed'],
  ['cancelled', 'cancelled'],
  ['skipped', 'skipped']
];

/** A history row's step summary, "2 ✓ · 1 cached"; '' when the counts are unknown. */
export function countsText(counts: Record<string, number> | null): string {
  if (!counts) {
    return '';
  }
  return COUNT_WORDS.filter(([state]) => (counts[state] ?? 0) > 0)
    .map(([state, word]) => `${counts[state]} ${word}`)
    .join(' · ');
}

/**
 * `runs` (newest first) with `run` in it: replacing its older copy in place, or, when it is
 * not listed and `addIfMissing`, as the newest (a run that just started).
 */
export function upsertRun(
  runs: readonly IRunStatus[],
  run: IRunStatus,
  addIfMissing = true
): IRunStatus[] {
  const at = runs.findIndex(r => r.run_id === run.run_id);
  if (at < 0) {
    return addIfMissing ? [run, ...runs] : [...runs];
  }
  const out = [...runs];
  out[at] = run;
  return out;
}
