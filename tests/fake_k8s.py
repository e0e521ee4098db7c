"""A small fake Kubernetes API server with an Argo controller, for the real ``kubernetes`` client.

It speaks real HTTP (threaded ``http.server``): creates, gets, merge-patches and watches
(``?watch=true``, chunked JSON lines, resumable by ``resourceVersion``) Workflows; creates
CronWorkflows; serves pods, their logs and PVCs. Submitted manifests are checked as the API
server does with ``fieldValidation=Strict`` (unknown fields are a 400), using the vendored
Argo schema. Its controller drives each DAG task's pod Pending -> Running -> Succeeded/Failed,
with Argo's node layout (Retry nodes, v2 pod names, Omitted tasks after a failure, shutdown).

A pod either *executes* the real step (``python -m cellpipe.runner`` with the template's args,
its raw artifacts written into a directory standing in for the pod, the PVC a shared
directory), or follows a *script* (``Script``) for the cases a real process cannot show on
cue: a pod stuck Pending, a pod that runs until stopped, a log without a trailer.

Faults on demand: ``fail(method, kind, status)`` answers the next matching request with that
status; ``crd_installed = False`` answers 404 on workflows; ``drop_watch_after = N`` cuts the
next watch stream after N events, mid-stream.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[1]
TOKEN = "fake-token"


def _validators() -> Any:
    spec = importlib.util.spec_from_file_location(
        "argo_validate_fake", REPO / "tests/data/argo/validate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.make_validators(True)


_VALIDATE: tuple[Any, Any] | None = None


@dataclass
class Script:
    """How a scripted pod behaves (one per attempt)."""

    phase: str = "Succeeded"  # final phase: Succeeded | Failed
    log: str = ""
    message: str = ""  # the node's message when it ends
    pending_reason: str | None = None  # stays Pending with this waiting reason, forever
    runs_until_stopped: bool = False
    delay: float = 0.05


def fnv32a(text: str) -> int:
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class FakeCluster:
    def __init__(self, root: Path, *, execute: bool = True):
        self.root = root
        self.execute = execute
        self.lock = threading.Condition()
        self.rv = 100
        self.workflows: dict[tuple[str, str], dict[str, Any]] = {}
        self.crons: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[
            tuple[int, str, str, str, dict[str, Any]]
        ] = []  # rv, ns, name, type, obj
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.claims: set[tuple[str, str]] = set()
        self.secrets: dict[tuple[str, str], str] = {}
        self.scripts: dict[str, list[Script]] = {}
        self.requests: list[tuple[str, str, dict[str, list[str]]]] = []
        self.faults: list[tuple[str, str, int, str]] = []
        self.crd_installed = True
        self.drop_watch_after: int | None = None
        self.expire_next_watch = False  # answer the next watch with 410 Expired, as etcd does
        self.submitted: list[dict[str, Any]] = []
        #: How the Workflow's exit handler (spec.onExit) ends, when set; Argo fails a
        #: Workflow whose DAG succeeded but whose exit handler did not.
        self.exit_handler_phase: str | None = None
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- control -------------------------------------------------------------------------

    def __enter__(self) -> FakeCluster:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, path: Path, namespace: str = "team-a") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": TOKEN}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "tester",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    def fail(self, method: str, kind: str, status: int, body: str = "") -> None:
        """Answer the next ``method`` request on ``kind`` (workflows, pods, log, ...) with ``status``."""
        self.faults.append((method, kind, status, body))

    def workflow(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.workflows[(namespace, name)])

    def watch_requests(self) -> list[dict[str, list[str]]]:
        return [q for m, p, q in self.requests if q.get("watch") == ["true"]]

    # -- storage ----------------------------------------------------------------------------

    def _bump(self, ns: str, name: str, kind: str = "MODIFIED") -> None:
        """Record a change of a workflow (caller holds the lock)."""
        self.rv += 1
        wf = self.workflows[(ns, name)]
        wf["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, ns, name, kind, copy.deepcopy(wf)))
        self.lock.notify_all()

    def create_workflow(self, ns: str, body: dict[str, Any]) -> tuple[int, Any]:
        global _VALIDATE
        if _VALIDATE is None:
            _VALIDATE = _validators()
        module, validators = _VALIDATE
        problems = (
            list(module.schema_errors(validators["Workflow"], body))
            + module.Linter(body, "Workflow").run()
        )
        if problems:
            return 400, _status(
                400, "BadRequest", f"strict decoding error: {problems[0][0]}: {problems[0][1]}"
            )
        if "name" not in body["metadata"]:  # generateName, as the API server completes it
            body = copy.deepcopy(body)
            body["metadata"]["name"] = body["metadata"]["generateName"] + f"{self.rv + 1:05d}"
        name = body["metadata"]["name"]
        with self.lock:
            if (ns, name) in self.workflows:
                return 409, _status(
                    409,
                    "AlreadyExists",
                    f'workflows.argoproj.io "{name}" already exists',
                    name=name,
                )
            wf = copy.deepcopy(body)
            wf["metadata"].update(namespace=ns, uid=f"uid-{name}", creationTimestamp=now())
            wf["status"] = {}
            self.workflows[(ns, name)] = wf
            self.submitted.append(copy.deepcopy(body))
            if "volumeClaimTemplates" in wf["spec"]:
                self.claims.add((ns, f"{name}-data"))
            self._bump(ns, name, "ADDED")
            out = copy.deepcopy(wf)
        threading.Thread(target=self._drive, args=(ns, name), daemon=True).start()
        return 201, out

    # -- the controller ----------------------------------------------------------------------

    def _drive(self, ns: str, name: str) -> None:
        with self.lock:
            wf = self.workflows[(ns, name)]
            wf["status"] = {
                "phase": "Running",
                "startedAt": now(),
                "nodes": {
                    name: {
                        "id": name,
                        "name": name,
                        "displayName": name,
                        "type": "DAG",
                        "templateName": "main",
                        "phase": "Running",
                    }
                },
            }
            self._bump(ns, name)
            spec = copy.deepcopy(wf["spec"])
        templates = {t["name"]: t for t in spec["templates"]}
        result = self._run_dag(ns, name, spec, templates, templates["main"], "")
        handler_ok = True
        if spec.get("onExit") and self.exit_handler_phase:
            message = "" if self.exit_handler_phase == "Succeeded" else "ImagePullBackOff"
            self._node(
                ns, name, f"{name}.onExit", spec["onExit"], "Pod", self.exit_handler_phase, message
            )
            handler_ok = self.exit_handler_phase == "Succeeded"
        with self.lock:
            wf = self.workflows[(ns, name)]
            stopped = wf["spec"].get("shutdown")
            ok = all(r == "Succeeded" for r in result.values()) and handler_ok
            wf["status"]["phase"] = "Succeeded" if ok and not stopped else "Failed"
            if stopped:
                wf["status"]["message"] = f"Stopped with strategy '{stopped}'"
            wf["status"]["finishedAt"] = now()
            wf["status"]["nodes"][name]["phase"] = wf["status"]["phase"]
            self._bump(ns, name)

    def _run_dag(
        self,
        ns: str,
        name: str,
        spec: dict[str, Any],
        templates: dict[str, dict[str, Any]],
        dag: dict[str, Any],
        prefix: str,
    ) -> dict[str, str]:
        """Run a DAG template's tasks; a task whose template is itself a DAG (a composed
        notebook's part) runs its tasks in turn, as Argo nests them under the task's node."""
        result: dict[str, str] = {}
        for task in dag["dag"]["tasks"]:  # cellpipe lists tasks in a topological order
            deps = task.get("dependencies", [])
            path = f"{prefix}{task['name']}"
            if self._stopped(ns, name) or any(result.get(d) != "Succeeded" for d in deps):
                result[task["name"]] = "Omitted"
                self._node(
                    ns,
                    name,
                    f"{name}.{path}",
                    task["template"],
                    "Skipped",
                    "Omitted",
                    "omitted: depends condition not met",
                )
                continue
            template = templates[task["template"]]
            if "dag" in template:
                self._node(ns, name, f"{name}.{path}", template["name"], "DAG", "Running")
                inner = self._run_dag(ns, name, spec, templates, template, f"{path}.")
                phase = "Succeeded" if all(r == "Succeeded" for r in inner.values()) else "Failed"
                self._node(ns, name, f"{name}.{path}", template["name"], "DAG", phase)
                result[task["name"]] = phase
                continue
            result[task["name"]] = self._run_task(ns, name, spec, template, path)
        return result

    def _stopped(self, ns: str, name: str) -> bool:
        with self.lock:
            return bool(self.workflows[(ns, name)]["spec"].get("shutdown"))

    def _node(
        self,
        ns: str,
        wf: str,
        node_name: str,
        template: str,
        type_: str,
        phase: str,
        message: str = "",
    ) -> dict[str, Any]:
        with self.lock:
            nodes = self.workflows[(ns, wf)]["status"]["nodes"]
            node_id = f"{wf}-{fnv32a(node_name)}"
            node = nodes.setdefault(
                node_id,
                {
                    "id": node_id,
                    "name": node_name,
                    "displayName": node_name.split(".", 1)[1],
                    "type": type_,
                    "templateName": template,
                },
            )
            node["phase"] = phase
            if message:
                node["message"] = message
            if phase == "Running" and "startedAt" not in node:
                node["startedAt"] = now()
            if phase in ("Succeeded", "Failed", "Error", "Omitted"):
                node["finishedAt"] = now()
            self._bump(ns, wf)
            return copy.deepcopy(node)

    def _run_task(
        self, ns: str, wf: str, spec: dict[str, Any], template: dict[str, Any], task: str
    ) -> str:
        retry = template.get("retryStrategy")
        attempts = int(retry["limit"]) + 1 if retry else 1
        base = f"{wf}.{task}"
        if retry:
            self._node(ns, wf, base, template["name"], "Retry", "Running")
        phase = "Failed"
        for i in range(attempts):
            node_name = f"{base}({i})" if retry else base
            phase = self._run_pod(ns, wf, spec, template, task, node_name, i)
            if phase == "Succeeded" or self._stopped(ns, wf):
                break
        if retry:
            self._node(ns, wf, base, template["name"], "Retry", phase)
        return phase

    def _run_pod(
        self,
        ns: str,
        wf: str,
        spec: dict[str, Any],
        template: dict[str, Any],
        task: str,
        node_name: str,
        attempt: int,
    ) -> str:
        pod = f"{wf}-{template['name']}-{fnv32a(node_name)}"
        # a step's pod, or the task unpacking the notebook's folder (no step of its own)
        annotations = template.get("metadata", {}).get("annotations", {})
        step = annotations.get("cellpipe.io/step-name", template["name"])
        script = None
        if not self.execute or step in self.scripts:
            scripts = self.scripts.get(step) or [Script()]
            script = scripts[min(attempt, len(scripts) - 1)]
        with self.lock:
            self.pods[(ns, pod)] = {"log": "", "waiting": None}
        self._node(ns, wf, node_name, template["name"], "Pod", "Pending")
        if script and script.pending_reason:
            with self.lock:
                self.pods[(ns, pod)]["waiting"] = script.pending_reason
            return self._until_stopped(ns, wf, node_name, template["name"])
        time.sleep(script.delay if script else 0.02)
        self._node(ns, wf, node_name, template["name"], "Pod", "Running")
        if script is None:
            code, log = self._execute(ns, wf, spec, template, pod)
            phase, message = (
                ("Succeeded", "") if code == 0 else ("Failed", f"Error (exit code {code})")
            )
        else:
            with self.lock:
                self.pods[(ns, pod)]["log"] = script.log
            if script.runs_until_stopped:
                return self._until_stopped(ns, wf, node_name, template["name"])
            time.sleep(script.delay)
            phase, message, log = script.phase, script.message, script.log
        with self.lock:
            self.pods[(ns, pod)]["log"] = log
        self._node(ns, wf, node_name, template["name"], "Pod", phase, message)
        return phase

    def _until_stopped(self, ns: str, wf: str, node_name: str, template: str) -> str:
        """A pod that never ends by itself: it fails once the workflow is stopped."""
        while not self._stopped(ns, wf):
            time.sleep(0.05)
        self._node(
            ns, wf, node_name, template, "Pod", "Failed", "Stopped with strategy 'Terminate'"
        )
        return "Failed"

    def _execute(
        self, ns: str, wf: str, spec: dict[str, Any], template: dict[str, Any], pod: str
    ) -> tuple[int, str]:
        """Run the template's container as a local process in a stand-in for the pod."""
        box = self.root / "pods" / pod
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        mounts = sorted(template["container"]["volumeMounts"], key=lambda m: len(m["mountPath"]))
        host: dict[str, Path] = {}
        for m in mounts:
            vol = volumes.get(m["name"], {})
            if "emptyDir" in vol or "secret" in vol:
                target = box / "volumes" / m["name"]
            else:  # the run's PVC (claim template or existing claim)
                claim = vol.get("persistentVolumeClaim", {}).get("claimName", f"{wf}-data")
                target = (
                    self.root
                    / "pvc"
                    / claim
                    / m.get("subPath", "").replace("{{workflow.name}}", wf)
                )
            target.mkdir(parents=True, exist_ok=True)
            parent = next(
                (
                    p
                    for p in sorted(host, key=len, reverse=True)
                    if m["mountPath"].startswith(p + "/")
                ),
                None,
            )
            if parent is not None:  # a mount inside another one: a link in the outer one
                link = host[parent] / Path(m["mountPath"]).relative_to(parent)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(target, target_is_directory=True)
            host[m["mountPath"]] = target

        def on_host(path: str) -> str:
            best = max(
                (p for p in host if path == p or path.startswith(p + "/")), key=len, default=None
            )
            return str(host[best] / Path(path).relative_to(best)) if best else path

        params = {p["name"]: p["value"] for p in spec.get("arguments", {}).get("parameters", [])}

        def substitute(text: str) -> str:
            text = re.sub(
                r"\{\{workflow\.parameters\.([-\w]+)\}\}", lambda m: params[m.group(1)], text
            )
            return text.replace("{{workflow.name}}", wf)

        for art in template.get("inputs", {}).get("artifacts", []):
            if "raw" in art:
                dest = Path(on_host(art["path"]))
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_text(substitute(art["raw"]["data"]))
        c = template["container"]
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "kernel")
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = on_host(e["value"])
            else:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self.secrets.get((ref["name"], ref["key"]), "")
        args = [on_host(substitute(a)) for a in c.get("args", [])]
        proc = subprocess.run(
            [sys.executable, *c["command"][1:], *args],
            cwd=on_host(c["workingDir"]) if "workingDir" in c else tmp_cwd(box),
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return proc.returncode, proc.stdout + proc.stderr

    # -- shutdown ---------------------------------------------------------------------------

    def patch_workflow(self, ns: str, name: str, patch: dict[str, Any]) -> tuple[int, Any]:
        with self.lock:
            wf = self.workflows.get((ns, name))
            if wf is None:
                return 404, _status(
                    404,
                    "NotFound",
                    f'workflows.argoproj.io "{name}" not found',
                    name=name,
                    kind="workflows",
                )
            wf["spec"].update(patch.get("spec", {}))
            self._bump(ns, name)
            return 200, copy.deepcopy(wf)


def tmp_cwd(box: Path) -> Path:
    """A pod's working directory when its container names none."""
    box.mkdir(parents=True, exist_ok=True)
    return box


def _status(code: int, reason: str, message: str, name: str = "", kind: str = "") -> dict[str, Any]:
    details = {"name": name, "kind": kind} if name or kind else {}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


_ROUTES = [
    (
        "workflows",
        re.compile(r"^/apis/argoproj\.io/v1alpha1/namespaces/([^/]+)/workflows(?:/([^/]+))?$"),
    ),
    (
        "cronworkflows",
        re.compile(r"^/apis/argoproj\.io/v1alpha1/namespaces/([^/]+)/cronworkflows(?:/([^/]+))?$"),
    ),
    ("log", re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")),
    ("pods", re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$")),
    (
        "persistentvolumeclaims",
        re.compile(r"^/api/v1/namespaces/([^/]+)/persistentvolumeclaims/([^/]+)$"),
    ),
]


def _handler(fake: FakeCluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            fake.requests.append((method, url.path, query))
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            for kind, rx in _ROUTES:  # noqa: B007 - the matching route's kind is used below
                m = rx.match(url.path)
                if m:
                    break
            else:
                return self._send(404, "404 page not found", "text/plain")
            for i, (fm, fk, status, text) in enumerate(fake.faults):
                if fm == method and fk == kind:
                    del fake.faults[i]
                    if status == 404 and kind == "workflows":
                        return self._send(404, "404 page not found", "text/plain")
                    if status == 403:
                        verb = {"POST": "create", "GET": "get", "PATCH": "patch"}[method]
                        text = text or (
                            f'{kind}.argoproj.io is forbidden: User "system:serviceaccount:team-a:tester" '
                            f'cannot {verb} resource "{kind}" in API group "argoproj.io" in the namespace "{m.group(1)}"'
                        )
                    return self._send(
                        status, _status(status, "Fault", text or f"injected {status}")
                    )
            if kind in ("workflows", "cronworkflows") and not fake.crd_installed:
                return self._send(404, "404 page not found", "text/plain")
            ns, name = m.group(1), m.group(2)
            if kind == "workflows":
                if method == "POST":
                    if query.get("fieldValidation") != ["Strict"]:
                        return self._send(
                            400, _status(400, "BadRequest", "the fake wants fieldValidation=Strict")
                        )
                    return self._send(*fake.create_workflow(ns, body))
                if method == "PATCH":
                    return self._send(*fake.patch_workflow(ns, name, body))
                if name:
                    with fake.lock:
                        wf = fake.workflows.get((ns, name))
                        wf = copy.deepcopy(wf) if wf else None
                    if wf is None:
                        return self._send(
                            404,
                            _status(
                                404,
                                "NotFound",
                                f'workflows.argoproj.io "{name}" not found',
                                name=name,
                                kind="workflows",
                            ),
                        )
                    return self._send(200, wf)
                if query.get("watch") == ["true"]:
                    return self._watch(ns, query)
            if kind == "cronworkflows" and method == "POST":
                key = (ns, body["metadata"]["name"])
                if key in fake.crons:
                    return self._send(
                        409,
                        _status(
                            409,
                            "AlreadyExists",
                            f'cronworkflows.argoproj.io "{key[1]}" already exists',
                        ),
                    )
                fake.crons[key] = body
                return self._send(201, body)
            if kind in ("log", "pods"):
                pod = fake.pods.get((ns, name))
                if pod is None:
                    return self._send(
                        404,
                        _status(
                            404, "NotFound", f'pods "{name}" not found', name=name, kind="pods"
                        ),
                    )
            if kind == "log":
                return self._send(200, pod["log"], "text/plain")
            if kind == "pods":
                waiting = pod["waiting"]
                statuses = (
                    [
                        {
                            "name": "main",
                            "ready": False,
                            "restartCount": 0,
                            "image": "x",
                            "imageID": "",
                            "state": {
                                "waiting": {
                                    "reason": waiting,
                                    "message": 'Back-off pulling image "x"',
                                }
                            },
                        }
                    ]
                    if waiting
                    else []
                )
                return self._send(
                    200,
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": name, "namespace": ns},
                        "status": {"phase": "Pending", "containerStatuses": statuses},
                    },
                )
            if kind == "persistentvolumeclaims":
                if (ns, name) in fake.claims:
                    return self._send(
                        200,
                        {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "metadata": {"name": name},
                        },
                    )
                return self._send(
                    404,
                    _status(
                        404,
                        "NotFound",
                        f'persistentvolumeclaims "{name}" not found',
                        name=name,
                        kind="persistentvolumeclaims",
                    ),
                )
            return self._send(405, _status(405, "MethodNotAllowed", "not in the fake"))

        def _watch(self, ns: str, query: dict[str, list[str]]) -> None:
            name = query["fieldSelector"][0].split("=", 1)[1]
            since = int(query.get("resourceVersion", ["0"])[0] or 0)
            deadline = time.time() + float(query.get("timeoutSeconds", ["5"])[0])
            drop, fake.drop_watch_after = fake.drop_watch_after, None
            expire, fake.expire_next_watch = fake.expire_next_watch, False
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if expire:  # the version was compacted away: one ERROR event, then the end
                status = _status(410, "Expired", f"too old resource version: {since} ({since + 1})")
                data = (json.dumps({"type": "ERROR", "object": status}) + "\n").encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n\r\n")
                self.wfile.flush()
                return
            sent = 0
            while time.time() < deadline:
                with fake.lock:
                    events = [
                        (rv, t, o)
                        for rv, n_, n, t, o in fake.history
                        if rv > since and n_ == ns and n == name
                    ]
                    if not events:
                        fake.lock.wait(0.2)
                        continue
                for rv, type_, obj in events:
                    line = json.dumps({"type": type_, "object": obj}) + "\n"
                    if drop is not None and sent >= drop:
                        # Cut the connection in the middle of a chunk, as a dropped link does.
                        data = line.encode()
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    data = line.encode()
                    self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                    since, sent = rv, sent + 1
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler
