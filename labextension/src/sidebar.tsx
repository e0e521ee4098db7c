/**
 * The "Pipeline" sidebar: run bar, parameters, problems, the DAG, the step list and the run
 * history of the current notebook. It renders whatever the current NotebookPipeline holds
 * and re-renders on its `changed` signal (and once a second while a run ticks).
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { IBackend } from './api';
import { pythonLiteral } from './compare';
import { layoutDag } from './dag';
import {
  groupedGraph,
  groupKey,
  groupState,
  groupSummary,
  iterationsText,
  shortName,
  stepListRows
} from './groups';
import { parsePythonLiteral } from './literals';
import { NotebookPipeline } from './pipeline';
import { chosenProfile, IProfileList, profileChoices } from './profiles';
import { onRowKey, tabStop, tabStopKey } from './roving';
import {
  countSteps,
  countsText,
  formatClock,
  formatDuration,
  isTerminal,
  IStepStatus,
  hookState,
  runSummary,
  ShownState,
  stepLabel
} from './state';

export interface ISidebarActions {
  jumpToCell(pipeline: NotebookPipeline, cellId: string): void;
  jumpToCellNumber(pipeline: NotebookPipeline, cellNumber: number): void;
  openReport(runId: string): void;
  setBackend(pipeline: NotebookPipeline, backend: string): void;
  /** Preview "Split into steps at headings" and apply it on OK. */
  splitAtHeadings(pipeline: NotebookPipeline): void;
  /** Tag the whole notebook as one step (one undoable edit). */
  makeOneStep(pipeline: NotebookPipeline): void;
  /** Open the tag editor on the active cell. */
  tagActiveCell(pipeline: NotebookPipeline): void;
  /** Open the Compare tab on these runs of the notebook. */
  compare(pipeline: NotebookPipeline, runIds: string[]): void;
}

const BACKENDS = ['local', 'docker', 'argo'];

export class PipelineSidebar extends ReactWidget {
  constructor(private readonly actions: ISidebarActions) {
    super();
    this.id = 'cellpipe-sidebar';
    this.addClass('cellpipe-sidebar');
    this.title.caption = 'Pipeline';
  }

  get pipeline(): NotebookPipeline | null {
    return this._pipeline;
  }

  set pipeline(value: NotebookPipeline | null) {
    if (value === this._pipeline) {
      return;
    }
    this._pipeline?.changed.disconnect(this.onChanged, this);
    this._pipeline = value;
    value?.changed.connect(this.onChanged, this);
    this.onChanged();
  }

  /** The server's cluster profiles (null: not known, e.g. the request failed). */
  setProfiles(profiles: IProfileList | null): void {
    this.profiles = profiles;
    this.update();
  }

  /** The profile a run on `backend` asks for: the selected one on argo, else null. */
  runProfile(backend: string): string | null {
    return backend === 'argo' ? chosenProfile(this.profiles, this.profileChoice) : null;
  }

  setBackends(backends: IBackend[] | null, error = ''): void {
    this.backends = backends;
    this.backendError = error;
    this.update();
  }

  dispose(): void {
    if (this.ticker) {
      clearInterval(this.ticker);
    }
    super.dispose();
  }

  private onChanged(): void {
    const active = this._pipeline?.isActive ?? false;
    if (active && !this.ticker) {
      this.ticker = setInterval(() => this.update(), 1000);
    } else if (!active && this.ticker) {
      clearInterval(this.ticker);
      this.ticker = null;
    }
    this.update();
  }

  private paramText(p: NotebookPipeline): Record<string, string> {
    let values = this.params.get(p);
    if (!values) {
      values = {};
      this.params.set(p, values);
    }
    return values;
  }

  private backendOf(p: NotebookPipeline): string {
    const meta = p.panel.context.model.getMetadata('cellpipe') as { backend?: string } | undefined;
    return meta?.backend && BACKENDS.includes(meta.backend) ? meta.backend : 'local';
  }

