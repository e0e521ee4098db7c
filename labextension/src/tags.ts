/**
 * cellpipe's tag grammar on the client: read a cell's `metadata.tags`, and change only
 * cellpipe's own tags in it. The server's compiler (kernel/cellpipe/notebook.py) is the
 * authority; this mirror exists so decorations and the step list follow a tag edit at once,
 * before the debounced compile answers.
 */

export const STEP_PREFIXES = ['step:', 'block:'] as const;
export const PREV_PREFIXES = ['prev:', 'after:'] as const;
export type StepPrefix = (typeof STEP_PREFIXES)[number];

/** Roles a code cell can have besides belonging to a step. */
export type Role = 'imports' | 'functions' | 'parameters' | 'skip';
export const ROLES: readonly Role[] = ['imports', 'functions', 'parameters', 'skip'];

const ROLE_TAGS: Record<string, Role> = {
  imports: 'imports',
  functions: 'functions',
  parameters: 'parameters',
  'pipeline-parameters': 'parameters',
  skip: 'skip'
};
const METRICS_TAGS = ['metrics', 'pipeline-metrics'];

/** Name of the step formed by code cells before the first step tag (as the engine). */
export const IMPLICIT_STEP = 'main';
/** Name of the step a metrics cell without a step tag starts (as the engine). */
export const METRICS_STEP = 'metrics';

const STEP_NAME = /^[A-Za-z][A-Za-z0-9_-]*$/;

/** Per-step execution settings a user edits in the form. Empty string = not set. */
export interface IResources {
  cpu: string;
  memory: string;
  gpu: string;
  image: string;
  packages: string;
  retry: string;
  timeout: string;
}

export const RESOURCE_KEYS: readonly (keyof IResources)[] = [
  'cpu',
  'memory',
  'gpu',
  'image',
  'packages',
  'retry',
  'timeout'
];

/** The tag each resource is written as; `null` value = the key's prefix to match. */
const RESOURCE_PREFIX: Record<keyof IResources, string> = {
  cpu: 'limit:cpu:',
  memory: 'limit:memory:',
  gpu: 'gpu:',
  image: 'image:',
  packages: 'packages:',
  retry: 'retry:',
  timeout: 'timeout:'
};

export interface IParsedTags {
  /** The step this cell starts or continues by tag, or null. */
  step: string | null;
  /** Explicit dependencies (`prev:` / `after:`). */
  after: string[];
  role: Role | null;
  metrics: boolean;
  resources: IResources;
}

export function emptyResources(): IResources {
  return { cpu: '', memory: '', gpu: '', image: '', packages: '', retry: '', timeout: '' };
}

function startsWithAny(tag: string, prefixes: readonly string[]): string | null {
  for (const p of prefixes) {
    if (tag.startsWith(p)) {
      return p;
    }
  }
  return null;
}

/** Read cellpipe's meaning out of a cell's tags; foreign tags are ignored. */
export function parseTags(tags: readonly string[]): IParsedTags {
  const parsed: IParsedTags = {
    step: null,
    after: [],
    role: null,
    metrics: false,
    resources: emptyResources()
  };
  for (const tag of tags) {
    const sp = startsWithAny(tag, STEP_PREFIXES);
    if (sp) {
      parsed.step = parsed.step ?? tag.slice(sp.length);
      continue;
    }
    const pp = startsWithAny(tag, PREV_PREFIXES);
    if (pp) {
      const name = tag.slice(pp.length);
      if (name && !parsed.after.includes(name)) {
        parsed.after.push(name);
      }
      continue;
    }
    if (tag in ROLE_TAGS) {
      parsed.role = parsed.role ?? ROLE_TAGS[tag];
      continue;
    }
    if (METRICS_TAGS.includes(tag)) {
      parsed.metrics = true;
      continue;
    }
    for (const key of RESOURCE_KEYS) {
      if (tag.startsWith(RESOURCE_PREFIX[key])) {
        parsed.resources[key] = tag.slice(RESOURCE_PREFIX[key].length);
      }
    }
  }
  return parsed;
}

