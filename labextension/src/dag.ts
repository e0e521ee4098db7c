/**
 * Lay the steps out as a DAG with dagre (top to bottom, so it fits a narrow sidebar).
 * Edges: explicit `prev:` from tags (known at once) plus the server's inferred ones.
 */
import dagre from '@dagrejs/dagre';

export interface IDagNode {
  name: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface IDagEdge {
  source: string;
  target: string;
  kind: string;
  points: { x: number; y: number }[];
}

/** The box drawn around an expanded group's steps (a part of a composed notebook). */
export interface IDagCluster {
  id: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface IDagLayout {
  width: number;
  height: number;
  nodes: IDagNode[];
  edges: IDagEdge[];
  clusters: IDagCluster[];
}

export interface IDagOptions {
  /** The text a node shows (its width follows it); default: its name. */
  labels?: ReadonlyMap<string, string>;
  /** The cluster each node is drawn in (dagre's compound graph); none by default. */
  parents?: ReadonlyMap<string, string>;
}

export const NODE_HEIGHT = 22;
const CHAR_WIDTH = 7;

/** Union of edges, first kind wins, dropping self-loops and edges to unknown steps. */
export function mergeEdges(
  steps: readonly string[],
  edges: readonly { source: string; target: string; kind: string }[]
): { source: string; target: string; kind: string }[] {
  const known = new Set(steps);
  const seen = new Set<string>();
  const out: { source: string; target: string; kind: string }[] = [];
  for (const e of edges) {
    const key = `${e.source}\u0000${e.target}`;
    if (e.source === e.target || !known.has(e.source) || !known.has(e.target) || seen.has(key)) {
      continue;
    }
    seen.add(key);
    out.push(e);
  }
  return out;
}

export function layoutDag(
  steps: readonly string[],
  edges: readonly { source: string; target: string; kind: string }[],
  options: IDagOptions = {}
): IDagLayout {
  const parents = options.parents ?? new Map<string, string>();
  const clusterIds = [...new Set(steps.filter(s => parents.has(s)).map(s => parents.get(s)!))];
  const g = new dagre.graphlib.Graph({ compound: clusterIds.length > 0 });
  g.setGraph({ rankdir: 'TB', nodesep: 10, ranksep: 18, marginx: 4, marginy: 4 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const name of steps) {
    const label = options.labels?.get(name) ?? name;
    g.setNode(name, { width: Math.max(48, label.length * CHAR_WIDTH + 24), height: NODE_HEIGHT });
  }
  for (const id of clusterIds) {
    g.setNode(id, {});
  }
  for (const name of steps) {
    const parent = parents.get(name);
    if (parent) {
      g.setParent(name, parent);
    }
  }
  const merged = mergeEdges(steps, edges);
  for (const e of merged) {
    g.setEdge(e.source, e.target);
  }
  dagre.layout(g);
  const graph = g.graph();
  return {
    width: graph.width ?? 0,
    height: graph.height ?? 0,
    nodes: steps.map(name => {
      const n = g.node(name);
      return { name, x: n.x, y: n.y, width: n.width, height: n.height };
    }),
    edges: merged.map(e => ({ ...e, points: g.edge(e.source, e.target).points ?? [] })),
    clusters: clusterIds.map(id => {
      const c = g.node(id);
      return { id, x: c.x, y: c.y, width: c.width, height: c.height };
    })
  };
}
