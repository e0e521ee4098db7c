/**
 * Everything the sidebar and the decorations show about one open notebook: its steps (from
 * tags at once, refined by the server's debounced compile), compile problems, the shown run
 * (followed live) and the notebook's run history.
 */
import { NotebookPanel } from '@jupyterlab/notebook';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, CellpipeApi, IDiagnostic, IPipeline } from './api';
import { assignColors } from './colors';
import { IReference, IShownStep, notebookReferences, shownSteps } from './groups';
import { applyStepOutputs, errorCell } from './outputs';
import { assignSteps, IAssignment, ICellInfo, parseTags } from './tags';
import {
  applyEvent,
  IRunStateEvent,
  IRunStatus,
  isTerminal,
  keepEarliestStart,
  newlyFinished,
  upsertRun
} from './state';

const COMPILE_DEBOUNCE_MS = 500;

export type Phase = 'idle' | 'compiling' | 'starting' | 'following';

export class NotebookPipeline {
  constructor(
    readonly panel: NotebookPanel,
    private readonly api: CellpipeApi
  ) {
    this.refreshAssignment();
    const model = panel.context.model;
    model.contentChanged.connect(this.onContentChanged, this);
    model.metadataChanged.connect(this.onContentChanged, this);
    this.poll = new Poll({
      auto: false,
      factory: () => this.refreshRun(),
      frequency: { interval: 1000, backoff: false, max: 1000 },
      name: 'cellpipe:run-status',
      standby: 'never'
    });
    void this.loadHistory(true);
  }

  /** Fires whenever anything shown changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Fires once when the run this notebook follows live ends (not for runs opened ended). */
  get finished(): ISignal<this, IRunStatus> {
    return this._finished;
  }

