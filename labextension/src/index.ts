/**
 * cellpipe's JupyterLab plugin: the Pipeline sidebar, cell decorations, the tag editor
 * (command, cell toolbar button, property-inspector form) and live run status.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, IFrame, MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IStatusBar } from '@jupyterlab/statusbar';
import { IFormRendererRegistry, LabIcon } from '@jupyterlab/ui-components';
import { ReadonlyPartialJSONObject } from '@lumino/coreutils';
import { Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { CellpipeApi } from './api';
import { CompareView } from './comparetab';
import { decorate } from './decorations';
import { finishNotice } from './notices';
import { NotebookPipeline } from './pipeline';
import { PipelineSidebar } from './sidebar';
import { splitTags, stepNameFromPath, wholeNotebookTags } from './split';
import { previewSplit } from './splitdialog';
import { IRunStateEvent, IRunStatus } from './state';
import { PipelineStatus } from './statusbar';
import { askStep } from './stepdialog';
import { makeStepField } from './stepform';
import {
  clearStep,
  notebookStepPrefix,
  parseTags,
  renameInTags,
  setStep,
  stepNameProblem,
  toggleSkip
} from './tags';

const PLUGIN_ID = 'cellpipe:plugin';
export const EVENT_SCHEMA = 'https://events.cellpipe.dev/run-state';
const CATEGORY = 'Pipeline (cellpipe)';

export const CommandIDs = {
  openSidebar: 'cellpipe:open-sidebar',
  run: 'cellpipe:run',
  setStep: 'cellpipe:set-step',
  toggleSkip: 'cellpipe:toggle-skip',
  cancel: 'cellpipe:cancel',
  resume: 'cellpipe:resume',
  openReport: 'cellpipe:open-report',
  splitAtHeadings: 'cellpipe:split-at-headings',
  oneStep: 'cellpipe:make-one-step',
  compareRuns: 'cellpipe:compare-runs',
  showLog: 'cellpipe:show-log'
};

/** How long a success toast stays (UX §2.6); failures stay until dismissed. */
const SUCCESS_TOAST_MS = 5000;

