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

export interface IDagLayout {
  width: number;
  height: number;
  nodes: IDagNode[];
  edges: IDagEdge[];
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
  edges: readonly { source: string; target: string; kind: string }[]
): IDagLayout {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 10, ranksep: 18, marginx: 4, marginy: 4 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const name of steps) {
    g.setNode(name, { width: Math.max(48, name.length * CHAR_WIDTH + 24), height: NODE_HEIGHT });
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
    edges: merged.map(e => ({ ...e, points: g.edge(e.source, e.target).points ?? [] }))
  };
}