  get path(): string {
    return this.panel.context.path;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  assignment: IAssignment = { cells: [], steps: [] };
  /**
   * True when some code cell carries a step tag or stands for another notebook (else the
   * sidebar offers the split).
   */
  tagged = false;
  /** The cells that stand for another notebook (`notebook:NAME`, `%run x.ipynb`). */
  references: IReference[] = [];
  compiled: IPipeline | null = null;
  problems: IDiagnostic[] = [];
  /** Message of a failure that is not a list of problems (server missing, 503, ...). */
  error = '';
  phase: Phase = 'idle';
  run: IRunStatus | null = null;
  history: IRunStatus[] = [];
  /** Per step of the shown run: the cell that raised, once its outputs arrived. */
  failedCells = new Map<string, string>();

  dispose(): void {
    this._disposed = true;
    this.poll.dispose();
    if (this.compileTimer) {
      clearTimeout(this.compileTimer);
    }
    Signal.clearData(this);
  }

  /** Edges between steps: explicit `prev:` from tags (known at once) and the server's inferred ones. */
  get edges(): { source: string; target: string; kind: string }[] {
    return [
      ...this.assignment.steps.flatMap(s =>
        s.after.map(a => ({ source: a, target: s.name, kind: 'prev' }))
      ),
      ...(this.compiled?.edges ?? [])
    ];
  }

  /**
   * The steps the sidebar lists: from the tags at once, or, for a composed notebook, from
   * the compile (only the server reads the referenced notebooks), each with its part.
   */
  get steps(): IShownStep[] {
    return shownSteps(this.assignment, this.compiled?.steps, this.references.length > 0);
  }

  /** Colour variable per step: one answer for the DAG, the step rows and the cell bands. */
  stepColors(): Map<string, string> {
    return assignColors(this.steps.map(s => s.name), this.edges);
  }

  /** The notebook's current content, unsaved edits included. */
  content(): unknown {
    return this.panel.context.model.toJSON();
  }

  /**
   * Write new tags into cells (by id) as one edit of the model: one undo step reverts all of
   * it, the notebook turns dirty, nothing is saved. Returns how many cells changed.
   */
  writeTags(tags: ReadonlyMap<string, readonly string[]>): number {
    const model = this.panel.context.model;
    const shared = model.sharedModel;
    // The notebook's undo manager (ISharedNotebook does not declare it).
    const undo = (shared as unknown as { undoManager?: { stopCapturing(): void } }).undoManager;
    let changed = 0;
    // Its own undo item: not merged with an edit made just before or after.
    undo?.stopCapturing();
    shared.transact(() => {
      for (let i = 0; i < model.cells.length; i++) {
        const cell = model.cells.get(i);
        const next = tags.get(cell.id);
        if (!next) {
          continue;
        }
        const current = (cell.getMetadata('tags') as string[] | undefined) ?? [];
        if (JSON.stringify(current) === JSON.stringify(next)) {
          continue;
        }
        if (next.length) {
          cell.setMetadata('tags', [...next]);
        } else {
          cell.deleteMetadata('tags');
        }
        changed++;
      }
    });
    undo?.stopCapturing();
    return changed;
  }

  /** Compile now (on Compile and Run) or after the debounce (on edits). */
  scheduleCompile(): void {
    if (this.compileTimer) {
      clearTimeout(this.compileTimer);
    }
    this.compileTimer = setTimeout(() => {
      this.compileTimer = null;
      void this.compile();
    }, COMPILE_DEBOUNCE_MS);
  }

  async compile(): Promise<boolean> {
    const seq = ++this.compileSeq;
    try {
      const pipeline = await this.api.compile(this.path, this.content());
      if (seq !== this.compileSeq || this._disposed) {
        return true;
      }
      this.compiled = pipeline;
      this.problems = pipeline.diagnostics;
      this.error = '';
      this.emit();
      return true;
    } catch (e) {
      if (seq !== this.compileSeq || this._disposed) {
        return false;
      }
      this.reportError(e);
      return false;
    }
  }

  /** Compile the open content and, if it compiles, start a run of it. */
  async compileAndRun(
    backend: string,
    parameters: Record<string, unknown>,
    profile: string | null = null
  ): Promise<void> {
    if (this.isActive) {
      return;
    }
    this.phase = 'compiling';
    this.emit();
    if (this.compileTimer) {
      clearTimeout(this.compileTimer);
      this.compileTimer = null;
    }
    const ok = await this.compile();
    if (!ok || this.problems.some(p => p.severity === 'error')) {
      this.phase = 'idle';
      this.emit();
      return;
    }
    this.phase = 'starting';
    this.emit();
    try {
      const run = await this.api.createRun(
        this.path,
        this.content(),
        backend,
        parameters,
        profile
      );
      this.show(run, false);
    } catch (e) {
      this.phase = 'idle';
      this.reportError(e);
    }
  }

  async cancel(): Promise<void> {
    if (!this.run) {
      return;
    }
    try {
      this.setRun(await this.api.cancel(this.run.run_id));
    } catch (e) {
      this.reportError(e);
    }
  }

  /** Resume the shown run with the notebook's current content (the fix included). */
  async resume(): Promise<void> {
    if (!this.run || this.isActive) {
      return;
    }
    this.phase = 'starting';
    this.emit();
    try {
      const run = await this.api.resume(this.run.run_id, this.content());
      this.show(run, false);
    } catch (e) {
      this.phase = 'idle';
      this.reportError(e);
    }
  }

  /** Show a run: its states now, its outputs as its steps finish (all at once if it ended). */
  show(run: IRunStatus, fromHistory: boolean): void {
    this.applied.clear();
    this.failedCells.clear();
    this.run = null;
    this.error = '';
    this.setRun(run);
    if (fromHistory) {
      void this.refreshRun();
    }
  }

  get isActive(): boolean {
    return (
      this.phase === 'compiling' ||
      this.phase === 'starting' ||
      (this.run !== null && !isTerminal(this.run.state))
    );
  }

  /** A live event from the server's event bus. */
  onEvent(ev: IRunStateEvent): void {
    if (this.run && ev.run_id === this.run.run_id) {
      this.setRun(applyEvent(this.run, ev));
      if (!ev.step && isTerminal(ev.state)) {
        // Events carry states, not everything the status derives (a foreach step's
        // iterations, final durations): a run that ended between two polls is read once more.
        void this.refreshRun();
      }
    } else if (!ev.step && ev.path === this.path) {
      void this.loadHistory(false);
    }
  }

  async refreshRun(): Promise<void> {
    if (!this.run || this._disposed) {
      return;
    }
    try {
      this.setRun(await this.api.getRun(this.run.run_id));
    } catch (e) {
      this.reportError(e);
    }
  }

  async loadHistory(attach: boolean): Promise<void> {
    try {
      const list = await this.api.listRuns(this.path);
      if (this._disposed) {
        return;
      }
      // The shown run's live copy is newer than the index; a run that just started may not
      // be indexed yet.
      this.history = this.run
        ? upsertRun(list.runs, this.run, !isTerminal(this.run.state))
        : list.runs;
      // Reopening a notebook (or reloading the page) mid-run follows that run again.
      const latest = list.runs[0];
      if (attach && !this.run && latest && !isTerminal(latest.state)) {
        this.show(latest, true);
      }
      this.emit();
    } catch (e) {
      this.reportError(e);
    }
  }

  private setRun(incoming: IRunStatus): void {
    if (this._disposed) {
      return;
    }
    const prev = this.run;
    const next = keepEarliestStart(prev, incoming);
    this.run = next;
    // Listed from its start and kept current, so the history never lags the status line.
    this.history = upsertRun(this.history, next);
    this.phase = isTerminal(next.state) ? 'idle' : 'following';
    if (isTerminal(next.state)) {
      this.poll.stop();
      if (!prev || !isTerminal(prev.state)) {
        void this.loadHistory(false);
      }
    } else if (this.poll.isDisposed === false) {
      void this.poll.start();
    }
    for (const step of next.steps) {
      // A resumed run starts its failed steps again: their next end brings new outputs.
      if (!isTerminal(step.state)) {
        this.applied.delete(`${next.run_id}/${step.name}`);
      }
    }
    for (const step of newlyFinished(prev, next)) {
      void this.fetchOutputs(next.run_id, step.name, step.state);
    }
    this.emit();
    if (prev?.run_id === next.run_id && !isTerminal(prev.state) && isTerminal(next.state)) {
      this._finished.emit(next);
    }
  }

  private async fetchOutputs(runId: string, step: string, state: string): Promise<void> {
    const key = `${runId}/${step}`;
    if (this.applied.has(key) || state === 'skipped' || state === 'pending') {
      return;
    }
    this.applied.add(key);
    try {
      const data = await this.api.outputs(runId, step);
      if (this._disposed || this.run?.run_id !== runId || !this.panel.context.model) {
        return;
      }
      const own = new Set(this.assignment.steps.find(s => s.name === step)?.cells ?? []);
      const compiledOwn = this.compiled?.steps.find(s => s.name === step)?.cells ?? [];
      compiledOwn.forEach(id => own.add(id));
      applyStepOutputs(this.panel.context.model, data, state, own);
      const raised = errorCell(data);
      if (raised) {
        this.failedCells.set(step, raised);
      }
      this.emit();
    } catch (e) {
      this.applied.delete(key);
      this.reportError(e);
    }
  }

  private onContentChanged(): void {
    const before = JSON.stringify(this.tagSignature);
    this.refreshAssignment();
    if (JSON.stringify(this.tagSignature) !== before) {
      this.emit();
      this.scheduleCompile();
    }
  }

  /** Every cell of the open content, as the tag logic reads it. */
  cellInfos(): ICellInfo[] {
    const model = this.panel.context.model;
    const cells: ICellInfo[] = [];
    for (let i = 0; i < model.cells.length; i++) {
      const cell = model.cells.get(i);
      cells.push({
        id: cell.id,
        type: cell.type,
        source: cell.sharedModel.getSource(),
        tags: (cell.getMetadata('tags') as string[] | undefined) ?? []
      });
    }
    return cells;
  }

  private refreshAssignment(): void {
    const cells = this.cellInfos();
    this.assignment = assignSteps(cells);
    this.references = notebookReferences(cells);
    this.tagged =
      this.references.length > 0 ||
      cells.some(c => c.type === 'code' && parseTags(c.tags).step !== null);
    // What the pipeline's shape depends on: tags, cell order and which cells are empty.
    this.tagSignature = cells.map(c => [c.id, c.type, c.tags, c.source.trim() === '']);
  }

  private reportError(e: unknown): void {
    if (e instanceof ApiError && e.problems.length) {
      this.problems = e.problems;
      this.error = '';
    } else {
      this.error = (e as Error).message ?? String(e);
    }
    this.emit();
  }

  private emit(): void {
    if (!this._disposed) {
      this._changed.emit();
    }
  }

  private readonly poll: Poll;
  private readonly applied = new Set<string>();
  private compileTimer: ReturnType<typeof setTimeout> | null = null;
  private compileSeq = 0;
  private tagSignature: unknown[] = [];
  private _disposed = false;
  private readonly _changed = new Signal<this, void>(this);
  private readonly _finished = new Signal<this, IRunStatus>(this);
}