/** DESIGN's rule for step names; returns a message naming the problem, or null. */
export function stepNameProblem(name: string): string | null {
  if (!name) {
    return 'Enter a step name.';
  }
  if (!STEP_NAME.test(name)) {
    return `"${name}" is not a valid step name: use letters, digits, _ and -, starting with a letter.`;
  }
  return null;
}

/** The step prefix new tags should use: Kale's `block:` where the notebook already uses it. */
export function notebookStepPrefix(allTags: readonly (readonly string[])[]): StepPrefix {
  let block = false;
  for (const tags of allTags) {
    for (const t of tags) {
      if (t.startsWith('step:')) {
        return 'step:';
      }
      if (t.startsWith('block:')) {
        block = true;
      }
    }
  }
  return block ? 'block:' : 'step:';
}

/** Replace the tags `isOurs` selects by `replacement`, keeping every other tag where it is. */
function replaceTags(
  tags: readonly string[],
  isOurs: (t: string) => boolean,
  replacement: readonly string[]
): string[] {
  const kept = tags.filter(t => !isOurs(t));
  const firstOurs = tags.findIndex(isOurs);
  const at = firstOurs < 0 ? kept.length : tags.slice(0, firstOurs).filter(t => !isOurs(t)).length;
  return [...kept.slice(0, at), ...replacement, ...kept.slice(at)];
}

const isStepTag = (t: string): boolean => startsWithAny(t, STEP_PREFIXES) !== null;
const isPrevTag = (t: string): boolean => startsWithAny(t, PREV_PREFIXES) !== null;
const isRoleTag = (t: string): boolean => t in ROLE_TAGS;

/**
 * Make the cell start (or join) step `name`, running after `after`. Role tags go (a step
 * cell is neither imports nor skip); metrics, resources and foreign tags stay. The prefix
 * the cell already uses is kept; otherwise `prefix`.
 */
export function setStep(
  tags: readonly string[],
  name: string,
  after: readonly string[],
  prefix: StepPrefix = 'step:'
): string[] {
  const own = tags.find(isStepTag);
  const stepPrefix = own ? (startsWithAny(own, STEP_PREFIXES) as StepPrefix) : prefix;
  const prevTag = tags.find(isPrevTag);
  const prevPrefix = prevTag ? startsWithAny(prevTag, PREV_PREFIXES)! : 'prev:';
  const withoutRoles = tags.filter(t => !isRoleTag(t));
  const wanted = [
    stepPrefix + name,
    ...after.filter(a => a !== name).map(a => prevPrefix + a)
  ];
  return replaceTags(withoutRoles, t => isStepTag(t) || isPrevTag(t), wanted);
}

/** Make the cell continue the step above: drop its step, dependency and role tags. */
export function clearStep(tags: readonly string[]): string[] {
  return tags.filter(t => !isStepTag(t) && !isPrevTag(t) && !isRoleTag(t));
}

/** Give the cell a role (imports, functions, parameters, skip); step tags go. */
export function setRole(tags: readonly string[], role: Role): string[] {
  const existing = tags.find(t => ROLE_TAGS[t] === role);
  // Keep Kale's / papermill's spelling when the cell already has it.
  const tag = existing ?? role;
  if (role === 'skip') {
    // Skipping keeps the step tags, so un-skipping puts the cell back where it was.
    return replaceTags(tags, isRoleTag, [tag]);
  }
  return replaceTags(tags, t => isStepTag(t) || isPrevTag(t) || isRoleTag(t), [tag]);
}

/** Add or remove the `skip` tag, leaving everything else as it is. */
export function toggleSkip(tags: readonly string[]): string[] {
  if (tags.includes('skip')) {
    return tags.filter(t => t !== 'skip');
  }
  return [...tags, 'skip'];
}

/** Set or clear the metrics role. */
export function setMetrics(tags: readonly string[], on: boolean): string[] {
  const has = tags.some(t => METRICS_TAGS.includes(t));
  if (on === has) {
    return [...tags];
  }
  return on ? [...tags, 'metrics'] : tags.filter(t => !METRICS_TAGS.includes(t));
}

