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

profile_option = click.option(
    "--profile",
    "profile_name",
    metavar="NAME",
    help="argo: cluster settings from profile NAME (see `cellpipe profile --help`); the "
    "notebook's metadata.cellpipe.argo and the options here win over it, key by key. "
    "Default: $CELLPIPE_PROFILE; --profile '' for none.",
)


def load_selected(profile_name: str | None) -> dict[str, Any] | None:
    """The profile ``--profile`` (else ``$CELLPIPE_PROFILE``) names, as JSON; None for none."""
    from cellpipe.backends.argo.profiles import resolve

    profile = resolve(profile_name)
    return profile.to_json() if profile else None


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
    from cellpipe.core.notify import notify_target

    return notify_target(pipeline.settings.get("notify"), default)


def _folder(pipeline: Pipeline, settings: Any) -> Any:
    """The notebook's folder, packed for the manifest (the default runs root left out)."""
    from cellpipe.backends.argo.folder import for_settings
    from cellpipe.rundir.runs import default_root

    workdir = Path(pipeline.path).resolve().parent if pipeline.path else None
    return for_settings(settings, workdir, exclude=[default_root()])


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


def compile_argo(
    pipeline: Pipeline, out: str | None, as_json: bool, profile: dict[str, Any] | None = None
) -> None:
    """``cellpipe compile NB --target argo [-o FILE]``: the Workflow as YAML (stdout without -o)."""
    from cellpipe.backends.argo.manifest import ArgoSettings, build_workflow, to_yaml

    settings = ArgoSettings.from_notebook(pipeline.settings, profile)
    notify = _notify(pipeline)
    doc = build_workflow(pipeline, settings, folder=_folder(pipeline, settings), notify=notify)
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
@profile_option
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
    profile_name: str | None,
    notify: str | None,
) -> None:
    """Run NOTEBOOK on a schedule: an Argo CronWorkflow, written as YAML or submitted.

    \b
    Examples:
      cellpipe schedule nightly.ipynb --cron "0 3 * * *" -o cron.yaml
      cellpipe schedule nightly.ipynb --cron "0 3 * * *" --timezone Europe/Paris --submit
      cellpipe schedule nightly.ipynb --cron "0 3 * * *" --profile prod --submit
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
    profile = load_selected(profile_name)
    settings = ArgoSettings.from_notebook(pipeline.settings, profile, namespace=namespace)
    cluster = None
    if submit:
        from cellpipe.backends.argo.backend import Cluster

        cluster = Cluster((profile or {}).get("context"))
        if not settings.namespace:
            settings = ArgoSettings.from_notebook(
                pipeline.settings, profile, namespace=cluster.default_namespace
            )
    target = _notify(pipeline, notify)
    doc = build_cron_workflow(
        pipeline, settings, when, name=name, folder=_folder(pipeline, settings), notify=target
    )
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


# -- cellpipe profile -------------------------------------------------------------------------


@click.group("profile")
def profile() -> None:
    """Named cluster profiles: Argo settings kept outside the notebook.

    A profile is one JSON file, FOLDER/NAME.json: under "argo" the keys a notebook's
    metadata.cellpipe.argo takes (namespace, registry, service_account, existing_claim,
    storage_class, s3, node_selector, image_pull_secrets, ...; see docs/argo.md), checked
    the same way; optionally a "description" and a "context" (the kubeconfig context to
    submit with). FOLDER is $CELLPIPE_PROFILE_DIR, else $XDG_CONFIG_HOME/cellpipe/profiles
    (~/.config/cellpipe/profiles).

    `run --backend argo`, `compile --target argo`, `schedule` and `image build` use the
    profile that --profile NAME names, else $CELLPIPE_PROFILE. Key by key, their options
    win over the notebook's metadata.cellpipe.argo, which wins over the profile. A run keeps
    its profile's settings: `run --resume` uses them even if the file changed since.

    \b
    Examples:
      cellpipe profile add team --set namespace=ml --set registry=registry.example.org/team \\
          --set existing_claim=shared --description "the team's cluster"
      cellpipe profile list
      cellpipe profile show team
      cellpipe image build --profile team --push nb.ipynb
      CELLPIPE_PROFILE=team cellpipe run nb.ipynb --backend argo

    To change a profile, edit its file (`profile show` prints its path) or run `profile add
    NAME --replace ...`; to remove it, delete the file.
    """


@profile.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout only.")
def profile_list(as_json: bool) -> None:
    """List the profiles; `*` marks the one $CELLPIPE_PROFILE selects.

    A profile that cannot be used (bad JSON, an unknown key) is listed with why.
    """
    from cellpipe.backends.argo.profiles import list_profiles, profile_dir, selected_name

    folder = profile_dir()
    listed = list_profiles(folder)
    selected = selected_name(None)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "folder": str(folder),
                    "selected": selected,
                    "profiles": [p.to_json() for p in listed],
                },
                indent=1,
            )
        )
        return
    if not listed:
        where = "does not exist" if not folder.is_dir() else "holds no profiles"
        click.echo(f"{folder} {where}; add one with `cellpipe profile add NAME --set KEY=VALUE`")
        return
    click.echo(f"profiles in {folder}:")
    width = max(len(p.name) for p in listed)
    for p in listed:
        mark = "*" if p.name == selected else " "
        what = p.profile.description if p.profile else f"(cannot be used: {p.error})"
        click.echo(f"{mark} {p.name:<{width}}  {what}".rstrip())
    if selected and selected not in {p.name for p in listed}:
        click.echo(f"$CELLPIPE_PROFILE names {selected!r}, which is not there", err=True)


@profile.command("show")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print only the profile, as JSON.")
def profile_show(name: str | None, as_json: bool) -> None:
    """Print a profile's file and settings (default: $CELLPIPE_PROFILE's)."""
    from cellpipe.backends.argo.errors import ProfileError
    from cellpipe.backends.argo.profiles import ENV_PROFILE, load_profile, selected_name

    name = name or selected_name(None)
    if not name:
        raise ProfileError(f"give a profile NAME (${ENV_PROFILE} selects none)")
    p = load_profile(name)
    if as_json:
        click.echo(json.dumps(p.to_json(), indent=1))
        return
    click.echo(f"profile {p.name}: {p.path}")
    if p.description:
        click.echo(f"  description: {p.description}")
    click.echo(f"  context: {p.context or '(the kubeconfig current context)'}")
    if not p.argo:
        click.echo("  argo: (no settings)")
    for key, value in p.argo.items():
        click.echo(f"  argo.{key}: {json.dumps(value)}")


@profile.command("add")
@click.argument("name")
@click.option(
    "--set",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="An Argo setting (a key of metadata.cellpipe.argo). VALUE is read as JSON when it "
    'is JSON (60, true, ["a"], {"k": "v"}), else as text. Repeatable.',
)
@click.option("--description", default="", help="One line saying what the profile is for.")
@click.option("--context", help="The kubeconfig context to submit with (default: its current).")
@click.option("--replace", is_flag=True, help="Overwrite the profile if it exists.")
def profile_add(
    name: str, pairs: tuple[str, ...], description: str, context: str | None, replace: bool
) -> None:
    """Write a profile, after checking every setting as a notebook's are checked.

    \b
    Example:
      cellpipe profile add team --set namespace=ml --set registry=registry.example.org/team \\
          --set image_pull_secrets='["pull-secret"]' --set node_selector='{"pool": "cpu"}'
    """
    from cellpipe.backends.argo.errors import ProfileError
    from cellpipe.backends.argo.profiles import Profile, check_name, profile_dir, write_profile

    check_name(name)
    argo: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ProfileError(f"--set {pair!r}: expects KEY=VALUE, e.g. --set namespace=ml")
        try:
            value: Any = json.loads(text)
        except ValueError:
            value = text
        argo[key.strip()] = value
    path = profile_dir() / f"{name}.json"
    written = write_profile(Profile(name, path, description, context, argo), replace=replace)
    click.echo(f"wrote profile {name}: {written}")
    click.echo(f"use it with --profile {name}, or export CELLPIPE_PROFILE={name}", err=True)
