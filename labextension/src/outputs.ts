/**
 * Write a step's outputs into the open notebook's model, matched by cell id. Only the model
 * changes (the notebook turns dirty); the file on disk changes when the user saves.
 */
import { ICodeCellModel } from '@jupyterlab/cells';
import * as nbformat from '@jupyterlab/nbformat';
import { INotebookModel } from '@jupyterlab/notebook';
import { JSONExt } from '@lumino/coreutils';

import { IStepOutputs } from './api';

/** Provenance recorded in each written cell's `metadata.cellpipe`. */
export interface IProvenance {
  run_id: string;
  step: string;
  state: string;
}

/**
 * Apply `data` to the cells of `model` whose ids it names. `ownCells` are the step's own
 * cells; cells outside it (the imports/functions prelude every step runs) are written only
 * when no earlier step of this run wrote them. Returns the ids written.
 */
export function applyStepOutputs(
  model: INotebookModel,
  data: IStepOutputs,
  state: string,
  ownCells: ReadonlySet<string>
): string[] {
  const targets: { cell: ICodeCellModel; provenance: IProvenance; count: number | null }[] = [];
  for (let i = 0; i < model.cells.length; i++) {
    const cell = model.cells.get(i);
    const record = data.cells[cell.id];
    if (cell.type !== 'code' || !record) {
      continue;
    }
    const previous = cell.getMetadata('cellpipe') as IProvenance | undefined;
    if (!ownCells.has(cell.id) && previous?.run_id === data.run) {
      continue;
    }
    const codeCell = cell as ICodeCellModel;
    const outputs = record.outputs as nbformat.IOutput[];
    // Through the cell's own output model, the one its view renders, and outside any
    // notebook transaction. Setting the shared model's outputs in a transaction reaches
    // that output model as "append the new outputs, then delete the old ones"; appending
    // merges a new stdout stream into the old one, so the delete empties the cell.
    if (!JSONExt.deepEqual(codeCell.outputs.toJSON() as any, outputs as any)) {
      codeCell.outputs.fromJSON(outputs);
    }
    targets.push({
      cell: codeCell,
      count: record.execution_count ?? null,
      provenance: {
        run_id: data.run,
        step: ownCells.has(cell.id) ? data.step : (previous?.step ?? data.step),
        state: record.status === 'error' ? 'failed' : state
      }
    });
  }
  model.sharedModel.transact(() => {
    for (const { cell, count, provenance } of targets) {
      cell.executionCount = count;
      cell.setMetadata('cellpipe', provenance);
    }
  });
  return targets.map(t => t.cell.id);
}

/** The cell of a failed step that raised, by its recorded status. */
export function errorCell(data: IStepOutputs): string | null {
  for (const [id, record] of Object.entries(data.cells)) {
    if (record.status === 'error') {
      return id;
    }
  }
  return null;
}
