"""The Argo backend: each step a pod of an Argo Workflow on the user's Kubernetes cluster.

``execute`` submits the Workflow (server-side strict field validation), then follows it with a
watch that resumes from the last resourceVersion whenever the stream drops, and writes what
it sees into the *local* run directory exactly as the local backend would: events, each step's
log (from its pod), its cells' outputs and metrics (from the result trailer at the end of the
pod log, see :mod:`cellpipe.backends.argo.trailer`). So ``cellpipe status``/``logs``, the server and the
sidebar work unchanged. ``cancel`` sets the Workflow's ``spec.shutdown``.

The ``kubernetes`` client is imported only here, and only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cellpipe.backends import RunOptions
from cellpipe.backends.argo.errors import ClusterError, NoKubeconfig, transient, translate
from cellpipe.backends.argo.manifest import (
    FOLDER_TASK,
    ArgoSettings,
    RunTarget,
    S3Settings,
    build_workflow,
    fanned_out,
    task_name,
    values_location,
    workflow_name,
)
from cellpipe.backends.argo.trailer import split_log
from cellpipe.core.atomic import write_json, write_text
from cellpipe.core.errors import CellpipeError, Conflict
from cellpipe.core.model import Pipeline, State
from cellpipe.rundir.runs import RunDir

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
RESOURCE = "workflows.argoproj.io"
_T = TypeVar("_T")
_DONE = ("Succeeded", "Failed", "Error")
_POD_DONE = ("Succeeded", "Failed", "Error")


def _poll_s() -> float:
    """How long one watch request lasts before it is renewed (and pods are looked at)."""
    return float(os.environ.get("CELLPIPE_ARGO_POLL", "10"))


class Cluster:
    """One Kubernetes API connection, from the kubeconfig (or the pod's service account)."""

    def __init__(self, context: str | None = None):
        try:
            from kubernetes import client, config
        except ImportError:  # pragma: no cover - available() says so first
            raise NoKubeconfig(
                "the Argo backend needs the Kubernetes client: pip install 'cellpipe[argo]'"
            ) from None
        cfg = client.Configuration()
        self.default_namespace = "default"
        self.context = context
        try:
            # Read KUBECONFIG now: the client reads it once, when it is imported.
            path = _kubeconfig_path()
            config.load_kube_config(config_file=path, client_configuration=cfg, context=context)
            with contextlib.suppress(Exception):
                _, active = config.list_kube_config_contexts(config_file=path)
                ctx = (active or {}).get("context") or {}
                self.default_namespace = ctx.get("namespace") or "default"
                self.context = context or (active or {}).get("name")
        except Exception as exc:
            if not os.environ.get("KUBERNETES_SERVICE_HOST"):
                raise NoKubeconfig(_no_kubeconfig_message(exc)) from None
            config.load_incluster_config(client_configuration=cfg)
            ns_file = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            if ns_file.is_file():
                self.default_namespace = ns_file.read_text().strip() or "default"
        cfg.retries = 1  # fail fast on an unreachable server; follow() retries itself
        self.server = cfg.host
        self.api = client.ApiClient(cfg)
        self.custom = client.CustomObjectsApi(self.api)
        self.core = client.CoreV1Api(self.api)

    def call(
        self,
        verb: str,
        resource: str,
        namespace: str | None,
        fn: Callable[..., _T],
        *a: Any,
        **kw: Any,
    ) -> _T:
        """``fn(*a, **kw)`` with its failures translated into cellpipe errors."""
        kw.setdefault("_request_timeout", (10, 60))
        try:
            return fn(*a, **kw)
        except CellpipeError:
            raise
        except Exception as exc:
            raise translate(
                exc, verb=verb, resource=resource, namespace=namespace, server=self.server
            ) from exc

    # -- workflows -------------------------------------------------------------------------

    def create_workflow(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(
            "create",
            RESOURCE,
            namespace,
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            body,
            field_validation="Strict",
        )

    def create(self, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.call(
            "create",
            f"{plural}.{GROUP}",
            namespace,
            self.custom.create_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            plural,
            body,
            field_validation="Strict",
        )

    def get_workflow(self, namespace: str, name: str) -> dict[str, Any]:
        return self.call(
            "get",
            RESOURCE,
            namespace,
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
        )

    def shutdown(self, namespace: str, name: str, how: str = "Terminate") -> None:
        self.call(
            "patch",
            RESOURCE,
            namespace,
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"spec": {"shutdown": how}},
            _content_type="application/merge-patch+json",
        )

    def watch_workflow(
        self, namespace: str, name: str, resource_version: str
    ) -> Iterator[dict[str, Any]]:
        """Changes of one Workflow after ``resource_version``, for one watch request."""
        from kubernetes import watch

        seconds = max(1, int(_poll_s()))
        stream = watch.Watch().stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=seconds,
            _request_timeout=(10, seconds + 30),
        )
        try:
            yield from stream
        except CellpipeError:
            raise
        except Exception as exc:
            raise translate(
                exc, verb="watch", resource=RESOURCE, namespace=namespace, server=self.server
            ) from exc

    # -- pods ------------------------------------------------------------------------------

    def pod_log(self, namespace: str, pod: str) -> str | None:
        """The main container's log; None when the pod is gone or has not started."""
        try:
            return self.call(
                "get",
                "pods/log",
                namespace,
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                container="main",
            )
        except ClusterError as exc:
            if exc.http_status in (400, 404) or "404" in str(exc) or "400" in str(exc):
                return None
            raise

    def pod(self, namespace: str, name: str) -> Any | None:
        try:
            return self.call(
                "get", "pods", namespace, self.core.read_namespaced_pod, name, namespace
            )
        except ClusterError as exc:
            if "404" in str(exc):
                return None
            raise

    def claim_exists(self, namespace: str, name: str) -> bool:
        try:
            self.call(
                "get",
                "persistentvolumeclaims",
                namespace,
                self.core.read_namespaced_persistent_volume_claim,
                name,
                namespace,
            )
        except ClusterError as exc:
            if "404" in str(exc):
                return False
            raise
        return True


def _kubeconfig_path() -> str:
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def _no_kubeconfig_message(exc: BaseException) -> str:
    where = os.environ.get("KUBECONFIG") or "~/.kube/config"
    return (
        f"no usable Kubernetes configuration ({where}: {str(exc).strip() or type(exc).__name__}); "
        "point KUBECONFIG at your cluster's kubeconfig (`kubectl config view` shows what kubectl "
        "uses), or run inside a cluster"
    )


def pod_name(workflow: str, node: dict[str, Any]) -> str:
    """The pod of a workflow node, as Argo (pod name format v2) names it."""
    node_name, template = node.get("name", ""), node.get("templateName", "")
    if node_name == workflow:
        return workflow
    prefix = f"{workflow}-{template}"
    if len(prefix) > 242:
        prefix = prefix[:242]
    h = 0x811C9DC5
    for byte in node_name.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{prefix}-{h}"


def step_fingerprints(pipeline: Pipeline) -> dict[str, str]:
    """What decides a step's result besides its inputs: resume keeps a succeeded step only
    while its fingerprint (code of the prelude and the step, settings, inputs) is unchanged."""
    prelude = [c.source for c in pipeline.prelude]
    out = {}
    for step in pipeline.steps:
        code = [c.source for c in pipeline.step_cells(step.name)]
        blob = json.dumps([prelude, code, sorted(step.inputs.items()), step.settings.to_json()])
        out[step.name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return out


class ArgoBackend:
    name = "argo"

    def available(self) -> tuple[bool, str]:
        try:
            import kubernetes  # noqa: F401
            import yaml  # noqa: F401
        except ImportError:
            return False, "the Kubernetes client is not installed: pip install 'cellpipe[argo]'"
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return True, ""
        paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
        paths = paths or [str(Path.home() / ".kube" / "config")]
        if not any(Path(p).expanduser().is_file() for p in paths):
            return False, (
                f"no kubeconfig ({os.pathsep.join(paths)} not found): point KUBECONFIG at your "
                "cluster's configuration"
            )
        try:
            from kubernetes import client, config

            config.load_kube_config(
                config_file=_kubeconfig_path(), client_configuration=client.Configuration()
            )
        except Exception as exc:
            return False, f"the kubeconfig cannot be used: {str(exc).strip()[:200]}"
        return True, ""

    # -- run ---------------------------------------------------------------------------------

    def execute(self, rd: RunDir, options: RunOptions) -> State:
        info = rd.info()
        opts = info.get("options") or {}
        pipeline = rd.pipeline()
        rd.write_driver()
        try:
            profile = opts.get("profile") or None  # kept in run.json: a resume uses it too
            settings = ArgoSettings.from_notebook(
                pipeline.settings,
                profile,
                namespace=opts.get("namespace"),
                parallelism=opts.get("jobs"),
            )
            cluster = Cluster(opts.get("context") or (profile or {}).get("context"))
            namespace = settings.namespace or cluster.default_namespace
            previous = info.get("argo") or {}
            if options.resume and previous and self._still_running(cluster, previous):
                rd.emit(State.RUNNING, message=f"following workflow {previous['workflow']} again")
                return _Follower(
                    rd, cluster, previous["namespace"], previous["workflow"], settings
                ).run()
            name = self._submit(rd, cluster, namespace, settings, options, previous)
        except CellpipeError as exc:
            rd.emit(State.FAILED, message=str(exc))
            raise
        if name is None:  # every step cached or skipped: no Workflow, no pod
            rd.emit(State.SUCCEEDED, message="")
            return State.SUCCEEDED
        return _Follower(rd, cluster, namespace, name, settings).run()

    def _still_running(self, cluster: Cluster, previous: dict[str, Any]) -> bool:
        if not previous.get("workflow"):
            return False
        try:
            wf = cluster.get_workflow(previous["namespace"], previous["workflow"])
        except ClusterError:
            return False
        return (wf.get("status") or {}).get("phase") not in _DONE

    def _submit(
        self,
        rd: RunDir,
        cluster: Cluster,
        namespace: str,
        settings: ArgoSettings,
        options: RunOptions,
        previous: dict[str, Any],
    ) -> str | None:
        """Submit the run's Workflow, with the steps that need not run left out; None when
        no step is left to run (nothing is submitted)."""
        from cellpipe.backends.argo import cache

        pipeline = rd.pipeline()
        info = rd.info()
        prints = step_fingerprints(pipeline)
        keep: set[str] = set()
        claim = None
        if options.resume and previous:
            claim = previous.get("claim")
            if claim and not cluster.claim_exists(namespace, claim):
                claim = None  # the old volume is gone (deleted with its workflow): run all
            if claim or settings.s3 is not None:
                keep = _kept_steps(rd, pipeline, prints, previous.get("fingerprints") or {})
        storage = cache.storage_id(settings, namespace)
        plan = cache.plan(rd, pipeline, kept=keep, storage=storage, use_cache=options.use_cache)
        for step, (source, source_step) in plan.reused.items():
            cache.adopt(rd, step, source, source_step, plan.keys[step])
        reuse = {s: k for s, k in plan.run_keys.items() if k != rd.run_id}
        left_out = plan.left_out(keep)
        submission = int(previous.get("submission", 0)) + 1
        name = workflow_name(pipeline, rd.run_id, submission)
        planned = {s: "skipped" if s in plan.skipped else "cached" for s in left_out}
        target = RunTarget(
            rd.run_id,
            name,
            info.get("parameters") or {},
            left_out,
            claim,
            reuse=reuse,
            planned=planned,
        )
        notify = _notify_target(info)
        used_claim = claim or settings.existing_claim
        if settings.s3 is None and not used_claim:
            used_claim = f"{name}-data"  # Argo names volumeClaimTemplates PVCs so
        to_run = [s for s in pipeline.steps if s.name not in left_out]
        folder = None
        if to_run:
            from cellpipe.backends.argo.folder import for_settings

            workdir = info.get("workdir")
            folder = for_settings(
                settings, Path(workdir) if workdir else None, exclude=[rd.runs_root]
            )
        rd.update_info(
            argo={
                "namespace": namespace,
                "workflow": name if to_run else None,
                "submission": submission,
                "claim": used_claim if settings.s3 is None else None,
                "cache_storage": storage,  # what runs share to reuse values (cache.py)
                "server": cluster.server,
                "context": cluster.context,
                "fingerprints": prints,
                # what the pods find in their working directory (the cache keys' files)
                "folder": folder
                and {"sha256": folder.sha256, "bytes": folder.size, "files": folder.files},
                # The Workflow's exit handler notifies (and cancel lets it run: Stop).
                "notify": bool(to_run and notify is not None and not notify.command),
            }
        )
        if to_run:
            body = build_workflow(
                pipeline,
                _settings_ns(settings, namespace),
                target=target,
                folder=folder,
                notify=notify,
            )
            cluster.create_workflow(namespace, body)
            rd.emit(
                State.RUNNING,
                message=f"workflow {name} in namespace {namespace}"
                + (" (resumed)" if options.resume else ""),
                workflow=name,
                namespace=namespace,
            )
        else:
            rd.emit(State.RUNNING, message="every step is cached or skipped: nothing to submit")
        for step in pipeline.steps:
            if step.name in keep:
                rd.emit(State.CACHED, step.name, message="kept from before the resume")
            elif step.name in plan.reused:
                source = plan.reused[step.name][0]
                rd.emit(
                    State.CACHED,
                    step.name,
                    message=f"unchanged since run {source.run_id}",
                    from_run=source.run_id,
                )
            elif step.name in plan.skipped:
                from cellpipe.compiling.gates import inherited_verdict

                rd.record_gate(step.name, inherited_verdict(plan.skipped[step.name]))
                rd.emit(State.SKIPPED, step.name, message=plan.skipped[step.name])
            else:
                rd.emit(State.PENDING, step.name)
        return name if to_run else None

    # -- cancel ------------------------------------------------------------------------------

    def cancel(self, rd: RunDir) -> None:
        status = rd.status()
        if status.state.terminal:
            raise Conflict(f"run {rd.run_id} already ended ({status.state.value})")
        argo = rd.info().get("argo") or {}
        if argo.get("workflow"):
            cluster = Cluster(argo.get("context"))
            # Stop, unlike Terminate, still runs the exit handler: the run notifies cancelled.
            how = "Stop" if argo.get("notify") else "Terminate"
            cluster.shutdown(argo["namespace"], argo["workflow"], how)
            if rd.driver_alive():
                deadline = time.time() + 30
                while time.time() < deadline and not rd.status().state.terminal:
                    time.sleep(0.1)
                if rd.status().state.terminal:
                    return
        rd.settle_cancelled()


def _notify_target(info: dict[str, Any]) -> Any:
    """The run's notify setting (resolved at prepare time). A command cannot run on the
    cluster: this process runs it at the run's end instead (``driver._driver_notifies``)."""
    import sys

    from cellpipe.core.notify import Notify

    target = Notify.parse((info.get("options") or {}).get("notify"))
    if target is not None and target.command:
        print(
            "cellpipe: warning: notify: a command cannot run on the cluster; this `cellpipe "
            "run` runs it when the run ends (a scheduled or compiled Workflow cannot)",
            file=sys.stderr,
        )
    return target


def _settings_ns(settings: ArgoSettings, namespace: str) -> ArgoSettings:
    from cellpipe.backends.argo.manifest import with_namespace

    return with_namespace(settings, namespace)


def _kept_steps(
    rd: RunDir, pipeline: Pipeline, prints: dict[str, str], before: dict[str, str]
) -> set[str]:
    """Steps that succeeded before, unchanged, with every upstream step kept as well."""
    status = rd.status()
    keep: set[str] = set()
    for step in pipeline.steps:  # topological order
        st = status.steps.get(step.name)
        if (
            st is not None
            and st.state.ok
            and before.get(step.name) == prints[step.name]
            and all(u in keep for u in step.after)
        ):
            keep.add(step.name)
    return keep


class _Follower:
    """Follows one Workflow to its end, mirroring it into the run directory."""

    def __init__(
        self, rd: RunDir, cluster: Cluster, namespace: str, name: str, settings: ArgoSettings
    ):
        self.rd, self.cluster, self.namespace, self.name = rd, cluster, namespace, name
        self.settings = settings
        self.storage = (rd.info().get("argo") or {}).get("cache_storage")
        self.pipeline = rd.pipeline()
        self.by_task = {task_name(s.name): s.name for s in self.pipeline.steps}
        # A foreach step's fan-out (manifest._add_fan_out): its `-items` pod, then a pod
        # per iteration, before the step's own pod merges them.
        self.fan: dict[str, tuple[str, str]] = {}
        for step in fanned_out(self.pipeline, list(self.pipeline.steps), settings):
            for kind in ("items", "iteration"):
                self.fan[f"{task_name(step)}-{kind}"] = (step, kind)
        self.progress: dict[str, tuple[int, int]] = {}  # step -> (done, total) last told
        self.fan_started: dict[str, str] = {}  # step -> its `-items` pod's startedAt
        status = rd.status().steps
        self.state: dict[str, State] = {n: st.state for n, st in status.items()}
        self.finished_pods: set[str] = set()
        self.running_pods: set[str] = set()
        self.running_steps: set[str] = set()  # whose own pod has left Pending
        self.logs: dict[str, dict[int, str]] = {}
        self.pending: dict[str, tuple[float, str]] = {}  # step -> (since, last message)
        self.pending_nodes: dict[str, dict[str, Any]] = {}
        #: The steps the folder task comes before (those with no upstream step in this
        #: Workflow): its pod waiting or failing is theirs.
        self.first_steps = [
            s.name
            for s in self.pipeline.steps
            if not self.state.get(s.name, State.PENDING).terminal
            and all(self.state.get(u, State.PENDING).terminal for u in s.after)
        ]
        self.folder_failure = ""
        self.stop_requested = False
        self.gave_up = False  # we stopped the workflow because a step cannot start
        self.cancelling = False
        self._log_checked: dict[str, float] = {}

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> State:
        with self._signals():
            failures = 0
            while True:
                try:
                    wf = self.cluster.get_workflow(self.namespace, self.name)
                    self.update(wf)
                    if self._done(wf):
                        return self.finish(wf)
                    rv = wf["metadata"].get("resourceVersion", "0")
                    for event in self.cluster.watch_workflow(self.namespace, self.name, rv):
                        obj = event.get("object")
                        if event.get("type") == "DELETED":
                            return self.finish(obj or wf, deleted=True)
                        if isinstance(obj, dict):
                            wf = obj
                            self.update(wf)
                            if self._done(wf):
                                return self.finish(wf)
                    failures = 0
                    self.check_pending()
                except CellpipeError as exc:
                    if not _retryable(exc) or failures >= 8:
                        self.rd.emit(State.FAILED, message=f"lost the workflow {self.name}: {exc}")
                        raise
                    failures += 1
                    time.sleep(min(0.2 * 2**failures, 10))

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT stop the workflow (as they stop a local run), then it is followed
        to its end."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: Any) -> None:
            if not self.stop_requested:
                self.stop_requested = True
                with contextlib.suppress(CellpipeError):
                    self.cluster.shutdown(self.namespace, self.name)

        saved = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)

    def _done(self, wf: dict[str, Any]) -> bool:
        return (wf.get("status") or {}).get("phase") in _DONE

    # -- nodes -> events -----------------------------------------------------------------------

    def update(self, wf: dict[str, Any]) -> None:
        self.cancelling = self.stop_requested or (
            bool((wf.get("spec") or {}).get("shutdown")) and not self.gave_up
        )
        nodes = (wf.get("status") or {}).get("nodes") or {}
        pods: dict[str, list[dict[str, Any]]] = {}
        omitted: dict[str, dict[str, Any]] = {}
        fans: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for node in nodes.values():
            if node.get("templateName") == FOLDER_TASK and node.get("type") == "Pod":
                self._folder_node(node)
                continue
            if node.get("templateName") in self.fan and node.get("type") == "Pod":
                step, kind = self.fan[node["templateName"]]
                fans.setdefault(step, []).append((kind, node))
                continue
            step = self.by_task.get(node.get("templateName", ""))
            if step is None:
                continue
            if node.get("type") == "Pod":
                pods.setdefault(step, []).append(node)
            elif node.get("phase") in ("Omitted", "Skipped"):
                omitted[step] = node
        for step, fan in fans.items():
            self._fan_nodes(step, fan)
        for step, attempts in pods.items():
            attempts.sort(key=lambda n: (n.get("startedAt") or "~", n.get("name", "")))
            limit = self.pipeline.step(step).settings.retry
            for i, node in enumerate(attempts, 1):
                self._pod_node(step, i, node, retries_left=i <= limit)
        for step in [s.name for s in self.pipeline.steps if s.name in omitted]:
            node = omitted[step]  # in topological order: a gate's reason passes down
            if self.state.get(step, State.PENDING).terminal:
                continue
            if self.cancelling:
                self._emit(step, State.CANCELLED, 0, "run cancelled before this step started")
            elif self.folder_failure and step in self.first_steps:
                self._emit(step, State.FAILED, 0, self.folder_failure)
            else:
                self._emit(
                    step, State.SKIPPED, 0, self._skip_reason(step) or node.get("message", "")
                )

    def _pod_node(self, step: str, attempt: int, node: dict[str, Any], retries_left: bool) -> None:
        node_id = node.get("id", "")
        phase = node.get("phase")
        if node_id in self.finished_pods:
            return
        if phase == "Pending":
            self._waiting(step, attempt, node)
            return
        self.pending.pop(step, None)
        self.running_steps.add(step)
        if phase == "Running":
            if node_id not in self.running_pods:
                self.running_pods.add(node_id)
                self._emit(
                    step, State.RUNNING, attempt, "", force=True, pod=pod_name(self.name, node)
                )
            elif time.time() - self._log_checked.get(node_id, 0) > 2:
                self._live_log(step, attempt, node)
            return
        if phase in _POD_DONE:
            self.finished_pods.add(node_id)
            if node_id not in self.running_pods:
                self.running_pods.add(node_id)
                self._emit(
                    step, State.RUNNING, attempt, "", force=True, pod=pod_name(self.name, node)
                )
            self._collect(step, attempt, node, retries_left and phase != "Succeeded")

    def _waiting(self, step: str, attempt: int, node: dict[str, Any]) -> None:
        """``step`` waits on the Pending pod ``node`` (its own, its fan-out's, or the folder
        pod before it): each new reason is said once, and ``check_pending`` times it out."""
        message = node.get("message") or ""
        since, last = self.pending.get(step, (time.time(), ""))
        if message and message != last:
            self._emit(step, State.PENDING, attempt, f"waiting: {message}", force=True)
        self.pending[step] = (since, message or last)
        self.pending_nodes[step] = node

    def _fan_nodes(self, step: str, fan: list[tuple[str, dict[str, Any]]]) -> None:
        """A fan-out's pods, before the step's own: the step is running from its `-items`
        pod on (which may wait Pending, with the reason, as a step's pod does), and
        ``{done, total}`` counts the iterations whose pods finished, as locally (the step's
        own pod then tells the last word: which of them succeeded)."""
        if self.state.get(step, State.PENDING).terminal or step in self.running_steps:
            return
        items = [n for kind, n in fan if kind == "items"]
        for node in items:
            phase = node.get("phase")
            if phase == "Pending":
                self._waiting(step, 1, node)
                return
            self.pending.pop(step, None)
            self.pending_nodes.pop(step, None)
            if node.get("startedAt"):
                self.fan_started.setdefault(step, node["startedAt"])
            if self.state.get(step) is not State.RUNNING:
                self._emit(step, State.RUNNING, 1, "", force=True, pod=pod_name(self.name, node))
        listed = next(
            (n.get("outputs", {}).get("result") for n in items if n.get("phase") == "Succeeded"),
            None,
        )
        try:
            pending = json.loads(listed) if listed else None
        except ValueError:
            pending = None
        if not isinstance(pending, list):
            return
        total = pending[0]["total"] if pending else 0
        finished: set[str] = set()
        for kind, node in fan:
            if kind == "iteration" and node.get("phase") in _POD_DONE:
                params = (node.get("inputs") or {}).get("parameters") or []
                index = next((p.get("value") for p in params if p.get("name") == "index"), None)
                finished.add(index if index is not None else node.get("id", ""))
        done = total - len(pending) + len(finished)
        if total and self.progress.get(step) != (done, total):
            self.progress[step] = (done, total)
            self._emit(
                step,
                State.RUNNING,
                1,
                f"{done}/{total} iterations",
                force=True,
                iterations={"done": done, "total": total},
            )

    def _folder_node(self, node: dict[str, Any]) -> None:
        """The pod unpacking the notebook's folder: while it waits, the first steps wait
        with it (so ``pending_timeout`` applies); when it fails, they fail with its reason."""
        phase = node.get("phase")
        node_id = node.get("id", "")
        waiting = [s for s in self.first_steps if not self.state.get(s, State.PENDING).terminal]
        if phase == "Pending":
            for step in waiting:
                self._waiting(step, 1, node)
            return
        for step in list(self.pending_nodes):
            if self.pending_nodes[step].get("id") == node_id:
                self.pending.pop(step, None)
                self.pending_nodes.pop(step, None)
        if phase in ("Failed", "Error") and not self.folder_failure:
            if self.settings.s3 is not None:
                # On S3 the pod uploads the folder: a missing bucket or refused credentials
                # fail it first, and are said as for a step's upload.
                said = _pod_failure(node, self.settings)
                if _s3_failure(self.settings.s3, said):
                    self.folder_failure = said
                    return
            why = node.get("message") or ""
            with contextlib.suppress(CellpipeError):
                text = self.cluster.pod_log(self.namespace, pod_name(self.name, node)) or ""
                lines = [line for line in text.splitlines() if line.startswith("cellpipe:")]
                why = lines[-1].removeprefix("cellpipe: ") if lines else why
            self.folder_failure = (
                f"the notebook's folder was not unpacked into the run's volume "
                f"({FOLDER_TASK}): {why or phase}"
            )

    def _live_log(self, step: str, attempt: int, node: dict[str, Any]) -> None:
        self._log_checked[node["id"]] = time.time()
        with contextlib.suppress(CellpipeError):
            text = self.cluster.pod_log(self.namespace, pod_name(self.name, node))
            if text is not None:
                self.logs.setdefault(step, {})[attempt] = split_log(text)[0]
                self._write_log(step)

    def _collect(self, step: str, attempt: int, node: dict[str, Any], will_retry: bool) -> None:
        """A finished pod: its log, outputs and metrics into the run directory, then its
        verdict (evidence before the verdict, as the runner does)."""
        pod = pod_name(self.name, node)
        text = None
        with contextlib.suppress(CellpipeError):
            text = self.cluster.pod_log(self.namespace, pod)
        log, result = split_log(text or "")
        if text is None:
            log = f"--- cellpipe: the log of pod {pod} is gone (deleted with the pod) ---\n"
        self.logs.setdefault(step, {})[attempt] = log
        self._write_log(step)
        extra: dict[str, Any] = {"pod": pod}
        message = ""
        if result is not None:
            if result.outputs is not None:
                write_json(
                    self.rd.outputs_path(step),
                    dict(result.outputs, run=self.rd.run_id, attempt=attempt),
                )
            if result.metrics:
                self.rd.record_metrics(step, result.metrics)
            final = result.final or {}
            message = final.get("message", "")
            for k in ("duration_s", "ename", "evalue", "cell", "cell_id"):
                if k in final:
                    extra[k] = final[k]
            told = [e["iterations"] for e in result.events if "iterations" in e]
            if told:  # a foreach step's last {done, total}, as its pod counted them
                extra["iterations"] = told[-1]
            span = _seconds_between(self.fan_started.get(step), node.get("finishedAt"))
            if span is not None and attempt == 1:  # a fan-out: from its `-items` pod on
                extra["duration_s"] = span
        succeeded = node.get("phase") == "Succeeded" and (
            result is None or (result.final or {}).get("state") != "failed"
        )
        skipped = (
            result is not None
            and (result.final or {}).get("state") is None
            and any(e.get("state") == "skipped" for e in result.events)
        )
        if skipped:  # its own pod saw a closed gate upstream (in another part's DAG)
            why = next(e.get("message", "") for e in result.events if e.get("state") == "skipped")
            from cellpipe.compiling.gates import inherited_verdict

            self.rd.record_gate(step, inherited_verdict(why))
            self._emit(step, State.SKIPPED, attempt, why, force=True, pod=pod)
            return
        if succeeded and result is not None:
            from cellpipe.backends.argo.cache import record_success

            record_success(
                self.rd,
                self.pipeline,
                step,
                manifest=result.manifest,
                gate=result.gate,
                metrics=result.metrics,
                storage=self.storage,
                location=values_location(
                    self.settings,
                    self.namespace,
                    (self.rd.info().get("argo") or {}).get("claim"),
                    self.rd.run_id,
                    step,
                ),
                lineage=result.lineage,
            )
        ran_through = result is not None and (result.final or {}).get("state") == "succeeded"
        if not succeeded and (not message or ran_through):
            # No cell failed: the pod did (killed, or its artifacts could not be saved).
            message = _pod_failure(node, self.settings)
        if succeeded:
            self._emit(step, State.SUCCEEDED, attempt, message, force=True, **extra)
        elif self.cancelling and result is None:
            self._emit(step, State.CANCELLED, attempt, "run cancelled", force=True, **extra)
        else:
            self._emit(step, State.FAILED, attempt, message, force=True, **extra)
            if will_retry:
                self._emit(
                    step,
                    State.PENDING,
                    attempt,
                    f"retry {attempt + 1} (Argo retryStrategy)",
                    force=True,
                )

    def _write_log(self, step: str) -> None:
        parts = self.logs.get(step, {})
        write_text(self.rd.log_path(step), "".join(parts[k] for k in sorted(parts)))

    # -- pods that do not start ------------------------------------------------------------------

    def check_pending(self) -> None:
        """A pod Pending too long (image cannot be pulled, nothing fits it) fails its step with
        the reason, and the workflow is stopped: waiting longer would not help."""
        for step, (since, message) in list(self.pending.items()):
            waited = time.time() - since
            reason = self._pod_reason(step) or message
            if reason and reason != message:
                self.pending[step] = (since, reason)
                self._emit(
                    step,
                    State.PENDING,
                    max(1, self._attempts(step)),
                    f"waiting: {reason}",
                    force=True,
                )
            if waited < self.settings.pending_timeout:
                continue
            why = reason or "no node could run it"
            self._emit(
                step,
                State.FAILED,
                max(1, self._attempts(step)),
                f"the pod did not start within {self.settings.pending_timeout:g} s: {why}",
                force=True,
            )
            self.pending.pop(step, None)
            node = self.pending_nodes.pop(step, None)
            if node:
                self.finished_pods.add(node.get("id", ""))  # its end is our doing, not news
            self.gave_up = True
            argo = self.rd.info().get("argo") or {}
            if argo.get("notify"):
                # Terminate runs no exit handler, and Stop's would report "cancelled": this
                # failure is ours, so the driver tells it (driving.driver._driver_notifies).
                self.rd.update_info(argo={**argo, "notify": False})
            with contextlib.suppress(CellpipeError):
                self.cluster.shutdown(self.namespace, self.name)

    def _pod_reason(self, step: str) -> str:
        node = self.pending_nodes.get(step)
        if not node:
            return ""
        pod = None
        with contextlib.suppress(CellpipeError):
            pod = self.cluster.pod(self.namespace, pod_name(self.name, node))
        if pod is None or pod.status is None:
            return ""
        for cs in (pod.status.init_container_statuses or []) + (
            pod.status.container_statuses or []
        ):
            waiting = cs.state.waiting if cs.state else None
            if (
                waiting
                and waiting.reason
                and waiting.reason not in ("ContainerCreating", "PodInitializing")
            ):
                return f"{waiting.reason}: {waiting.message or ''}".strip().rstrip(":")
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.status == "False":
                return f"{cond.reason or 'Unschedulable'}: {cond.message or ''}".strip().rstrip(":")
        return ""

    def _attempts(self, step: str) -> int:
        return self.rd.status().steps[step].attempts

    # -- the end ---------------------------------------------------------------------------------

    def finish(self, wf: dict[str, Any], deleted: bool = False) -> State:
        self.update(wf)
        status = wf.get("status") or {}
        stopped = self.stop_requested or (
            bool((wf.get("spec") or {}).get("shutdown")) and not self.gave_up
        )
        wf_message = status.get("message") or ""
        for step in self.by_task.values():
            current = self.state.get(step, State.PENDING)
            if current.terminal:
                continue
            if deleted:
                self._emit(step, State.FAILED, 0, f"the workflow {self.name} was deleted")
            elif stopped:
                self._emit(step, State.CANCELLED, 0, "run cancelled")
            elif self.folder_failure and step in self.first_steps:
                self._emit(step, State.FAILED, 0, self.folder_failure)
            elif self._skip_reason(step):
                self._emit(step, State.SKIPPED, 0, self._skip_reason(step))
            else:
                self._emit(
                    step, State.FAILED, 0, wf_message or f"workflow {status.get('phase', 'ended')}"
                )
        failed = [s for s, st in self.state.items() if st is State.FAILED]
        handler = _failed_exit_handler(wf)
        if handler and not failed and not deleted and not stopped:
            # Argo fails a Workflow whose exit handler failed; the notification must never
            # change the run's outcome, so the steps' states decide it.
            import sys

            print(f"cellpipe: warning: notify: the exit handler failed: {handler}", file=sys.stderr)
        if deleted:
            final, msg = State.FAILED, f"the workflow {self.name} was deleted before it finished"
        elif stopped:
            final, msg = State.CANCELLED, "cancelled"
        elif failed or (status.get("phase") != "Succeeded" and not handler):
            final = State.FAILED
            msg = (
                f"step{'s' if len(failed) > 1 else ''} {', '.join(failed)} failed"
                if failed
                else wf_message
            )
        else:
            final, msg = State.SUCCEEDED, ""
        self.rd.emit(final, message=msg, workflow=self.name)
        return final

    def _skip_reason(self, step: str) -> str:
        """Why ``step`` did not start: a closed gate upstream (its verdict, as locally, and
        recorded so it passes down), else the upstream step that did not succeed."""
        from cellpipe.compiling.gates import closed_upstream, inherited_verdict

        why = closed_upstream(self.pipeline.step(step), self.rd.gate_verdict)
        if why:
            self.rd.record_gate(step, inherited_verdict(why))
            return why
        for up in self.pipeline.step(step).after:
            st = self.state.get(up, State.PENDING)
            if st in (State.FAILED, State.SKIPPED, State.CANCELLED):
                return f"upstream step {up} {st.value}"
        return ""

    def _emit(
        self, step: str, state: State, attempt: int, message: str, force: bool = False, **extra: Any
    ) -> None:
        if not force and self.state.get(step) is state:
            return
        self.state[step] = state
        self.rd.emit(state, step, attempt=attempt, message=message, **extra)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one of Argo's timestamps (``2026-12-04T19:27:51Z``) to another."""
    from datetime import datetime

    if not start or not end:
        return None
    try:
        a, b = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (start, end))
    except ValueError:
        return None
    return max(0.0, (b - a).total_seconds())