/** Write the resource settings; an empty value removes its tag. */
export function setResources(tags: readonly string[], resources: Partial<IResources>): string[] {
  let out = [...tags];
  for (const key of RESOURCE_KEYS) {
    if (!(key in resources)) {
      continue;
    }
    const prefix = RESOURCE_PREFIX[key];
    const value = (resources[key] ?? '').trim();
    out = replaceTags(out, t => t.startsWith(prefix), value ? [prefix + value] : []);
  }
  return out;
}

/** Rename a step in one cell's tags: its `step:` and any `prev:` naming it. */
export function renameInTags(tags: readonly string[], from: string, to: string): string[] {
  return tags.map(t => {
    const p = startsWithAny(t, STEP_PREFIXES) ?? startsWithAny(t, PREV_PREFIXES);
    return p && t.slice(p.length) === from ? p + to : t;
  });
}

/** Drop `prev:` tags naming steps that no longer exist; returns the tags and how many went. */
export function dropDanglingPrev(
  tags: readonly string[],
  existing: ReadonlySet<string>
): { tags: string[]; dropped: number } {
  const out = tags.filter(t => {
    const p = startsWithAny(t, PREV_PREFIXES);
    return !p || existing.has(t.slice(p.length));
  });
  return { tags: out, dropped: tags.length - out.length };
}

/** The part of a notebook cell the client-side assignment needs. */
export interface ICellInfo {
  id: string;
  type: string;
  source: string;
  tags: readonly string[];
}

/** Where a cell sits in the pipeline. */
export interface ICellPlace {
  id: string;
  /** Step the (code) cell belongs to; null for markdown/raw, role and skipped cells. */
  step: string | null;
  /** `notebook`: the cell stands for another notebook (see groups.ts). */
  role: Role | 'step' | 'markdown' | 'empty' | 'notebook';
  /** True on the first cell of its step. */
  first: boolean;
  metrics: boolean;
}

export interface IStepInfo {
  name: string;
  /** Ids of its cells, in notebook order. */
  cells: string[];
  /** Explicit dependencies from tags (inferred ones come from the server's compile). */
  after: string[];
  resources: IResources;
}

export interface IAssignment {
  cells: ICellPlace[];
  steps: IStepInfo[];
}

/**
 * Assign every cell its role and step the way the engine does: a step tag starts or
 * continues a step, untagged code cells continue the step above (or form `main` before the
 * first tag), a metrics cell without a step tag starts `metrics`, role/skip/empty cells
 * belong to no step.
 */
export function assignSteps(cells: readonly ICellInfo[]): IAssignment {
  const places: ICellPlace[] = [];
  const steps = new Map<string, IStepInfo>();
  let current: string | null = null;
  for (const cell of cells) {
    if (cell.type !== 'code') {
      places.push({ id: cell.id, step: null, role: 'markdown', first: false, metrics: false });
      continue;
    }
    const parsed = parseTags(cell.tags);
    if (parsed.role === 'skip') {
      places.push({ id: cell.id, step: null, role: 'skip', first: false, metrics: false });
      continue;
    }
    if (!cell.source.trim()) {
      places.push({ id: cell.id, step: null, role: 'empty', first: false, metrics: false });
      continue;
    }
    if (parsed.role) {
      places.push({
        id: cell.id,
        step: null,
        role: parsed.role,
        first: false,
        metrics: parsed.metrics
      });
      continue;
    }
    if (parsed.step) {
      current = parsed.step;
    } else if (parsed.metrics && current !== METRICS_STEP) {
      current = METRICS_STEP;
    } else if (current === null) {
      current = IMPLICIT_STEP;
    }
    let info = steps.get(current);
    const first = info === undefined;
    if (!info) {
      info = { name: current, cells: [], after: [], resources: emptyResources() };
      steps.set(current, info);
    }
    info.cells.push(cell.id);
    for (const a of parsed.after) {
      if (!info.after.includes(a) && a !== current) {
        info.after.push(a);
      }
    }
    for (const key of RESOURCE_KEYS) {
      if (parsed.resources[key]) {
        info.resources[key] = parsed.resources[key];
      }
    }
    places.push({ id: cell.id, step: current, role: 'step', first, metrics: parsed.metrics });
  }
  return { cells: places, steps: [...steps.values()] };
}
