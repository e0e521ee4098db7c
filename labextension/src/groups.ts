/**
 * Steps of a composed notebook, grouped by the part they come from (issue 20). A main
 * notebook whose `notebook:NAME` or `%run other.ipynb` cells stand for other notebooks
 * compiles into qualified steps (`notebook_a.train`) that carry their part as `group`; the
 * sidebar shows one collapsible group per part, in the steps list and in the DAG. This module
 * is the pure part: which steps are shown, the rows of the list, a group's summary, and the
 * graph with collapsed groups folded into one node.
 */
import type { IAssignment, ICellInfo, ICellPlace } from './tags';
import { isTerminal } from './state';

/** A step as the sidebar lists it. */
export interface IShownStep {
  name: string;
  /** Ids of its cells (for a part's step: ids in the flat compiled notebook). */
  cells: string[];
  /** The part of a composed notebook it comes from (`notebook_a`, `a.b` nested); null: the main's. */
  group: string | null;
  /** That part's notebook, relative to the main notebook. */
  notebook: string | null;
}

/** A compiled step as `POST /compile` describes it (only what grouping needs). */
export interface IGroupedStep {
  name: string;
  cells: string[];
  group?: string | null;
  notebook?: string | null;
}

/** A cell of the main notebook that stands for another notebook. */
export interface IReference {
  cellId: string;
  /** The part's name: the `notebook:` tag's, or the `%run` file's stem. */
  part: string;
}

