import { assignColors, hashName, STEP_COLORS } from '../colors';
import { layoutDag, mergeEdges } from '../dag';

describe('DAG layout', () => {
  it('places every step and draws upstream steps above their dependants', () => {
    const dag = layoutDag(
      ['load', 'clean', 'train'],
      [
        { source: 'load', target: 'clean', kind: 'data' },
        { source: 'clean', target: 'train', kind: 'data' },
        { source: 'load', target: 'train', kind: 'prev' }
      ]
    );
    const y = Object.fromEntries(dag.nodes.map(n => [n.name, n.y]));
    expect(y.load).toBeLessThan(y.clean);
    expect(y.clean).toBeLessThan(y.train);
    expect(dag.edges).toHaveLength(3);
    expect(dag.width).toBeGreaterThan(0);
  });

  it('merges explicit and inferred edges, dropping duplicates, self-loops and unknown steps', () => {
    expect(
      mergeEdges(
        ['a', 'b'],
        [
          { source: 'a', target: 'b', kind: 'prev' },
          { source: 'a', target: 'b', kind: 'data' },
          { source: 'b', target: 'b', kind: 'prev' },
          { source: 'gone', target: 'b', kind: 'prev' }
        ]
      )
    ).toEqual([{ source: 'a', target: 'b', kind: 'prev' }]);
  });
});

describe('step colours', () => {
  it('are theme variables, stable per name', () => {
    const first = assignColors(['load', 'train']);
    expect(STEP_COLORS).toContain(first.get('load'));
    expect(assignColors(['load', 'train']).get('train')).toBe(first.get('train'));
  });

  it('never repeat between neighbouring steps', () => {
    const names = Array.from({ length: 40 }, (_, i) => `step${i}`);
    const colors = names.map(n => assignColors(names).get(n));
    for (let i = 1; i < colors.length; i++) {
      expect(colors[i]).not.toBe(colors[i - 1]);
    }
  });

  it('differ between steps joined by an edge, even when they are not adjacent in the notebook', () => {
    // Two names whose hashes pick the same colour, with a third step listed between them.
    const names = Array.from({ length: 200 }, (_, i) => `s${i}`);
    const byIndex = new Map<number, string[]>();
    for (const n of names) {
      const k = hashName(n) % STEP_COLORS.length;
      byIndex.set(k, [...(byIndex.get(k) ?? []), n]);
    }
    const [compare, best] = [...byIndex.values()].find(group => group.length >= 2)!;
    const colorOf = (n: string): number => hashName(n) % STEP_COLORS.length;
    const other = names.find(n => colorOf(n) !== colorOf(compare))!;
    const order = [compare, other, best];
    expect(assignColors(order).get(best)).toBe(assignColors(order).get(compare));
    const linked = assignColors(order, [{ source: compare, target: best }]);
    expect(linked.get(best)).not.toBe(linked.get(compare));
    expect(linked.get(best)).not.toBe(linked.get(other));
  });

  it('avoid every neighbour of a step with many dependencies', () => {
    const names = ['load', 'a', 'b', 'c', 'd', 'e', 'join'];
    const edges = [
      ...['a', 'b', 'c', 'd', 'e'].map(s => ({ source: 'load', target: s })),
      ...['a', 'b', 'c', 'd', 'e'].map(s => ({ source: s, target: 'join' }))
    ];
    const colors = assignColors(names, edges);
    for (const e of edges) {
      expect(colors.get(e.source)).not.toBe(colors.get(e.target));
    }
  });
});
