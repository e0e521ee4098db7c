"""``cellpipe compile --target argo`` and ``cellpipe schedule``: Argo manifests on the command line.

Settings come from the notebook's ``metadata.cellpipe.argo`` (and ``metadata.cellpipe.schedule``
for schedule defaults), with the options given here on top. See docs/argo.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cellpipe.core.model import Pipeline


def _warn_all(pipeline: Pipeline, settings: Any, notify: Any = None) -> None:
    from cellpipe.backends.argo.manifest import file_warnings, notify_warnings

    workdir = Path(pipeline.path).resolve().parent if pipeline.path else Path.cwd()
    for d in (*pipeline.diagnostics, *file_warnings(pipeline, workdir, settings)):
        click.echo(f"cellpipe: warning: {d}", err=True)
    for d in notify_warnings(notify):
        click.echo(f"cellpipe: warning: {d.message}", err=True)


def _notify(pipeline: Pipeline, default: str | None = None) -> Any:
    """Where the manifest's runs notify: ``metadata.cellpipe.notify``, else ``default``
    (resolved as ``cellpipe run`` resolves it)."""
    from cellpipe.driving.driver import _notify_target

    return _notify_target(pipeline.settings.get("notify"), default)


def _write(text: str, out: str | None) -> None:
    if out in (None, "-"):
        click.echo(text, nl=False)
    else:
        Path(out).write_text(text, encoding="utf-8")


def _image_hint(doc: dict[str, Any], pipeline: Pipeline, registry: str | None) -> str:
    spec = doc["spec"].get("workflowSpec", doc["spec"])
    images = sorted({t["container"]["image"] for t in spec["templates"] if "container" in t})
    reg = f" --registry {registry}" if registry else " --registry REGISTRY"
    nb = pipeline.path or "NOTEBOOK"
    return (
        f"steps run in {len(images)} image(s): {', '.join(images)}\n"
        f"build and push them with: cellpipe image build{reg} --push {nb}"
    )


def compile_argo(pipeline: Pipeline, out: str | None, as_json: bool) -> None:
    """``cellpipe compile NB --target argo [-o FILE]``: the Workflow as YAML (stdout without -o)."""
    from cellpipe.backends.argo.manifest import ArgoSettings, build_workflow, to_yaml

    settings = ArgoSettings.from_notebook(pipeline.settings)
    notify = _notify(pipeline)
    doc = build_workflow(pipeline, settings, notify=notify)
    _warn_all(pipeline, settings, notify)
    if as_json:
        click.echo(json.dumps(doc, indent=1))
        if out not in (None, "-"):
            _write(to_yaml(doc), out)
        return
    _write(to_yaml(doc), out)
    if out not in (None, "-"):
        click.echo(f"Wrote {out}: an Argo Workflow of {len(pipeline.steps)} steps", err=True)
        click.echo(_image_hint(doc, pipeline, settings.registry), err=True)
        click.echo(f"submit it with: kubectl create -f {out}  (or `argo submit {out}`)", err=True)


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False))
@click.option(
    "--cron",
    "crons",
    multiple=True,
    metavar="EXPR",
    help='When to run, e.g. "0 3 * * *" (repeatable). Default: metadata.cellpipe.schedule.cron.',
)
@click.option(
    "--backend",
    type=click.Choice(["argo"]),
    default="argo",
    show_default=True,
    help="Where scheduled runs go (Argo CronWorkflow).",
)
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), help="Write the YAML here.")
@click.option("--submit", is_flag=True, help="Create the CronWorkflow on the cluster.")
@click.option("--namespace", help="Kubernetes namespace (default: the kubeconfig's).")
@click.option("--name", help="CronWorkflow name (default: cellpipe-<notebook>).")
@click.option("--timezone", help="IANA time zone of the cron expressions, e.g. Europe/Paris.")
@click.option(
    "--concurrency-policy",
    type=click.Choice(["Allow", "Forbid", "Replace"]),
    help="When a run is due while the last one still runs. Default: Forbid.",
)
@click.option("--history", type=click.IntRange(min=0), help="Succeeded runs kept. Default: 3.")
@click.option("--failed-history", type=click.IntRange(min=0), help="Failed runs kept. Default: 1.")
@click.option("--suspend", is_flag=True, help="Create it suspended (no runs until resumed).")
@click.option(
    "--notify",
    metavar="URL",
    envvar="CELLPIPE_NOTIFY",
    help="Each run POSTs its status (JSON) to URL from its exit handler; ${NAME} in it comes "
    "from the Secret metadata.cellpipe.argo.notify_secrets names. The notebook's "
    "metadata.cellpipe.notify wins. Default: $CELLPIPE_NOTIFY.",
)
def schedule(
    notebook: str,
    crons: tuple[str, ...],
    backend: str,
    out: str | None,
    submit: bool,
    namespace: str | None,
    name: str | None,
    timezone: str | None,
    concurrency_policy: str | None,
    history: int | None,
    failed_history: int | None,
    suspend: bool,
    notify: str | None,
) -> None:
    """Run NOTEBOOK on a schedule: an Argo CronWorkflow, written as YAML or submitted.

    \b
    Examples:
      cellpipe schedule nightly.ipynb --cron "0 3 * * *" -o cron.yaml
      cellpipe schedule nightly.ipynb --cron "0 3 * * *" --timezone Europe/Paris --submit
    """
    from cellpipe.backends.argo.errors import ArgoSettingsError
    from cellpipe.backends.argo.manifest import ArgoSettings, Schedule, build_cron_workflow, to_yaml
    from cellpipe.compiling.compiler import compile_notebook

    if submit and out:
        raise ArgoSettingsError("give -o FILE or --submit, not both")
    pipeline = compile_notebook(notebook)
    defaults = pipeline.settings.get("schedule") or {}
    if not isinstance(defaults, dict):
        raise ArgoSettingsError(
            "metadata.cellpipe.schedule must be an object (cron, timezone, ...)"
        )
    if not crons:
        cron = defaults.get("cron")
        crons = tuple([cron] if isinstance(cron, str) else cron or ())
    if not crons:
        raise ArgoSettingsError(
            'give --cron "MIN HOUR DAY MONTH WEEKDAY" (e.g. "0 3 * * *"), or set '
            "metadata.cellpipe.schedule.cron in the notebook"
        )
    when = Schedule(
        crons=tuple(crons),
        timezone=timezone or defaults.get("timezone"),
        concurrency_policy=concurrency_policy or defaults.get("concurrency_policy", "Forbid"),
        successful_history=history
        if history is not None
        else defaults.get("successful_history", 3),
        failed_history=failed_history
        if failed_history is not None
        else defaults.get("failed_history", 1),
        suspend=suspend,
    )
    settings = ArgoSettings.from_notebook(pipeline.settings, namespace=namespace)
    cluster = None
    if submit:
        from cellpipe.backends.argo.backend import Cluster

        cluster = Cluster()
        if not settings.namespace:
            settings = ArgoSettings.from_notebook(
                pipeline.settings, namespace=cluster.default_namespace
            )
    target = _notify(pipeline, notify)
    doc = build_cron_workflow(pipeline, settings, when, name=name, notify=target)
    _warn_all(pipeline, settings, target)
    if cluster is None:
        _write(to_yaml(doc), out)
        if out:
            click.echo(f"Wrote {out}: a CronWorkflow ({', '.join(crons)})", err=True)
            click.echo(_image_hint(doc, pipeline, settings.registry), err=True)
        return
    ns = doc["metadata"]["namespace"]
    cluster.create(ns, "cronworkflows", doc)
    click.echo(
        f"scheduled {doc['metadata']['name']} in namespace {ns}: {', '.join(crons)}"
        + (f" ({when.timezone})" if when.timezone else "")
    )
    click.echo(_image_hint(doc, pipeline, settings.registry), err=True)
