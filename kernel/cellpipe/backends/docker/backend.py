"""The Docker backend: every step in its own container, on this machine's Docker daemon.

Scheduling (parallel branches, retries, timeouts, cache, cancel, resume) is
:mod:`cellpipe.execution.scheduling`'s; this module starts each attempt of a step as a container of
the step's image (planned by :mod:`cellpipe.backends.images`, built on first need by
:mod:`cellpipe.backends.docker.build`) running ``python3 -m cellpipe.runner``. The run directory and
the notebook's directory are bind-mounted at their own paths, so every path in the run
directory means the same inside and out, and the step works in the notebook's directory as
Jupyter does; other runs, the cache index and other steps' values are read-only there
(:func:`step_volumes`). Containers run as the calling user (never root unless asked), with no network
unless the notebook asks, under the step's memory, cpu and GPU limits, labelled with the run
id, and are always removed.

A step that is not first on its path does not pay for its container's start: while its
upstream steps run, its container is started *ahead* in waiting mode (``--start-when``:
the fresh interpreter imports IPython and runs the prelude, then waits for a go file in
``<run>/.go/``); launching the step then only creates that file. A container started ahead
whose step never runs (an upstream step failed, the step was cached, the run was
cancelled) is removed at the next launch or at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cellpipe.backends import RunOptions
from cellpipe.backends.images import ImageSpec, numeric_environment, plan_images
from cellpipe.core.errors import BackendUnavailable
from cellpipe.core.model import State, Step
from cellpipe.execution.limits import quantity
from cellpipe.execution.scheduling import (
    Launcher,
    LaunchError,
    Note,
    Proc,
    Scheduler,
    cancel_run,
    run_sync,
)
from cellpipe.rundir.runs import RunDir

LABEL_RUN = "io.cellpipe.run"
LABEL_STEP = "io.cellpipe.step"
_NOBODY = "65534:65534"
_USER = re.compile(r"^\d+:\d+$")
_WAIT_POLL_S = 300  # the SDK's HTTP timeout per wait call; a step may take far longer


class DockerBackend:
    """``user``: ``UID:GID`` the containers run as; default ``$CELLPIPE_DOCKER_USER``, else
    the calling user (see :func:`container_user`)."""

    name = "docker"

    def __init__(self, user: str | None = None) -> None:
        self.user = user

    def available(self) -> tuple[bool, str]:
        from cellpipe.backends.docker.build import docker_client

        try:
            docker_client().close()
        except BackendUnavailable as exc:
            return False, str(exc)
        return True, ""

    def execute(self, rd: RunDir, options: RunOptions) -> State:
        return run_sync(self.async_execute(rd, options))

    async def async_execute(self, rd: RunDir, options: RunOptions) -> State:
        from cellpipe.backends.docker.build import docker_client

        client = docker_client()
        user = container_user(rd, self.user)
        # Every running step holds a thread while it waits for its container.
        pool = ThreadPoolExecutor(options.max_jobs * 2 + 4, thread_name_prefix="cellpipe-docker")

        async def start(rd: RunDir, note: Note) -> Launcher:
            note(f"docker: steps run as user {user}")
            # The scheduler's step states tell which containers started ahead are still
            # wanted; at most `jobs` wait at once (each holds its prelude's memory).
            return _DockerLauncher(rd, client, pool, user, note, scheduler.state, options.max_jobs)

        scheduler = Scheduler(rd, options, start)
        guard = _start_watchdog(rd.path)  # removes the containers should we be killed
        try:
            return await scheduler.run()
        finally:
            remove_run_containers(rd, client)  # whatever an interrupted run left behind
            _stop_watchdog(guard)
            pool.shutdown(wait=False, cancel_futures=True)
            client.close()

    def cancel(self, rd: RunDir) -> None:
        """Ask the driving process to stop (it stops and removes the containers); if it is
        gone, remove the run's containers here."""
        cancel_run(rd, remove_run_containers)


