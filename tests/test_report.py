"""Run reports: `cellpipe report`, the per-step pages and the server route, on real runs."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cellpipe.reports.dag_svg import layout
from cellpipe.reports.report import write_report
from cellpipe.rundir.runs import RunDir
from conftest import REPO
from nbbuild import notebook, write
from tornado.httpclient import HTTPClientError

GOOD = notebook(
    "# md: # Demo report\nSee [the docs](https://example.com/docs).",
    ("imports", "import matplotlib.pyplot as plt\nfrom IPython.display import HTML, display"),
    ("parameters", "n = 4"),
    (
        "step:load",
        "data = list(range(n))\nprint('loaded', len(data), 'rows from https://example.org/d.csv')",
    ),
    ("step:plot", "fig, ax = plt.subplots()\nax.plot(data)\nplt.show()"),
    (
        "step:table",
        "display(HTML('<b>html-from-table</b> <a href=\"https://example.com/more\">more</a>'))",
    ),
    ("step:score", "score = sum(data) / len(data)\nprint('score is', score)"),
    ("metrics", "score"),
)
BAD = notebook(
    ("step:load", "x = 1\nprint('x is', x)"),
    ("step:boom", "def explode(v):\n    return v / 0\n\ny = explode(x)"),
    ("step:after", "z = y + 1"),
    ("step:side", "w = x + 1\nprint('side says', w)"),
)


def _cellpipe(root: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CELLPIPE_RUNS_ROOT=str(root))
    env["PYTHONPATH"] = str(REPO / "kernel") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "cellpipe", *args],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=env,
    )


def _run(root: Path, nb: Path, *flags: str) -> dict:
    proc = _cellpipe(root, nb.parent, "run", str(nb), "--json", *flags)
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One successful run, the same run again (every step cached) and one failed run."""
    work = tmp_path_factory.mktemp("report")
    root = work / "runs"
    good, bad = write(work / "good.ipynb", GOOD), write(work / "bad.ipynb", BAD)
    first = _run(root, good, "-p", "n=5")
    again = _run(root, good, "-p", "n=5")
    failed = _run(root, bad)
    assert (first["state"], again["state"], failed["state"]) == ("succeeded",) * 2 + ("failed",)
    return {"root": root, "work": work, "good": first, "cached": again, "bad": failed}


def _report(runs: dict, key: str) -> str:
    """`cellpipe report RUN -o FILE`, once per run (tests only read the page)."""
    out = runs["work"] / f"{key}.html"
    if not out.exists():
        cmd = ("report", runs[key]["run_id"], "-o", str(out))
        proc = _cellpipe(runs["root"], runs["work"], *cmd)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(out)
    return out.read_text(encoding="utf-8")