const pipelineIcon = new LabIcon({
  name: 'cellpipe:pipeline',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<circle cx="6" cy="5" r="2.5"/><circle cx="6" cy="19" r="2.5"/><circle cx="18" cy="12" r="2.5"/>' +
    '<path d="M5 7h2v10H5zM7.6 6.2l8.6 4.6-.9 1.7-8.6-4.6zM7.6 17.8l8.6-4.6-.9-1.7-8.6 4.6z"/></g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Tag notebook cells as pipeline steps, Compile and Run them, watch them live.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer, ILabShell, IFormRendererRegistry, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null,
    labShell: ILabShell | null,
    formRegistry: IFormRendererRegistry | null,
    statusBar: IStatusBar | null
  ) => {
    const api = new CellpipeApi(app.serviceManager.serverSettings);
    const pipelines = new Map<NotebookPanel, NotebookPipeline>();
    const decorationsOn = true;

    const jumpToCell = (p: NotebookPipeline, cellId: string): void => {
      const notebook = p.panel.content;
      const index = notebook.widgets.findIndex(c => c.model.id === cellId);
      if (index < 0) {
        return;
      }
      app.shell.activateById(p.panel.id);
      notebook.deselectAll();
      notebook.mode = 'command';
      notebook.activeCellIndex = index;
      // scrollToItem, not Notebook.scrollToCell: that one ends with cell.activate(), which
      // focuses the editor and so switches the notebook to edit mode.
      void notebook
        .scrollToItem(index, 'center')
        .catch(() => undefined)
        .then(() => {
          if (!notebook.isDisposed) {
            notebook.mode = 'command';
            notebook.node.focus();
          }
        });
    };

    const sidebar = new PipelineSidebar({
      jumpToCell,
      jumpToCellNumber: (p, number) => {
        const cell = p.panel.content.widgets[number - 1];
        if (cell) {
          jumpToCell(p, cell.model.id);
        }
      },
      openReport: runId => void app.commands.execute(CommandIDs.openReport, { runId }),
      splitAtHeadings: p => void app.commands.execute(CommandIDs.splitAtHeadings, { path: p.path }),
      makeOneStep: p => void app.commands.execute(CommandIDs.oneStep, { path: p.path }),
      compare: (p, runIds) =>
        void app.commands.execute(CommandIDs.compareRuns, { path: p.path, runIds }),
      tagActiveCell: p => {
        app.shell.activateById(p.panel.id);
        const notebook = p.panel.content;
        if (notebook.activeCell?.model.type !== 'code') {
          // The title is usually active in a fresh notebook: start at its first code cell.
          const first = notebook.widgets.findIndex(c => c.model.type === 'code');
          if (first < 0) {
            return;
          }
          notebook.activeCellIndex = first;
        }
        void app.commands.execute(CommandIDs.setStep);
      },
      setBackend: (p, backend) => {
        const model = p.panel.context.model;
        const meta = (model.getMetadata('cellpipe') as Record<string, unknown>) ?? {};
        model.setMetadata('cellpipe', { ...meta, backend });
      }
    });
    sidebar.title.icon = pipelineIcon;
    sidebar.title.label = labShell ? '' : 'Pipeline';
    app.shell.add(sidebar, 'left', { rank: 700 });
    restorer?.add(sidebar, 'cellpipe-sidebar');

    const refreshBackends = async (): Promise<void> => {
      try {
        sidebar.setBackends(await api.backends());
      } catch (e) {
        sidebar.setBackends(null, (e as Error).message);
      }
    };
    void refreshBackends();

    const refreshProfiles = async (): Promise<void> => {
      try {
        sidebar.setProfiles(await api.profiles());
      } catch {
        sidebar.setProfiles(null); // an older server: the select offers only "none"
      }
    };
    void refreshProfiles();

    const pipelineFor = (panel: NotebookPanel | null): NotebookPipeline | null =>
      panel ? (pipelines.get(panel) ?? null) : null;

    const status = new PipelineStatus(() => {
      app.shell.activateById(sidebar.id);
    });
    if (statusBar) {
      const activeChanged = new Signal<PipelineStatus, void>(status);
      status.contentChanged = () => activeChanged.emit();
      statusBar.registerStatusItem('cellpipe:status', {
        item: status,
        align: 'left',
        rank: 5,
        isActive: () => status.hasContent,
        activeStateChanged: activeChanged
      });
    }

    /** The toast at the end of a run this page followed (UX §2.6): one per run, none per step. */
    const notifyFinished = (p: NotebookPipeline, run: IRunStatus): void => {
      const notice = finishNotice(run);
      if (!notice) {
        return;
      }
      const name = p.path.split('/').pop() ?? p.path;
      if (notice.type === 'success') {
        Notification.success(notice.message, { autoClose: SUCCESS_TOAST_MS });
        return;
      }
      if (notice.type === 'info') {
        Notification.info(notice.message, { autoClose: SUCCESS_TOAST_MS });
        return;
      }
      const step = notice.step;
      const actions = [];
      if (step) {
        actions.push({
          label: 'Go to error',
          caption: `Select the cell of ${name} that raised`,
          callback: () => {
            const failed = run.steps.find(s => s.name === step);
            const cellId = p.failedCells.get(step) ?? failed?.cell_id;
            if (cellId && !p.isDisposed) {
              jumpToCell(p, cellId);
            }
          }
        });
        actions.push({
          label: 'Show log',
          caption: `The output of step ${step}`,
          callback: (event: MouseEvent) => {
            event.preventDefault(); // keep the toast: Go to error is still wanted
            void app.commands.execute(CommandIDs.showLog, { runId: run.run_id, step });
          }
        });
      }
      actions.push({
        label: 'Open pipeline',
        caption: 'Show the Pipeline sidebar',
        callback: () => app.shell.activateById(sidebar.id)
      });
      // A failure stays until dismissed: the user may not have watched it happen.
      Notification.error(notice.message, {
        autoClose: false,
        actions
      });
    };

    tracker.widgetAdded.connect((_, panel) => {
      void panel.context.ready.then(() => {
        if (panel.isDisposed) {
          return;
        }
        const p = new NotebookPipeline(panel, api);
        pipelines.set(panel, p);
        let frame = 0;
        // Coalesce bursts (a run's events, cells entering the viewport) into one pass.
        const redecorate = (): void => {
          if (!frame) {
            frame = requestAnimationFrame(() => {
              frame = 0;
              if (!panel.isDisposed) {
                decorate(p, decorationsOn);
              }
            });
          }
        };
        p.changed.connect(redecorate);
        p.finished.connect(notifyFinished);
        panel.content.model?.cells.changed.connect(redecorate);
        panel.content.cellInViewportChanged.connect(redecorate);
        decorate(p, decorationsOn);
        p.scheduleCompile();
        if (tracker.currentWidget === panel) {
          sidebar.pipeline = p;
          status.pipeline = p;
        }
        panel.disposed.connect(() => {
          pipelines.delete(panel);
          if (sidebar.pipeline === p) {
            sidebar.pipeline = null;
          }
          if (status.pipeline === p) {
            status.pipeline = null;
          }
          p.dispose();
        });
      });
    });
    tracker.currentChanged.connect((_, panel) => {
      // Keep the last notebook while a non-notebook has focus.
      if (panel) {
        sidebar.pipeline = pipelineFor(panel);
        status.pipeline = pipelineFor(panel);
      }
    });

    app.serviceManager.events.stream.connect((_, event) => {
      if (event.schema_id !== EVENT_SCHEMA) {
        return;
      }
      const ev = event as unknown as IRunStateEvent;
      for (const p of pipelines.values()) {
        p.onEvent(ev);
      }
    });

    const current = (): NotebookPipeline | null => pipelineFor(tracker.currentWidget);

    /** Rename a step in every cell: its `step:` tags and each `prev:` naming it (one edit). */
    const renameStep = (p: NotebookPipeline, from: string, to: string): void => {
      const model = p.panel.context.model;
      const tags = new Map<string, string[]>();
      for (let i = 0; i < model.cells.length; i++) {
        const cell = model.cells.get(i);
        tags.set(cell.id, renameInTags((cell.getMetadata('tags') as string[]) ?? [], from, to));
      }
      p.writeTags(tags);
    };

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'Show pipeline sidebar',
      caption: 'Show the steps, runs and Compile and Run of the current notebook',
      execute: () => {
        app.shell.activateById(sidebar.id);
        void refreshBackends();
        void refreshProfiles();
      }
    });

    app.commands.addCommand(CommandIDs.run, {
      label: 'Compile and Run',
      caption: 'Compile the open notebook (unsaved edits included) and run it as a pipeline',
      isEnabled: () => current() !== null && !current()!.isActive,
      execute: () => {
        app.shell.activateById(sidebar.id);
        const button = sidebar.node.querySelector<HTMLButtonElement>('button.cellpipe-run');
        button?.click();
      }
    });

    app.commands.addCommand(CommandIDs.cancel, {
      label: 'Cancel run',
      caption: 'Stop the running pipeline of the current notebook',
      isEnabled: () => !!current()?.run && current()!.isActive,
      execute: () => current()?.cancel()
    });

    app.commands.addCommand(CommandIDs.resume, {
      label: 'Resume last run',
      caption: 'Run the failed and unfinished steps again with the notebook as it is now',
      isEnabled: () => !!current()?.run && !current()!.isActive,
      execute: () => current()?.resume()
    });

    app.commands.addCommand(CommandIDs.setStep, {
      label: 'Set pipeline step…',
      caption: 'Make the selected cells a pipeline step (writes step: and prev: tags)',
      icon: pipelineIcon,
      isEnabled: () => tracker.activeCell?.model.type === 'code',
      execute: async args => {
        const panel = tracker.currentWidget;
        const p = pipelineFor(panel);
        const active = tracker.activeCell;
        if (!panel || !p || !active) {
          return;
        }
        const notebook = panel.content;
        const selected = notebook.widgets.filter(
          c => (notebook.isSelectedOrActive(c) || c === active) && c.model.type === 'code'
        );
        const tags = (active.model.getMetadata('tags') as string[]) ?? [];
        const place = p.assignment.cells.find(c => c.id === active.model.id);
        const names = p.assignment.steps.map(s => s.name);
        const currentStep = parseTags(tags).step ?? place?.step ?? '';
        const own = names.indexOf(currentStep);
        const earlier = own >= 0 ? names.slice(0, own) : names;
        let choice: { name: string; after: string[] } | null;
        if (typeof args.name === 'string') {
          if (stepNameProblem(args.name)) {
            return;
          }
          choice = { name: args.name, after: (args.after as string[]) ?? [] };
        } else {
          choice = await askStep(currentStep, parseTags(tags).after, earlier);
        }
        if (!choice) {
          return;
        }
        const allTags = notebook.widgets.map(
          c => (c.model.getMetadata('tags') as string[]) ?? []
        );
        const prefix = notebookStepPrefix(allTags);
        const model = panel.context.model;
        const ownStep = parseTags(tags).step;
        if (
          ownStep &&
          selected.length <= 1 &&
          choice.name !== ownStep &&
          names.includes(ownStep) &&
          !names.includes(choice.name)
        ) {
          // A new name for the active cell's step: rename it, dependants' `prev:` included,
          // and set the chosen dependencies, all in one edit.
          const renamed = new Map<string, string[]>();
          for (let i = 0; i < model.cells.length; i++) {
            const cell = model.cells.get(i);
            const t = renameInTags(
              (cell.getMetadata('tags') as string[]) ?? [],
              ownStep,
              choice.name
            );
            renamed.set(
              cell.id,
              cell.id === active.model.id ? setStep(t, choice.name, choice.after, prefix) : t
            );
          }
          p.writeTags(renamed);
          return;
        }
        model.sharedModel.transact(() => {
          // The first selected cell starts the step; the others continue it.
          selected.forEach((cell, i) => {
            const t = (cell.model.getMetadata('tags') as string[]) ?? [];
            cell.model.setMetadata(
              'tags',
              i === 0 ? setStep(t, choice!.name, choice!.after, prefix) : clearStep(t)
            );
          });
        });
      }
    });

    app.commands.addCommand(CommandIDs.splitAtHeadings, {
      label: 'Split into steps at markdown headings',
      caption:
        'Make a step of each section under a markdown heading (preview first; one undoable edit of the tags)',
      isEnabled: () => current() !== null,
      execute: async args => {
        const path = typeof args.path === 'string' ? args.path : null;
        const p =
          (path ? [...pipelines.values()].find(q => q.path === path) : null) ?? current();
        if (!p) {
          return;
        }
        const level = typeof args.level === 'number' ? args.level : 2;
        const fetchPlan = (l: number) => api.split(p.path, p.content(), l);
        let plan;
        try {
          plan = await fetchPlan(level);
        } catch (e) {
          Notification.error(`Cannot split the notebook: ${(e as Error).message}`, {
            autoClose: 10000
          });
          return;
        }
        const choice = await previewSplit(plan, fetchPlan);
        if (!choice || p.isDisposed) {
          return;
        }
        p.writeTags(splitTags(choice.plan, choice.names));
      }
    });

    const pipelineOf = (args: ReadonlyPartialJSONObject): NotebookPipeline | null => {
      const path = typeof args.path === 'string' ? args.path : null;
      return (path ? [...pipelines.values()].find(q => q.path === path) : null) ?? current();
    };

    app.commands.addCommand(CommandIDs.oneStep, {
      label: 'Make the whole notebook one step',
      caption:
        'Tag a notebook without steps as one step named after it (one undoable edit of the tags, not saved)',
      // On a notebook with steps this would merge them: that is the tag editor's job.
      isEnabled: args => {
        const p = pipelineOf(args);
        return p !== null && !p.tagged;
      },
      execute: args => {
        const p = pipelineOf(args);
        if (!p || p.tagged) {
          return;
        }
        const cells = p.cellInfos();
        const tags = wholeNotebookTags(
          cells,
          stepNameFromPath(p.path),
          notebookStepPrefix(cells.map(c => c.tags))
        );
        if (!tags.size) {
          Notification.info('This notebook has no code cell to make a step of.', {
            autoClose: 5000
          });
          return;
        }
        p.writeTags(tags);
      }
    });

    const backendOf = (p: NotebookPipeline): string => {
      const meta = p.panel.context.model.getMetadata('cellpipe') as { backend?: string } | undefined;
      return meta?.backend ?? 'local';
    };

    app.commands.addCommand(CommandIDs.compareRuns, {
      label: 'Compare runs',
      caption:
        "Parameters, metrics and step states of two or more runs side by side (default: the notebook's last two)",
      isEnabled: () => (current()?.history.length ?? 0) >= 2,
      execute: async args => {
        const path = typeof args.path === 'string' ? args.path : null;
        const p =
          (path ? [...pipelines.values()].find(q => q.path === path) : null) ?? current();
        if (!p) {
          return;
        }
        const ids = Array.isArray(args.runIds)
          ? (args.runIds as string[])
          : p.history.slice(0, 2).map(r => r.run_id);
        if (ids.length < 2) {
          return;
        }
        let runs: IRunStatus[];
        let history: IRunStatus[];
        try {
          // Full descriptions: the list carries no steps or metrics.
          history = await Promise.all(p.history.map(r => api.getRun(r.run_id)));
          const listed = ids.map(id => history.find(r => r.run_id === id));
          runs = listed.every(r => r !== undefined)
            ? (listed as IRunStatus[])
            : await Promise.all(ids.map(id => api.getRun(id)));
        } catch (e) {
          Notification.error(`Cannot compare the runs: ${(e as Error).message}`, {
            autoClose: 10000
          });
          return;
        }
        const defaults: Record<string, string> = {};
        for (const param of p.compiled?.parameters ?? []) {
          defaults[param.name] = param.expression;
        }
        const name = p.path.split('/').pop() ?? p.path;
        const view = new CompareView({
          runs,
          history,
          defaults,
          notebook: name,
          actions: {
            rerun: run => {
              if (p.isDisposed || p.isActive) {
                return;
              }
              app.shell.activateById(sidebar.id);
              const backend = backendOf(p);
              void p.compileAndRun(
                backend,
                { ...(run.parameters ?? {}) },
                sidebar.runProfile(backend)
              );
            },
            applyOutputs: run => {
              if (p.isDisposed) {
                return;
              }
              app.shell.activateById(p.panel.id);
              p.show(run, true);
            }
          }
        });
        const id = 'cellpipe-compare';
        Array.from(app.shell.widgets('main'))
          .find(w => w.id === id)
          ?.dispose();
        const widget = new MainAreaWidget({ content: view });
        widget.id = id;
        widget.title.label = `Compare runs · ${name}`;
        widget.title.icon = pipelineIcon;
        widget.title.closable = true;
        app.shell.add(widget, 'main');
        app.shell.activateById(id);
      }
    });

    app.commands.addCommand(CommandIDs.toggleSkip, {
      label: 'Toggle skip for selected cells',
      caption: 'Leave the selected cells out of the pipeline (tag skip), or put them back',
      isEnabled: () => tracker.activeCell?.model.type === 'code',
      execute: () => {
        const panel = tracker.currentWidget;
        if (!panel) {
          return;
        }
        const notebook = panel.content;
        panel.context.model.sharedModel.transact(() => {
          for (const cell of notebook.widgets) {
            if (notebook.isSelectedOrActive(cell) && cell.model.type === 'code') {
              const t = (cell.model.getMetadata('tags') as string[]) ?? [];
              cell.model.setMetadata('tags', toggleSkip(t));
            }
          }
        });
      }
    });

    app.commands.addCommand(CommandIDs.openReport, {
      label: args => (args.runId ? `Open report of run ${args.runId}` : 'Open run report'),
      caption: 'Open the HTML report of a run in a tab',
      execute: args => {
        const runId = String(args.runId ?? current()?.run?.run_id ?? '');
        if (!runId) {
          return;
        }
        const id = `cellpipe-report-${runId}`;
        const existing = Array.from(app.shell.widgets('main')).find(w => w.id === id);
        if (existing) {
          app.shell.activateById(id);
          return;
        }
        const frame = new IFrame({
          sandbox: ['allow-scripts', 'allow-same-origin', 'allow-popups']
        });
        frame.url = api.reportUrl(runId);
        const widget = new MainAreaWidget({ content: frame });
        widget.id = id;
        widget.title.label = `Report ${runId}`;
        widget.title.icon = pipelineIcon;
        widget.title.closable = true;
        app.shell.add(widget, 'main');
      }
    });

    app.commands.addCommand(CommandIDs.showLog, {
      label: args => (args.step ? `Show log of step ${args.step}` : 'Show step log'),
      caption: "A step's output (stdout and stderr) as the engine logged it",
      execute: async args => {
        const runId = String(args.runId ?? current()?.run?.run_id ?? '');
        const step = String(args.step ?? '');
        if (!runId || !step) {
          return;
        }
        const id = `cellpipe-log-${runId}-${step}`;
        if (Array.from(app.shell.widgets('main')).some(w => w.id === id)) {
          app.shell.activateById(id);
          return;
        }
        let text: string;
        try {
          text = await api.stepLog(runId, step);
        } catch (e) {
          Notification.error(`Cannot show the log of ${step}: ${(e as Error).message}`, {
            autoClose: 10000
          });
          return;
        }
        const content = new Widget({ node: document.createElement('pre') });
        content.addClass('cellpipe-log');
        content.node.textContent = text;
        const widget = new MainAreaWidget({ content });
        widget.id = id;
        widget.title.label = `Log ${step} · ${runId}`;
        widget.title.icon = pipelineIcon;
        widget.title.closable = true;
        app.shell.add(widget, 'main');
      }
    });

    for (const command of [
      CommandIDs.openSidebar,
      CommandIDs.run,
      CommandIDs.setStep,
      CommandIDs.toggleSkip,
      CommandIDs.splitAtHeadings,
      CommandIDs.oneStep,
      CommandIDs.compareRuns,
      CommandIDs.cancel,
      CommandIDs.resume
    ]) {
      palette?.addItem({ command, category: CATEGORY });
    }

    formRegistry?.addRenderer(`${PLUGIN_ID}.step-form`, {
      fieldRenderer: makeStepField({
        steps: () => {
          const p = current();
          const cells = tracker.currentWidget?.content.widgets ?? [];
          return {
            names: p?.assignment.steps.map(s => s.name) ?? [],
            prefix: notebookStepPrefix(
              cells.map(c => (c.model.getMetadata('tags') as string[]) ?? [])
            )
          };
        },
        rename: (from, to) => {
          const p = current();
          if (p) {
            renameStep(p, from, to);
          }
        }
      })
    });
  }
};

export default plugin;
