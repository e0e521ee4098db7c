"""Building the images :mod:`cellpipe.backends.images` plans, with the Docker SDK, offline.

No registry is needed and the build itself has no network (``network_mode="none"``):
everything a step image installs is a wheel made on this machine first, in the build
context. The engine wheel is zipped from the very package that is running (a development
checkout's edits included); its dependencies and the step's packages come from
``pip wheel`` run by this Python, which reaches whatever index the user's pip is set up
for, with a wheel cache (``$XDG_CACHE_HOME/cellpipe/wheels``) so that later builds do not
download again. The host's installed versions constrain the packages nobody pinned, so the
container gets the kernel's versions.

An image that exists already is never built again: its reference is a content hash.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from cellpipe.backends.images import ImageSpec, distribution_name, engine_pins
from cellpipe.core.errors import BackendUnavailable, CellpipeError

#: Receives build output a line at a time.
Log = Callable[[str], None]

_PIP_REQUIREMENT = re.compile(
    r"(?:No matching distribution found for|satisfies the requirement|"
    r"Failed to build|Could not build wheels for)\s+([A-Za-z0-9][A-Za-z0-9._\-\[\]]*)"
)


class ImageBuildError(CellpipeError):
    """An image a step needs could not be built. Says which steps, which package and why."""

    exit_code = 1
    http_status = 500

    def __init__(self, spec: ImageSpec, steps: Iterable[str], why: str, detail: str = ""):
        self.spec, self.steps, self.why, self.detail = spec, list(steps), why, detail
        names = ", ".join(self.steps) or "?"
        super().__init__(f"image for step{'s' if len(self.steps) > 1 else ''} {names}: {why}")

    def __reduce__(self):
        return (type(self), (self.spec, self.steps, self.why, self.detail))


def docker_client() -> Any:
    """A client for the local daemon (``DOCKER_HOST`` respected). Raises BackendUnavailable
    with one line saying what to do when the SDK is missing or the daemon is not running."""
    try:
        import docker
    except ImportError:
        raise BackendUnavailable(
            "the Docker SDK for Python is not installed: pip install 'cellpipe[docker]'"
        ) from None
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        if shutil.which("docker") is None and shutil.which("dockerd") is None:
            raise BackendUnavailable(
                "Docker is not installed: install Docker Engine (Debian/Ubuntu: "
                "`sudo apt-get install docker.io`) and start it (`sudo systemctl start docker`)"
            ) from None
        raise BackendUnavailable(
            f"the Docker daemon is not running or not reachable at {where} "
            f"({_first_line(exc)}): start it with `sudo systemctl start docker` "
            "(or `sudo dockerd &` without systemd), or point DOCKER_HOST at a running one"
        ) from None
    return client


def image_exists(client: Any, ref: str) -> bool:
    import docker.errors

    try:
        client.images.get(ref)
    except docker.errors.ImageNotFound:
        return False
    return True


def build_image(
    client: Any,
    spec: ImageSpec,
    steps: Iterable[str] = (),
    log: Log | None = None,
    cache_dir: Path | None = None,
) -> bool:
    """Make sure ``spec.ref`` exists locally. Returns True when it had to be built.

    Raises ImageBuildError (naming ``steps``, the package and pip's error) when the base
    image is missing, a package cannot be found or built, or the Docker build fails.
    """
    if image_exists(client, spec.ref):
        return False
    steps = list(steps)
    say = log or (lambda _line: None)
    if not image_exists(client, spec.base):
        hint = (
            "build it with the recipe in docs/docker.md (`.ci/docker-setup.sh`)"
            if spec.base.startswith("cellpipe-base:")
            else f"`docker pull {spec.base}` first (builds never pull)"
        )
        raise ImageBuildError(spec, steps, f"base image {spec.base} is not on this machine; {hint}")
    cache = cache_dir or wheel_cache()
    with tempfile.TemporaryDirectory(prefix="cellpipe-image-") as tmp:
        context = Path(tmp)
        shutil.copytree(_engine_wheels(spec, steps, cache, say), context / "engine")
        packages = context / "packages"
        packages.mkdir()
        if spec.packages:
            _fetch_wheels(spec, steps, spec.packages, packages, cache, say)
        (context / "Dockerfile").write_text(dockerfile(spec))
        say(f"building {spec.ref} from {spec.base} for step(s) {', '.join(steps)}")
        _docker_build(client, spec, steps, context, say)
    return True


def dockerfile(spec: ImageSpec) -> str:
    """The Dockerfile of ``spec``: the base, the engine, then the step's packages, each
    installed offline from the build context. The engine's layers are byte for byte the same
    in every image of one engine version, so Docker builds them once and step images only
    add their packages."""
    from cellpipe._version import __version__

    # Environment variables rather than flags: pip versions that predate an option ignore
    # its variable instead of failing.
    pip = (
        "PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 "
        "python3 -m pip install --no-index --no-cache-dir"
    )
    lines = [
        f"FROM {spec.base}",
        "COPY engine /tmp/cellpipe-engine",
        f"RUN {pip} --find-links /tmp/cellpipe-engine 'cellpipe=={__version__}' "
        "&& rm -rf /tmp/cellpipe-engine",
        # Steps run as the calling user, who has no home directory in the image. No
        # MPLBACKEND: the step shell picks matplotlib's inline backend, as a kernel does, so
        # figures become outputs; a default set here would win over it and lose them.
        "ENV HOME=/tmp PYTHONUNBUFFERED=1",
    ]
    if spec.packages:
        wanted = " ".join(_quote(r) for r in spec.packages)
        lines += [
            "COPY packages /tmp/cellpipe-packages",
            f"RUN {pip} --find-links /tmp/cellpipe-packages {wanted} "
            "&& rm -rf /tmp/cellpipe-packages",
        ]
    lines.append(f'LABEL io.cellpipe.engine="{spec.engine}" io.cellpipe.base="{spec.base}"')
    return "\n".join(lines) + "\n"


def _engine_wheels(spec: ImageSpec, steps: list[str], cache: Path, say: Log) -> Path:
    """The engine's wheel and its dependencies' wheels, made once per engine version."""
    folder = cache / f"engine-{spec.engine}"
    if (folder / "complete").is_file():
        return folder
    partial = Path(tempfile.mkdtemp(prefix=".engine-", dir=cache))
    engine_wheel(partial)
    _fetch_wheels(spec, steps, engine_pins(), partial, cache, say)
    (partial / "complete").write_text("")
    if folder.exists() and not (folder / "complete").is_file():
        # Left by an older cellpipe that filled the folder in place: set it aside first.
        aside = Path(tempfile.mkdtemp(prefix=".stale-", dir=cache))
        folder.rename(aside / folder.name)
        shutil.rmtree(aside, ignore_errors=True)
    try:
        # Runs build at the same time (the server starts several): the first complete
        # folder wins and is never replaced, because another run may be copying from it.
        partial.rename(folder)
    except OSError:
        if not (folder / "complete").is_file():
            raise
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def engine_wheel(dest: Path) -> Path:
    """A wheel of the running engine (``kernel/cellpipe``), dependencies pinned to the
    versions installed here. Only the engine: step containers never load the server."""
    from cellpipe._version import __version__

    root = Path(__file__).resolve().parents[2]  # the cellpipe package
    name = f"cellpipe-{__version__}"
    info = f"{name}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            entries.append((f"cellpipe/{path.relative_to(root).as_posix()}", path.read_bytes()))
    requires = "".join(f"Requires-Dist: {pin}\n" for pin in engine_pins())
    entries.append(
        (
            f"{info}/METADATA",
            f"Metadata-Version: 2.1\nName: cellpipe\nVersion: {__version__}\n{requires}".encode(),
        )
    )
    entries.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: cellpipe\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    record = "".join(f"{n},sha256={_b64sha(b)},{len(b)}\n" for n, b in entries)
    record += f"{info}/RECORD,,\n"
    target = dest / f"{name}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, b in entries:
            zf.writestr(_zipinfo(n), b)
        zf.writestr(_zipinfo(f"{info}/RECORD"), record)
    return target


def wheel_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "cellpipe" / "wheels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def push_image(client: Any, ref: str, log: Log | None = None) -> None:
    """Push ``ref`` with the credentials of the user's Docker config. Raises ImageBuildError."""
    repository, _, tag = ref.rpartition(":")
    say = log or (lambda _line: None)
    try:
        for chunk in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                raise _PushFailed(chunk.get("error") or "push failed")
            if chunk.get("status"):
                say(f"{chunk['status']} {chunk.get('progress', '')}".rstrip())
    except _PushFailed as exc:
        raise CellpipeError(f"push of {ref} failed: {exc}") from None
    except Exception as exc:
        raise CellpipeError(f"push of {ref} failed: {_first_line(exc)}") from None


class _PushFailed(Exception):
    pass


def _fetch_wheels(
    spec: ImageSpec, steps: list[str], wanted: Iterable[str], dest: Path, cache: Path, say: Log
) -> None:
    """Wheels of ``wanted`` and their dependencies into ``dest``: from the cache alone when it
    has them all, else from the index pip is configured for."""
    wanted = list(wanted)
    named = {_key(distribution_name(r)) for r in wanted}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as constraints:
        # Packages nobody pinned get the version installed here, as the kernel has them.
        for dist in metadata.distributions():
            name = dist.metadata.get("Name")
            if name and _key(name) not in named and _key(name) != "cellpipe":
                constraints.write(f"{name}=={dist.version}\n")
    base = [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(dest), "--find-links"]
    base += [str(cache), "--find-links", str(dest), "--disable-pip-version-check"]
    try:
        attempts = (
            [*base, "-c", constraints.name, "--no-index", *wanted],
            [*base, "-c", constraints.name, *wanted],
            # A package the user pinned may need other versions than those installed here.
            [*base, *wanted],
        )
        for i, args in enumerate(attempts):
            if i == 1:
                say(f"fetching wheels for {', '.join(wanted)}")
            done = subprocess.run(args, capture_output=True, text=True, check=False)
            if done.returncode == 0:
                break
        else:
            raise _pip_failure(spec, steps, done.stdout + done.stderr)
    finally:
        os.unlink(constraints.name)
    for wheel in dest.glob("*.whl"):
        if not wheel.name.startswith("cellpipe-") and not (cache / wheel.name).exists():
            # Copied aside then renamed: a build running now reads the cache with pip, which
            # must never see half a wheel.
            part = cache / f".{wheel.name}.{os.getpid()}.part"
            shutil.copy2(wheel, part)
            os.replace(part, cache / wheel.name)


def _pip_failure(spec: ImageSpec, steps: list[str], output: str) -> ImageBuildError:
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR")]
    culprit = next((m.group(1) for m in map(_PIP_REQUIREMENT.search, errors) if m), None)
    pip_said = errors[-1] if errors else _last_lines(output, 1)
    if culprit:
        origin = next(
            (
                "inferred from an import; pin it with a `packages:` tag or set "
                "metadata.cellpipe.infer_packages to false"
                for r in spec.inferred
                if _key(distribution_name(r)) == _key(distribution_name(culprit))
            ),
            "from the `packages:` tag or metadata.cellpipe.packages",
        )
        why = f"pip cannot install package `{culprit}` ({origin}): {pip_said}"
    else:
        why = f"pip failed: {pip_said}"
    return ImageBuildError(spec, steps, why, output)


def _docker_build(client: Any, spec: ImageSpec, steps: list[str], context: Path, say: Log) -> None:
    lines: list[str] = []
    error = None
    try:
        for chunk in client.api.build(
            path=str(context),
            tag=spec.ref,
            rm=True,
            forcerm=True,  # a failed legacy build leaves containers behind otherwise
            pull=False,
            network_mode="none",
            decode=True,
        ):
            if "stream" in chunk:
                for line in chunk["stream"].splitlines():
                    lines.append(line)
                    say(line)
            if "error" in chunk:
                error = chunk["error"]
    except Exception as exc:
        error = _first_line(exc)
    if error:
        pip_errors = [line for line in lines if line.startswith("ERROR")]
        detail = pip_errors[-1] if pip_errors else error.strip()
        raise ImageBuildError(
            spec, steps, f"docker build failed: {detail}", "\n".join([*lines, error])
        )


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _quote(requirement: str) -> str:
    return "'" + requirement.replace("'", "") + "'"


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


def _last_lines(text: str, n: int) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])