def _start_watchdog(run_dir: Path) -> subprocess.Popen[bytes] | None:
    """Start :mod:`cellpipe.backends.docker.watchdog` for ``run_dir`` (by name: it imports
    this module); None when it cannot start (the run goes on)."""
    from cellpipe.execution.warm_ahead import child_env

    try:
        return subprocess.Popen(
            [sys.executable, "-m", "cellpipe.backends.docker.watchdog", str(run_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,  # not ended with the driver's group: it outlives it
        )
    except OSError:
        return None


def _stop_watchdog(proc: subprocess.Popen[bytes] | None) -> None:
    """The run ended as it should: tell the watchdog, which then exits doing nothing."""
    if proc is None or proc.stdin is None:
        return
    try:
        proc.stdin.write(b"done\n")  # watchdog.DONE
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def container_user(rd: RunDir, explicit: str | None = None) -> str:
    """``UID:GID`` the step containers of ``rd`` run as: ``explicit``, else
    ``$CELLPIPE_DOCKER_USER``, else the calling user. A caller that is root gets the owner
    of the notebook's directory instead (files stay the user's), or ``nobody`` when that is
    root too: containers run as root only when asked with ``0:0``."""
    chosen = explicit or os.environ.get("CELLPIPE_DOCKER_USER")
    if chosen:
        if not _USER.match(chosen):
            raise BackendUnavailable(
                f"CELLPIPE_DOCKER_USER={chosen!r}: expected UID:GID in numbers, e.g. 1000:1000"
            )
        return chosen
    if os.getuid() != 0:
        return f"{os.getuid()}:{os.getgid()}"
    workdir = rd.info().get("workdir")
    with contextlib.suppress(OSError, TypeError):
        st = os.stat(workdir)
        if st.st_uid != 0:
            return f"{st.st_uid}:{st.st_gid}"
    return _NOBODY


def container_options(
    rd: RunDir, step: Step, spec: ImageSpec, attempt: int, user: str
) -> dict[str, Any]:
    """Keyword arguments of ``client.containers.run`` for one attempt of ``step``."""
    info = rd.info()
    workdir = info.get("workdir")
    volumes = step_volumes(rd, step, workdir if workdir and Path(workdir).is_dir() else None)
    _make_own_data_dir(rd, step, user)
    options: dict[str, Any] = {
        "image": spec.ref,
        "command": [
            "python3",
            "-m",
            "cellpipe.runner",
            "--run-dir",
            str(rd.path),
            "--step",
            step.name,
            "--attempt",
            str(attempt),
        ],
        "detach": True,
        "user": user,
        "network_mode": network_mode(rd.pipeline().settings, step.name),
        "volumes": volumes,
        "working_dir": workdir if workdir and Path(workdir).is_dir() else str(rd.path),
        "labels": {
            LABEL_RUN: rd.run_id,
            LABEL_STEP: step.name,
            "io.cellpipe.attempt": str(attempt),
        },
        "environment": {**numeric_environment(), "HOME": "/tmp", "PYTHONUNBUFFERED": "1"},
        "init": True,  # a real PID 1 passes SIGTERM on (cancel) and reaps what the step starts
    }
    limits = step.settings.limits
    if "memory" in limits:
        amount = int(quantity(limits["memory"]))
        options["mem_limit"] = amount
        options["memswap_limit"] = amount  # no swap: over the limit is over the limit
    if "cpu" in limits:
        options["nano_cpus"] = int(quantity(limits["cpu"]) * 1e9)
    if step.settings.gpu:
        import docker.types

        options["device_requests"] = [
            docker.types.DeviceRequest(count=step.settings.gpu, capabilities=[["gpu"]])
        ]
    return options


def step_volumes(rd: RunDir, step: Step, workdir: str | None) -> dict[str, dict[str, str]]:
    """Bind mounts of a step's container: the notebook folder read-write (the step works
    there as in Jupyter), its run directory read-write (its log, outputs, events, the
    run's metrics), but every step's data folder read-only except its own.

    Other runs, the cache index and other steps' values (pickles, hard-linked from cached
    runs) decide what the next run unpickles: a step must not reach them. When the runs
    root lies inside the notebook folder (the default, ``.cellpipe/runs``) the whole runs
    root is mounted read-only over it, since the notebook folder's mount would otherwise
    make it writable. Docker mounts by destination depth, so nested mounts land on top."""
    volumes: dict[str, dict[str, str]] = {}
    if workdir:
        volumes[workdir] = {"bind": workdir, "mode": "rw"}
        if rd.path.resolve().parent.is_relative_to(Path(workdir).resolve()):
            volumes[str(rd.path.parent)] = {"bind": str(rd.path.parent), "mode": "ro"}
    data_root, own = rd.data_dir(step.name).parent, rd.data_dir(step.name)
    for path, mode in ((rd.path, "rw"), (data_root, "ro"), (own, "rw")):
        volumes[str(path)] = {"bind": str(path), "mode": mode}
    return volumes


def _make_own_data_dir(rd: RunDir, step: Step, user: str) -> None:
    """Create the step's data folder (a bind mount needs its source), owned by the
    containers' user when the caller is root (see ``_hand_over``)."""
    own = rd.data_dir(step.name)
    own.mkdir(parents=True, exist_ok=True)
    uid, gid = (int(x) for x in user.split(":"))
    if os.geteuid() == 0 and uid != 0:
        with contextlib.suppress(OSError):
            os.lchown(own, uid, gid)


def network_mode(settings: dict[str, Any], step: str) -> str:
    """``metadata.cellpipe.network``: a mode for every step (``"host"``, a network's name), or
    a mapping from step name to mode. Steps it does not name get no network (``none``)."""
    value = settings.get("network", "none")
    if isinstance(value, dict):
        value = value.get(step, "none")
    return str(value or "none")


def remove_run_containers(rd: RunDir, client: Any = None) -> None:
    """Remove every container labelled with ``rd``'s run id, running or not."""
    from cellpipe.backends.docker.build import docker_client

    own = client is None
    try:
        client = client or docker_client()
    except BackendUnavailable:
        return
    try:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL_RUN}={rd.run_id}"}):
            with contextlib.suppress(Exception):
                c.remove(force=True)
    finally:
        if own:
            client.close()


class _DockerLauncher(Launcher):
    def __init__(
        self,
        rd: RunDir,
        client: Any,
        pool: ThreadPoolExecutor,
        user: str,
        note: Note,
        states: Mapping[str, State],
        ahead_limit: int,
    ) -> None:
        self.rd, self.client, self.pool, self.user, self.note = rd, client, pool, user, note
        self.steps = {s.name: s for s in rd.pipeline().steps}
        self.specs = plan_images(rd.pipeline())
        self.builds: dict[str, asyncio.Future[float | None]] = {}
        self.uid, self.gid = (int(x) for x in user.split(":"))
        self.removals: set[asyncio.Future[Any]] = set()
        self.states, self.ahead_limit = states, ahead_limit
        self.launched: set[str] = set()
        # step -> its container started ahead, waiting for its go file (None: did not start)
        self.ahead: dict[str, asyncio.Future[Any]] = {}
        self.closed = False

    async def close(self) -> None:
        self.closed = True
        for name in list(self.ahead):
            self._discard(name, self._unwanted(name) or "the run ended")
        while self.removals:
            await asyncio.gather(*list(self.removals))
            self.removals = {f for f in self.removals if not f.done()}
        shutil.rmtree(self.rd.go_dir(), ignore_errors=True)

    async def launch(self, step: Step, attempt: int) -> Proc:
        from cellpipe.backends.docker.build import ImageBuildError

        self.launched.add(step.name)
        self._drop_unwanted()
        blocked = self._unreachable()
        if blocked:
            raise LaunchError(blocked, retry=False)
        spec = self.specs[step.name]
        try:
            await self._image(spec)
        except ImageBuildError as exc:
            self._log(step.name, exc.detail)
            raise LaunchError(f"image build failed: {exc}", retry=False) from None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.pool, self._hand_over)
        self._note_unenforced(step)
        ahead = self.ahead.pop(step.name, None) if attempt == 1 else None
        container = await self._go(step, ahead) if ahead is not None else None
        if container is None:  # not started ahead, or it died waiting: a fresh one
            options = container_options(self.rd, step, spec, attempt, self.user)
            try:
                container = await loop.run_in_executor(
                    self.pool, functools.partial(self.client.containers.run, **options)
                )
            except Exception as exc:
                raise LaunchError(
                    f"container did not start: {_explain(exc)}", retry=False
                ) from None
        proc = _ContainerProc(container, step, self)
        proc.start_waiting(loop)
        self._start_ahead()
        return proc

    def _start_ahead(self) -> None:
        """Start, in waiting mode, the containers of the steps whose upstream steps have all
        been launched (or are done), so their prelude runs while those steps do. Only steps
        whose image is ready: building one for a step that may never run is not worth it."""
        if self.closed or self._unreachable():
            return
        self._drop_unwanted()
        for name, step in self.steps.items():
            if len(self.ahead) >= self.ahead_limit:
                return
            if (
                not step.after
                or name in self.ahead
                or name in self.launched
                or self.states.get(name) is not State.PENDING
                or not all(
                    u in self.launched or self.states.get(u, State.PENDING).ok for u in step.after
                )
                or self._unwanted(name)
                or not self._image_ready(self.specs[name])
            ):
                continue
            running = [u for u in step.after if not self.states.get(u, State.PENDING).ok]
            self.ahead[name] = asyncio.ensure_future(self._start_waiting(step, running))

    def _image_ready(self, spec: ImageSpec) -> bool:
        fut = self.builds.get(spec.ref)
        return fut is not None and fut.done() and not fut.cancelled() and not fut.exception()

    async def _start_waiting(self, step: Step, running: list[str]) -> Any:
        """Attempt 1's container of ``step``, as :meth:`launch` would start it, running the
        prelude and then waiting for its go file; None when it could not start (the step's
        launch then starts one as usual and reports what goes wrong)."""
        options = container_options(self.rd, step, self.specs[step.name], 1, self.user)
        options["command"] += ["--start-when", str(self.rd.go_path(step.name, 1))]
        loop = asyncio.get_running_loop()
        try:
            self.rd.go_dir().mkdir(exist_ok=True)
            container = await loop.run_in_executor(
                self.pool, functools.partial(self.client.containers.run, **options)
            )
        except Exception as exc:
            self.note(
                f"docker: could not start step {step.name}'s container ahead: {_explain(exc)}"
            )
            return None
        self.note(
            f"docker: started step {step.name}'s container ahead; it waits for {', '.join(running)}"
        )
        return container

    async def _go(self, step: Step, ahead: asyncio.Future[Any]) -> Any:
        """Tell the container started ahead for ``step`` to run it; None if it is gone."""
        container = await ahead
        if container is None:
            return None
        go = self.rd.go_path(step.name, 1)

        def tell() -> bool:
            container.reload()
            if container.status != "running":
                return False
            go.touch()
            return True

        try:
            told = await asyncio.get_running_loop().run_in_executor(self.pool, tell)
        except Exception:
            told = False
        if not told:
            self._remove_later(
                container, f"step {step.name}'s container started ahead ended before its step began"
            )
            return None
        return container

    def _unwanted(self, name: str) -> str:
        """Why the step waiting in a container started ahead will not run, if it will not."""
        for up in self.steps[name].after:
            if self.states.get(up) in (State.FAILED, State.SKIPPED, State.CANCELLED):
                return f"upstream step {up} {self.states[up]}"
        state = self.states.get(name)
        return f"step {name} {state}" if state is not State.PENDING else ""

    def _drop_unwanted(self) -> None:
        for name in list(self.ahead):
            why = self._unwanted(name)
            if why:
                self._discard(name, why)

    def _discard(self, name: str, why: str) -> None:
        ahead = self.ahead.pop(name)

        async def remove() -> None:
            container = await ahead
            if container is not None:
                await self._remove_later(
                    container, f"removed step {name}'s container started ahead: {why}"
                )
            # Made for its mount (step_volumes): a step that never ran has no data folder.
            with contextlib.suppress(OSError):
                self.rd.data_dir(name).rmdir()  # only when empty

        self.removals.add(asyncio.ensure_future(remove()))

    def _remove_later(self, container: Any, note: str) -> asyncio.Future[Any]:
        def remove() -> None:
            with contextlib.suppress(Exception):
                container.remove(force=True)

        fut = asyncio.get_running_loop().run_in_executor(self.pool, remove)
        fut.add_done_callback(lambda _: self.note(f"docker: {note}"))  # in the loop's thread
        self.removals.add(fut)
        return fut

    async def _image(self, spec: ImageSpec) -> None:
        """Build ``spec`` once per run, however many steps need it at once."""
        fut = self.builds.get(spec.ref)
        if fut is None:
            steps = [name for name, s in self.specs.items() if s.ref == spec.ref]
            fut = asyncio.get_running_loop().run_in_executor(self.pool, self._build, spec, steps)
            self.builds[spec.ref] = fut
            took = await asyncio.shield(fut)
            if took is None:
                self.note(f"docker: image {spec.ref} is present (steps {', '.join(steps)})")
            else:
                self.note(f"docker: built image {spec.ref} in {took:.1f} s ({', '.join(steps)})")
        else:
            await asyncio.shield(fut)

    def _build(self, spec: ImageSpec, steps: list[str]) -> float | None:
        from cellpipe.backends.docker.build import build_image

        started = time.monotonic()
        with open(self.rd.images_log_path(), "a", encoding="utf-8") as log:
            built = build_image(self.client, spec, steps, log=lambda line: log.write(line + "\n"))
        return time.monotonic() - started if built else None

    def _unreachable(self) -> str:
        """Why the containers' user cannot enter the run or notebook directory, if it cannot:
        a bind mount keeps the host's permissions, and the step would die before its first
        cell with a PermissionError in its log. Only the mounted folders count (Docker makes
        the folders above a mount point in the container), and the run directory when it is
        mounted inside the notebook's directory is reached through it."""
        if self.uid == 0:
            return ""
        run = self.rd.path
        workdir = self.rd.info().get("workdir")
        folders = [Path(workdir)] if workdir and Path(workdir).is_dir() else []
        if folders and run.is_relative_to(folders[0]):
            folders += [folders[0] / part for part in _prefixes(run.relative_to(folders[0]))]
        elif os.geteuid() != 0:  # root hands the run directory over (see _hand_over)
            folders.append(run)
        for folder in folders:
            if folder == run and os.geteuid() == 0:
                continue
            try:
                st = os.stat(folder)
            except OSError:
                continue
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return (
                    f"steps run as user {self.user}, who cannot enter {folder} "
                    f"(mode {stat.S_IMODE(st.st_mode):o}, owner {st.st_uid}); set "
                    "CELLPIPE_DOCKER_USER=UID:GID to the owner of the notebook's files"
                    + (", or 0:0 to run steps as root" if os.geteuid() == 0 else "")
                )
        return ""

    def _hand_over(self) -> None:
        """Give the run directory to the containers' user when they are someone else: the
        step writes its log, outputs, data and events there. Only root can, and must."""
        if os.geteuid() != 0 or self.uid == 0:
            return
        for root, dirs, files in os.walk(self.rd.path):
            for name in (root, *(os.path.join(root, n) for n in dirs + files)):
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(name)
                    if (st.st_uid, st.st_gid) != (self.uid, self.gid):
                        os.lchown(name, self.uid, self.gid)

    def _note_unenforced(self, step: Step) -> None:
        other = [f"{k}={v}" for k, v in step.settings.limits.items() if k not in ("memory", "cpu")]
        if other:
            self._log(step.name, f"cellpipe: limit {', '.join(other)} is not enforced by Docker")

    def _log(self, step: str, text: str) -> None:
        if text:
            with open(self.rd.log_path(step), "a", encoding="utf-8") as log:
                log.write(text if text.endswith("\n") else text + "\n")