def _failed_exit_handler(wf: dict[str, Any]) -> str:
    """The message of the Workflow's exit handler (the notification) when it failed, or ""."""
    exit_template = (wf.get("spec") or {}).get("onExit")
    for node in ((wf.get("status") or {}).get("nodes") or {}).values():
        if (
            exit_template
            and node.get("templateName") == exit_template
            and node.get("phase") in ("Failed", "Error")
        ):
            return node.get("message") or node.get("phase")
    return ""


def _pod_failure(node: dict[str, Any], settings: ArgoSettings | None = None) -> str:
    message = " ".join((node.get("message") or "").split())
    s3 = settings.s3 if settings is not None else None
    if s3 is not None and message:
        # Argo's wait container says each failed upload twice, "; "-joined: once is enough.
        said: list[str] = []
        for part in (p.strip().rstrip(";") for p in message.split("; ")):
            if part and not any(earlier.endswith(part) for earlier in said):
                said.append(part)
        why = _s3_failure(s3, "; ".join(said))
        if why:
            return why
    if "OOMKilled" in message:
        return f"the step ran out of memory ({message}); raise its `limit:memory:` tag"
    if "deadline" in message.lower():
        return f"the step took longer than its `timeout:` ({message})"
    return message or f"the pod ended {node.get('phase', '')} without a result"


