"""Which container image each step runs in: planned from the pipeline alone, never built here.

A step's image is its base (the step's ``image:`` tag, else the notebook's
``metadata.cellpipe.image``, else ``cellpipe-base:bookworm``) with this engine installed and
the step's packages. A step's packages are its ``packages:`` tags, the notebook's
``metadata.cellpipe.packages``, and the distributions its imports, and those of the steps
whose values it loads, resolve to in the current environment, pinned to their installed
versions, with the optional runtime dependencies those libraries import on their own
(:data:`OPTIONAL_RUNTIME`, when installed here), so the container reproduces the kernel's
environment without the user listing anything (``metadata.cellpipe.infer_packages: false``
turns the inference off).

The reference is a content hash of all of that, so equal specs share one image, a changed
engine or package list gets a new one, and a built image is never rebuilt. Planning is pure:
it reads the pipeline and this Python's installed distributions, and imports neither the
Docker client nor anything that talks to a daemon, so the Argo backend can name the images
of a manifest on a machine without Docker.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from cellpipe.core.model import Pipeline, Step

DEFAULT_BASE = "cellpipe-base:bookworm"
REPOSITORY = "cellpipe-step"
#: What the engine needs inside a container (the server extension's dependencies are left
#: out: steps never import them). Installed at the host's versions.
ENGINE_REQUIREMENTS = ("ipython", "nbformat", "cloudpickle", "click", "rich")
_FORMAT = "1"  # bump when the generated Dockerfile changes: old images must not be reused
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


@dataclass(frozen=True, slots=True)
class ImageSpec:
    """One image: ``ref`` is its full reference (registry prefix included when given)."""

    ref: str
    base: str
    packages: tuple[str, ...]  # pip requirement strings, sorted by distribution name
    engine: str  # fingerprint of the engine and its dependency pins
    inferred: tuple[str, ...] = ()  # which of ``packages`` came from the step's imports

    @property
    def content_hash(self) -> str:
        return self.ref.rsplit(":", 1)[1]


def plan_images(pipeline: Pipeline, registry: str | None = None) -> dict[str, ImageSpec]:
    """The image of each step, by step name.

    ``registry`` (``ghcr.io/team``) prefixes every reference:
    ``ghcr.io/team/cellpipe-step:<hash>``; without it, ``cellpipe-step:<hash>``. Steps with
    the same base and packages share one spec (and so one image). Pure: nothing is built,
    pulled or contacted.
    """
    engine = engine_fingerprint()
    infer = pipeline.settings.get("infer_packages", True) is not False
    workdir = Path(pipeline.path).resolve().parent if pipeline.path else None
    plans: dict[str, ImageSpec] = {}
    # A step loads its inputs before its cells run, and a value needs the packages of the
    # step that made it (a DataFrame needs pandas in a step that never imports pandas):
    # each step's inferred packages include its producers', transitively (steps come in
    # run order, so producers are planned first).
    needs: dict[str, dict[str, str]] = {}
    for step in pipeline.steps:
        base = step.settings.image or os.environ.get("CELLPIPE_BASE_IMAGE") or DEFAULT_BASE
        explicit = {_dist_key(p): p.strip() for p in step.settings.packages if p.strip()}
        inferred = {}
        if infer:
            found = dict(imported_distributions(pipeline, step, workdir))
            for producer in dict.fromkeys(step.inputs.values()):
                found = {**needs.get(producer, {}), **found}
            needs[step.name] = found
            for dist, version in found.items():
                if _dist_key(dist) not in explicit:
                    inferred[_dist_key(dist)] = f"{dist}=={version}"
        packages = tuple(v for _, v in sorted({**inferred, **explicit}.items()))
        digest = hashlib.sha256(json.dumps([_FORMAT, base, packages, engine]).encode())
        prefix = f"{registry.rstrip('/')}/" if registry else ""
        ref = f"{prefix}{REPOSITORY}:{digest.hexdigest()[:20]}"
        plans[step.name] = ImageSpec(ref, base, packages, engine, tuple(sorted(inferred.values())))
    return plans


#: Line magics that import a library themselves: `%matplotlib inline` with no `import
#: matplotlib` in sight still needs matplotlib in the image.
_MAGIC_IMPORTS = {"matplotlib": ("matplotlib",), "pylab": ("matplotlib", "numpy")}
_IMPORTING_MAGIC = re.compile(r"^[ \t]*%(matplotlib|pylab)\b", re.M)


def imported_distributions(
    pipeline: Pipeline, step: Step, workdir: Path | None = None
) -> dict[str, str]:
    """Installed distributions (name -> version) that the imports of ``step`` and of the
    prelude resolve to here. The standard library, this engine and its own dependencies
    (always in the image), and modules next to the notebook are left out."""
    from cellpipe.compiling.analysis import CellSyntaxError, analyse_cell
    from cellpipe.core.model import Role

    mine = {c.id for c in pipeline.prelude} | set(step.cells)
    tops: set[str] = set()
    for cell in pipeline.cells:
        if cell.id not in mine or cell.kind != "code" or cell.role is Role.SKIP:
            continue
        try:
            flow = analyse_cell(cell.source)
        except CellSyntaxError:
            continue  # compile reported it; running it will say so again
        tops.update(m.split(".")[0] for m in flow.imports.values())
        tops.update(m.split(".")[0] for m in flow.star_imports)
        for magic in _IMPORTING_MAGIC.findall(cell.source):
            tops.update(_MAGIC_IMPORTS[magic])
    owners = _module_owners()
    skip = {_dist_key(d) for d in ("cellpipe", *ENGINE_REQUIREMENTS)}
    found: dict[str, str] = {}
    for top in sorted(tops):
        if not top or top in sys.stdlib_module_names or top == "__future__":
            continue
        if workdir and ((workdir / f"{top}.py").is_file() or (workdir / top).is_dir()):
            continue  # the notebook's own module: mounted with its directory, not installed
        for dist in owners.get(top, ()):
            if _dist_key(dist) in skip:
                continue
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
    for dist in list(found):
        for optional in OPTIONAL_RUNTIME.get(_dist_key(dist), ()):
            if _dist_key(optional) in skip:
                continue
            try:
                found.setdefault(optional, metadata.version(optional))
            except metadata.PackageNotFoundError:
                continue  # not in the kernel's environment either: the step fails alike
    return found


#: Optional dependencies a library imports at call time to hand back values of their types
#: or to show them, without any cell importing them: installed here, they are in the kernel
#: a top-to-bottom run uses, so the step's image gets them too (at the versions installed
#: here). A table, because nothing else tells them apart: the installed scikit-learn
#: declares no extras in its metadata, and scanning a library's code for the imports it may
#: make pulls in everything (scikit-learn's code imports torch, pytest and matplotlib).
#: Anything else a step needs goes in its ``packages:`` tag.
OPTIONAL_RUNTIME: dict[str, tuple[str, ...]] = {
    # load_*(as_frame=True), fetch_openml, set_output(transform="pandas") return DataFrames
    "scikit-learn": ("pandas",),
    # tqdm.auto / tqdm.notebook draw a widget in a kernel, and fall back to text without it
    "tqdm": ("ipywidgets",),
    # pandas 3 stores strings in pyarrow when it is there (`StringDtype(storage="pyarrow")`),
    # in Python objects when not: a frame made in an image without it is another value
    # (`frame.equals` is False) than the kernel's; pyarrow also reads and writes parquet
    "pandas": ("pyarrow",),
}


#: Prefixes of the environment variables that choose the numeric libraries' code paths:
#: OpenBLAS' core type and cache sizes, the thread counts of OpenMP, MKL, BLIS, numexpr.
#: A kernel started here inherits them, and a different BLAS kernel changes the last digits
#: of a solver's result (an OPENBLAS_CORETYPE=Haswell host and an AVX-512 default in the
#: container gave LassoLarsIC's AIC 863.3178954687505 and 863.31789546875).
NUMERIC_ENV_PREFIXES = ("OPENBLAS_", "GOTO_", "OMP_", "KMP_", "MKL_", "BLIS_", "NUMEXPR_")


def numeric_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables of ``environ`` (default: this process's) that a step's container gets
    so its numeric libraries compute as the kernel's here do (:data:`NUMERIC_ENV_PREFIXES`).
    Nothing else of the environment is passed: it may hold secrets."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in sorted(env.items()) if k.startswith(NUMERIC_ENV_PREFIXES)}


@lru_cache(maxsize=1)
def engine_fingerprint() -> str:
    """Changes whenever the engine's code or the pinned versions of its dependencies do, so a
    development checkout's edits reach the containers."""
    from cellpipe._version import __version__

    h = hashlib.sha256(__version__.encode())
    root = Path(__file__).resolve().parents[1]  # the cellpipe package
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    for req in engine_pins():
        h.update(req.encode() + b"\0")
    return f"{__version__}+{h.hexdigest()[:12]}"


@lru_cache(maxsize=1)
def engine_pins() -> tuple[str, ...]:
    """The engine's dependencies at the versions installed here."""
    pins = []
    for name in ENGINE_REQUIREMENTS:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pins.append(name)
    return tuple(pins)


def distribution_name(requirement: str) -> str:
    """``Pandas[excel]>=2`` -> ``Pandas``: the distribution a requirement string names."""
    m = _NAME.match(requirement)
    return m.group(1) if m else requirement.strip()


def _dist_key(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution_name(requirement)).lower()


@lru_cache(maxsize=1)
def _module_owners() -> dict[str, tuple[str, ...]]:
    return {k: tuple(dict.fromkeys(v)) for k, v in metadata.packages_distributions().items()}