  private startRun(p: NotebookPipeline): void {
    const values: Record<string, unknown> = {};
    const errors: string[] = [];
    const typed = this.paramText(p);
    for (const param of p.compiled?.parameters ?? []) {
      const text = typed[param.name];
      if (text === undefined || text.trim() === param.expression.trim()) {
        continue;
      }
      const parsed = parsePythonLiteral(text);
      if (parsed.ok) {
        values[param.name] = parsed.value;
      } else {
        errors.push(`${param.name}: ${parsed.message}`);
      }
    }
    this.paramErrors.set(p, errors);
    if (errors.length) {
      this.update();
      return;
    }
    const backend = this.backendOf(p);
    void p.compileAndRun(backend, values, this.runProfile(backend));
  }

  render(): JSX.Element {
    const p = this._pipeline;
    if (!p) {
      return (
        <div className="cellpipe-empty">Open a notebook to build a pipeline from it.</div>
      );
    }
    return (
      <div className="cellpipe-content">
        <header className="cellpipe-header" title={p.path}>
          {p.panel.context.localPath.split('/').pop()}
        </header>
        {this.renderBanner(p)}
        {this.renderRunBar(p)}
        {this.renderParameters(p)}
        {this.renderProblems(p)}
        {this.renderSteps(p)}
        {this.renderHistory(p)}
      </div>
    );
  }

  /** The cluster profile an argo run gets (cellpipe profile); the notebook's settings win. */
  private renderProfile(): JSX.Element {
    const value = chosenProfile(this.profiles, this.profileChoice);
    const folder = this.profiles?.folder ?? 'the server';
    return (
      <label
        className="cellpipe-field"
        title={`Cluster settings from a profile in ${folder}; the notebook's metadata.cellpipe.argo wins over them`}
      >
        <span>Profile</span>
        <select
          aria-label="Profile"
          value={value}
          onChange={e => {
            this.profileChoice = e.currentTarget.value;
            this.update();
          }}
        >
          {profileChoices(this.profiles).map(c => (
            <option key={c.value} value={c.value} disabled={c.disabled} title={c.title}>
              {c.label}
            </option>
          ))}
        </select>
      </label>
    );
  }

  private renderBanner(p: NotebookPipeline): JSX.Element | null {
    const message = p.error || this.backendError;
    if (!message) {
      return null;
    }
    return (
      <div className="cellpipe-banner" role="alert">
        {message}
      </div>
    );
  }

  private renderRunBar(p: NotebookPipeline): JSX.Element {
    const now = Date.now() / 1000;
    const run = p.run;
    const active = p.isActive;
    let status = '';
    if (p.phase === 'compiling') {
      status = 'Compiling…';
    } else if (p.phase === 'starting') {
      status = 'Starting…';
    } else if (run) {
      status = `${runSummary(run, now)} · run ${run.run_id}`;
    }
    const runnable = run && !active && ['failed', 'cancelled'].includes(run.state);
    const backend = this.backendOf(p);
    return (
      <section className="cellpipe-runbar">
        <label className="cellpipe-field">
          <span>Backend</span>
          <select
            aria-label="Backend"
            value={backend}
            onChange={e => this.actions.setBackend(p, e.currentTarget.value)}
          >
            {BACKENDS.map(name => {
              const info = this.backends?.find(b => b.name === name);
              const unavailable = info !== undefined && !info.available;
              return (
                <option
                  key={name}
                  value={name}
                  disabled={unavailable}
                  title={unavailable ? info!.reason : ''}
                >
                  {name}
                </option>
              );
            })}
          </select>
        </label>
        {backend === 'argo' ? this.renderProfile() : null}
        <div className="cellpipe-buttons">
          <button
            className="jp-Button jp-mod-styled jp-mod-accept cellpipe-run"
            disabled={active}
            title={active ? 'A run of this notebook is in progress' : 'Compile the open notebook and run it'}
            onClick={() => this.startRun(p)}
          >
            Compile and Run
          </button>
          <button
            className="jp-Button jp-mod-styled cellpipe-cancel"
            disabled={!run || !active}
            title="Stop the running steps; finished ones keep their results"
            onClick={() => void p.cancel()}
          >
            Cancel
          </button>
          <button
            className="jp-Button jp-mod-styled cellpipe-resume"
            disabled={!runnable}
            title="Run the failed and unfinished steps again with the notebook as it is now"
            onClick={() => void p.resume()}
          >
            Resume
          </button>
        </div>
        <div className="cellpipe-status" aria-live="polite">
          {status}
        </div>
      </section>
    );
  }

