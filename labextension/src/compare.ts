/**
 * Comparing runs (UX §2.4, J5): one row per run, one column per parameter, metric and step,
 * and the run's duration; a column whose values differ between the runs is marked, so the
 * eye goes to what changed. Pure: the compare tab renders what `compareRuns` returns.
 */
import { formatDuration, IRunStatus, IStepStatus } from './state';

export type ColumnGroup = 'parameter' | 'metric' | 'step' | 'duration';

export interface ICompareColumn {
  /** Stable hook: `param:NAME`, `metric:NAME`, `step:NAME`, `duration`. */
  key: string;
  group: ColumnGroup;
  label: string;
  /** Text shown per run, in the order of `ICompareTable.runs`. */
  values: string[];
  /** True when the runs' values differ (durations never count: they always differ). */
  differs: boolean;
}

export interface ICompareTable {
  runs: IRunStatus[];
  columns: ICompareColumn[];
}

/** A JSON value as the Python literal a user typed: 'a', True, None, [1, 2]. */
export function pythonLiteral(value: unknown): string {
  if (value === null || value === undefined) {
    return 'None';
  }
  if (value === true) {
    return 'True';
  }
  if (value === false) {
    return 'False';
  }
  if (typeof value === 'string') {
    return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  }
  if (Array.isArray(value)) {
    return `[${value.map(pythonLiteral).join(', ')}]`;
  }
  if (typeof value === 'object') {
    const items = Object.entries(value as Record<string, unknown>).map(
      ([k, v]) => `${pythonLiteral(k)}: ${pythonLiteral(v)}`
    );
    return `{${items.join(', ')}}`;
  }
  return String(value);
}

/** A metric as shown: numbers to 4 significant decimals, anything else as its literal. */
export function metricText(value: unknown): string {
  if (typeof value === 'number' && isFinite(value) && !Number.isInteger(value)) {
    return String(Number(value.toPrecision(4)));
  }
  return pythonLiteral(value);
}

/** Each run's metrics by name; a name two steps record is qualified as `step.name`. */
export function flatMetrics(run: IRunStatus): Map<string, unknown> {
  const byName = new Map<string, { step: string; value: unknown }[]>();
  for (const [step, values] of Object.entries(run.metrics ?? {})) {
    for (const [name, value] of Object.entries(values ?? {})) {
      byName.set(name, [...(byName.get(name) ?? []), { step, value }]);
    }
  }
  const out = new Map<string, unknown>();
  for (const [name, entries] of byName) {
    if (entries.length === 1) {
      out.set(name, entries[0].value);
    } else {
      entries.forEach(e => out.set(`${e.step}.${name}`, e.value));
    }
  }
  return out;
}

/** "succeeded · 2.1 s · ran", "cached · reused", "skipped", "not in this run". */
export function stepText(step: IStepStatus | undefined): string {
  if (!step) {
    return 'not in this run';
  }
  const reused = step.cached || step.state === 'cached';
  const parts = [step.state];
  const d = formatDuration(step.duration_s);
  if (d && !reused) {
    parts.push(d);
  }
  if (step.state === 'succeeded' || reused) {
    parts.push(reused ? 'reused' : 'ran');
  }
  return parts.join(' · ');
}

function stepKey(step: IStepStatus | undefined): string {
  return step ? `${step.state}/${step.cached || step.state === 'cached'}` : '-';
}

/**
 * The compare table of `runs` (at least two, each as `GET /runs/{id}` describes it).
 * `defaults`: the notebook's parameter expressions, shown for a run that did not override
 * a parameter (runs store only the values they were given).
 */
export function compareRuns(
  runs: readonly IRunStatus[],
  defaults: Readonly<Record<string, string>> = {}
): ICompareTable {
  const columns: ICompareColumn[] = [];
  const differ = (keys: string[]): boolean => new Set(keys).size > 1;

  const paramNames: string[] = [];
  for (const name of Object.keys(defaults)) {
    paramNames.push(name);
  }
  for (const run of runs) {
    for (const name of Object.keys(run.parameters ?? {})) {
      if (!paramNames.includes(name)) {
        paramNames.push(name);
      }
    }
  }
  for (const name of paramNames) {
    const values = runs.map(r =>
      r.parameters && name in r.parameters
        ? pythonLiteral(r.parameters[name])
        : (defaults[name] ?? 'None')
    );
    columns.push({
      key: `param:${name}`,
      group: 'parameter',
      label: name,
      values,
      differs: differ(values)
    });
  }

  const metrics = runs.map(flatMetrics);
  const metricNames: string[] = [];
  for (const m of metrics) {
    for (const name of m.keys()) {
      if (!metricNames.includes(name)) {
        metricNames.push(name);
      }
    }
  }
  for (const name of metricNames) {
    const values = metrics.map(m => (m.has(name) ? metricText(m.get(name)) : '—'));
    columns.push({ key: `metric:${name}`, group: 'metric', label: name, values, differs: differ(values) });
  }

  const stepNames: string[] = [];
  for (const run of runs) {
    for (const s of run.steps) {
      if (!stepNames.includes(s.name)) {
        stepNames.push(s.name);
      }
    }
  }
  for (const name of stepNames) {
    const steps = runs.map(r => r.steps.find(s => s.name === name));
    columns.push({
      key: `step:${name}`,
      group: 'step',
      label: name,
      values: steps.map(stepText),
      differs: differ(steps.map(stepKey))
    });
  }

  columns.push({
    key: 'duration',
    group: 'duration',
    label: 'duration',
    values: runs.map(r => formatDuration(r.duration_s) || '—'),
    differs: false
  });
  return { runs: [...runs], columns };
}

/** Numeric metric names over these runs, for the chart's select. */
export function numericMetrics(runs: readonly IRunStatus[]): string[] {
  const names: string[] = [];
  for (const run of runs) {
    for (const [name, value] of flatMetrics(run)) {
      if (typeof value === 'number' && isFinite(value) && !names.includes(name)) {
        names.push(name);
      }
    }
  }
  return names;
}

/** One point per run that recorded `metric` as a number, oldest run first. */
export function metricSeries(
  runs: readonly IRunStatus[],
  metric: string
): { runIds: string[]; values: number[] } {
  const points = runs
    .map(r => ({ run: r, value: flatMetrics(r).get(metric) }))
    .filter(
      (p): p is { run: IRunStatus; value: number } =>
        typeof p.value === 'number' && isFinite(p.value)
    )
    .sort((a, b) => (a.run.started_at ?? 0) - (b.run.started_at ?? 0));
  return { runIds: points.map(p => p.run.run_id), values: points.map(p => p.value) };
}
