"""The sidebar runs the example on the real Argo cluster (GitHub issue 18).

A `jupyter lab` of its own, started with the variables of the file `.ci/cluster up` prints
(KUBECONFIG for `cellpipe-user`, the registry, the storage class), as a user who sourced it
before starting Jupyter. The step images are pushed first, as a user does with `cellpipe
image build --push`; then the user picks backend `argo` in the sidebar and clicks Compile
and Run, and the steps, pods on the cluster, go to `succeeded` in the sidebar.

Like tests/test_argo_cluster.py it skips without a cluster, saying how to start one, and
fails instead under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from .harness import Lab, new_page, start_lab, stop
from .lab import (
    PHASE_S,
    SIDEBAR,
    click_button,
    open_notebook,
    record_states,
    seen_states,
    show_sidebar,
    status_line,
    step_states,
    wait_for_run_end,
    wait_for_steps,
)
from .test_sidebar import WINE, steps_of

CLUSTER_ENV = Path(os.environ.get("CELLPIPE_CLUSTER_STATE", "/var/lib/cellpipe-cluster")) / "env.sh"
# Each step is a pod (image pull, argoexec init and wait containers): 10-20 s each here.
RUN_S = 600


def _cluster_env() -> dict[str, str]:
    given = os.environ.get("CELLPIPE_CLUSTER_ENV")
    path = Path(given) if given else CLUSTER_ENV
    if not path.is_file():
        why = (
            "no Argo cluster: run `.ci/cluster up` and source the file it prints "
            f"(CELLPIPE_CLUSTER_ENV is unset and {CLUSTER_ENV} does not exist)"
        )
        if os.environ.get("CI"):
            pytest.fail(why + "; under CI the cluster must be up", pytrace=False)
        pytest.skip(why)
    out = subprocess.run(
        ["bash", "-c", 'source "$1" && env -0', "_", str(path)],
        capture_output=True,
        check=True,
    ).stdout.decode()
    sourced = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    env = {
        k: v
        for k, v in sourced.items()
        if k.startswith("CELLPIPE_CLUSTER_") or k in ("KUBECONFIG", "PATH")
    }
    # The follower's poll of the Workflow: the cluster tests' 2 s, not the default's minutes.
    env["CELLPIPE_ARGO_POLL"] = "2"
    return env


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return _cluster_env()


@pytest.fixture(scope="module")
def argo_lab(
    tmp_path_factory: pytest.TempPathFactory, cluster_env: dict[str, str]
) -> Iterator[Lab]:
    server = start_lab(tmp_path_factory.mktemp("argo-lab"), extra_env=cluster_env)
    yield server
    stop(server.proc)


def _push_images(cluster_env: dict[str, str], nb: Path) -> None:
    """`cellpipe image build --registry ... --push`, as a user does before an Argo run."""
    env = dict(os.environ, **cluster_env)
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "cellpipe", "image", "build"),
            *("--registry", env["CELLPIPE_CLUSTER_REGISTRY"], "--push", str(nb)),
        ],
        capture_output=True,
        text=True,
        cwd=nb.parent,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


@pytest.fixture
def argo_page(browser: Browser) -> Iterator[Page]:
    p = new_page(browser)
    yield p
    p.context.close()


def test_the_sidebar_runs_the_example_on_the_cluster_with_backend_argo(
    argo_page: Page, argo_lab: Lab, cluster_env: dict[str, str]
) -> None:
    page = argo_page
    name = "argo-wine.ipynb"
    shutil.copyfile(WINE, argo_lab.root / name)
    _push_images(cluster_env, argo_lab.root / name)

    open_notebook(page, argo_lab.url, name)
    show_sidebar(page)
    steps = steps_of(WINE)
    wait_for_steps(page, steps)
    backend = page.locator(SIDEBAR).locator('select[aria-label="Backend"]')
    # The server found the cluster: Argo is offered, not disabled with a reason.
    argo = backend.locator('option[value="argo"]')
    expect(argo).to_be_enabled(timeout=PHASE_S * 1000)
    backend.select_option("argo")
    # The choice sticks to the notebook (metadata.cellpipe.backend), unsaved.
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.context.model"
        ".getMetadata('cellpipe')?.backend === 'argo'"
    )

    record_states(page)
    click_button(page, "Compile and Run")
    states = wait_for_run_end(page, timeout_s=RUN_S)
    assert states == dict.fromkeys(steps, "succeeded"), (states, step_states(page))
    seen = seen_states(page)
    assert any("running" in s for s in seen.values()), seen
    run = page.locator(f"{SIDEBAR} .cellpipe-run-row").first
    expect(run).to_have_attribute("data-cellpipe-state", "succeeded")
    expect(run.locator(".cellpipe-run-meta")).to_contain_text("argo")
    print(f"wine on argo from the sidebar: {status_line(page)}")
