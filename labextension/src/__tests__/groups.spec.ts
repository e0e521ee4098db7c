import { layoutDag } from '../dag';
import {
  composedPlaces,
  groupedGraph,
  groupState,
  groupSummary,
  iterationsText,
  IShownStep,
  notebookReferences,
  shortName,
  shownSteps,
  stepListRows,
  stepsOfPart
} from '../groups';
import { tabStopKey } from '../roving';
import { assignSteps } from '../tags';

const part = (name: string, group: string | null): IShownStep => ({
  name,
  cells: [name],
  group,
  notebook: group ? `${group}.ipynb` : null
});

// The composed notebook of tests/notebooks/composition/main_mixed.ipynb, as compiled.
const composed = [
  part('notebook_a.cities', 'notebook_a'),
  part('notebook_a.readings', 'notebook_a'),
  part('notebook_b.fit', 'notebook_b'),
  part('notebook_a.table', 'notebook_a'),
  part('final', null)
];

describe('a composed notebook in the sidebar', () => {
  it('lists the compiled, qualified steps when the compile says they come from parts', () => {
    const assignment = assignSteps([
      { id: 'r', type: 'code', source: '%run notebook_a.ipynb', tags: [] },
      { id: 'f', type: 'code', source: 'print(1)', tags: ['step:final'] }
    ]);
    const steps = shownSteps(assignment, [
      { name: 'notebook_a.cities', cells: ['notebook_a--a3'], group: 'notebook_a', notebook: 'notebook_a.ipynb' },
      { name: 'final', cells: ['f'], group: null, notebook: null }
    ]);
    expect(steps.map(s => [s.name, s.group])).toEqual([
      ['notebook_a.cities', 'notebook_a'],
      ['final', null]
    ]);
  });

  it('lists nothing for a composed notebook until its compile answers', () => {
    const assignment = assignSteps([
      { id: 'r', type: 'code', source: '%run notebook_a.ipynb', tags: [] }
    ]);
    expect(shownSteps(assignment, null, true)).toEqual([]);
    expect(shownSteps(assignment, null, false).map(s => s.name)).toEqual(['main']);
  });

  it('lists the steps of the tags when nothing is composed', () => {
    const assignment = assignSteps([{ id: 'a', type: 'code', source: 'x = 1', tags: ['step:load'] }]);
    expect(shownSteps(assignment, [{ name: 'load', cells: ['a'] }])).toEqual([
      { name: 'load', cells: ['a'], group: null, notebook: null }
    ]);
  });

  it('finds the cells that stand for a notebook: notebook: tags and %run lines', () => {
    expect(
      notebookReferences([
        { id: 'k', type: 'code', source: '', tags: ['notebook:notebook_a'] },
        { id: 'r', type: 'code', source: '# the model\n%run ./sub/notebook_b.ipynb', tags: [] },
        { id: 'q', type: 'code', source: "%run 'c.ipynb'", tags: [] },
        { id: 'x', type: 'code', source: '%run a.ipynb\nprint(1)', tags: [] },
        { id: 'm', type: 'markdown', source: '%run a.ipynb', tags: [] }
      ])
    ).toEqual([
      { cellId: 'k', part: 'notebook_a' },
      { cellId: 'r', part: 'notebook_b' },
      { cellId: 'q', part: 'c' }
    ]);
  });

  it('puts a header where a part first appears and all its steps under it', () => {
    const rows = stepListRows(composed, new Set());
    expect(rows.map(r => (r.kind === 'group' ? `[${r.group}]` : r.key))).toEqual([
      '[notebook_a]',
      'notebook_a.cities',
      'notebook_a.readings',
      'notebook_a.table',
      '[notebook_b]',
      'notebook_b.fit',
      'final'
    ]);
  });

  it('keeps a collapsed group’s step rows, hidden, so each step keeps its one row', () => {
    const rows = stepListRows(composed, new Set(['notebook_a']));
    const hidden = rows.filter(r => r.kind === 'step' && r.hidden).map(r => r.key);
    expect(hidden).toEqual(['notebook_a.cities', 'notebook_a.readings', 'notebook_a.table']);
    expect(rows.find(r => r.kind === 'group' && r.group === 'notebook_a')).toMatchObject({
      expanded: false,
      steps: ['notebook_a.cities', 'notebook_a.readings', 'notebook_a.table']
    });
  });

  it('shows a part’s step by its own name under the header', () => {
    expect(shortName(part('notebook_a.cities', 'notebook_a'))).toBe('cities');
    expect(shortName(part('a.b.train', 'a.b'))).toBe('train');
    expect(shortName(part('final', null))).toBe('final');
  });

  it('moves the Tab stop off a row its group hid, to the first visible row', () => {
    const rows = stepListRows(composed, new Set(['notebook_a']));
    expect(tabStopKey('notebook_a.readings', rows)).toBe('group:notebook_a');
    expect(tabStopKey('final', rows)).toBe('final');
    expect(tabStopKey(null, rows)).toBe('group:notebook_a');
  });
});