  private renderParameters(p: NotebookPipeline): JSX.Element | null {
    const params = p.compiled?.parameters ?? [];
    if (!params.length) {
      return null;
    }
    const typed = this.paramText(p);
    const errors = this.paramErrors.get(p) ?? [];
    return (
      <section className="cellpipe-parameters">
        <h3>Parameters</h3>
        {params.map(param => (
          <label key={param.name} className="cellpipe-field">
            <span>{param.name}</span>
            <input
              name={`param-${param.name}`}
              aria-label={`Parameter ${param.name}`}
              placeholder={param.expression}
              value={typed[param.name] ?? param.expression}
              onChange={e => {
                typed[param.name] = e.currentTarget.value;
                this.update();
              }}
            />
          </label>
        ))}
        {errors.map(e => (
          <div key={e} className="cellpipe-error" role="alert">
            {e}
          </div>
        ))}
      </section>
    );
  }

  private renderProblems(p: NotebookPipeline): JSX.Element | null {
    if (!p.problems.length) {
      return null;
    }
    const sorted = [...p.problems].sort(
      (a, b) => Number(b.severity === 'error') - Number(a.severity === 'error')
    );
    return (
      <section className="cellpipe-problems">
        <h3>Problems</h3>
        <ul>
          {sorted.map((d, i) => (
            <li
              key={i}
              className={`cellpipe-diagnostic cellpipe-mod-${d.severity}`}
              data-cellpipe-cell={d.cell ?? undefined}
              tabIndex={0}
              onClick={() => this.jumpToProblem(p, d.cell_id, d.cell)}
              onKeyDown={e => {
                if (e.key === 'Enter') {
                  this.jumpToProblem(p, d.cell_id, d.cell);
                }
              }}
            >
              {d.cell !== null ? `Cell ${d.cell} · ` : ''}
              {d.message}
            </li>
          ))}
        </ul>
      </section>
    );
  }

  private jumpToProblem(p: NotebookPipeline, cellId: string | null, cell: number | null): void {
    if (cellId) {
      this.actions.jumpToCell(p, cellId);
    } else if (cell !== null) {
      this.actions.jumpToCellNumber(p, cell);
    }
  }

  private collapsedGroups(p: NotebookPipeline): Set<string> {
    let collapsed = this.collapsed.get(p);
    if (!collapsed) {
      collapsed = new Set();
      this.collapsed.set(p, collapsed);
    }
    return collapsed;
  }

  private toggleGroup(p: NotebookPipeline, group: string, expand?: boolean): void {
    const collapsed = this.collapsedGroups(p);
    const open = expand ?? collapsed.has(group);
    if (open === !collapsed.has(group)) {
      return;
    }
    if (open) {
      collapsed.delete(group);
    } else {
      collapsed.add(group);
    }
    this.update();
  }

