"""Run reports: a run as one self-contained HTML page, and a small page per step.

``render_report`` renders the executed notebook (:mod:`cellpipe.reports.executed`) with nbconvert's
HTML exporter in JupyterLab's look, its cells grouped by step. Each group opens with the
step's header: state, duration, attempts, cache, inputs and outputs with their types and
sizes (from ``data/<step>/manifest.json``), metrics and, for a failed step, the traceback.
Above the steps: the DAG coloured by state (:mod:`cellpipe.reports.dag_svg`), the parameters, the
metrics, the backend and the engine version.

``write_step_report`` writes ``reports/<step>.html``; the runner calls it as a step ends, so
every backend has one. nbconvert takes a second or more to import and a step takes
milliseconds, so the step page does without it: the same header, the step's code, and its
outputs rendered by MIME type here.

Both pages open offline and alone: images are data: URIs, styles are inline, no script runs,
and the page's own Content-Security-Policy stops the browser from fetching anything, so an
``<img src="https://...">`` in a user's output shows as a broken image instead of a request.
Links stay links: following one is the reader's choice, not a load.
"""

from __future__ import annotations

import functools
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe._version import __version__
from cellpipe.core.atomic import write_text
from cellpipe.core.model import Pipeline, Role, State, Step
from cellpipe.core.pseudo import parse
from cellpipe.rundir.runs import RunDir, StepStatus

#: A report fetches nothing and runs nothing: inline styles and data: images are all it uses.
CSP = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; font-src data:; "
    "base-uri 'none'; form-action 'none'"
)
#: Anchor of a step's section in a page: ``#step-<name>``.
STEP_ANCHOR = "step-"


# -- what a page says about a step ---------------------------------------------------------------


@dataclass
class StepFacts:
    """Everything a step's header shows, read from the run directory."""

    step: Step
    status: StepStatus
    inputs: list[tuple[str, str, dict[str, Any] | None]]  # name, producer, manifest record
    outputs: list[tuple[str, dict[str, Any] | None]]  # name, manifest record
    metrics: dict[str, Any]
    errors: list[tuple[str, str, dict[str, Any]]]  # cell label, cell id, error output
    cells: dict[str, Any] = field(default_factory=dict)  # outputs/<step>.json "cells"


def step_facts(rd: RunDir, step: Step, status: StepStatus) -> StepFacts:
    pipeline = rd.pipeline()
    manifests: dict[str, dict[str, Any] | None] = {}

    def manifest(name: str) -> dict[str, Any] | None:
        if name not in manifests:
            try:
                manifests[name] = {k: r.to_json() for k, r in rd.saved_records(name).items()}
            except (FileNotFoundError, ValueError, KeyError):
                manifests[name] = None
        return manifests[name]

    inputs = [(n, p, (manifest(p) or {}).get(n)) for n, p in sorted(step.inputs.items())]
    own = manifest(step.name) or {}
    outputs = [(n, own.get(n)) for n in step.outputs]
    cells = (rd.read_outputs(step.name) or {}).get("cells", {})
    errors = []
    for cid, rec in cells.items():
        for out in rec.get("outputs", ()):
            if out.get("output_type") == "error":
                errors.append((_cell_label(pipeline, cid), cid, out))
    return StepFacts(step, status, inputs, outputs, rd.metrics().get(step.name, {}), errors, cells)


def _cell_label(pipeline: Pipeline, cid: str) -> str:
    from cellpipe.compiling.notebook import INJECTED

    if cid == INJECTED:
        return "the injected parameters"
    try:
        return f"cell {pipeline.cell(cid).number}"
    except KeyError:
        return f"cell {cid}"


def _facts_block(
    opening: str, facts: list[tuple[str, str]], message: str | None, *, failed: bool
) -> list[str]:
    """A header's opening, its facts as a definition list, and the state's message."""
    parts = [opening, '<dl class="cp-facts">', *(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)]
    parts.append("</dl>")
    if message:
        cls = "cp-message cp-error" if failed else "cp-message"
        parts.append(f'<p class="{cls}">{html.escape(message)}</p>')
    return parts


def step_header(facts: StepFacts, *, page_of: Callable[[str], str] | None = None) -> str:
    """The header of a step's section: facts, failure, inputs, outputs, metrics. Other steps
    link to their section of the same page, or to ``page_of(step)`` (another page)."""
    link = page_of or (lambda name: f"#{STEP_ANCHOR}{name}")
    st, step = facts.status, facts.step
    state = st.state.value
    facts_rows = []
    if st.duration_s is not None:
        facts_rows.append(("Duration", _duration(st.duration_s)))
    if st.started_at is not None:
        facts_rows.append(("Started", _when(st.started_at)))
    tries = step.settings.retry + 1
    facts_rows.append(("Attempts", f"{st.attempts} of {tries}" if tries > 1 else str(st.attempts)))
    facts_rows.append(("Cached", "yes" if st.cached else "no"))
    if step.after:
        facts_rows.append(("After", ", ".join(_step_link(a, link) for a in step.after)))
    settings = _settings_text(step)
    if settings:
        facts_rows.append(("Settings", settings))
    parts = _facts_block(
        f'<header class="cp-step-header"><h2>{_badge(state)} Step {_code(step.name)}</h2>',
        facts_rows,
        st.message,
        failed=st.state is State.FAILED,
    )
    for label, cid, err in facts.errors:
        where = f'<a href="#{html.escape("cell-id=" + cid)}">{html.escape(label)}</a>'
        parts.append(
            f'<details class="cp-traceback" open><summary>Traceback in {where}: '
            f"{html.escape(err.get('ename', ''))}: {html.escape(err.get('evalue', ''))}"
            f"</summary><pre>{ansi_to_html(chr(10).join(err.get('traceback', ())))}</pre>"
            "</details>"
        )
    parts.append(_inputs_table(facts, link))
    parts.append(_outputs_table(facts, link))
    if facts.metrics:
        rows = "".join(
            f"<tr><td>{_code(k)}</td><td>{html.escape(_value_text(v))}</td></tr>"
            for k, v in facts.metrics.items()
        )
        parts.append(
            '<table class="cp-table"><caption>Metrics</caption>'
            f"<thead><tr><th>name</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    parts.append("</header>")
    return "".join(parts)


def _step_link(step: str, link: Callable[[str], str]) -> str:
    return f'<a href="{html.escape(link(step))}">{_code(step)}</a>'


def _inputs_table(facts: StepFacts, link: Callable[[str], str]) -> str:
    if not facts.inputs:
        return '<p class="cp-none">Inputs: none (reads nothing from earlier steps).</p>'
    rows = []
    for name, producer, rec in facts.inputs:
        rows.append(
            f"<tr><td>{_name_cell(name)}</td><td>{_step_link(producer, link)}</td>"
            f"{_record_cells(rec)}</tr>"
        )
    return (
        '<table class="cp-table"><caption>Inputs</caption><thead><tr><th>name</th>'
        "<th>from step</th><th>type</th><th>size</th><th>details</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _outputs_table(facts: StepFacts, link: Callable[[str], str]) -> str:
    if not facts.outputs:
        return '<p class="cp-none">Outputs: none (no later step reads its variables).</p>'
    rows = []
    for name, rec in facts.outputs:
        readers = ", ".join(_step_link(c, link) for c in facts.step.consumers.get(name, ()))
        rows.append(f"<tr><td>{_name_cell(name)}</td>{_record_cells(rec)}<td>{readers}</td></tr>")
    return (
        '<table class="cp-table"><caption>Outputs</caption><thead><tr><th>name</th>'
        "<th>type</th><th>size</th><th>details</th><th>read by</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _name_cell(name: str) -> str:
    pseudo = parse(name)
    if pseudo is not None and pseudo.kind == "file":
        return f"file {_code(pseudo.path)}"
    if pseudo is not None and pseudo.hidden is not None:
        return f"{_code(name)} <small>({pseudo.hidden.description})</small>"
    return _code(name)


def _record_cells(rec: Mapping[str, Any] | None) -> str:
    if rec is None:
        return '<td colspan="3" class="cp-none">not saved on this run</td>'
    details = ", ".join(f"{k} {_value_text(v, 60)}" for k, v in (rec.get("info") or {}).items())
    fmt = rec.get("format")
    details = f"{fmt}; {details}" if fmt and details else (fmt or details)
    return (
        f"<td>{_code(rec.get('type', '?'))}</td><td>{_size(rec.get('bytes'))}</td>"
        f"<td>{html.escape(details)}</td>"
    )


def _settings_text(step: Step) -> str:
    s = step.settings
    bits = [f"{k}={v}" for k, v in s.limits.items()]
    if s.timeout:
        bits.append(f"timeout {s.timeout:g} s")
    if s.retry:
        bits.append(f"retry {s.retry}")
    if s.gpu:
        bits.append(f"gpu {s.gpu}")
    if s.image:
        bits.append(f"image {s.image}")
    if not s.cache:
        bits.append("cache off")
    return html.escape(", ".join(bits))


# -- the per-step page (no nbconvert: it is written as the step ends) ---------------------------


def write_step_report(rd: RunDir, step: str, *, status: StepStatus | None = None) -> Path:
    """Write ``reports/<step>.html``. ``status`` overrides what the events say (the runner
    writes the page before it records the verdict, so the page exists when the verdict does)."""
    pipeline = rd.pipeline()
    st = status or rd.status().steps[step]
    facts = step_facts(rd, pipeline.step(step), st)
    info = rd.info()
    title = f"Step {step} · run {rd.run_id}"
    cells = []
    for cell in pipeline.step_cells(step):
        if cell.kind != "code":
            continue
        rec = facts.cells.get(cell.id)
        count = (rec or {}).get("execution_count")
        prompt = f"[{count}]" if count is not None else "[ ]"
        body = render_outputs(rec["outputs"]) if rec else '<p class="cp-none">not run</p>'
        cells.append(
            f'<div class="cp-cell" id="{html.escape("cell-id=" + cell.id)}">'
            f'<div class="cp-prompt">In {prompt} <small>cell {cell.number}</small></div>'
            f'<pre class="cp-source">{html.escape(cell.source)}</pre>'
            f'<div class="cp-outputs">{body}</div></div>'
        )
    page = "".join(
        [
            _page_head(title, _BARE_CSS + _CSS),
            '<body class="cp-page"><main>',
            f'<p class="cp-crumbs">{html.escape(_notebook_name(info))} · run '
            f"{_code(rd.run_id)} · backend {_code(info.get('backend', 'local'))} · cellpipe "
            f"{html.escape(info.get('engine_version') or __version__)}</p>",
            _section_open(step, st.state.value),
            step_header(facts, page_of=lambda name: rd.report_path(name).name),
            *cells,
            "</section>",
            _footer(),
            "</main></body></html>\n",
        ]
    )
    dest = rd.report_path(step)
    dest.parent.mkdir(exist_ok=True)
    write_text(dest, page)
    return dest


def write_missing_step_reports(rd: RunDir) -> list[Path]:
    """Pages for steps that ended without the runner writing one: cached, skipped or
    cancelled before they started, or killed (timeout, memory, cancel)."""
    status = rd.status()
    written = []
    for name, st in status.steps.items():
        if not st.state.terminal:
            continue
        path = rd.report_path(name)
        # The runner writes its page after the step started, just before the verdict.
        since = st.started_at or st.ended_at or 0.0
        if not path.exists() or path.stat().st_mtime < since:
            written.append(write_step_report(rd, name, status=st))
    return written


def render_outputs(outputs: list[dict[str, Any]]) -> str:
    """nbformat outputs as HTML, each by its richest MIME type this page can show."""
    return "".join(_render_output(o) for o in outputs)


def _render_output(out: Mapping[str, Any]) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        cls = "cp-stderr" if out.get("name") == "stderr" else "cp-stdout"
        return f'<pre class="{cls}">{ansi_to_html(_text(out.get("text", "")))}</pre>'
    if kind == "error":
        tb = "\n".join(out.get("traceback") or [f"{out.get('ename')}: {out.get('evalue')}"])
        return f'<pre class="cp-stderr">{ansi_to_html(tb)}</pre>'
    data = out.get("data") or {}
    for mime in ("text/html", "image/svg+xml"):
        if mime in data:
            return f'<div class="cp-html">{_text(data[mime])}</div>'
    for mime in ("image/png", "image/jpeg", "image/gif"):
        if mime in data:
            b64 = re.sub(r"\s+", "", _text(data[mime]))
            return f'<img class="cp-image" alt="output image" src="data:{mime};base64,{b64}">'
    for mime in ("text/markdown", "text/latex", "text/plain"):
        if mime in data:
            return f"<pre>{ansi_to_html(_text(data[mime]))}</pre>"
    if "application/json" in data:
        return f"<pre>{html.escape(json.dumps(data['application/json'], indent=1))}</pre>"
    if data:
        kinds = ", ".join(sorted(data))
        return f'<p class="cp-none">output of type {html.escape(kinds)} not shown here</p>'
    return ""


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


_ANSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")
_ANSI_NAMES = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")


def ansi_to_html(text: str) -> str:
    """Escape ``text`` for HTML, turning ANSI colours (tracebacks have them) into spans with
    the class names JupyterLab's styles use (``ansi-red-fg``); other escapes are dropped."""
    out: list[str] = []
    fg: int | None = None
    bold = False
    pos = 0
    for m in _ANSI.finditer(text):
        out.append(html.escape(text[pos : m.start()]))
        pos = m.end()
        if m.group(2) != "m":
            continue
        if fg is not None or bold:
            out.append("</span>")
        codes = [int(c) if c else 0 for c in m.group(1).split(";")]
        i = 0
        while i < len(codes):
            c = codes[i]
            if c == 0:
                fg, bold = None, False
            elif c == 1:
                bold = True
            elif c == 22:
                bold = False
            elif 30 <= c <= 37:
                fg = c - 30
            elif 90 <= c <= 97:
                fg = c - 90 + 8
            elif c == 39:
                fg = None
            elif c in (38, 48) and i + 1 < len(codes):
                i += 2 if codes[i + 1] == 5 else 4  # 256-colour and RGB: not mapped
            i += 1
        classes = []
        if fg is not None:
            name = _ANSI_NAMES[fg % 8]
            classes.append(f"ansi-{name}-intense-fg" if fg >= 8 else f"ansi-{name}-fg")
        if bold:
            classes.append("ansi-bold")
        if classes:
            out.append(f'<span class="{" ".join(classes)}">')
    out.append(html.escape(text[pos:]))
    if fg is not None or bold:
        out.append("</span>")
    return "".join(out)


# -- the whole run (nbconvert) -------------------------------------------------------------------


def render_report(rd: RunDir) -> str:
    """The run as one HTML page: summary, DAG, parameters, metrics, then every step's
    header followed by its cells as nbconvert renders them."""
    import copy

    import nbformat
    from nbformat.v4.rwbase import rejoin_lines

    from cellpipe.reports.executed import executed_notebook

    pipeline = rd.pipeline()
    status = rd.status()
    info = rd.info()
    nb = executed_notebook(rd)
    nb.setdefault("metadata", {}).pop("widgets", None)  # widget state needs a widget manager
    groups = _group_cells(pipeline, nb["cells"])

    # cellpipe's own markup goes in after nbconvert has finished: nbconvert re-parses its
    # whole page with BeautifulSoup, which would double the time if it saw ours too. Cells
    # carry placeholders (HTML comments with a per-render token, so none in a user's output
    # can match) that are replaced at the end.
    token = secrets.token_hex(8)
    inserts: list[str] = []

    def placeholder(markup: str) -> str:
        inserts.append(markup)
        return f"<!--cellpipe-{token}-{len(inserts) - 1}-->"

    cells: list[dict[str, Any]] = []
    pending = ""
    for key, group in groups:
        if key == "intro":
            opening = '<section class="cp-intro">'
        elif key == "prelude":
            opening = (
                '<section class="cp-prelude" id="step-prelude"><header class="cp-step-header">'
                "<h2>Prelude</h2><p>The imports, functions and parameters cells run at the "
                "start of every step; their outputs are shown once, from the first step.</p>"
                "</header>"
            )
        elif key == "skipped":
            opening = (
                '<section class="cp-skipped-cells"><header class="cp-step-header">'
                "<h2>Not in the pipeline</h2><p>Cells tagged <code>skip</code>: "
                "not run.</p></header>"
            )
        else:
            step = pipeline.step(key)
            st = status.steps[key]
            opening = _section_open(key, st.state.value) + step_header(step_facts(rd, step, st))
        pending += opening
        if group:
            group[0].setdefault("metadata", {})["cellpipe_report"] = {
                "before": placeholder(pending)
            }
            last = group[-1].setdefault("metadata", {}).setdefault("cellpipe_report", {})
            last["after"] = placeholder("</section>")
            pending = ""
            cells.extend(group)
        else:
            pending += "</section>"
    nb["cells"] = cells

    title = f"Run {rd.run_id} · {_notebook_name(info)}"
    resources = {
        "metadata": {"name": title, "path": info.get("workdir") or str(rd.path)},
        "cellpipe": {
            "csp": CSP,
            "css": _CSS,
            "top": placeholder(_run_summary(rd, pipeline, status, info)),
            "bottom": placeholder(pending + _footer()),
        },
    }
    with _EXPORTER_LOCK:  # an exporter registers per-notebook filters on itself
        # Sources and texts saved as lists of lines (as Jupyter writes files) become strings,
        # as nbformat's reader makes them; nbconvert's preprocessors expect strings.
        node = rejoin_lines(nbformat.from_dict(copy.deepcopy(nb)))
        body, _ = _exporter().from_notebook_node(node, resources=resources)
    return re.sub(f"<!--cellpipe-{token}-([0-9]+)-->", lambda m: inserts[int(m[1])], body)


_EXPORTER_LOCK = threading.Lock()


@functools.cache
def _exporter() -> Any:
    """One exporter per process: compiling its templates costs more than most renders."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"cellpipe-report.html.j2": _TEMPLATE})],
        template_file="cellpipe-report.html.j2",
        embed_images=True,
    )


def write_report(rd: RunDir, dest: Path | None = None) -> Path:
    """Render the run's report to ``dest`` (default: ``report.html`` in the run directory)."""
    dest = Path(dest) if dest is not None else rd.run_report_path()
    text = render_report(rd)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text(dest, text)
    return dest


def _group_cells(
    pipeline: Pipeline, cells: list[dict[str, Any]]
) -> list[tuple[str, list[dict[str, Any]]]]:
    """Cells by group, groups in page order: notes before the first code cell, the prelude,
    each step in run order, then cells tagged ``skip``. A markdown cell joins the group of
    the code cell after it (it is usually that cell's heading); at the end, the one before."""
    order = ["intro", "prelude", *(s.name for s in pipeline.steps), "skipped"]
    groups: dict[str, list[dict[str, Any]]] = {k: [] for k in order}
    notes: list[dict[str, Any]] = []
    last = "intro"
    for cell, raw in _pair(pipeline, cells):
        if cell is None:  # the injected parameters
            groups["prelude"].append(raw)
            continue
        if cell.role is Role.MARKDOWN:
            notes.append(raw)
            continue
        if cell.role is Role.SKIP:
            if cell.source.strip():
                groups["skipped"].extend([*notes, raw])
                notes = []
            continue
        key = "prelude" if cell.role.prelude else (cell.step or "intro")
        if last == "intro" and not any(groups.values()):
            groups["intro"].extend(notes)
        else:
            groups[key].extend(notes)
        notes = []
        groups[key].append(raw)
        last = key
    groups[last].extend(notes)
    return [(k, groups[k]) for k in order if groups[k] or k not in _OPTIONAL]


_OPTIONAL = {"intro", "prelude", "skipped"}  # shown only when they hold cells


def _pair(pipeline: Pipeline, cells: list[dict[str, Any]]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Each executed cell with its pipeline cell; ``None`` for the injected parameters cell,
    which only the executed notebook has."""
    from cellpipe.compiling.notebook import INJECTED

    source = iter(pipeline.cells)
    for raw in cells:
        tags = raw.get("metadata", {}).get("tags", ())
        if raw.get("id") == INJECTED and "injected-parameters" in tags:
            yield None, raw
        else:
            cell = next(source, None)
            if cell is not None:
                yield cell, raw


def _run_summary(rd: RunDir, pipeline: Pipeline, status: Any, info: Mapping[str, Any]) -> str:
    from cellpipe.reports.dag_svg import dag_svg

    state = status.state.value
    facts = [
        ("Notebook", _code(_notebook_name(info))),
        ("Backend", _code(status.backend)),
        ("Started", _when(status.started_at) if status.started_at else "not yet"),
    ]
    if status.ended_at:
        facts.append(("Ended", _when(status.ended_at)))
    if status.duration_s is not None:
        facts.append(("Duration", _duration(status.duration_s)))
    facts.append(("Engine", f"cellpipe {html.escape(info.get('engine_version') or '?')}"))
    if info.get("python"):
        facts.append(("Python", html.escape(str(info["python"]))))
    parts = _facts_block(
        f'<header class="cp-run"><h1>{_badge(state)} Run {_code(rd.run_id)}</h1>',
        facts,
        status.message,
        failed=status.state is State.FAILED,
    )

    notes = {
        n: _duration(s.duration_s) for n, s in status.steps.items() if s.duration_s is not None
    }
    svg = dag_svg(
        [s.name for s in pipeline.steps],
        [(a, s.name) for s in pipeline.steps for a in s.after],
        {n: s.state.value for n, s in status.steps.items()},
        notes=notes,
        link_prefix=STEP_ANCHOR,
    )
    parts.append(f'<h2>Pipeline</h2><figure class="cp-dag">{svg}</figure>')

    rows = []
    for s in pipeline.steps:
        st = status.steps[s.name]
        rows.append(
            f'<tr><td><a href="#{STEP_ANCHOR}{html.escape(s.name)}">{_code(s.name)}</a></td>'
            f"<td>{_badge(st.state.value)}</td>"
            f"<td>{_duration(st.duration_s) if st.duration_s is not None else ''}</td>"
            f"<td>{st.attempts}</td><td>{'yes' if st.cached else 'no'}</td>"
            f"<td>{html.escape(st.message)}</td></tr>"
        )
    parts.append(
        '<table class="cp-table"><caption>Steps</caption><thead><tr><th>step</th><th>state</th>'
        "<th>duration</th><th>attempts</th><th>cached</th><th>message</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    parts.append(_parameters_table(pipeline, info.get("parameters") or {}))
    parts.append(_metrics_table(rd.metrics()))
    warnings = [d for d in pipeline.diagnostics if d.severity == "warning"]
    if warnings:
        items = "".join(f"<li>{html.escape(str(d))}</li>" for d in warnings)
        parts.append(f'<h2>Compile warnings</h2><ul class="cp-warnings">{items}</ul>')
    parts.append("</header>")
    return "".join(parts)


def _parameters_table(pipeline: Pipeline, values: Mapping[str, Any]) -> str:
    if not pipeline.parameters and not values:
        return '<h2>Parameters</h2><p class="cp-none">The notebook has no parameters cell.</p>'
    rows = []
    for p in pipeline.parameters:
        given = p.name in values
        value = _value_text(values[p.name]) if given else p.expression
        note = "" if not given or values[p.name] == p.default else "set for this run"
        rows.append(
            f"<tr><td>{_code(p.name)}</td><td>{_code(value)}</td><td>{_code(p.expression)}</td>"
            f"<td>{note}</td></tr>"
        )
    return (
        '<h2>Parameters</h2><table class="cp-table"><thead><tr><th>name</th><th>value</th>'
        f"<th>in the notebook</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    if not metrics:
        return '<h2>Metrics</h2><p class="cp-none">No metrics recorded.</p>'
    rows = [
        f"<tr><td>{_code(name)}</td><td>{html.escape(_value_text(value))}</td>"
        f'<td><a href="#{STEP_ANCHOR}{html.escape(step)}">{_code(step)}</a></td></tr>'
        for step, values in metrics.items()
        for name, value in values.items()
    ]
    return (
        '<h2>Metrics</h2><table class="cp-table cp-metrics"><thead><tr><th>name</th>'
        f"<th>value</th><th>step</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


# -- small pieces ----------------------------------------------------------------------------


def _section_open(step: str, state: str) -> str:
    return (
        f'<section class="cp-step state-{html.escape(state)}" '
        f'id="{STEP_ANCHOR}{html.escape(step)}" data-cellpipe-step="{html.escape(step)}" '
        f'data-cellpipe-state="{html.escape(state)}">'
    )


def _page_head(title: str, css: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head>'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width, '
        f'initial-scale=1"><title>{html.escape(title)}</title><style>{css}</style></head>'
    )


def _footer() -> str:
    return (
        f'<footer class="cp-footer">Report made by cellpipe {html.escape(__version__)} on '
        f"{_when(time.time())}.</footer>"
    )


def _notebook_name(info: Mapping[str, Any]) -> str:
    # The file name only: the absolute path would put the author's home directory in a
    # page meant to be shared.
    nb = info.get("notebook")
    return Path(nb).name if nb else info.get("name") or "notebook"


def _badge(state: str) -> str:
    from cellpipe.reports.dag_svg import STATE_STYLE

    icon = STATE_STYLE.get(state, ("?", "", ""))[0]
    return f'<span class="cp-badge state-{html.escape(state)}">{icon} {html.escape(state)}</span>'


def _code(text: str) -> str:
    return f"<code>{html.escape(str(text))}</code>"


def _value_text(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def _when(ts: float) -> str:
    return html.escape(time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts)))


def _state_css() -> str:
    from cellpipe.reports.dag_svg import STATE_STYLE

    return "".join(
        f".cp-badge.state-{s}{{color:{colour};border-color:{colour}}}"
        f".cp-step.state-{s}{{border-left-color:{colour}}}"
        for s, (_, colour, _) in STATE_STYLE.items()
    )


#: Styles of cellpipe's own parts, in both pages; JupyterLab variables with fallbacks.
_CSS = (
    ".cp-run,.cp-step-header{font-family:var(--jp-ui-font-family,system-ui,sans-serif);"
    "color:var(--jp-ui-font-color1,#212121);margin:0 0 12px}"
    ".cp-run{padding:16px 20px;border-bottom:1px solid var(--jp-border-color1,#bdbdbd)}"
    ".cp-run h1{font-size:22px;margin:0 0 10px}.cp-run h2{font-size:16px;margin:18px 0 6px}"
    ".cp-step,.cp-prelude,.cp-skipped-cells,.cp-intro{margin:18px 0;padding:0 0 6px 12px;"
    "border-left:4px solid var(--jp-border-color1,#bdbdbd)}"
    ".cp-step.state-skipped{border-left-style:dashed}"
    ".cp-step-header{padding:8px 8px 4px 8px}.cp-step-header h2{font-size:18px;margin:4px 0 8px}"
    ".cp-facts{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:0 0 8px}"
    ".cp-facts dt{color:var(--jp-ui-font-color2,#616161)}.cp-facts dd{margin:0}"
    ".cp-badge{display:inline-block;padding:0 7px;border:1px solid;border-radius:10px;"
    "font-size:12px;font-weight:600;vertical-align:middle;background:var(--jp-layout-color1,#fff)}"
    ".cp-message{margin:6px 0}.cp-error{color:var(--jp-error-color1,#d32f2f)}"
    ".cp-none{color:var(--jp-ui-font-color2,#616161);margin:6px 0}"
    ".cp-table{border-collapse:collapse;margin:8px 0 10px;font-size:13px}"
    ".cp-table caption{text-align:left;font-weight:600;padding:2px 0}"
    ".cp-table th,.cp-table td{border:1px solid var(--jp-border-color2,#e0e0e0);"
    "padding:3px 8px;text-align:left;vertical-align:top}"
    ".cp-table th{background:var(--jp-layout-color2,#eee)}"
    ".cp-traceback{margin:6px 0}.cp-traceback summary{cursor:pointer;"
    "color:var(--jp-error-color1,#d32f2f)}"
    ".cp-traceback pre{overflow:auto;padding:8px;font-size:12px;"
    "background:var(--jp-rendermime-error-background,#fdd)}"
    ".cp-dag{margin:0;overflow:auto;max-height:80vh}.cp-dag svg{max-width:none}"
    ".cp-footer{margin:24px 0;color:var(--jp-ui-font-color2,#616161);font-size:12px}"
    ".ansi-bold{font-weight:bold}"
    + _state_css()
    + "".join(
        f".ansi-{n}-fg{{color:{c}}}.ansi-{n}-intense-fg{{color:{i}}}"
        for n, c, i in (
            ("black", "#3e424d", "#282c36"),
            ("red", "#e75c58", "#b22b31"),
            ("green", "#00a250", "#007427"),
            ("yellow", "#ddb62b", "#b27d12"),
            ("blue", "#208ffb", "#0065ca"),
            ("magenta", "#d160c4", "#a03196"),
            ("cyan", "#60c6c8", "#258f8f"),
            ("white", "#c5c1b4", "#a1a6b2"),
        )
    )
)

#: The per-step page has no JupyterLab styles: a few of its own.
_BARE_CSS = (
    "body.cp-page{margin:0;background:#fff;color:#212121;font:14px/1.45 system-ui,sans-serif}"
    "body.cp-page main{max-width:1100px;margin:0 auto;padding:12px 20px}"
    ".cp-crumbs{color:#616161;font-size:13px}"
    ".cp-cell{margin:10px 0;border-top:1px solid #e0e0e0;padding-top:6px}"
    ".cp-prompt{color:#616161;font:12px monospace}"
    "pre{font:12.5px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;"
    "margin:4px 0}"
    ".cp-source{background:#f5f5f5;border:1px solid #e0e0e0;padding:6px 8px}"
    ".cp-stderr{background:#fdd;padding:4px 8px}.cp-image{max-width:100%}"
)

#: nbconvert's JupyterLab template without what would fetch or run anything: require.js,
#: MathJax, Mermaid and the widget manager come from CDNs. Math and Mermaid show as source;
#: JavaScript and widget outputs show their text form. The code cells skip the template's
#: HTML sanitizer: pygments has escaped the source already, and the sanitizer took a third of
#: the time of a 100-step report.
_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head -%}
<meta http-equiv="Content-Security-Policy" content="{{ resources.cellpipe.csp }}">
{{ super() }}
{%- endblock html_head -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}<style type="text/css">{{ resources.cellpipe.css }}</style>{%- endblock html_head_css -%}
{%- block body_header -%}{{ super() }}{{ resources.cellpipe.top }}{%- endblock body_header -%}
{%- block any_cell -%}
{{ cell.metadata.get('cellpipe_report', {}).get('before', '') }}
{{ super() }}
{{ cell.metadata.get('cellpipe_report', {}).get('after', '') }}
{%- endblock any_cell -%}
{%- block body_footer -%}{{ resources.cellpipe.bottom }}{{ super() }}{%- endblock body_footer -%}
{%- block input -%}
<div class="jp-CodeMirrorEditor jp-Editor jp-InputArea-editor" data-type="inline">
<div class="cm-editor cm-s-jupyter">{{ cell.source | highlight_code(metadata=cell.metadata) }}</div>
</div>
{%- endblock input -%}
{%- block data_javascript scoped -%}
<div class="jp-RenderedText jp-OutputArea-output"><pre>{{ output.data.get('text/plain', 'JavaScript output (not run in a report)') | escape }}</pre></div>
{%- endblock data_javascript -%}
{%- block data_widget_view scoped -%}
<div class="jp-RenderedText jp-OutputArea-output"><pre>{{ output.data.get('text/plain', 'widget (not shown in a report)') | escape }}</pre></div>
{%- endblock data_widget_view -%}
"""
