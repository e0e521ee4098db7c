/**
 * Step colours from the theme's own palette (each theme defines these variables, so a theme
 * switch restyles without reload). Index = hash(name) mod N, bumped while it would repeat the
 * colour of a neighbouring step (DAG edge or adjacent in the notebook), so bands and nodes
 * that touch stay distinguishable.
 */

export const STEP_COLORS: readonly string[] = [
  '--jp-collaborator-color1',
  '--jp-collaborator-color2',
  '--jp-collaborator-color3',
  '--jp-collaborator-color4',
  '--jp-collaborator-color5',
  '--jp-collaborator-color6',
  '--jp-collaborator-color7',
  '--jp-icon-contrast-color0',
  '--jp-icon-contrast-color1',
  '--jp-icon-contrast-color2',
  '--jp-icon-contrast-color3'
];

/** A stable 32-bit hash (FNV-1a) of a step name. */
export function hashName(name: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Colour variable per step. `names` in notebook order; `edges` the DAG's (either direction).
 * A step avoids the colours of its DAG neighbours and of the step listed before it (the band
 * right above its cells), as far as the palette allows.
 */
export function assignColors(
  names: readonly string[],
  edges: readonly { source: string; target: string }[] = []
): Map<string, string> {
  const neighbours = new Map<string, Set<string>>(names.map(n => [n, new Set<string>()]));
  for (const e of edges) {
    if (e.source !== e.target && neighbours.has(e.source) && neighbours.has(e.target)) {
      neighbours.get(e.source)!.add(e.target);
      neighbours.get(e.target)!.add(e.source);
    }
  }
  const index = new Map<string, number>();
  names.forEach((name, i) => {
    const taken = new Set<number>();
    for (const other of [...neighbours.get(name)!, names[i - 1]]) {
      const used = other === undefined ? undefined : index.get(other);
      if (used !== undefined) {
        taken.add(used);
      }
    }
    let k = hashName(name) % STEP_COLORS.length;
    for (let tries = 0; taken.has(k) && tries < STEP_COLORS.length; tries++) {
      k = (k + 1) % STEP_COLORS.length;
    }
    index.set(name, k);
  });
  return new Map(names.map(n => [n, STEP_COLORS[index.get(n)!]]));
}