  private renderSteps(p: NotebookPipeline): JSX.Element {
    const steps = p.steps;
    const start = p.tagged ? null : this.renderStart(p, steps.length > 0);
    if (!steps.length) {
      return <section className="cellpipe-steps-section">{start}</section>;
    }
    const now = Date.now() / 1000;
    const names = steps.map(s => s.name);
    const colors = p.stepColors();
    const statusOf = new Map<string, IStepStatus>((p.run?.steps ?? []).map(s => [s.name, s]));
    const stateOf = (name: string): ShownState =>
      (statusOf.get(name)?.state as ShownState) ?? 'idle';
    const edges = p.edges;
    const afterOf = new Map<string, string[]>();
    for (const e of edges) {
      if (names.includes(e.source) && names.includes(e.target) && e.source !== e.target) {
        const list = afterOf.get(e.target) ?? [];
        if (!list.includes(e.source)) {
          list.push(e.source);
        }
        afterOf.set(e.target, list);
      }
    }
    const collapsed = this.collapsedGroups(p);
    const grouped = steps.some(s => s.group);
    const graph = groupedGraph(steps, edges, collapsed);
    const dag = layoutDag(graph.nodes, graph.edges, {
      labels: graph.labels,
      parents: graph.parents
    });
    const jump = (name: string): void => {
      const step = steps.find(s => s.name === name);
      if (step?.group) {
        // A part's cells live in its own notebook: go to the cell that stands for it.
        const part = step.group.split('.')[0];
        const ref = p.references.find(r => r.part === part);
        if (ref) {
          this.actions.jumpToCell(p, ref.cellId);
        }
        return;
      }
      const failed = p.failedCells.get(name) ?? statusOf.get(name)?.cell_id ?? null;
      const first = step?.cells[0];
      const target = stateOf(name) === 'failed' && failed ? failed : first;
      if (target) {
        this.actions.jumpToCell(p, target);
      }
    };
    const groupStates = (group: string): string[] =>
      steps.filter(s => s.group === group).map(s => stateOf(s.name));
    const rows = stepListRows(steps, collapsed);
    const stop = tabStopKey(this.stepStop, rows);
    const focusRow = (key: string): void => {
      const el = this.node.querySelector<HTMLElement>(
        `.cellpipe-steps > [data-cellpipe-row="${CSS.escape(key)}"]`
      );
      el?.focus();
    };
    const rowProps = (key: string, hidden: boolean) => ({
      key,
      'data-cellpipe-row': key,
      hidden,
      tabIndex: key === stop ? 0 : -1,
      onFocus: (e: React.FocusEvent<HTMLElement>) => {
        if (e.target === e.currentTarget && this.stepStop !== key) {
          this.stepStop = key;
          this.update();
        }
      }
    });
    return (
      <section className="cellpipe-steps-section">
        {start}
        <h3>Steps</h3>
        <svg
          className="cellpipe-dag"
          role="img"
          aria-label={`Pipeline graph of ${names.length} steps`}
          viewBox={`0 0 ${Math.max(dag.width, 1)} ${Math.max(dag.height, 1)}`}
          width="100%"
          style={{ maxHeight: `${Math.max(dag.height, 40)}px` }}
        >
          <defs>
            <marker
              id="cellpipe-arrow"
              viewBox="0 0 10 10"
              refX="9"
              refY="5"
              markerWidth="6"
              markerHeight="6"
              orient="auto-start-reverse"
            >
              <path d="M 0 0 L 10 5 L 0 10 z" className="cellpipe-dag-arrow" />
            </marker>
          </defs>
          {dag.clusters.map(c => {
            const group = c.id.slice('group:'.length);
            return (
              <g
                key={c.id}
                className={`cellpipe-dag-cluster cellpipe-mod-${groupState(groupStates(group))}`}
                data-cellpipe-cluster={group}
                transform={`translate(${c.x - c.width / 2},${c.y - c.height / 2})`}
                onClick={() => this.toggleGroup(p, group, false)}
              >
                <title>{`${group}: ${groupSummary(groupStates(group))} (click to collapse)`}</title>
                <rect width={c.width} height={c.height} rx="6" />
                <text x={4} y={9}>
                  {group}
                </text>
              </g>
            );
          })}
          {dag.edges.map(e => (
            <polyline
              key={`${e.source}->${e.target}`}
              className={`cellpipe-dag-edge cellpipe-mod-${e.kind}`}
              points={e.points.map(pt => `${pt.x},${pt.y}`).join(' ')}
              markerEnd="url(#cellpipe-arrow)"
            />
          ))}
          {dag.nodes.map(n => {
            const folded = n.name.startsWith('group:') ? n.name.slice('group:'.length) : null;
            const state = folded ? groupState(groupStates(folded)) : stateOf(n.name);
            const label = graph.labels.get(n.name) ?? n.name;
            return (
              <g
                key={n.name}
                className={`cellpipe-dag-node cellpipe-mod-${state}${
                  folded ? ' cellpipe-mod-group' : ''
                }`}
                {...(folded
                  ? { 'data-cellpipe-group-node': folded }
                  : {
                      'data-cellpipe-node': n.name,
                      'data-cellpipe-node-state': hookState(stateOf(n.name))
                    })}
                transform={`translate(${n.x - n.width / 2},${n.y - n.height / 2})`}
                onClick={() => (folded ? this.toggleGroup(p, folded, true) : jump(n.name))}
              >
                <title>
                  {folded
                    ? `${folded}: ${groupSummary(groupStates(folded))} (click to expand)`
                    : `${n.name}: ${stepLabel(statusOf.get(n.name), now)}`}
                </title>
                <rect
                  width={n.width}
                  height={n.height}
                  rx="4"
                  style={folded ? undefined : { stroke: `var(${colors.get(n.name)})` }}
                />
                <text
                  x={n.width / 2}
                  y={n.height / 2}
                  dominantBaseline="central"
                  textAnchor="middle"
                >
                  {folded ? `▸ ${label}` : label}
                </text>
              </g>
            );
          })}
        </svg>
        <ul
          className="cellpipe-steps"
          // A composed notebook's steps are a two-level tree (groups of steps); otherwise a list.
          role={grouped ? 'tree' : 'list'}
          aria-label="Steps"
        >
          {rows.map(row => {
            if (row.kind === 'group') {
              const states = groupStates(row.group);
              const state = groupState(states);
              const summary = groupSummary(states);
              return (
                <li
                  {...rowProps(row.key, false)}
                  role="treeitem"
                  aria-level={1}
                  aria-expanded={row.expanded}
                  aria-label={`${row.group}, ${row.steps.length} steps from ${
                    row.notebook ?? row.group
                  }: ${summary}`}
                  className={`cellpipe-group-row cellpipe-mod-${state}`}
                  data-cellpipe-group={row.group}
                  data-cellpipe-group-state={hookState(state as ShownState)}
                  title={`${row.notebook ?? row.group}: ${summary}. Enter ${
                    row.expanded ? 'collapses' : 'expands'
                  } the group.`}
                  onClick={() => this.toggleGroup(p, row.group)}
                  onKeyDown={e =>
                    onRowKey(e, {
                      enter: () => this.toggleGroup(p, row.group),
                      left: () => this.toggleGroup(p, row.group, false),
                      right: () => this.toggleGroup(p, row.group, true)
                    })
                  }
                >
                  <span className="cellpipe-group-toggle" aria-hidden="true">
                    {row.expanded ? '▾' : '▸'}
                  </span>
                  <span className="cellpipe-state-icon" aria-hidden="true" />
                  <span className="cellpipe-group-name">{row.group}</span>
                  <span className="cellpipe-step-state">{summary}</span>
                  {row.notebook ? (
                    <span className="cellpipe-group-notebook">{row.notebook}</span>
                  ) : null}
                </li>
              );
            }
            const s = row.step;
            const status = statusOf.get(s.name);
            const state = stateOf(s.name);
            const after = afterOf.get(s.name) ?? [];
            const attempts = status?.attempts ?? 0;
            const label = stepLabel(status, now);
            const iterations = iterationsText(status?.iterations);
            const header = s.group ? groupKey(s.group) : null;
            return (
              <li
                {...rowProps(row.key, row.hidden)}
                role={grouped ? 'treeitem' : 'listitem'}
                {...(grouped ? { 'aria-level': s.group ? 2 : 1 } : {})}
                className={`cellpipe-step-row cellpipe-mod-${state}${
                  s.group ? ' cellpipe-mod-in-group' : ''
                }`}
                data-cellpipe-step={s.name}
                data-cellpipe-state={hookState(state)}
                title={`${s.name}: ${label}${iterations ? ` · ${iterations} iterations` : ''}${
                  status?.message ? ` (${status.message})` : ''
                }. Enter goes to its ${
                  s.group ? 'notebook cell' : state === 'failed' ? 'failing cell' : 'first cell'
                }.`}
                onClick={() => jump(s.name)}
                onKeyDown={e =>
                  onRowKey(e, {
                    enter: () => jump(s.name),
                    left: header ? () => focusRow(header) : undefined
                  })
                }
              >
                <span
                  className="cellpipe-swatch"
                  style={{ background: `var(${colors.get(s.name)})` }}
                />
                <span className="cellpipe-state-icon" aria-hidden="true" />
                <span className="cellpipe-step-name">{shortName(s)}</span>
                <span className="cellpipe-step-state">{label}</span>
                {iterations ? (
                  <span
                    className="cellpipe-step-iterations"
                    data-cellpipe-iterations={iterations}
                  >{`${iterations} iterations`}</span>
                ) : null}
                {attempts > 1 ? (
                  <span className="cellpipe-step-attempts">{`${attempts} attempts`}</span>
                ) : null}
                {after.length ? (
                  <span className="cellpipe-step-after">{`after: ${after.join(', ')}`}</span>
                ) : null}
                {state === 'failed' && status?.message ? (
                  <span className="cellpipe-step-message">{status.message}</span>
                ) : null}
              </li>
            );
          })}
        </ul>
      </section>
    );
  }

  /** The empty state of a notebook without step tags (UX §4): what steps are, how to start. */
  private renderStart(p: NotebookPipeline, implicit: boolean): JSX.Element {
    return (
      <div className="cellpipe-start">
        <p className="cellpipe-empty">
          No steps yet. cellpipe runs each step as its own process and passes variables between
          them.
          {implicit ? ' Until you split it, the whole notebook runs as one step, main.' : ''}
        </p>
        <button
          className="jp-Button jp-mod-styled jp-mod-accept cellpipe-split"
          title="Preview steps made from the notebook's markdown headings, then apply them as tags"
          onClick={() => this.actions.splitAtHeadings(p)}
        >
          Split into steps at each markdown heading
        </button>
        <button
          className="jp-Button jp-mod-styled cellpipe-one-step"
          title="Tag the notebook as one step named after it (one undoable edit, not saved)"
          onClick={() => this.actions.makeOneStep(p)}
        >
          Make the whole notebook one step
        </button>
        <button
          className="jp-Button jp-mod-styled cellpipe-tag-cell"
          title="Make the active code cell the start of a step (Set pipeline step…)"
          onClick={() => this.actions.tagActiveCell(p)}
        >
          Tag the active cell
        </button>
      </div>
    );
  }

  private selectedRuns(p: NotebookPipeline): Set<string> {
    let selected = this.selected.get(p);
    if (!selected) {
      selected = new Set();
      this.selected.set(p, selected);
    }
    // Forget runs no longer listed.
    for (const id of [...selected]) {
      if (!p.history.some(r => r.run_id === id)) {
        selected.delete(id);
      }
    }
    return selected;
  }

