"""``cellpipe runs NB --compare ID ID…``: two or more runs side by side, differences marked.

The same comparison as the sidebar's Compare tab: one row per run; a column per parameter
(the value the run used, default included), metric and step (state, duration, ran or
reused from the cache), and the run's duration. Columns whose values differ are marked
``≠``; durations never are (they always differ).
"""

from __future__ import annotations

import json
from typing import Any

import click

from cellpipe.cli.common import stdout_console


def comparison(dirs: list[Any]) -> dict[str, Any]:
    """The runs' comparable facts and which columns differ (keys ``param:``, ``metric:``,
    ``step:``)."""
    from cellpipe.rundir.runs import run_summary

    rows = []
    for rd in dirs:
        row = run_summary(rd)
        status = rd.status()
        row["steps"] = {
            n: {
                "state": st.state.value,
                "duration_s": None if st.duration_s is None else round(st.duration_s, 3),
                "cached": st.cached or st.state.value == "cached",
            }
            for n, st in status.steps.items()
        }
        rows.append(row)
    columns: dict[str, list[str]] = {}
    for group, key in (("param", "parameters"), ("metric", "metrics")):
        for name in dict.fromkeys(k for r in rows for k in r[key]):
            columns[f"{group}:{name}"] = [repr(r[key].get(name)) for r in rows]
    for name in dict.fromkeys(n for r in rows for n in r["steps"]):
        columns[f"step:{name}"] = [
            json.dumps({k: v for k, v in (r["steps"].get(name) or {}).items() if k != "duration_s"})
            for r in rows
        ]
    differs = [k for k, values in columns.items() if len(set(values)) > 1]
    return {"runs": rows, "columns": list(columns), "differs": differs}


def print_comparison(dirs: list[Any], as_json: bool) -> None:
    data = comparison(dirs)
    if as_json:
        click.echo(json.dumps(data, indent=1, default=repr))
        return
    from rich.table import Table

    rows, differs = data["runs"], set(data["differs"])
    table = Table(title="runs compared (≠: differs)", title_justify="left")
    table.add_column("run", no_wrap=True)
    table.add_column("state")
    keys = data["columns"]
    for key in keys:
        mark = "≠ " if key in differs else ""
        table.add_column(
            mark + key.split(":", 1)[1] + (" (step)" if key.startswith("step:") else ""),
            style="bold yellow" if key in differs else "",
            justify="right" if key.startswith("metric:") else "left",
        )
    table.add_column("duration", justify="right")
    for r in rows:
        cells = []
        for key in keys:
            group, name = key.split(":", 1)
            if group == "param":
                cells.append(_value(r["parameters"].get(name)))
            elif group == "metric":
                cells.append(_value(r["metrics"].get(name, "")))
            else:
                cells.append(_step(r["steps"].get(name)))
        duration = "" if r["duration_s"] is None else f"{r['duration_s']:.1f} s"
        table.add_row(r["run_id"], r["state"], *cells, duration)
    stdout_console().print(table)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return repr(value) if isinstance(value, str) else str(value)


def _step(step: dict[str, Any] | None) -> str:
    if not step:
        return "not in this run"
    if step["cached"]:
        return f"{step['state']} · reused"
    parts = [step["state"]]
    if step["duration_s"] is not None:
        parts.append(f"{step['duration_s']:.1f} s")
    if step["state"] == "succeeded":
        parts.append("ran")
    return " · ".join(parts)
