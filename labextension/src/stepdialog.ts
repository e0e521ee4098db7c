/**
 * The "Set pipeline step…" dialog: a step name (checked live against DESIGN's rule) and the
 * earlier steps this one runs after. An invalid name disables the accept button, so nothing
 * is written.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { stepNameProblem } from './tags';

export interface IStepChoice {
  name: string;
  after: string[];
}

class StepDialogBody extends Widget implements Dialog.IBodyWidget<IStepChoice> {
  constructor(current: string, currentAfter: readonly string[], earlier: readonly string[]) {
    super();
    this.addClass('cellpipe-step-dialog');
    const label = document.createElement('label');
    label.textContent = 'Step name';
    this.input = document.createElement('input');
    this.input.className = 'jp-mod-styled';
    this.input.setAttribute('aria-label', 'Step name');
    this.input.value = current;
    this.input.placeholder = 'e.g. train';
    label.appendChild(this.input);
    this.alert = document.createElement('div');
    this.alert.className = 'cellpipe-error';
    this.alert.setAttribute('role', 'alert');
    this.node.append(label, this.alert);
    if (earlier.length) {
      const fieldset = document.createElement('fieldset');
      const legend = document.createElement('legend');
      legend.textContent = 'Runs after';
      fieldset.appendChild(legend);
      for (const name of earlier) {
        const row = document.createElement('label');
        const box = document.createElement('input');
        box.type = 'checkbox';
        box.name = `after-${name}`;
        box.value = name;
        box.checked = currentAfter.includes(name);
        row.append(box, document.createTextNode(` ${name}`));
        fieldset.appendChild(row);
        this.boxes.push(box);
      }
      this.node.appendChild(fieldset);
    }
    this.input.addEventListener('input', () => this.validate());
  }

  getValue(): IStepChoice {
    return {
      name: this.input.value.trim(),
      after: this.boxes.filter(b => b.checked).map(b => b.value)
    };
  }

  protected onAfterAttach(): void {
    this.input.focus();
    this.input.select();
    this.validate();
  }

  private validate(): void {
    const problem = stepNameProblem(this.input.value.trim());
    this.alert.textContent = this.input.value.trim() ? (problem ?? '') : '';
    const accept = this.node
      .closest('.jp-Dialog-content')
      ?.querySelector<HTMLButtonElement>('.jp-mod-accept');
    if (accept) {
      accept.disabled = problem !== null;
    }
  }

  private readonly input: HTMLInputElement;
  private readonly alert: HTMLDivElement;
  private readonly boxes: HTMLInputElement[] = [];
}

/** Ask for a step; null when cancelled. */
export async function askStep(
  current: string,
  currentAfter: readonly string[],
  earlier: readonly string[]
): Promise<IStepChoice | null> {
  const result = await showDialog<IStepChoice>({
    title: 'Set pipeline step',
    body: new StepDialogBody(current, currentAfter, earlier),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Set step' })],
    focusNodeSelector: 'input[aria-label="Step name"]'
  });
  if (!result.button.accept || !result.value || stepNameProblem(result.value.name)) {
    return null;
  }
  return result.value;
}
