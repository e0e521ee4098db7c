/**
 * Step bands and badges on notebook cells. Attributes go on `cell.node` and the badge is a
 * small Lumino widget in the cell's own layout; the editor's DOM is never touched. Applied to
 * every cell widget (attached or not), so cells that windowing renders later already carry
 * them.
 */
import { Cell } from '@jupyterlab/cells';
import { PanelLayout, Widget } from '@lumino/widgets';

import { composedPlaces, groupSummary, stepsOfPart } from './groups';
import { NotebookPipeline } from './pipeline';
import { hookState, ShownState, STATES, stepLabel } from './state';

const ROLE_WORDS: Record<string, string> = {
  imports: 'imports — prepended to every step',
  functions: 'functions — prepended to every step',
  parameters: 'parameters',
  skip: 'not in pipeline'
};

class StepChip extends Widget {
  constructor() {
    super();
    this.addClass('cellpipe-chip');
  }

  set(text: string, title: string): void {
    if (this.node.textContent !== text) {
      this.node.textContent = text;
    }
    this.node.title = title;
  }
}

const chips = new WeakMap<Cell, StepChip>();

function chipFor(cell: Cell): StepChip {
  let chip = chips.get(cell);
  if (!chip || chip.isDisposed) {
    chip = new StepChip();
    chips.set(cell, chip);
    // Right after the cell header, above the input.
    (cell.layout as PanelLayout).insertWidget(1, chip);
  }
  return chip;
}

function removeChip(cell: Cell): void {
  const chip = chips.get(cell);
  if (chip) {
    chip.dispose();
    chips.delete(cell);
  }
}

const STATE_CLASSES = ['idle', ...STATES].map(s => `cellpipe-mod-${s}`);

/** Decorate every cell of the pipeline's notebook for its current steps and shown run. */
export function decorate(pipeline: NotebookPipeline, enabled: boolean): void {
  const notebook = pipeline.panel.content;
  const composed = pipeline.references.length > 0;
  const places = new Map(
    (composed
      ? composedPlaces(pipeline.assignment.cells, pipeline.references, pipeline.compiled?.cells)
      : pipeline.assignment.cells
    ).map(p => [p.id, p])
  );
  const partOf = new Map(pipeline.references.map(r => [r.cellId, r.part]));
  const shown = pipeline.steps;
  const colors = pipeline.stepColors();
  const afterByStep = new Map<string, string[]>();
  for (const s of pipeline.assignment.steps) {
    afterByStep.set(s.name, [...s.after]);
  }
  for (const s of pipeline.compiled?.steps ?? []) {
    const list = afterByStep.get(s.name);
    if (list) {
      for (const a of s.after) {
        if (!list.includes(a)) {
          list.push(a);
        }
      }
    }
  }
  const run = pipeline.run;
  const now = Date.now() / 1000;
  for (const cell of notebook.widgets) {
    const node = cell.node;
    const place = cell.model ? places.get(cell.model.id) : undefined;
    node.classList.remove('cellpipe-mod-step', 'cellpipe-mod-role', ...STATE_CLASSES);
    if (!enabled || !place) {
      node.removeAttribute('data-cellpipe-step');
      node.removeAttribute('data-cellpipe-state');
      node.removeAttribute('data-cellpipe-role');
      node.style.removeProperty('--cellpipe-step-color');
      removeChip(cell);
      continue;
    }
    if (place.step) {
      const status = run?.steps.find(s => s.name === place.step);
      const state: ShownState = status ? (status.state as ShownState) : 'idle';
      node.setAttribute('data-cellpipe-step', place.step);
      node.setAttribute('data-cellpipe-state', hookState(state));
      node.removeAttribute('data-cellpipe-role');
      node.classList.add('cellpipe-mod-step', `cellpipe-mod-${state}`);
      node.style.setProperty('--cellpipe-step-color', `var(${colors.get(place.step)})`);
      if (place.first) {
        const after = afterByStep.get(place.step) ?? [];
        const label = stepLabel(status, now);
        const parts = [place.step, label];
        if (run && status) {
          parts.push(`run ${run.run_id}`);
        }
        if (after.length) {
          parts.push(`after: ${after.join(', ')}`);
        }
        chipFor(cell).set(parts.join(' · '), `Pipeline step ${place.step}`);
      } else {
        removeChip(cell);
      }
      continue;
    }
    node.removeAttribute('data-cellpipe-step');
    node.removeAttribute('data-cellpipe-state');
    node.style.removeProperty('--cellpipe-step-color');
    const part = partOf.get(place.id);
    if (place.role === 'notebook' && part) {
      // The cell that stands for a notebook: what it brings, and how its steps are doing.
      const own = stepsOfPart(shown, part);
      const states = own.map(
        s => (run?.steps.find(r => r.name === s.name)?.state as string | undefined) ?? 'idle'
      );
      const text = own.length ? `${part} · ${groupSummary(states)}` : part;
      node.setAttribute('data-cellpipe-role', 'notebook');
      node.classList.add('cellpipe-mod-role');
      chipFor(cell).set(text, `Stands for the notebook ${own[0]?.notebook ?? part}`);
      chipFor(cell).node.setAttribute('data-cellpipe-role', 'notebook');
      continue;
    }
    const word = ROLE_WORDS[place.role] ?? (place.metrics ? 'metrics' : '');
    if (word) {
      node.setAttribute('data-cellpipe-role', place.role);
      node.classList.add('cellpipe-mod-role');
      chipFor(cell).set(word, `Pipeline role: ${place.role}`);
      chipFor(cell).node.setAttribute('data-cellpipe-role', place.role);
    } else {
      node.removeAttribute('data-cellpipe-role');
      removeChip(cell);
    }
  }
}
