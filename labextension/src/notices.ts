/**
 * The words of the status bar item and of the toast at the end of a run (UX §2.6, §2.8):
 * pure functions of a run's status, so jest checks them without a browser.
 */
import {
  failedStep,
  formatClock,
  formatDuration,
  IRunStatus,
  isTerminal,
  stepProgress,
  toState
} from './state';

/** JupyterLab truncates notification messages beyond this (apputils notification.ts). */
export const NOTICE_MAX = 140;

/** Cut `text` to `max` characters, ending with an ellipsis when cut. */
export function clip(text: string, max: number = NOTICE_MAX): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length <= max ? flat : `${flat.slice(0, max - 1).trimEnd()}…`;
}

export interface IStatusText {
  /** "⟳ Pipeline 3/7 · 01:12", "✓ Pipeline 42 s", "✗ Pipeline failed: train", "2 problems". */
  text: string;
  /** The `data-cellpipe-state` hook: a run state, or `problems`. */
  state: string;
  /** The tooltip: what a click does. */
  title: string;
}

/**
 * What the status bar says for a notebook, or null when it has nothing to say (no steps
 * and no run shown). Compile problems win over a finished run: they are what to fix next.
 * `now` is seconds since the epoch.
 */
export function statusBarText(
  run: IRunStatus | null,
  problems: number,
  hasSteps: boolean,
  now: number
): IStatusText | null {
  const title = 'Show the Pipeline sidebar';
  const active = run !== null && !isTerminal(run.state);
  if (problems > 0 && !active) {
    return {
      text: problems === 1 ? '1 problem' : `${problems} problems`,
      state: 'problems',
      title: 'Show the problems in the Pipeline sidebar'
    };
  }
  if (!run) {
    return hasSteps ? { text: 'Pipeline', state: 'pending', title } : null;
  }
  const state = toState(run.state);
  switch (state) {
    case 'pending':
    case 'running': {
      const clock = run.started_at ? ` · ${formatClock(now - run.started_at)}` : '';
      return { text: `⟳ Pipeline ${stepProgress(run)}${clock}`, state, title };
    }
    case 'succeeded':
    case 'cached': {
      const d = formatDuration(run.duration_s);
      return { text: `✓ Pipeline${d ? ` ${d}` : ''}`, state, title };
    }
    case 'failed': {
      const failed = failedStep(run);
      return {
        text: `✗ Pipeline failed${failed ? `: ${failed.name}` : ''}`,
        state,
        title: 'Show the failed run in the Pipeline sidebar'
      };
    }
    case 'cancelled':
    case 'skipped':
      return { text: `Pipeline ${state}`, state, title };
  }
}

export interface INotice {
  type: 'success' | 'error' | 'info';
  message: string;
  /** The failed step, for Go to error and Show log. */
  step?: string;
}

/** The toast for a run that just ended; null for states that need none. */
export function finishNotice(run: IRunStatus): INotice | null {
  const state = toState(run.state);
  const steps = run.steps.length === 1 ? '1 step' : `${run.steps.length} steps`;
  switch (state) {
    case 'succeeded':
    case 'cached': {
      const d = formatDuration(run.duration_s);
      return {
        type: 'success',
        message: clip(`Pipeline run ${run.run_id} succeeded${d ? ` in ${d}` : ''} (${steps}).`)
      };
    }
    case 'failed': {
      const failed = failedStep(run);
      if (!failed) {
        return { type: 'error', message: clip(`Pipeline run ${run.run_id} failed: ${run.message ?? ''}`) };
      }
      const why = failed.message ? `: ${failed.message}` : '';
      return { type: 'error', message: clip(`Step ${failed.name} failed${why}`), step: failed.name };
    }
    case 'cancelled':
      return { type: 'info', message: clip(`Pipeline run ${run.run_id} cancelled.`) };
    default:
      return null;
  }
}