  private renderHistory(p: NotebookPipeline): JSX.Element {
    const now = Date.now() / 1000;
    const selected = this.selectedRuns(p);
    return (
      <section className="cellpipe-history">
        <div className="cellpipe-history-header">
          <h3 id="cellpipe-history-title">Run history</h3>
          {p.history.length > 1 ? (
            <button
              className="jp-Button jp-mod-styled cellpipe-compare-button"
              disabled={selected.size < 2}
              title={
                selected.size < 2
                  ? 'Tick two or more runs to compare them'
                  : `Compare the ${selected.size} ticked runs side by side`
              }
              onClick={() =>
                this.actions.compare(
                  p,
                  p.history.filter(r => selected.has(r.run_id)).map(r => r.run_id)
                )
              }
            >
              Compare
            </button>
          ) : null}
        </div>
        {p.history.length === 0 ? (
          <div className="cellpipe-empty">
            No runs yet. Compile and Run starts one; runs survive restarts.
          </div>
        ) : (
          <ul role="list" aria-labelledby="cellpipe-history-title">
            {p.history.map((r, index) => {
              const started = r.started_at ? new Date(r.started_at * 1000) : null;
              const stop = index === tabStop(this.runStop, p.history.length);
              return (
                <li
                  key={r.run_id}
                  role="listitem"
                  tabIndex={stop ? 0 : -1}
                  onFocus={e => {
                    if (e.target === e.currentTarget && this.runStop !== index) {
                      this.runStop = index;
                      this.update();
                    }
                  }}
                  className={`cellpipe-run-row cellpipe-mod-${r.state}${
                    p.run?.run_id === r.run_id ? ' cellpipe-mod-shown' : ''
                  }`}
                  data-cellpipe-run={r.run_id}
                  data-cellpipe-state={r.state}
                  title={started ? started.toLocaleString() : ''}
                  onClick={() => p.show(r, true)}
                  onKeyDown={e => onRowKey(e, () => p.show(r, true))}
                >
                  <input
                    type="checkbox"
                    tabIndex={stop ? 0 : -1}
                    className="cellpipe-run-select"
                    aria-label={`Select run ${r.run_id} to compare`}
                    checked={selected.has(r.run_id)}
                    onClick={e => e.stopPropagation()}
                    onChange={e => {
                      if (e.currentTarget.checked) {
                        selected.add(r.run_id);
                      } else {
                        selected.delete(r.run_id);
                      }
                      this.update();
                    }}
                  />
                  <span className="cellpipe-run-id">{r.run_id}</span>
                  <span className="cellpipe-run-state">{r.state}</span>
                  <span className="cellpipe-run-meta">
                    {[
                      r.backend,
                      // A running run's listed duration is as old as the listing: tick instead.
                      isTerminal(r.state)
                        ? formatDuration(r.duration_s)
                        : r.started_at
                          ? formatClock(now - r.started_at)
                          : '',
                      countsText(countSteps(r)),
                      paramsText(r.parameters)
                    ]
                      .filter(Boolean)
                      .join(' · ')}
                  </span>
                  <button
                    tabIndex={stop ? 0 : -1}
                    className="jp-Button jp-mod-styled cellpipe-report"
                    title={`Open the HTML report of run ${r.run_id}`}
                    onClick={e => {
                      e.stopPropagation();
                      this.actions.openReport(r.run_id);
                    }}
                  >
                    Open report
                  </button>
                </li>
              );
            })}
          </ul>
        )}
      </section>
    );
  }

  private _pipeline: NotebookPipeline | null = null;
  private backends: IBackend[] | null = null;
  private profiles: IProfileList | null = null;
  /** The profile the user picked (null: none picked yet, the server's default applies). */
  private profileChoice: string | null = null;
  private backendError = '';
  private ticker: ReturnType<typeof setInterval> | null = null;
  private readonly params = new WeakMap<NotebookPipeline, Record<string, string>>();
  private readonly paramErrors = new WeakMap<NotebookPipeline, string[]>();
  private readonly selected = new WeakMap<NotebookPipeline, Set<string>>();
  private readonly collapsed = new WeakMap<NotebookPipeline, Set<string>>();
  /** The rows holding the steps list's (by row key) and the history's Tab stop (roving tabindex). */
  private stepStop: string | null = null;
  private runStop = 0;
}

/** A history row's non-default parameters: "n_estimators=10, seed=1". */
function paramsText(parameters: Record<string, unknown> | undefined): string {
  return Object.entries(parameters ?? {})
    .map(([k, v]) => `${k}=${pythonLiteral(v)}`)
    .join(', ');
}
