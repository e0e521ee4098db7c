/**
 * "Split into steps at headings" on the client: the server's engine decides the split
 * (`POST /split`, cellpipe's `split_at_headings`, the same function `cellpipe tag
 * --at-headings` uses); this module only checks the names a user edits in the preview and
 * turns the plan, with those names, into the tags each cell gets.
 */
import {
  ICellInfo,
  IMPLICIT_STEP,
  parseTags,
  setStep,
  StepPrefix,
  stepNameProblem
} from './tags';

/** One step the split would create. */
export interface ISplitStep {
  /** The name made from the heading (valid and unique), or `setup`. */
  name: string;
  /** The heading's text, or null for `setup` (the cells before the first heading). */
  heading: string | null;
  /** Its code cells' ids, in notebook order. */
  cells: string[];
  /** 1-based numbers of its code cells. */
  numbers: number[];
}

/** `POST /split`'s answer (cellpipe's SplitPlan.to_json). */
export interface ISplitPlan {
  level: number;
  steps: ISplitStep[];
  /** Ids of the cells that only import, which become `imports` cells. */
  imports: string[];
  /** The tags of every cell whose tags change, by cell id, with the names in `steps`. */
  tags: Record<string, string[]>;
}

/** The same rule the engine's `k8s_name` applies: names that collide on Kubernetes clash. */
function k8sName(name: string): string {
  return (
    name
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 63) || 'step'
  );
}

/**
 * A message per edited name that cannot be used (invalid, or clashing with another step of
 * the split), by index; an empty array when every name is fine.
 */
export function splitNameProblems(names: readonly string[]): (string | null)[] {
  const problems: (string | null)[] = names.map(n => stepNameProblem(n.trim()));
  const seen = new Map<string, number>();
  names.forEach((raw, i) => {
    if (problems[i]) {
      return;
    }
    const key = k8sName(raw.trim());
    const first = seen.get(key);
    if (first !== undefined) {
      problems[i] = `"${raw.trim()}" is also the name of step ${first + 1}: step names must differ.`;
    } else {
      seen.set(key, i);
    }
  });
  return problems.some(p => p) ? problems : [];
}

const STEP_PREFIXES = ['step:', 'block:'];
const PREV_PREFIXES = ['prev:', 'after:'];

/**
 * Rename steps in one cell's tags in one pass (so swapping two names works): every `step:`
 * and `prev:` naming a key of `renames` names its value instead.
 */
export function renameStepsInTags(
  tags: readonly string[],
  renames: ReadonlyMap<string, string>
): string[] {
  return tags.map(t => {
    const prefix = [...STEP_PREFIXES, ...PREV_PREFIXES].find(p => t.startsWith(p));
    if (!prefix) {
      return t;
    }
    const to = renames.get(t.slice(prefix.length));
    return to === undefined ? t : prefix + to;
  });
}

/**
 * The tags to write, by cell id: the plan's, with the step names the user chose (`names[i]`
 * for `plan.steps[i]`, blank = keep the proposed name).
 */
export function splitTags(plan: ISplitPlan, names: readonly string[]): Map<string, string[]> {
  const renames = new Map<string, string>();
  plan.steps.forEach((s, i) => {
    const chosen = (names[i] ?? '').trim();
    if (chosen && chosen !== s.name) {
      renames.set(s.name, chosen);
    }
  });
  const out = new Map<string, string[]>();
  for (const [id, tags] of Object.entries(plan.tags)) {
    out.set(id, renames.size ? renameStepsInTags(tags, renames) : [...tags]);
  }
  return out;
}

/** "cells 3–5", "cell 7", "cells 2, 4–6". */
export function cellRanges(numbers: readonly number[]): string {
  if (!numbers.length) {
    return 'no cells';
  }
  const sorted = [...numbers].sort((a, b) => a - b);
  const parts: string[] = [];
  let start = sorted[0];
  let prev = sorted[0];
  for (const n of [...sorted.slice(1), NaN]) {
    if (n === prev + 1) {
      prev = n;
      continue;
    }
    parts.push(start === prev ? `${start}` : `${start}–${prev}`);
    start = n;
    prev = n;
  }
  return `${sorted.length === 1 ? 'cell' : 'cells'} ${parts.join(', ')}`;
}

/** A step name made from a notebook's file name (`wine.ipynb` → `wine`); `main` if none fits. */
export function stepNameFromPath(path: string): string {
  const stem = (path.split('/').pop() ?? '').replace(/\.ipynb$/i, '');
  const name = stem
    .replace(/[^A-Za-z0-9_-]+/g, '_')
    .replace(/^[^A-Za-z]+/, '')
    .replace(/_+$/, '');
  return name && stepNameProblem(name) === null ? name : IMPLICIT_STEP;
}

/**
 * The tags that make a notebook without steps one step named `name`: its first code cell
 * that runs (not empty, no role) starts the step and every later code cell continues it;
 * a metrics cell, which would start a `metrics` step of its own, joins it too. Role cells
 * (imports, functions, parameters, skip) keep their roles. Only cells whose tags change are
 * in the map.
 */
export function wholeNotebookTags(
  cells: readonly ICellInfo[],
  name: string,
  prefix: StepPrefix = 'step:'
): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let started = false;
  for (const cell of cells) {
    if (cell.type !== 'code' || !cell.source.trim()) {
      continue;
    }
    const parsed = parseTags(cell.tags);
    if (parsed.role) {
      continue;
    }
    if (!started || parsed.metrics) {
      out.set(cell.id, setStep(cell.tags, name, [], prefix));
      started = true;
    }
  }
  return out;
}