class Page(HTMLParser):
    """What a reader of the page sees per step, and every reference that makes a browser
    fetch something: src-like attributes, href outside <a>, url() and @import in CSS.
    A link (<a href>) is followed only when clicked, so it is not a resource."""

    FETCHING = {"src", "srcset", "poster", "data", "background", "xlink:href"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.sections: list[str | None] = []
        self.text: dict[str, list[str]] = defaultdict(list)
        self.resources: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self.csp: str | None = None
        self.states: dict[str, str] = {}  # the DAG's boxes
        self.section_states: dict[str, str] = {}
        self.everything: list[str] = []
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.sections.append(a.get("data-cellpipe-step"))
            if "data-cellpipe-step" in a:
                self.section_states[a["data-cellpipe-step"]] = a["data-cellpipe-state"]
        if tag == "g" and "data-cellpipe-step" in a:
            self.states[a["data-cellpipe-step"]] = a["data-cellpipe-state"]
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = self.csp or a["content"]
        if tag == "script":
            self.scripts += 1
        self._in_style = tag == "style"
        for k, v in a.items():
            if k in self.FETCHING or (k == "href" and tag not in ("a", "area")):
                self.resources.append(v)
            elif k == "href":
                self.links.append(v)
            elif k == "style":
                self.resources += _css_references(v)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.sections.pop()
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.resources += _css_references(data)
            return
        self.everything.append(data)
        step = next((s for s in reversed(self.sections) if s), None)
        if step:
            self.text[step].append(data)

    def step_text(self, step: str) -> str:
        return " ".join(" ".join(self.text[step]).split())

    def all_text(self) -> str:
        return " ".join(" ".join(self.everything).split())


def _css_references(css: str) -> list[str]:
    return re.findall(r"url\(\s*['\"]?([^'\")]*)", css) + re.findall(
        r"@import\s+['\"]([^'\"]*)", css
    )


def _remote(refs: list[str]) -> list[str]:
    return [r for r in refs if re.match(r"\s*(https?:)?//", r, re.I)]


# -- the whole-run report ---------------------------------------------------------------------


def test_a_successful_runs_report_has_every_steps_outputs_and_the_metrics(runs) -> None:
    page = Page(_report(runs, "good"))
    assert "loaded 5 rows" in page.step_text("load")
    assert "html-from-table" in page.step_text("table")
    assert "score is 2.0" in page.step_text("score")
    assert any(r.startswith("data:image/png;base64,") for r in page.resources)  # the plot
    assert "Metrics name value step score 2.0 metrics" in page.all_text()
    assert "Parameters name value in the notebook n 5 4 set for this run" in page.all_text()
    assert page.states == dict.fromkeys(["load", "plot", "table", "score", "metrics"], "succeeded")


def test_a_failed_runs_report_shows_the_traceback_under_the_failing_step(runs) -> None:
    page = Page(_report(runs, "bad"))
    boom = page.step_text("boom")
    assert "ZeroDivisionError: division by zero" in boom
    assert "Traceback in cell 2" in boom
    # Its frame, however the traceback is coloured (spacing follows the colour spans).
    assert "inexplode(v)1defexplode(v):---->2returnv/0" in "".join(boom.split())
    for other in ("load", "after", "side"):
        assert "ZeroDivisionError" not in page.step_text(other)
    assert "upstream step boom failed" in page.step_text("after")
    assert page.states == {
        "load": "succeeded",
        "boom": "failed",
        "after": "skipped",
        "side": "succeeded",
    }


def test_a_report_parses_and_references_nothing_remote(runs) -> None:
    page = Page(_report(runs, "good"))
    assert page.resources, "the page has images and styles; the parser must see them"
    assert _remote(page.resources) == []
    assert page.scripts == 0
    # Links stay links, and URLs printed by the user stay text.
    assert {"https://example.com/docs", "https://example.com/more"} <= set(page.links)
    assert "https://example.org/d.csv" in page.step_text("load")


def test_a_report_fetches_nothing_in_a_real_browser_even_for_remote_images_in_outputs(
    tmp_path: Path,
) -> None:
    hits: list[str] = []

    class Counter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Counter)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        nb = write(
            tmp_path / "remote.ipynb",
            notebook(
                (
                    "step:show",
                    f"from IPython.display import HTML\nHTML('<img src=\"{url}/pixel.png\">')",
                )
            ),
        )
        run = _run(tmp_path / "runs", nb)
        page = write_report(RunDir(tmp_path / "runs" / run["run_id"]), tmp_path / "page.html")
        assert f'src="{url}/pixel.png"' in page.read_text()  # the user's output, verbatim
        _open_in_chromium(page)
        assert hits == []
        # The same page without its policy does fetch: the check above can see a fetch.
        bare = tmp_path / "bare.html"
        bare.write_text(re.sub(r"<meta[^>]*Content-Security-Policy[^>]*>", "", page.read_text()))
        _open_in_chromium(bare)
        assert hits == ["/pixel.png"]
    finally:
        server.shutdown()
        server.server_close()


def _open_in_chromium(page: Path) -> None:
    browser = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    assert browser, "this test needs Chromium: apt-get install chromium (CI installs it)"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        timeout=90,
        check=True,
    )


def test_report_to_stdout_and_for_an_unknown_run(runs) -> None:
    out = _cellpipe(runs["root"], runs["work"], "report", runs["good"]["run_id"], "-o", "-")
    assert out.returncode == 0 and out.stdout.startswith("<!DOCTYPE html>")
    missing = _cellpipe(runs["root"], runs["work"], "report", "20200101-000000-abcdef")
    assert missing.returncode == 2
    assert "no run 20200101-000000-abcdef" in missing.stderr


# -- the per-step pages ---------------------------------------------------------------------------


def _step_page(runs: dict, key: str, step: str) -> Page:
    path = runs["root"] / runs[key]["run_id"] / "reports" / f"{step}.html"
    return Page(path.read_text(encoding="utf-8"))


