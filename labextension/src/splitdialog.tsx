/**
 * The preview of "Split into steps at headings": the steps the split would create (name,
 * heading, cells), each name editable and checked live, the heading level changeable. The
 * dialog only chooses; the caller applies the tags (one undoable edit, nothing saved).
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { cellRanges, ISplitPlan, splitNameProblems } from './split';

export interface ISplitChoice {
  plan: ISplitPlan;
  names: string[];
}

type FetchPlan = (level: number) => Promise<ISplitPlan>;

const LEVELS = [1, 2, 3, 4, 5, 6];

class SplitPreview extends ReactWidget implements Dialog.IBodyWidget<ISplitChoice | null> {
  constructor(
    private plan: ISplitPlan,
    private readonly fetchPlan: FetchPlan
  ) {
    super();
    this.addClass('cellpipe-split-preview');
    this.names = plan.steps.map(s => s.name);
  }

  getValue(): ISplitChoice | null {
    if (this.loading || !this.plan.steps.length || splitNameProblems(this.names).length) {
      return null;
    }
    return { plan: this.plan, names: this.names.map(n => n.trim()) };
  }

  protected onAfterAttach(): void {
    this.update();
  }

  protected onUpdateRequest(msg: Parameters<ReactWidget['onUpdateRequest']>[0]): void {
    super.onUpdateRequest(msg);
    // The accept button lives outside this body: keep it in step with the names.
    const accept = this.node
      .closest('.jp-Dialog-content')
      ?.querySelector<HTMLButtonElement>('.jp-mod-accept');
    if (accept) {
      accept.disabled = this.getValue() === null;
    }
  }

  private async changeLevel(level: number): Promise<void> {
    this.loading = true;
    this.error = '';
    this.update();
    try {
      this.plan = await this.fetchPlan(level);
      this.names = this.plan.steps.map(s => s.name);
    } catch (e) {
      this.error = (e as Error).message;
    }
    this.loading = false;
    this.update();
  }

  render(): JSX.Element {
    const problems = splitNameProblems(this.names);
    const imports = this.plan.imports.length;
    return (
      <div>
        <label className="cellpipe-field">
          <span>Split at headings of level</span>
          <select
            aria-label="Heading level"
            value={this.plan.level}
            disabled={this.loading}
            onChange={e => void this.changeLevel(Number(e.currentTarget.value))}
          >
            {LEVELS.map(l => (
              <option key={l} value={l}>
                {`${l} and above (${'#'.repeat(l)})`}
              </option>
            ))}
          </select>
        </label>
        {this.error ? (
          <div className="cellpipe-error" role="alert">
            {this.error}
          </div>
        ) : null}
        {this.plan.steps.length ? (
          <ol className="cellpipe-split-steps" aria-label="Steps the split creates">
            {this.plan.steps.map((s, i) => (
              <li key={`${this.plan.level}-${i}`} data-cellpipe-split-step={s.name}>
                <input
                  className="jp-mod-styled"
                  name={`split-name-${i}`}
                  aria-label={`Name of step ${i + 1} (${s.heading ?? 'cells before the first heading'})`}
                  aria-invalid={problems[i] ? true : undefined}
                  value={this.names[i] ?? ''}
                  onChange={e => {
                    this.names[i] = e.currentTarget.value;
                    this.update();
                  }}
                />
                <span className="cellpipe-split-meta">
                  {`${cellRanges(s.numbers)} · ${s.heading ? `“${s.heading}”` : 'before the first heading'}`}
                </span>
                {problems[i] ? (
                  <div className="cellpipe-error" role="alert">
                    {problems[i]}
                  </div>
                ) : null}
              </li>
            ))}
          </ol>
        ) : (
          <div className="cellpipe-empty">
            No code cells to split: every code cell only imports, or the notebook has none.
          </div>
        )}
        <div className="cellpipe-split-note">
          {imports
            ? `${imports} cell${imports === 1 ? '' : 's'} that only import${
                imports === 1 ? 's' : ''
              } become${imports === 1 ? 's' : ''} imports, run at the start of every step. `
            : ''}
          Edges between the steps come from the data they share. Apply changes only tags: it
          is one edit (undo reverts it) and the notebook is not saved.
        </div>
      </div>
    );
  }

  private names: string[];
  private loading = false;
  private error = '';
}

/** Show the preview of `plan`; the user's choice, or null when cancelled. */
export async function previewSplit(
  plan: ISplitPlan,
  fetchPlan: FetchPlan
): Promise<ISplitChoice | null> {
  const result = await showDialog<ISplitChoice | null>({
    title: 'Split into steps at headings',
    body: new SplitPreview(plan, fetchPlan),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Apply' })],
    focusNodeSelector: 'input[name="split-name-0"]'
  });
  return result.button.accept ? (result.value ?? null) : null;
}
