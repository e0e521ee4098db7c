/**
 * Cluster profiles (`GET /profiles`; cellpipe.backends.argo.profiles): named Argo settings
 * outside the notebook. The sidebar shows a Profile select next to the backend select when
 * the backend is argo; these pure functions decide its options and which one is selected.
 */

/** One profile file on the server (cellpipe_server.models.DescribeProfile). */
export interface IProfile {
  name: string;
  path: string;
  description: string;
  context: string | null;
  argo: Record<string, unknown>;
  /** Why it cannot be used (bad JSON, an unknown key); '' when it can. */
  error: string;
}

/** `GET /profiles` (cellpipe_server.models.ListProfilesResponse). */
export interface IProfileList {
  profiles: IProfile[];
  /** The profile an argo run gets when its request names none. */
  default: string | null;
  folder: string;
}

export interface IProfileChoice {
  /** The name sent as the run's `profile`; '' for none. */
  value: string;
  label: string;
  disabled: boolean;
  title: string;
}

const NONE_TITLE = "Only the notebook's metadata.cellpipe.argo and the cluster's defaults";

/** What a profile sets, as one line: `namespace=ml, registry=registry.example.org/team`. */
export function settingsText(profile: IProfile): string {
  const parts = Object.entries(profile.argo).map(
    ([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`
  );
  if (profile.context) {
    parts.unshift(`context=${profile.context}`);
  }
  return parts.join(', ') || 'no settings';
}

/** The select's options: "none" first, then every profile (a broken one disabled, saying why). */
export function profileChoices(list: IProfileList | null): IProfileChoice[] {
  const none: IProfileChoice = { value: '', label: 'none', disabled: false, title: NONE_TITLE };
  if (!list) {
    return [none];
  }
  return [
    none,
    ...list.profiles.map(p => ({
      value: p.name,
      label: p.name === list.default ? `${p.name} (default)` : p.name,
      disabled: p.error !== '',
      title: p.error
        ? p.error
        : `${p.description ? `${p.description}: ` : ''}${settingsText(p)} (${p.path})`
    }))
  ];
}

/**
 * The profile shown selected: the user's choice while it is listed and usable, else the
 * server's default when it is, else none ('').
 */
export function chosenProfile(list: IProfileList | null, choice: string | null): string {
  const usable = (name: string | null): boolean =>
    name === '' || (!!list && list.profiles.some(p => p.name === name && p.error === ''));
  if (choice !== null && usable(choice)) {
    return choice;
  }
  const fallback = list?.default ?? '';
  return usable(fallback) ? fallback : '';
}
