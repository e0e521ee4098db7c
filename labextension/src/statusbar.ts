/**
 * The status bar item (UX §2.8): the current notebook's pipeline in a few words, live,
 * outside the sidebar. A click opens the sidebar on that run.
 */
import { Widget } from '@lumino/widgets';

import { statusBarText } from './notices';
import { NotebookPipeline } from './pipeline';
import { isTerminal } from './state';

export class PipelineStatus extends Widget {
  constructor(private readonly openSidebar: () => void) {
    super();
    this.id = 'cellpipe-statusbar';
    this.addClass('cellpipe-statusbar');
    this.node.setAttribute('role', 'button');
    this.node.tabIndex = 0;
    this.node.addEventListener('click', () => this.openSidebar());
    this.node.addEventListener('keydown', e => {
      if (e.key === 'Enter' || e.key === ' ') {
        e.preventDefault();
        this.openSidebar();
      }
    });
  }

  /** The notebook whose pipeline is shown; null hides the item. */
  get pipeline(): NotebookPipeline | null {
    return this._pipeline;
  }

  set pipeline(p: NotebookPipeline | null) {
    if (p === this._pipeline) {
      return;
    }
    this._pipeline?.changed.disconnect(this.update, this);
    this._pipeline = p;
    p?.changed.connect(this.update, this);
    this.update();
  }

  /** Whether the last render had anything to show (the status bar hides the item otherwise). */
  get hasContent(): boolean {
    return this.shown;
  }

  protected onUpdateRequest(): void {
    const shown = this.render();
    this.node.textContent = shown?.text ?? '';
    this.node.title = shown?.title ?? '';
    if (shown) {
      this.node.dataset.cellpipeState = shown.state;
    } else {
      delete this.node.dataset.cellpipeState;
    }
    // The clock moves while a run goes on.
    const running = !!this._pipeline?.run && !isTerminal(this._pipeline.run.state);
    if (running && this.timer === null) {
      this.timer = setInterval(() => this.update(), 1000);
    } else if (!running && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    // Only on a change: the status bar re-checks and re-lays out on each call, and showing
    // this widget requests another update.
    if (!!shown !== this.shown) {
      this.shown = !!shown;
      this.contentChanged();
    }
  }

  /** Told when the item gets or loses something to show, so the status bar shows or hides it. */
  contentChanged: () => void = () => undefined;

  dispose(): void {
    if (this.timer !== null) {
      clearInterval(this.timer);
    }
    super.dispose();
  }

  private render(): ReturnType<typeof statusBarText> {
    const p = this._pipeline;
    if (!p || p.isDisposed) {
      return null;
    }
    const errors = p.problems.filter(d => d.severity === 'error').length;
    return statusBarText(p.run, errors, p.steps.length > 0, Date.now() / 1000);
  }

  private _pipeline: NotebookPipeline | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private shown = false;
}