/** The engine's `%run` form (compiling/compose.py): the cell's only code runs one notebook. */
const RUN_LINE = /^%run\s+(["']?)([^\s"']+\.ipynb)\1\s*$/;

/** The cells of the main notebook that reference another notebook, in notebook order. */
export function notebookReferences(cells: readonly ICellInfo[]): IReference[] {
  const out: IReference[] = [];
  for (const cell of cells) {
    if (cell.type !== 'code') {
      continue;
    }
    const tag = cell.tags.find(t => t.startsWith('notebook:'));
    if (tag) {
      out.push({ cellId: cell.id, part: tag.slice('notebook:'.length) });
      continue;
    }
    const code = cell.source
      .split('\n')
      .map(l => l.trim())
      .filter(l => l && !l.startsWith('#'));
    const m = code.length === 1 ? RUN_LINE.exec(code[0]) : null;
    if (m) {
      const file = m[2].split('/').pop()!;
      out.push({ cellId: cell.id, part: file.slice(0, -'.ipynb'.length) });
    }
  }
  return out;
}

/**
 * The steps to list: the compiled ones when the notebook is composed (only the server reads
 * the referenced notebooks), else the ones the tags give at once. `composed`: the notebook
 * has a reference cell; before its first compile answers, nothing is listed rather than the
 * tags' guess (a `%run` cell would read as a step `main`).
 */
export function shownSteps(
  assignment: IAssignment,
  compiled: readonly IGroupedStep[] | null | undefined,
  composed = false
): IShownStep[] {
  if (composed && !compiled) {
    return [];
  }
  if (compiled && compiled.some(s => s.group)) {
    return compiled.map(s => ({
      name: s.name,
      cells: [...s.cells],
      group: s.group ?? null,
      notebook: s.notebook ?? null
    }));
  }
  return assignment.steps.map(s => ({ name: s.name, cells: s.cells, group: null, notebook: null }));
}

/** The name a step shows under its group's header: `train` for `notebook_a.train`. */
export function shortName(step: IShownStep): string {
  return step.group && step.name.startsWith(`${step.group}.`)
    ? step.name.slice(step.group.length + 1)
    : step.name;
}

export type StepListRow =
  | {
      kind: 'group';
      key: string;
      group: string;
      notebook: string | null;
      steps: string[];
      expanded: boolean;
    }
  | { kind: 'step'; key: string; step: IShownStep; hidden: boolean };

/** The key of a group's header row and DAG node: no step name holds a colon. */
export function groupKey(group: string): string {
  return `group:${group}`;
}

/**
 * The rows of the steps list: the main notebook's steps where they fall in the steps' order,
 * each part's header where its first step falls, followed by all its steps (hidden while
 * the group is collapsed: the rows stay, so each step keeps its one element and state).
 */
export function stepListRows(
  steps: readonly IShownStep[],
  collapsed: ReadonlySet<string>
): StepListRow[] {
  const members = new Map<string, IShownStep[]>();
  for (const s of steps) {
    if (s.group) {
      const list = members.get(s.group) ?? [];
      list.push(s);
      members.set(s.group, list);
    }
  }
  const rows: StepListRow[] = [];
  const placed = new Set<string>();
  for (const s of steps) {
    if (!s.group) {
      rows.push({ kind: 'step', key: s.name, step: s, hidden: false });
      continue;
    }
    if (placed.has(s.group)) {
      continue;
    }
    placed.add(s.group);
    const list = members.get(s.group)!;
    const expanded = !collapsed.has(s.group);
    rows.push({
      kind: 'group',
      key: groupKey(s.group),
      group: s.group,
      notebook: s.notebook,
      steps: list.map(m => m.name),
      expanded
    });
    for (const m of list) {
      rows.push({ kind: 'step', key: m.name, step: m, hidden: !expanded });
    }
  }
  return rows;
}

/**
 * One state for a group, from its steps' (`idle` when no run is shown): the one that needs
 * attention first: failed, then running, waiting, cancelled, skipped; cached when every
 * step was cached, else succeeded.
 */
export function groupState(states: readonly string[]): string {
  if (!states.length || states.every(s => s === 'idle')) {
    return 'idle';
  }
  for (const s of ['failed', 'running', 'pending', 'cancelled', 'skipped']) {
    if (states.includes(s)) {
      return s;
    }
  }
  if (states.some(s => !isTerminal(s))) {
    return 'pending';
  }
  return states.every(s => s === 'cached') ? 'cached' : 'succeeded';
}

/** A group header's summary: "4 steps" with no run shown, else "2/4 done", "· 1 failed". */
export function groupSummary(states: readonly string[]): string {
  const n = states.length;
  if (states.every(s => s === 'idle')) {
    return `${n} ${n === 1 ? 'step' : 'steps'}`;
  }
  const done = states.filter(s => isTerminal(s)).length;
  const failed = states.filter(s => s === 'failed').length;
  return `${done}/${n} done${failed ? ` · ${failed} failed` : ''}`;
}

/** A foreach step's progress, "7/20"; '' when the step is not a fan-out (or not started). */
export function iterationsText(iterations: Record<string, number> | null | undefined): string {
  const total = iterations?.total;
  if (typeof total !== 'number') {
    return '';
  }
  return `${iterations?.done ?? 0}/${total}`;
}

/** The graph the DAG draws: collapsed groups folded into one node each. */
export interface IGroupedGraph {
  /** Node ids in the steps' order: step names, and `group:NAME` for a collapsed group. */
  nodes: string[];
  edges: { source: string; target: string; kind: string }[];
  /** What each node shows: a step's short name, a collapsed group's name. */
  labels: Map<string, string>;
  /** The cluster (`group:NAME`) each node of an expanded group is drawn in. */
  parents: Map<string, string>;
}

export function groupedGraph(
  steps: readonly IShownStep[],
  edges: readonly { source: string; target: string; kind: string }[],
  collapsed: ReadonlySet<string>
): IGroupedGraph {
  const nodeOf = new Map<string, string>();
  const nodes: string[] = [];
  const labels = new Map<string, string>();
  const parents = new Map<string, string>();
  for (const s of steps) {
    if (s.group && collapsed.has(s.group)) {
      const id = groupKey(s.group);
      nodeOf.set(s.name, id);
      if (!labels.has(id)) {
        nodes.push(id);
        labels.set(id, s.group);
      }
      continue;
    }
    nodeOf.set(s.name, s.name);
    nodes.push(s.name);
    labels.set(s.name, shortName(s));
    if (s.group) {
      parents.set(s.name, groupKey(s.group));
    }
  }
  const seen = new Set<string>();
  const out: { source: string; target: string; kind: string }[] = [];
  for (const e of edges) {
    const source = nodeOf.get(e.source);
    const target = nodeOf.get(e.target);
    const key = `${source}\u0000${target}`;
    if (!source || !target || source === target || seen.has(key)) {
      continue;
    }
    seen.add(key);
    out.push({ source, target, kind: e.kind });
  }
  return { nodes, edges: out, labels, parents };
}

/** A cell of `POST /compile`'s answer (only what placing the main notebook's cells needs). */
export interface IPlacedCell {
  id: string;
  step: string | null;
}

/**
 * Where the main notebook's cells sit in a composed pipeline. The tags alone cannot say:
 * after a reference, untagged cells continue whatever step the referenced notebook ended
 * with, and a `%run` cell is no step's code. So a reference cell gets the role `notebook`
 * (no step), and every other code cell the step the compile gave it (none before the
 * compile answers); role cells keep their roles.
 */
export function composedPlaces(
  places: readonly ICellPlace[],
  references: readonly IReference[],
  compiled: readonly IPlacedCell[] | null | undefined
): ICellPlace[] {
  const refs = new Set(references.map(r => r.cellId));
  const stepOf = new Map((compiled ?? []).map(c => [c.id, c.step]));
  const seen = new Set<string>();
  return places.map(p => {
    if (refs.has(p.id)) {
      return { ...p, step: null, role: 'notebook', first: false };
    }
    if (p.role !== 'step') {
      return p;
    }
    const step = stepOf.get(p.id) ?? null;
    const first = step !== null && !seen.has(step);
    if (step !== null) {
      seen.add(step);
    }
    return step === null ? { ...p, step: null, role: 'empty', first: false } : { ...p, step, first };
  });
}

/** The steps that come from part `part` (its own and its nested parts'). */
export function stepsOfPart(steps: readonly IShownStep[], part: string): IShownStep[] {
  return steps.filter(s => s.group === part || (s.group ?? '').startsWith(`${part}.`));
}
