/**
 * The property inspector's "Pipeline step" section: a custom field over the cell's
 * `/tags` that edits only cellpipe's tags (role, step, dependencies, resources).
 */
import type { FieldProps } from '@rjsf/utils';
import * as React from 'react';

import {
  clearStep,
  IResources,
  parseTags,
  Role,
  RESOURCE_KEYS,
  setMetrics,
  setResources,
  setRole,
  setStep,
  StepPrefix,
  stepNameProblem
} from './tags';

export interface IStepFormContext {
  /** Steps of the active notebook, in notebook order, and the tag prefix it uses. */
  steps(): { names: string[]; prefix: StepPrefix };
  /** Rename a step everywhere: its `step:` tags and every `prev:` naming it, one edit. */
  rename(from: string, to: string): void;
}

const RESOURCE_LABELS: Record<keyof IResources, string> = {
  cpu: 'CPU (limit:cpu:)',
  memory: 'Memory (limit:memory:)',
  gpu: 'GPUs (gpu:)',
  image: 'Image (image:)',
  packages: 'Packages (packages:a,b==1.2)',
  retry: 'Retries (retry:)',
  timeout: 'Timeout, seconds (timeout:)'
};

type FormRole = 'step' | 'continue' | Role;

export function makeStepField(context: IStepFormContext): React.FC<FieldProps> {
  return function StepField(props: FieldProps): JSX.Element {
    const tags: string[] = Array.isArray(props.formData) ? props.formData : [];
    const parsed = parseTags(tags);
    const { names, prefix } = context.steps();
    const [draft, setDraft] = React.useState<string | null>(null);
    const write = (next: string[]): void => {
      props.formContext.updateMetadata({ [props.name]: next }, true);
    };
    const role: FormRole = parsed.role ?? (parsed.step ? 'step' : 'continue');
    const name = draft ?? parsed.step ?? '';
    const problem = draft !== null ? stepNameProblem(draft.trim()) : null;
    // Only earlier steps can be dependencies, so the form cannot make a cycle.
    const own = names.indexOf(parsed.step ?? '');
    const earlier = own >= 0 ? names.slice(0, own) : names;

    return (
      <div className="cellpipe-form">
        <label className="cellpipe-field">
          <span>Role</span>
          <select
            aria-label="Role"
            value={role}
            onChange={e => {
              const value = e.currentTarget.value as FormRole;
              if (value === 'continue') {
                write(clearStep(tags));
              } else if (value === 'step') {
                write(setStep(tags, parsed.step ?? names[names.length - 1] ?? 'step1', [], prefix));
              } else {
                write(setRole(tags, value));
              }
            }}
          >
            <option value="step">starts a step</option>
            <option value="continue">continues the step above</option>
            <option value="imports">imports</option>
            <option value="functions">functions</option>
            <option value="parameters">parameters</option>
            <option value="skip">skip (not in pipeline)</option>
          </select>
        </label>
        {role === 'step' ? (
          <>
            <label className="cellpipe-field">
              <span>Step name</span>
              <input
                aria-label="Step name"
                list="cellpipe-step-names"
                value={name}
                onChange={e => setDraft(e.currentTarget.value)}
                onBlur={() => {
                  const next = draft?.trim() ?? '';
                  if (draft !== null && !stepNameProblem(next) && next !== parsed.step) {
                    if (parsed.step && names.includes(parsed.step) && !names.includes(next)) {
                      // A new name for this step: its dependants' `prev:` follow.
                      context.rename(parsed.step, next);
                    } else {
                      // An existing name: this cell joins that step.
                      write(setStep(tags, next, parsed.after, prefix));
                    }
                  }
                  setDraft(null);
                }}
                onKeyDown={e => {
                  if (e.key === 'Enter') {
                    e.currentTarget.blur();
                  }
                }}
              />
              <datalist id="cellpipe-step-names">
                {names.map(n => (
                  <option key={n} value={n} />
                ))}
              </datalist>
            </label>
            {problem ? (
              <div className="cellpipe-error" role="alert">
                {problem}
              </div>
            ) : null}
            {earlier.length ? (
              <fieldset className="cellpipe-after">
                <legend>Runs after</legend>
                {earlier.map(n => (
                  <label key={n}>
                    <input
                      type="checkbox"
                      name={`after-${n}`}
                      checked={parsed.after.includes(n)}
                      onChange={e => {
                        const after = e.currentTarget.checked
                          ? [...parsed.after, n]
                          : parsed.after.filter(a => a !== n);
                        write(setStep(tags, parsed.step!, after, prefix));
                      }}
                    />{' '}
                    {n}
                  </label>
                ))}
              </fieldset>
            ) : null}
          </>
        ) : null}
        <label className="cellpipe-field cellpipe-check">
          <input
            type="checkbox"
            name="metrics"
            checked={parsed.metrics}
            onChange={e => write(setMetrics(tags, e.currentTarget.checked))}
          />{' '}
          records metrics
        </label>
        <details className="cellpipe-resources">
          <summary>Resources and retries</summary>
          {RESOURCE_KEYS.map(key => (
            <label key={key} className="cellpipe-field">
              <span>{RESOURCE_LABELS[key]}</span>
              <input
                name={key}
                defaultValue={parsed.resources[key]}
                key={`${key}=${parsed.resources[key]}`}
                onBlur={e => {
                  if (e.currentTarget.value.trim() !== parsed.resources[key]) {
                    write(setResources(tags, { [key]: e.currentTarget.value }));
                  }
                }}
              />
            </label>
          ))}
        </details>
        <div className="cellpipe-form-tags" title="The tags this form writes">
          {tags.join('  ')}
        </div>
      </div>
    );
  };
}