describe('a group’s state and summary', () => {
  it('says how many steps a part has before any run', () => {
    expect(groupState(['idle', 'idle'])).toBe('idle');
    expect(groupSummary(['idle', 'idle'])).toBe('2 steps');
  });

  it('shows the state that needs attention first', () => {
    expect(groupState(['succeeded', 'failed', 'running'])).toBe('failed');
    expect(groupState(['succeeded', 'running', 'pending'])).toBe('running');
    expect(groupState(['succeeded', 'cached'])).toBe('succeeded');
    expect(groupState(['cached', 'cached'])).toBe('cached');
    expect(groupState(['succeeded', 'skipped'])).toBe('skipped');
  });

  it('counts the finished steps and names failures', () => {
    expect(groupSummary(['succeeded', 'running', 'pending'])).toBe('1/3 done');
    expect(groupSummary(['succeeded', 'failed', 'skipped'])).toBe('3/3 done · 1 failed');
  });
});

describe('a foreach step’s progress', () => {
  it('reads done/total', () => {
    expect(iterationsText({ done: 7, total: 20 })).toBe('7/20');
    expect(iterationsText({ total: 20 })).toBe('0/20');
    expect(iterationsText(null)).toBe('');
    expect(iterationsText(undefined)).toBe('');
  });
});

describe('the DAG of a composed notebook', () => {
  const edges = [
    { source: 'notebook_a.readings', target: 'notebook_a.table', kind: 'data' },
    { source: 'notebook_a.table', target: 'notebook_b.fit', kind: 'data' },
    { source: 'notebook_a.cities', target: 'final', kind: 'data' },
    { source: 'notebook_b.fit', target: 'final', kind: 'data' }
  ];

  it('draws each expanded part as a box around its steps, labelled by their own names', () => {
    const graph = groupedGraph(composed, edges, new Set());
    expect(graph.nodes).toEqual(composed.map(s => s.name));
    expect(graph.labels.get('notebook_a.table')).toBe('table');
    const dag = layoutDag(graph.nodes, graph.edges, {
      labels: graph.labels,
      parents: graph.parents
    });
    const box = dag.clusters.find(c => c.id === 'group:notebook_a')!;
    for (const name of ['notebook_a.cities', 'notebook_a.readings', 'notebook_a.table']) {
      const n = dag.nodes.find(m => m.name === name)!;
      expect(Math.abs(n.x - box.x)).toBeLessThanOrEqual(box.width / 2);
      expect(Math.abs(n.y - box.y)).toBeLessThanOrEqual(box.height / 2);
    }
    expect(dag.clusters.map(c => c.id).sort()).toEqual(['group:notebook_a', 'group:notebook_b']);
  });

  it('folds a collapsed part into one node, its edges redirected and merged', () => {
    const graph = groupedGraph(composed, edges, new Set(['notebook_a']));
    expect(graph.nodes).toEqual(['group:notebook_a', 'notebook_b.fit', 'final']);
    expect(graph.labels.get('group:notebook_a')).toBe('notebook_a');
    expect(graph.edges.map(e => `${e.source}>${e.target}`)).toEqual([
      'group:notebook_a>notebook_b.fit',
      'group:notebook_a>final',
      'notebook_b.fit>final'
    ]);
    const dag = layoutDag(graph.nodes, graph.edges, {
      labels: graph.labels,
      parents: graph.parents
    });
    expect(dag.clusters.map(c => c.id)).toEqual(['group:notebook_b']);
  });
});

describe('the main notebook’s cells in a composed pipeline', () => {
  const cells = [
    { id: 'p', type: 'code', source: 'scale = 3', tags: ['parameters'] },
    { id: 'r', type: 'code', source: '%run notebook_a.ipynb', tags: [] },
    { id: 'x', type: 'code', source: 'print(table)', tags: [] },
    { id: 'f', type: 'code', source: 'print(1)', tags: ['step:final'] }
  ];
  const references = notebookReferences(cells);

  it('gives a reference cell the role notebook and no step', () => {
    const places = composedPlaces(assignSteps(cells).cells, references, [
      { id: 'x', step: 'notebook_a.summary' },
      { id: 'f', step: 'final' }
    ]);
    expect(places.map(p => [p.id, p.role, p.step, p.first])).toEqual([
      ['p', 'parameters', null, false],
      ['r', 'notebook', null, false],
      // An untagged cell after the part continues the part's last step, as the engine says.
      ['x', 'step', 'notebook_a.summary', true],
      ['f', 'step', 'final', true]
    ]);
  });

  it('places no cell in a step before the compile answers', () => {
    const places = composedPlaces(assignSteps(cells).cells, references, null);
    expect(places.filter(p => p.step !== null)).toEqual([]);
  });

  it('finds a part’s steps, its nested parts’ included', () => {
    const steps = [part('a.x', 'a'), part('a.b.y', 'a.b'), part('ab.z', 'ab'), part('final', null)];
    expect(stepsOfPart(steps, 'a').map(s => s.name)).toEqual(['a.x', 'a.b.y']);
  });
});