class _ContainerProc(Proc):
    """One container; ``pid`` is 0 because the process lives in the container's namespace."""

    def __init__(self, container: Any, step: Step, launcher: _DockerLauncher):
        self.container, self.step, self.launcher = container, step, launcher
        self.oom = False
        self.lost = ""
        self._pending: set[asyncio.Future[Any]] = set()  # keep references until done

    def start_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(0, loop.run_in_executor(self.launcher.pool, self._wait))

    def _wait(self) -> int | None:
        import requests

        while True:
            try:
                code = self.container.wait(timeout=_WAIT_POLL_S)["StatusCode"]
                break
            except requests.exceptions.ReadTimeout:
                continue
            except Exception as exc:
                self.lost = f"lost contact with the Docker daemon: {_explain(exc)}"
                return None
        with contextlib.suppress(Exception):
            self.container.reload()
            self.oom = bool(self.container.attrs["State"].get("OOMKilled"))
        # Docker reports a signal death as 128 + the signal number, as a shell does.
        return -(code - 128) if 128 < code < 160 else code

    def _in_pool(self, fn: Any, *args: Any) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self.launcher.pool, fn, *args)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def terminate(self) -> None:
        self._in_pool(self._signal, "SIGTERM")

    def kill(self) -> None:
        self._in_pool(self._signal, "SIGKILL")

    def _signal(self, sig: str) -> None:
        with contextlib.suppress(Exception):  # it may have ended meanwhile
            self.container.kill(signal=sig)

    def describe_exit(self, code: int | None) -> str:
        if self.lost:
            return self.lost
        if self.oom:
            limit = self.step.settings.limits.get("memory")
            return f"killed: out of memory at limit {limit}" if limit else "killed: out of memory"
        return super().describe_exit(code)

    async def release(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.launcher.pool, self._keep_output)
        # Removing a container takes a while (unmounting its layers); the next step need
        # not wait for it. The launcher waits for every removal before the run ends.
        self.launcher.removals.add(loop.run_in_executor(self.launcher.pool, self._remove))

    def _keep_output(self) -> None:
        with contextlib.suppress(Exception):
            # What the interpreter printed outside any cell (a crash before the step began).
            output = self.container.logs().decode("utf-8", "replace")
            self.launcher._log(self.step.name, output)

    def _remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)


def _prefixes(relative: Path) -> list[Path]:
    """``a/b/c`` -> ``a``, ``a/b``, ``a/b/c``."""
    return [Path(*relative.parts[: i + 1]) for i in range(len(relative.parts))]


def _explain(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return str(text).strip().splitlines()[0][:300]