def test_every_step_of_a_run_has_its_own_page_with_its_state_and_outputs(runs) -> None:
    expected = {"load": "succeeded", "boom": "failed", "after": "skipped", "side": "succeeded"}
    pages = {step: _step_page(runs, "bad", step) for step in expected}
    for step, page in pages.items():
        assert page.section_states == {step: expected[step]}
    assert "x is 1" in pages["load"].step_text("load")
    assert "ZeroDivisionError: division by zero" in pages["boom"].step_text("boom")
    assert "upstream step boom failed" in pages["after"].step_text("after")
    for step, page in pages.items():
        assert f"{expected[step]} Step {step}" in page.step_text(step)
        assert _remote(page.resources) == [] and page.csp is not None


def test_a_cached_step_has_a_page_that_says_where_it_comes_from(runs) -> None:
    page = _step_page(runs, "cached", "score")
    text = page.step_text("score")
    assert "cached Step score" in text
    assert f"unchanged since run {runs['good']['run_id']}" in text
    assert "score is 2.0" in text  # the outputs of the run it was cached from


def test_a_step_killed_by_its_timeout_still_gets_a_page_that_says_so(tmp_path: Path) -> None:
    nb = write(
        tmp_path / "slow.ipynb", notebook(("step:slow timeout:1", "import time\ntime.sleep(60)"))
    )
    run = _run(tmp_path / "runs", nb)
    assert run["state"] == "failed"
    page = tmp_path / "runs" / run["run_id"] / "reports" / "slow.html"
    text = Page(page.read_text(encoding="utf-8")).step_text("slow")
    assert "failed Step slow" in text and "timed out after 1 s" in text


def test_a_step_page_lists_inputs_and_outputs_with_type_and_size(runs) -> None:
    text = _step_page(runs, "good", "score").step_text("score")
    assert "Inputs name from step type size details data load builtins.list" in text
    assert "Outputs name type size details read by score builtins.float" in text


# -- the DAG ------------------------------------------------------------------------------------


def test_the_dag_puts_every_step_below_the_steps_it_depends_on() -> None:
    nodes = ["load", "a", "b", "c", "join", "late"]
    edges = [
        ("load", "a"),
        ("load", "b"),
        ("a", "c"),
        ("b", "join"),
        ("c", "join"),
        ("load", "late"),
    ]
    lay = layout(nodes, edges)
    for s, t in edges:
        assert lay.nodes[s][1] < lay.nodes[t][1]
    # load -> late skips no layer; a -> c -> join is the longest path, three layers below load.
    assert lay.nodes["join"][1] > lay.nodes["c"][1] > lay.nodes["a"][1] > lay.nodes["load"][1]


def test_the_dag_orders_layers_to_avoid_crossings() -> None:
    # Two chains declared crosswise: a naive order crosses both edges, barycentres none.
    lay = layout(["a", "b", "x", "y"], [("a", "y"), ("b", "x")])
    assert lay.crossings == 0
    assert (lay.nodes["a"][0] < lay.nodes["b"][0]) == (lay.nodes["y"][0] < lay.nodes["x"][0])


def test_an_edge_across_layers_bends_around_the_steps_between() -> None:
    lay = layout(["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")])
    route = lay.edges[("a", "c")]
    bx = lay.nodes["b"][0]
    assert len(route) == 4  # out of a, past b's layer (two points), into c
    assert not bx <= route[1][0] <= bx + 168


# -- the server -------------------------------------------------------------------------------


async def test_the_server_serves_a_runs_report_as_html(jp_fetch, jp_root_dir) -> None:
    write(jp_root_dir / "pipe.ipynb", notebook(("step:only", "print('served-output')")))
    resp = await jp_fetch(
        "cellpipe", "api", "runs", method="POST", body=json.dumps({"path": "pipe.ipynb"})
    )
    run_id = json.loads(resp.body)["run_id"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        run = json.loads((await jp_fetch("cellpipe", "api", "runs", run_id)).body)
        if run["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.1)
    assert run["state"] == "succeeded"
    resp = await jp_fetch("cellpipe", "api", "runs", run_id, "report")
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = resp.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "img-src data:" in csp and "sandbox" in csp
    page = Page(resp.body.decode())
    assert "served-output" in page.step_text("only")


async def test_the_server_refuses_a_report_of_an_unknown_run(jp_fetch) -> None:
    with pytest.raises(HTTPClientError) as err:
        await jp_fetch("cellpipe", "api", "runs", "20200101-000000-abcdef", "report")
    assert err.value.code == 404
    body = json.loads(err.value.response.body)
    assert body["error"] == "RunNotFound" and "20200101-000000-abcdef" in body["message"]
