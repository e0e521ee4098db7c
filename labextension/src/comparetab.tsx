/**
 * The "Compare runs" main-area tab (UX §2.4, J5): the table `compareRuns` builds, with the
 * differing columns marked, a small chart of one metric across the notebook's runs (drawn by
 * Chartist, an SVG charting library), and per run "Re-run with these parameters" and
 * "Apply outputs".
 */
import { ReactWidget } from '@jupyterlab/ui-components';
import { LineChart } from 'chartist';
import * as React from 'react';

import {
  ColumnGroup,
  compareRuns,
  ICompareTable,
  metricSeries,
  metricText,
  numericMetrics
} from './compare';
import { IRunStatus } from './state';

export interface ICompareActions {
  rerun(run: IRunStatus): void;
  applyOutputs(run: IRunStatus): void;
}

const GROUP_TITLES: Record<ColumnGroup, string> = {
  parameter: 'Parameters',
  metric: 'Metrics',
  step: 'Steps',
  duration: 'Run'
};

function MetricChart(props: { runs: IRunStatus[]; metric: string }): JSX.Element {
  const ref = React.useRef<HTMLDivElement>(null);
  const series = metricSeries(props.runs, props.metric);
  React.useEffect(() => {
    if (!ref.current || !series.values.length) {
      return;
    }
    const chart = new LineChart(
      ref.current,
      { labels: series.runIds.map(id => id.slice(-6)), series: [series.values] },
      {
        height: '160px',
        lineSmooth: false,
        fullWidth: true,
        chartPadding: { top: 16, right: 48, bottom: 0, left: 8 },
        axisY: { onlyInteger: false }
      }
    );
    return () => {
      chart.detach();
    };
  }, [props.metric, series.runIds.join(','), series.values.join(',')]);
  const described = series.runIds
    .map((id, i) => `run ${id}: ${metricText(series.values[i])}`)
    .join('; ');
  return (
    <div
      ref={ref}
      className="cellpipe-chart"
      role="img"
      data-cellpipe-chart={props.metric}
      aria-label={`${props.metric} across ${series.values.length} runs, oldest first. ${described}`}
    />
  );
}

function CompareBody(props: {
  table: ICompareTable;
  history: IRunStatus[];
  notebook: string;
  actions: ICompareActions;
}): JSX.Element {
  const { table, actions } = props;
  const metrics = numericMetrics(props.history);
  const [metric, setMetric] = React.useState(metrics[0] ?? '');
  const groups: { group: ColumnGroup; span: number }[] = [];
  for (const c of table.columns) {
    const last = groups[groups.length - 1];
    if (last && last.group === c.group) {
      last.span++;
    } else {
      groups.push({ group: c.group, span: 1 });
    }
  }
  const differing = table.columns.filter(c => c.differs).map(c => c.label);
  return (
    <div className="cellpipe-compare-view">
      <h2>{`Compare ${table.runs.length} runs of ${props.notebook}`}</h2>
      <p className="cellpipe-compare-summary">
        {differing.length
          ? `Differs: ${differing.join(', ')} (marked ≠).`
          : 'The runs have the same parameters, metrics and step states.'}
      </p>
      <div className="cellpipe-compare-scroll">
        <table className="cellpipe-compare">
          <caption className="cellpipe-visually-hidden">
            One row per run; columns marked ≠ differ between the runs.
          </caption>
          <thead>
            <tr>
              <td />
              {groups.map((g, i) => (
                <th key={i} scope="colgroup" colSpan={g.span}>
                  {GROUP_TITLES[g.group]}
                </th>
              ))}
            </tr>
            <tr>
              <th scope="col">Run</th>
              {table.columns.map(c => (
                <th
                  key={c.key}
                  scope="col"
                  data-cellpipe-column={c.key}
                  className={c.differs ? 'cellpipe-mod-differs' : undefined}
                >
                  {c.differs ? (
                    <>
                      <span aria-hidden="true">≠ </span>
                      <span className="cellpipe-visually-hidden">differs: </span>
                    </>
                  ) : null}
                  {c.label}
                </th>
              ))}
            </tr>
          </thead>
          <tbody>
            {table.runs.map((run, row) => (
              <tr key={run.run_id} data-cellpipe-run={run.run_id}>
                <th scope="row" title={run.started_at ? new Date(run.started_at * 1000).toLocaleString() : ''}>
                  <span className="cellpipe-run-id">{run.run_id}</span>{' '}
                  <span className={`cellpipe-run-state cellpipe-mod-${run.state}`}>{run.state}</span>
                  <div className="cellpipe-compare-actions">
                    <button
                      className="jp-Button jp-mod-styled"
                      title={`Compile the open notebook and run it with the parameters of run ${run.run_id}`}
                      onClick={() => actions.rerun(run)}
                    >
                      Re-run with these parameters
                    </button>
                    <button
                      className="jp-Button jp-mod-styled"
                      title={`Write the outputs of run ${run.run_id} into the open notebook's cells (not saved)`}
                      onClick={() => actions.applyOutputs(run)}
                    >
                      Apply outputs
                    </button>
                  </div>
                </th>
                {table.columns.map(c => (
                  <td
                    key={c.key}
                    data-cellpipe-column={c.key}
                    data-cellpipe-differs={c.differs ? 'true' : undefined}
                    className={c.differs ? 'cellpipe-mod-differs' : undefined}
                  >
                    {c.values[row]}
                  </td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <section className="cellpipe-compare-chart">
        <h3>Metric across the notebook's runs</h3>
        {metrics.length ? (
          <>
            <label className="cellpipe-field">
              <span>Metric</span>
              <select
                aria-label="Metric"
                value={metric}
                onChange={e => setMetric(e.currentTarget.value)}
              >
                {metrics.map(m => (
                  <option key={m} value={m}>
                    {m}
                  </option>
                ))}
              </select>
            </label>
            <MetricChart runs={props.history} metric={metric} />
          </>
        ) : (
          <div className="cellpipe-empty">No run of this notebook recorded a numeric metric.</div>
        )}
      </section>
    </div>
  );
}

export class CompareView extends ReactWidget {
  constructor(
    private readonly options: {
      runs: IRunStatus[];
      history: IRunStatus[];
      defaults: Record<string, string>;
      notebook: string;
      actions: ICompareActions;
    }
  ) {
    super();
    this.addClass('cellpipe-compare-panel');
  }

  render(): JSX.Element {
    const o = this.options;
    return (
      <CompareBody
        table={compareRuns(o.runs, o.defaults)}
        history={o.history}
        notebook={o.notebook}
        actions={o.actions}
      />
    );
  }
}
