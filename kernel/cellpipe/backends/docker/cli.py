"""``cellpipe image``: the container images a notebook's steps run in (Docker and Argo)."""

from __future__ import annotations

import json

import click

from cellpipe.backends.argo.cli import profile_option


@click.group("image")
def image() -> None:
    """Container images of a notebook's steps."""


@image.command("build")
@click.argument("notebook", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--registry",
    metavar="PREFIX",
    help="Name the images PREFIX/cellpipe-step:<hash> (e.g. ghcr.io/team), as the Argo "
    "backend expects them. Default: the notebook's metadata.cellpipe.argo.registry, else "
    "the profile's (--profile).",
)
@click.option(
    "--tag",
    "extra_tag",
    metavar="REF",
    help="Also tag the image as REF (only when the notebook's steps need one image).",
)
@click.option("--push", is_flag=True, help="Push the images (needs a registry).")
@profile_option
@click.option("--json", "as_json", is_flag=True, help="Print the images as JSON on stdout.")
def build(
    notebook: str,
    registry: str | None,
    extra_tag: str | None,
    push: bool,
    profile_name: str | None,
    as_json: bool,
) -> None:
    """Build the images NOTEBOOK's steps need; images that exist are not built again.

    The registry is --registry, else the one an Argo run of NOTEBOOK names its images with
    (metadata.cellpipe.argo.registry, else the profile's), so `image build --push` pushes
    what `run --backend argo` pulls.
    """
    from cellpipe.backends.docker.build import build_image, docker_client, push_image
    from cellpipe.backends.images import plan_images
    from cellpipe.compiling.compiler import compile_notebook

    pipeline = compile_notebook(notebook)
    if not registry:
        registry = _argo_registry(pipeline, profile_name)
    if push and not registry:
        raise click.UsageError(
            "--push needs --registry PREFIX (or a registry in metadata.cellpipe.argo or the "
            "profile): images named cellpipe-step:<hash> would go to Docker Hub's library"
        )
    plans = plan_images(pipeline, registry)
    by_ref: dict[str, list[str]] = {}
    for step, spec in plans.items():
        by_ref.setdefault(spec.ref, []).append(step)
    if extra_tag and len(by_ref) > 1:
        raise click.UsageError(
            f"--tag names one image, but these steps need {len(by_ref)}: "
            + "; ".join(", ".join(steps) for steps in by_ref.values())
        )

    def say(line: str) -> None:
        click.echo(line, err=True)

    client = docker_client()
    report = []
    try:
        for ref, steps in by_ref.items():
            spec = plans[steps[0]]
            built = build_image(client, spec, steps, log=say if not as_json else None)
            refs = [ref]
            if extra_tag:
                repository, tag = _split_ref(extra_tag)
                client.images.get(ref).tag(repository, tag=tag)
                refs.append(f"{repository}:{tag}")
            if push:
                for r in refs:
                    push_image(client, r, log=say if not as_json else None)
            report.append(
                {
                    "ref": ref,
                    "tags": refs[1:],
                    "steps": steps,
                    "base": spec.base,
                    "packages": list(spec.packages),
                    "built": built,
                    "pushed": push,
                }
            )
    finally:
        client.close()
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    for r in report:
        what = "built" if r["built"] else "present"
        extra = f" (also {', '.join(r['tags'])})" if r["tags"] else ""
        pushed = ", pushed" if r["pushed"] else ""
        packages = ", ".join(r["packages"]) or "no extra packages"
        click.echo(f"{r['ref']}{extra}: {what}{pushed}; steps {', '.join(r['steps'])}; {packages}")


def _argo_registry(pipeline: object, profile_name: str | None) -> str | None:
    """The registry prefix an Argo run of ``pipeline`` uses: the notebook's, else the
    selected profile's."""
    from cellpipe.backends.argo.cli import load_selected
    from cellpipe.backends.argo.manifest import ArgoSettings

    settings = ArgoSettings.from_notebook(pipeline.settings, load_selected(profile_name))  # type: ignore[attr-defined]
    if settings.registry:
        click.echo(f"cellpipe: images named for registry {settings.registry}", err=True)
    return settings.registry


def _split_ref(ref: str) -> tuple[str, str]:
    """``host:5000/team/app:v1`` -> (``host:5000/team/app``, ``v1``); no tag: ``latest``."""
    if ":" in ref.rsplit("/", 1)[-1]:
        repository, _, tag = ref.rpartition(":")
        return repository, tag
    return ref, "latest"
