"""The names of the files in a run directory and in the runs root: the one place they are
written down.

Everything here is a pure function of a base path (no I/O), so the same names serve the run
directory on this machine (:class:`cellpipe.rundir.runs.RunDir` reads and writes it) and the
one an Argo pod mounts at another path (cellpipe.backends.argo.manifest). Any other module
that needs a file of a run asks a ``RunDir``; ``tests/test_architecture.py`` fails when a
name below is spelled out anywhere else.

::

    <runs root>/
      .cache/<key>.json       the cache index: key -> run directory and step that made it
      .history.sqlite         the server's index of runs (cellpipe_server.history)
      <run-id>/
        run.json              who started it, from where, notebook, backend, parameters
        notebook.ipynb        the notebook as it was when the run started
        pipeline.json         the compiled pipeline;  steps/<step>.py  readable step scripts
        events.jsonl          append-only state changes: {ts, run, step?, state, attempt, ...}
        driver.json           pid, process start time and host of the process driving the run
        logs/<step>.log       stdout and stderr of the step
        logs/_driver.log, _run.log, _prelude.log, _images.log   the engine's own logs
        outputs/<step>.json   nbformat outputs of each cell, by cell id
        outputs/<step>.gate   in an Argo pod: ``open``/``closed``, the gate's output parameter
        data/<step>/          the step's values (files named by cellpipe.execution.marshal),
                              manifest.json listing them, and beside them the step's
                              cache_key, gate.json, lineage.json and metrics.json, and
                              hidden.json / hidden-state.pkl (cellpipe.execution.hidden_state);
                              for a step run on Argo, remote.json: where its values are kept
                              on the cluster (storage, run) and their manifest
        hidden/<step>.json    whose hidden state each step starts from (the scheduler's)
        folder.tgz.b64, folder/   in an Argo pod: the notebook's folder, packed and unpacked
        metrics.json          metrics by step
        reports/<step>.html   step reports;  report.html  the run's report
        .go/<step>-<attempt>  go files of containers started ahead (Docker backend)
        .<name>.lock          locks of read-modify-write files (metrics.json)
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TypeVar

P = TypeVar("P", bound=PurePath)

# -- in the runs root ------------------------------------------------------------------------
CACHE_INDEX = ".cache"
HISTORY_DB = ".history.sqlite"

# -- in a run directory ----------------------------------------------------------------------
RUN_INFO = "run.json"
NOTEBOOK = "notebook.ipynb"
PIPELINE = "pipeline.json"
STEPS = "steps"
EVENTS = "events.jsonl"
DRIVER = "driver.json"
LOGS = "logs"
OUTPUTS = "outputs"
DATA = "data"
METRICS = "metrics.json"
REPORTS = "reports"
#: Not under ``reports/``, where a step called ``index`` or ``run`` would clash with it.
RUN_REPORT = "report.html"
GO = ".go"
HIDDEN_ENTRIES = "hidden"
FOLDER_ARCHIVE = "folder.tgz.b64"  # in an Argo pod: the notebook's folder, packed
FOLDER_COPY = "folder"  # in an Argo pod with S3: the notebook's folder, unpacked

#: The engine's own logs in ``logs/`` (a step's log is ``logs/<step>.log``).
DRIVER_LOG = "_driver.log"
RUN_LOG = "_run.log"
PRELUDE_LOG = "_prelude.log"
IMAGES_LOG = "_images.log"

# -- in a step's data directory (data/<step>/) ------------------------------------------------
MANIFEST = "manifest.json"
CACHE_KEY = "cache_key"
GATE = "gate.json"
LINEAGE = "lineage.json"
STEP_METRICS = METRICS  # the step's own metrics, carried along when the step is cached
HIDDEN_FINGERPRINTS = "hidden.json"  # fingerprints of hidden state around the step
HIDDEN_STATES = "hidden-state.pkl"  # the states of the hidden state the step changed
#: An Argo step's values stay on the cluster: where (storage, run key) and their manifest.
REMOTE = "remote.json"

#: Folders every run directory has (a directory from ``cellpipe compile -o`` gets them when
#: its first step runs).
FOLDERS = (LOGS, OUTPUTS, DATA)

#: The files whose change means a run's status or metrics may have changed.
STATUS_FILES = (EVENTS, RUN_INFO, METRICS)


def cache_index(runs_root: P) -> P:
    return runs_root / CACHE_INDEX


def cache_entry(runs_root: P, key: str) -> P:
    return runs_root / CACHE_INDEX / f"{key}.json"


def history_db(runs_root: P) -> P:
    return runs_root / HISTORY_DB


def info_file(run: P) -> P:
    return run / RUN_INFO


def notebook_file(run: P) -> P:
    return run / NOTEBOOK


def pipeline_file(run: P) -> P:
    return run / PIPELINE


def step_script_file(run: P, step: str) -> P:
    return run / STEPS / f"{step}.py"


def events_file(run: P) -> P:
    return run / EVENTS


def driver_file(run: P) -> P:
    return run / DRIVER


def log_file(run: P, step: str) -> P:
    return run / LOGS / f"{step}.log"


def engine_log_file(run: P, name: str) -> P:
    """One of the engine's logs: DRIVER_LOG, RUN_LOG, PRELUDE_LOG or IMAGES_LOG."""
    return run / LOGS / name


def outputs_file(run: P, step: str) -> P:
    return run / OUTPUTS / f"{step}.json"


def gate_output_file(run: P, step: str) -> P:
    """In an Argo pod: the gate's verdict as one word, the step's output parameter ``gate``
    (what the controller's ``when`` on the tasks downstream reads)."""
    return run / OUTPUTS / f"{step}.gate"


def data_root(run: P) -> P:
    return run / DATA


def data_dir(run: P, step: str) -> P:
    return run / DATA / step


def foreach_dir(run: P, step: str) -> P:
    """A foreach step's finished iterations (cellpipe.execution.fanout), under the data,
    which every backend shares between a run's steps and pods; beside, not inside,
    ``data_dir`` (which a step empties before it saves)."""
    return run / DATA / ".foreach" / step


def metrics_file(run: P) -> P:
    return run / METRICS


def report_file(run: P, step: str) -> P:
    return run / REPORTS / f"{step}.html"


def run_report_file(run: P) -> P:
    return run / RUN_REPORT


def hidden_entry_file(run: P, step: str) -> P:
    return run / HIDDEN_ENTRIES / f"{step}.json"


def folder_archive(run: P) -> P:
    """In an Argo pod: the notebook's folder as the manifest carries it (base64 text of a
    gzipped tar; cellpipe.backends.argo.folder)."""
    return run / FOLDER_ARCHIVE


def folder_copy(run: P) -> P:
    """In an Argo pod with S3 data: the notebook's folder, unpacked, which the step copies
    into its working directory before its first cell."""
    return run / FOLDER_COPY


def go_dir(run: P) -> P:
    return run / GO


def go_file(run: P, step: str, attempt: int) -> P:
    return run / GO / f"{step}-{attempt}"


def cancel_file(go: P) -> P:
    """Beside a go file: its container must not start the step after all."""
    return go.with_name(go.name + ".cancel")


def lock_file(run: P, name: str) -> P:
    return run / f".{name}.lock"


def names() -> frozenset[str]:
    """Every file and folder name above: what no other module may spell out."""
    return frozenset(
        v for k, v in globals().items() if k.isupper() and isinstance(v, str) and k != "P"
    )