#: What Argo's S3 driver says when a bucket is missing, and when credentials are refused.
_NO_BUCKET = ("bucket does not exist", "nosuchbucket")
_REFUSED = (
    "signature we calculated does not match",
    "signaturedoesnotmatch",
    "access key id you provided does not exist",
    "invalidaccesskeyid",
    "access denied",
    "accessdenied",
)


def _s3_failure(s3: S3Settings, message: str) -> str:
    """A failed artifact transfer as one line naming what to fix: the bucket, or the
    credentials' Secrets; "" when ``message`` is not about S3."""
    low = message.lower()
    where = f" at {s3.endpoint}" if s3.endpoint else ""
    if any(w in low for w in _NO_BUCKET):
        bucket = f"`{s3.bucket}`" if s3.bucket else "of the artifact repository"
        return (
            f"the S3 bucket {bucket}{where} does not exist: create it or fix "
            f"`metadata.cellpipe.argo.s3.bucket` (Argo: {message})"
        )
    secrets = [r for r in (s3.access_key_secret, s3.secret_key_secret) if r is not None]
    named = " and ".join(f"{r.name}:{r.key}" for r in secrets) or "of the artifact repository"
    if any(w in low for w in _REFUSED):
        return (
            f"S3{where} refused the credentials in Secret {named}: check that Secret's "
            f"values (Argo: {message})"
        )
    if any(f"/{r.name}/" in message or f'"{r.name}"' in message for r in secrets):
        return f"the S3 credentials in Secret {named} cannot be read (Argo: {message})"
    return ""


def _retryable(exc: CellpipeError) -> bool:
    """Worth following again: a transient error, or a watch from a resourceVersion the API
    server no longer keeps (410 Expired; the loop reads the Workflow again and watches on
    from its current version)."""
    cause = exc.__cause__
    return cause is not None and (transient(cause) or getattr(cause, "status", None) == 410)
