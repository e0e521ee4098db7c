"""A compiled pipeline as an Argo ``Workflow`` or ``CronWorkflow`` (plain data; pure).

One container template per step runs ``python -m cellpipe.runner`` in the step's image.
What a step needs of the run directory travels inside the manifest as raw artifacts
(``pipeline.json``, a ``run.json`` and the readable step script), so no object store is needed.
Inside a pod::

    /cellpipe/run            the step's run directory (an emptyDir; the raw artifacts land here)
    /cellpipe/run/data       values between steps: the run's volume, sub-path <run>/data
    /cellpipe/work           the working directory: the run's volume, sub-path <run>/work

The run's volume is a PVC Argo creates per workflow (``volumeClaimTemplates``) or an existing
claim. With an S3-compatible artifact repository instead, each step's ``data/<step>`` is an
output artifact under a fixed key and its consumers' input artifact, so no volume is shared.

This module builds dictionaries only; it imports neither ``kubernetes`` nor ``yaml``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from cellpipe.backends.argo.errors import ArgoSettingsError
from cellpipe.backends.argo.folder import Folder, left_out
from cellpipe.compiling.notebook import k8s_name
from cellpipe.core.errors import Diagnostic
from cellpipe.core.model import Pipeline, Role, Step
from cellpipe.core.notify import Notify
from cellpipe.core.pseudo import file_path
from cellpipe.execution.hidden_state import PROVIDERS, generator_cells
from cellpipe.rundir import layout

API_VERSION = "argoproj.io/v1alpha1"
RUN_DIR = "/cellpipe/run"
#: The run directory as a step's pod sees it: the same layout, mounted at RUN_DIR.
_POD_RUN = PurePosixPath(RUN_DIR)
WORK_DIR = "/cellpipe/work"
MANAGED_BY = {"app.kubernetes.io/managed-by": "cellpipe"}
LABEL_NOTEBOOK = "cellpipe.io/notebook"
LABEL_RUN = "cellpipe.io/run-id"
LABEL_STEP = "cellpipe.io/step"
ANNOTATION_STEP = "cellpipe.io/step-name"  # the step's own name (labels are sanitised)
#: Argo names a volumeClaimTemplates PVC ``<workflow>-<template name>``.
CLAIM_TEMPLATE = "data"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]i?|Ki)?$")
_PARAM_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod")
_POD_GC = ("OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess")
_CONCURRENCY = ("Allow", "Forbid", "Replace")
_CREDENTIAL_WORDS = ("access_key", "secret_key", "password", "token", "credential")
#: The most a packed notebook folder may weigh (compressed), whatever folder_limit says: the
#: Workflow object holds it twice as base64 (the template, and the task's node in the status:
#: measured, 576 KB for 205 KB compressed), and the API server keeps objects under ~1.5 MB.
MAX_FOLDER_LIMIT = 384 * 2**10
#: The first task of a run: unpacks the notebook's folder into the working directory.
FOLDER_TASK = "cellpipe-folder"


# -- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretRef:
    """A key of a Kubernetes Secret (``NAME:KEY``): how credentials are named, never given."""

    name: str
    key: str

    def selector(self) -> dict[str, str]:
        return {"name": self.name, "key": self.key}


@dataclass(frozen=True, slots=True)
class S3Settings:
    """An S3-compatible artifact repository. Without ``endpoint`` and ``bucket`` the
    workflow's default repository is used (the controller's, or ``repository_ref``)."""

    endpoint: str | None = None
    bucket: str | None = None
    region: str | None = None
    insecure: bool = False
    key_prefix: str = "cellpipe"
    access_key_secret: SecretRef | None = None
    secret_key_secret: SecretRef | None = None
    repository_ref: tuple[str, str | None] | None = None  # (config map, key)

    def location(self, key: str) -> dict[str, Any]:
        loc: dict[str, Any] = {}
        if self.endpoint:
            loc["endpoint"] = self.endpoint
        if self.bucket:
            loc["bucket"] = self.bucket
        if self.region:
            loc["region"] = self.region
        if self.insecure:
            loc["insecure"] = True
        if self.access_key_secret:
            loc["accessKeySecret"] = self.access_key_secret.selector()
        if self.secret_key_secret:
            loc["secretKeySecret"] = self.secret_key_secret.selector()
        loc["key"] = key
        return loc


@dataclass(frozen=True, slots=True)
class ArgoSettings:
    """Where and how steps run on Kubernetes. From ``metadata.cellpipe.argo`` and options;
    see docs/argo.md for each field."""

    namespace: str | None = None
    service_account: str | None = None
    registry: str | None = None
    volume_size: str = "1Gi"
    storage_class: str | None = None
    access_mode: str = "ReadWriteOnce"
    existing_claim: str | None = None
    s3: S3Settings | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[dict[str, Any], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    image_pull_secrets: tuple[str, ...] = ()
    run_as_user: int = 1000
    run_as_group: int = 1000
    fs_group: int = 1000
    ttl_after_success: int = 3600
    ttl_after_failure: int = 7 * 24 * 3600
    pod_gc: str = "OnWorkflowSuccess"
    pod_gc_delay: str = "5m"
    pending_timeout: float = 600.0
    parallelism: int | None = None
    ship_folder: bool = True
    folder_limit: str = "256Ki"
    folder_ignore: tuple[str, ...] = ()

    @property
    def folder_limit_bytes(self) -> int:
        from cellpipe.execution.limits import quantity

        return int(quantity(self.folder_limit))

    #: ``${NAME}`` of a notify webhook (or its ``webhook_env``) -> the Secret key holding it
    notify_secrets: dict[str, SecretRef] = field(default_factory=dict)

    @classmethod
    def from_notebook(
        cls,
        notebook_settings: Mapping[str, Any],
        profile: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> ArgoSettings:
        """``metadata.cellpipe.argo`` over a profile's ``argo`` settings (``profile``: a
        :class:`~cellpipe.backends.argo.profiles.Profile` as JSON, or None), with
        ``overrides`` (options given on the command line, None meaning "not given") on top:
        options > notebook > profile, key by key. Raises ArgoSettingsError naming the bad
        field and where it was written."""
        raw = notebook_settings.get("argo") or {}
        if not isinstance(raw, Mapping):
            raise ArgoSettingsError("metadata.cellpipe.argo must be an object of settings")
        merged: dict[str, tuple[Any, str]] = {}
        if profile:
            where = f"profile {profile.get('name')} ({profile.get('path')}): argo"
            for key, value in (profile.get("argo") or {}).items():
                merged[key] = (value, where)
        for key, value in raw.items():
            merged[key] = (value, NOTEBOOK_ARGO)
        for key, value in overrides.items():
            if value is not None:
                merged[key] = (value, NOTEBOOK_ARGO)
        return _parse_settings(merged)


NOTEBOOK_ARGO = "metadata.cellpipe.argo"


def parse_settings(raw: Mapping[str, Any], where: str = NOTEBOOK_ARGO) -> ArgoSettings:
    """``raw`` (the keys of ``metadata.cellpipe.argo``) checked; errors say ``where.KEY``."""
    if not isinstance(raw, Mapping):
        raise ArgoSettingsError(f"{where} must be an object of settings")
    return _parse_settings({k: (v, where) for k, v in raw.items()})


def _parse_settings(raw: Mapping[str, tuple[Any, str]]) -> ArgoSettings:
    known = {f for f in ArgoSettings.__dataclass_fields__}
    values: dict[str, Any] = {}
    for key, (value, prefix) in raw.items():
        where = f"{prefix}.{key}"
        if any(w in key.lower() for w in _CREDENTIAL_WORDS) and not key.endswith("_secret"):
            raise ArgoSettingsError(
                f"{where}: credentials never go into a notebook or a manifest; store them in a "
                "Kubernetes Secret and name it (see docs/argo.md, `s3.access_key_secret`)"
            )
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            hint = (
                f"; did you mean `{near[0]}`?" if near else f"; known: {', '.join(sorted(known))}"
            )
            raise ArgoSettingsError(f"{where}: unknown setting{hint}")
        values[key] = _field(key, value, where)
    return ArgoSettings(**values)


def _field(key: str, value: Any, where: str) -> Any:
    def bad(why: str) -> ArgoSettingsError:
        return ArgoSettingsError(f"{where}: {why} (got {value!r})")

    if key in ("namespace", "existing_claim", "service_account"):
        if not isinstance(value, str) or not _DNS1123.match(value) or len(value) > 253:
            raise bad("expects a Kubernetes name (lowercase letters, digits and '-')")
        return value
    if key in ("registry", "storage_class", "pod_gc_delay"):
        if not isinstance(value, str) or not value.strip():
            raise bad("expects a non-empty string")
        return value.strip()
    if key == "volume_size":
        if not isinstance(value, str) or not _QUANTITY.match(value):
            raise bad("expects a quantity such as 10Gi")
        return value
    if key == "access_mode":
        if value not in _ACCESS_MODES:
            raise bad(f"expects one of {', '.join(_ACCESS_MODES)}")
        return value
    if key == "pod_gc":
        if value not in _POD_GC:
            raise bad(f"expects one of {', '.join(_POD_GC)}")
        return value
    if key in ("node_selector", "gpu_node_selector"):
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad("expects an object of label names to string values")
        return dict(value)
    if key in ("tolerations", "gpu_tolerations"):
        allowed = {"key", "operator", "value", "effect", "tolerationSeconds"}
        if not isinstance(value, list) or not all(
            isinstance(t, Mapping) and set(t) <= allowed for t in value
        ):
            raise bad(f"expects a list of Kubernetes tolerations ({', '.join(sorted(allowed))})")
        return tuple(dict(t) for t in value)
    if key == "image_pull_secrets":
        if not isinstance(value, list) or not all(isinstance(s, str) and s for s in value):
            raise bad("expects a list of Secret names")
        return tuple(value)
    if key in ("run_as_user", "run_as_group", "fs_group", "ttl_after_success", "ttl_after_failure"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("expects a whole number >= 0")
        if key == "run_as_user" and value == 0:
            raise bad("steps never run as root; choose a non-zero user id")
        return value
    if key == "parallelism":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("expects a whole number >= 1")
        return value
    if key == "pending_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise bad("expects seconds > 0")
        return float(value)
    if key == "ship_folder":
        if not isinstance(value, bool):
            raise bad("expects true or false")
        return value
    if key == "folder_limit":
        from cellpipe.execution.limits import quantity

        try:
            amount = quantity(str(value))
        except ValueError:
            raise bad("expects a size such as 256Ki") from None
        if not 0 < amount <= MAX_FOLDER_LIMIT:
            raise bad(
                "expects a size above 0 and at most 384Ki: the folder travels twice inside "
                "the Workflow object (its template and its status), which the API server "
                "keeps under ~1.5 MB; put larger files in the image or on an existing claim"
            )
        return str(value)
    if key == "folder_ignore":
        if not isinstance(value, list) or not all(isinstance(p, str) and p.strip() for p in value):
            raise bad("expects a list of glob patterns such as data/raw/* or *.parquet")
        return tuple(value)
    if key == "s3":
        return _parse_s3(value, where)
    if key == "notify_secrets":
        if not isinstance(value, Mapping):
            raise bad('expects an object of variable names to "SECRET_NAME:KEY"')
        refs = {}
        for var, ref in value.items():
            name, sep, k = str(ref).partition(":")
            if not _ENV_NAME.match(str(var)) or not sep or not _DNS1123.match(name) or not k:
                raise bad('expects an object of variable names to "SECRET_NAME:KEY"')
            refs[str(var)] = SecretRef(name, k)
        return refs
    raise bad("unsupported")  # pragma: no cover - every field is handled above


def _parse_s3(value: Any, where: str) -> S3Settings:
    if value is True or value == {}:
        return S3Settings()
    if not isinstance(value, Mapping):
        raise ArgoSettingsError(f"{where}: expects an object (endpoint, bucket, ...) or true")
    known = set(S3Settings.__dataclass_fields__)
    out: dict[str, Any] = {}
    for key, v in value.items():
        w = f"{where}.{key}"
        if key in ("access_key", "secret_key", "password", "token"):
            raise ArgoSettingsError(
                f"{w}: credentials never go into a notebook or a manifest; store them in a "
                f"Kubernetes Secret and give `{key}_secret: SECRET_NAME:KEY` instead"
            )
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1)
            raise ArgoSettingsError(
                f"{w}: unknown setting" + (f"; did you mean `{near[0]}`?" if near else "")
            )
        if key in ("access_key_secret", "secret_key_secret"):
            name, sep, k = str(v).partition(":")
            if not sep or not _DNS1123.match(name) or not k:
                raise ArgoSettingsError(f"{w}: expects SECRET_NAME:KEY (got {v!r})")
            out[key] = SecretRef(name, k)
        elif key == "repository_ref":
            cm, _, k = str(v).partition(":")
            if not _DNS1123.match(cm):
                raise ArgoSettingsError(f"{w}: expects CONFIGMAP or CONFIGMAP:KEY (got {v!r})")
            out[key] = (cm, k or None)
        elif key == "insecure":
            if not isinstance(v, bool):
                raise ArgoSettingsError(f"{w}: expects true or false (got {v!r})")
            out[key] = v
        else:
            if not isinstance(v, str) or not v.strip():
                raise ArgoSettingsError(f"{w}: expects a non-empty string (got {v!r})")
            out[key] = v.strip().strip("/") if key == "key_prefix" else v.strip()
    s3 = S3Settings(**out)
    if bool(s3.endpoint) != bool(s3.bucket):
        raise ArgoSettingsError(f"{where}: give both `endpoint` and `bucket`, or neither")
    if s3.endpoint and not (s3.access_key_secret and s3.secret_key_secret):
        raise ArgoSettingsError(
            f"{where}: with an endpoint, name the credentials' Secret: "
            "`access_key_secret: NAME:KEY` and `secret_key_secret: NAME:KEY`"
        )
    return s3


# -- names ------------------------------------------------------------------------------------


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9-_.]``, alphanumeric at both
    ends ("" stays "")."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def dns_name(text: str, limit: int = 63) -> str:
    """``text`` as a DNS-1123 name of at most ``limit`` characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower())[:limit]
    return re.sub(r"^-+|-+$", "", name) or "notebook"


def workflow_name(pipeline: Pipeline, run_id: str, attempt: int = 1) -> str:
    """``cellpipe-<notebook>-<run id>[-r<n>]``: findable from the run, unique per run."""
    suffix = run_id.lower() + (f"-r{attempt}" if attempt > 1 else "")
    head = dns_name(f"cellpipe-{pipeline.name}", 62 - len(suffix))
    return f"{head}-{suffix}"


def task_name(step: str) -> str:
    """A step's DAG task and template name (a step name always starts with a letter)."""
    return k8s_name(step)


# -- the workflow -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunTarget:
    """What makes a manifest one run's: without it, the manifest is a reusable template
    (``cellpipe compile --target argo``, schedules) keyed by ``{{workflow.name}}``."""

    run_id: str
    name: str  # the Workflow's name
    parameters: Mapping[str, Any] = field(default_factory=dict)  # overrides, as values
    skip: Collection[str] = ()  # steps not to run (kept, cached, skipped): not in the DAG
    claim: str | None = None  # an existing claim holding the run's data (resume)
    #: Steps whose values an earlier run made (the cache): step -> that run's key, under
    #: which the storage keeps them (a sub-path of the claim, a prefix of S3 keys).
    reuse: Mapping[str, str] = field(default_factory=dict)
    #: The states of the steps in ``skip`` (cached, skipped), for the exit handler's status.
    planned: Mapping[str, str] = field(default_factory=dict)


def workflow_spec(
    pipeline: Pipeline,
    settings: ArgoSettings,
    *,
    target: RunTarget | None = None,
    images: Mapping[str, str] | None = None,
    folder: Folder | None = None,
    notify: Notify | None = None,
) -> dict[str, Any]:
    """The ``spec`` of the Workflow that runs ``pipeline`` (also a CronWorkflow's
    ``workflowSpec``). ``images``: image reference by step (default: ``plan_images``).
    ``folder``: the notebook's folder, packed (:func:`cellpipe.backends.argo.folder.pack`),
    unpacked into the working directory by a first task before any step starts.
    ``notify``: a webhook to tell how the run ended, from the Workflow's exit handler
    (``notify_template``); a command cannot run there and is left out (``notify_warnings``)."""
    if images is None:
        from cellpipe.backends.images import plan_images

        images = {n: s.ref for n, s in plan_images(pipeline, settings.registry).items()}
    key = target.run_id if target else "{{workflow.name}}"
    skip = set(target.skip) if target else set()
    claim = (target.claim if target else None) or settings.existing_claim
    overrides = dict(target.parameters) if target else {}
    reuse = dict(target.reuse) if target else {}
    chain = hidden_chain(pipeline)
    run_steps = [_chained(s, chain, skip) for s in pipeline.steps if s.name not in skip]
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "arguments": {"parameters": _arguments(pipeline, overrides)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_group,
            "fsGroup": settings.fs_group,
        },
        "podGC": {"strategy": settings.pod_gc, "deleteDelayDuration": settings.pod_gc_delay},
        "ttlStrategy": {
            "secondsAfterSuccess": settings.ttl_after_success,
            "secondsAfterFailure": settings.ttl_after_failure,
        },
        "volumes": [
            {"name": "run", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "templates": _dags(run_steps, skip)
        + [
            _step_template(
                pipeline,
                s,
                settings,
                images[s.name],
                key,
                reuse,
                chain.get(s.name),
                folder is not None,
            )
            for s in run_steps
        ],
    }
    if folder is not None and run_steps:
        _add_folder(spec["templates"], folder, settings, images[run_steps[0].name], key)
    fanned = fanned_out(pipeline, run_steps, settings)
    if fanned:
        _add_fan_out(spec["templates"], fanned)
    if not spec["arguments"]["parameters"]:
        del spec["arguments"]
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        spec["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if settings.parallelism:
        spec["parallelism"] = settings.parallelism
    if settings.s3 is not None:
        spec["volumes"].append({"name": "work", "emptyDir": {}})
        if settings.s3.repository_ref:
            cm, cm_key = settings.s3.repository_ref
            spec["artifactRepositoryRef"] = {"configMap": cm, **({"key": cm_key} if cm_key else {})}
    elif claim:
        spec["volumes"].append(
            {"name": CLAIM_TEMPLATE, "persistentVolumeClaim": {"claimName": claim}}
        )
    else:
        claim_spec: dict[str, Any] = {
            "accessModes": [settings.access_mode],
            "resources": {"requests": {"storage": settings.volume_size}},
        }
        if settings.storage_class:
            claim_spec["storageClassName"] = settings.storage_class
        spec["volumeClaimTemplates"] = [{"metadata": {"name": CLAIM_TEMPLATE}, "spec": claim_spec}]
        # Kept when the run fails, so `cellpipe run --resume` finds the finished steps' data
        # (and `cellpipe.load` their values) until ttl_after_failure deletes the Workflow.
        # Without it Argo's default, OnWorkflowCompletion, deletes it on failure too; there
        # is no strategy that keeps a succeeded run's claim.
        spec["volumeClaimGC"] = {"strategy": "OnWorkflowSuccess"}
    secret_volumes = _secret_volumes(run_steps)
    spec["volumes"] += [{"name": v, "secret": {"secretName": n}} for n, v in secret_volumes.items()]
    volumes, claims, mounts = kale_volumes(pipeline.settings.get("volumes"))
    spec["volumes"] += volumes
    if claims:
        spec["volumeClaimTemplates"] = spec.get("volumeClaimTemplates", []) + claims
    for template in spec["templates"]:
        if "container" in template:
            template["container"]["volumeMounts"] += [dict(m) for m in mounts]
    if notify is not None and not notify.command:
        first = pipeline.steps[0].name
        handler = notify_template(
            pipeline, settings, notify, images[first], target, key, spec["templates"]
        )
        spec["templates"].append(handler)
        spec["onExit"] = handler["name"]
    return spec


def build_workflow(
    pipeline: Pipeline,
    settings: ArgoSettings,
    *,
    target: RunTarget | None = None,
    images: Mapping[str, str] | None = None,
    folder: Folder | None = None,
    notify: Notify | None = None,
) -> dict[str, Any]:
    """The Workflow running ``pipeline``: named after the run with ``target``, else with a
    ``generateName`` (each submission its own); ``folder`` and ``notify`` as for
    :func:`workflow_spec`."""
    labels = {**MANAGED_BY, LABEL_NOTEBOOK: label_value(pipeline.name) or "notebook"}
    metadata: dict[str, Any] = {"labels": labels}
    if target:
        metadata["name"] = target.name
        labels[LABEL_RUN] = label_value(target.run_id)
    else:
        metadata["generateName"] = dns_name(f"cellpipe-{pipeline.name}", 56) + "-"
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    metadata["annotations"] = {"cellpipe.io/notebook-name": pipeline.name}
    return {
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": metadata,
        "spec": workflow_spec(
            pipeline, settings, target=target, images=images, folder=folder, notify=notify
        ),
    }


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a CronWorkflow starts runs (DESIGN: ``cellpipe schedule``)."""

    crons: tuple[str, ...]
    timezone: str | None = None
    concurrency_policy: str = "Forbid"
    successful_history: int = 3
    failed_history: int = 1
    starting_deadline_seconds: int | None = None
    suspend: bool = False

    def __post_init__(self) -> None:
        if not self.crons:
            raise ArgoSettingsError("a schedule needs at least one cron expression")
        for cron in self.crons:
            fields = cron.split()
            if len(fields) != 5 and not (len(fields) == 1 and cron.startswith("@")):
                raise ArgoSettingsError(
                    f"cron expression {cron!r} must have 5 fields (minute hour day month "
                    'weekday), e.g. "0 3 * * *", or be a macro such as @daily'
                )
        if self.concurrency_policy not in _CONCURRENCY:
            raise ArgoSettingsError(
                f"concurrency policy {self.concurrency_policy!r} is not one of "
                + ", ".join(_CONCURRENCY)
            )
        if self.timezone is not None and not re.match(
            r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$", self.timezone
        ):
            raise ArgoSettingsError(
                f"timezone {self.timezone!r} is not an IANA name such as Europe/Paris"
            )
        if min(self.successful_history, self.failed_history) < 0:
            raise ArgoSettingsError("history limits must be >= 0")


def build_cron_workflow(
    pipeline: Pipeline,
    settings: ArgoSettings,
    schedule: Schedule,
    *,
    name: str | None = None,
    images: Mapping[str, str] | None = None,
    folder: Folder | None = None,
    notify: Notify | None = None,
) -> dict[str, Any]:
    """A CronWorkflow starting ``pipeline`` on ``schedule``; each run is a Workflow whose name
    Argo derives from the CronWorkflow's (so that name has at most 52 characters). Its
    ``folder`` is the notebook's folder when scheduled: every run starts from those files.
    Each run notifies ``notify`` from its exit handler, as a submitted run does."""
    name = name or dns_name(f"cellpipe-{pipeline.name}", 52)
    if not _DNS1123.match(name) or len(name) > 52:
        raise ArgoSettingsError(f"{name!r} is not a DNS-1123 name of at most 52 characters")
    labels = {**MANAGED_BY, LABEL_NOTEBOOK: label_value(pipeline.name) or "notebook"}
    metadata: dict[str, Any] = {"name": name, "labels": labels}
    if settings.namespace:
        metadata["namespace"] = settings.namespace
    spec: dict[str, Any] = {
        "schedules": list(schedule.crons),
        "concurrencyPolicy": schedule.concurrency_policy,
        "successfulJobsHistoryLimit": schedule.successful_history,
        "failedJobsHistoryLimit": schedule.failed_history,
        "workflowMetadata": {"labels": dict(labels)},
        "workflowSpec": workflow_spec(
            pipeline, settings, images=images, folder=folder, notify=notify
        ),
    }
    if schedule.timezone:
        spec["timezone"] = schedule.timezone
    if schedule.starting_deadline_seconds is not None:
        spec["startingDeadlineSeconds"] = schedule.starting_deadline_seconds
    if schedule.suspend:
        spec["suspend"] = True
    return {"apiVersion": API_VERSION, "kind": "CronWorkflow", "metadata": metadata, "spec": spec}


def _arguments(pipeline: Pipeline, overrides: Mapping[str, Any]) -> list[dict[str, str]]:
    out = []
    for p in pipeline.parameters:
        if not _PARAM_NAME.match(p.name):
            raise ArgoSettingsError(
                f"parameter {p.name!r} cannot be an Argo parameter (names are [-a-zA-Z0-9_]+)"
            )
        value = repr(overrides[p.name]) if p.name in overrides else p.expression
        out.append({"name": p.name, "value": value})
    return out


GATE_PARAMETER = "gate"  # a gated step's output parameter: "open" or "closed"


def _gated_ancestors(steps: list[Step]) -> dict[str, list[str]]:
    """Each step -> the gated steps it comes after, directly or not, among ``steps``."""
    by_name = {s.name: s for s in steps}
    out: dict[str, list[str]] = {}
    for s in steps:  # topological order: an upstream step's list is already made
        found: dict[str, None] = {}
        for u in s.after:
            if u not in by_name:
                continue
            found.update(dict.fromkeys(out[u]))
            if by_name[u].settings.gate:
                found[u] = None
        out[s.name] = list(found)
    return out


def _when(gated: list[str]) -> str | None:
    """The condition the controller evaluates before starting a task: every gate upstream
    is open. Each task says so itself, since Argo counts a skipped dependency as done."""
    if not gated:
        return None
    return " && ".join(
        f"'{{{{tasks.{task_name(g)}.outputs.parameters.{GATE_PARAMETER}}}}}' == 'open'"
        for g in gated
    )


def _dag(steps: list[Step], skip: set[str]) -> dict[str, Any]:
    tasks = []
    gated = _gated_ancestors(steps)
    for s in steps:
        task: dict[str, Any] = {"name": task_name(s.name), "template": task_name(s.name)}
        deps = [task_name(u) for u in s.after if u not in skip]
        if deps:
            task["dependencies"] = deps
        when = _when(gated[s.name])
        if when:
            task["when"] = when
        tasks.append(task)
    # Independent branches go on after a failure, as they do on the local backend.
    return {"name": "main", "dag": {"tasks": tasks, "failFast": False}}


def _dags(steps: list[Step], skip: set[str]) -> list[dict[str, Any]]:
    """The DAG templates: ``main``, and for a composed notebook one per referenced notebook
    (as Kale makes a sub-pipeline of each), its task in the enclosing DAG depending on the
    parts and steps its steps need. Argo lets a task depend only on tasks of its own DAG,
    so a part waits for everything its steps read. A part's cells are contiguous in the
    inlined notebook, so that coarser order has no cycle; should one appear all the same
    (a ``prev:`` pointing out of a part), the DAG is flat rather than wrong."""
    if not any(s.group for s in steps):
        return [_dag(steps, skip)]
    parts = sorted(
        {
            ".".join(s.group.split(".")[: n + 1])
            for s in steps
            if s.group
            for n in range(s.group.count(".") + 1)
        }
    )
    templates = []
    for scope in [None, *parts]:
        dag = _scoped_dag(steps, skip, scope)
        if dag is None:
            return [_dag(steps, skip)]
        templates.append(dag)
    return templates


def fanned_out(pipeline: Pipeline, steps: list[Step], settings: ArgoSettings) -> list[str]:
    """The steps whose ``foreach`` loop becomes a ``withParam`` fan-out, a pod per
    iteration: those with one foreach cell, when the run's data is on the workflow's
    volume (the iteration pods leave their results there for the step's pod). With S3
    data, or two foreach cells in a step, the step's pod runs the iterations on its own
    warm workers instead."""
    if settings.s3 is not None:
        return []
    out = []
    for s in steps:
        own = set(s.cells)
        loops = [c for c in pipeline.cells if c.id in own and "foreach" in c.tags]
        if len(loops) == 1:
            out.append(s.name)
    return out


def _add_fan_out(templates: list[dict[str, Any]], steps: list[str]) -> None:
    """Before each fanned-out step's task: ``<task>-items`` (prints the iterations to run)
    and ``<task>-iteration`` (``withParam`` over them, a pod each); the step's own task
    then merges what they kept. The iteration template is the step's (image, resources,
    GPU, node selection, per-step limits apply per iteration); its pods never fail for the
    notebook's code, so a failed iteration is run again, and reported, by the step."""
    import copy

    by_name = {t["name"]: t for t in templates}
    for step in steps:
        name = task_name(step)
        base = by_name[name]
        args = [a for a in base["container"]["args"] if a != "--result-trailer"]
        items = copy.deepcopy(base)
        items["name"] = f"{name}-items"
        items["container"]["args"] = [*args, "--foreach-items"]
        items.pop("retryStrategy", None)
        items.pop("outputs", None)
        iteration = copy.deepcopy(base)
        iteration["name"] = f"{name}-iteration"
        iteration["inputs"]["parameters"] = [{"name": "index"}]
        iteration["container"]["args"] = [
            *args,
            "--foreach-iteration",
            "{{inputs.parameters.index}}",
        ]
        iteration.pop("outputs", None)
        templates += [items, iteration]
        for dag in templates:
            tasks = (dag.get("dag") or {}).get("tasks")
            if not tasks:
                continue
            for i, task in enumerate(tasks):
                if task["template"] != name:
                    continue
                first = {"name": f"{name}-items", "template": f"{name}-items"}
                if task.get("dependencies"):
                    first["dependencies"] = task["dependencies"]
                if task.get("when"):
                    first["when"] = task["when"]
                fan = {
                    "name": f"{name}-iteration",
                    "template": f"{name}-iteration",
                    "dependencies": [f"{name}-items"],
                    "withParam": f"{{{{tasks.{name}-items.outputs.result}}}}",
                    "arguments": {"parameters": [{"name": "index", "value": "{{item.index}}"}]},
                }
                if task.get("when"):
                    fan["when"] = task["when"]
                tasks[i : i + 1] = [first, fan, {**task, "dependencies": [f"{name}-iteration"]}]
                break


def part_template(part: str) -> str:
    """The DAG template (and task) name of a referenced notebook's part."""
    return "part-" + k8s_name(part)


def _stable_order(order: list[str], deps: Mapping[str, list[str]]) -> list[str] | None:
    """``order`` sorted so each task follows what it depends on, else kept as it is (the
    notebook's order); None when the dependencies have a cycle."""
    done: list[str] = []
    left = list(order)
    while left:
        ready = next((t for t in left if all(d in done for d in deps[t])), None)
        if ready is None:
            return None
        done.append(ready)
        left.remove(ready)
    return done


def _scoped_dag(steps: list[Step], skip: set[str], scope: str | None) -> dict[str, Any] | None:
    def member(step: Step) -> str | None:
        """The task that stands for ``step`` in ``scope``'s DAG; None: outside ``scope``."""
        group = step.group or ""
        if scope is not None and not (group == scope or group.startswith(scope + ".")):
            return None
        rest = group[len(scope) + 1 :] if scope else group
        if not rest:
            return task_name(step.name)
        child = f"{scope}.{rest.split('.')[0]}" if scope else rest.split(".")[0]
        return part_template(child)

    by_name = {s.name: s for s in steps}
    order: list[str] = []
    deps: dict[str, list[str]] = {}
    template: dict[str, str] = {}
    for s in steps:
        task = member(s)
        if task is None:
            continue
        if task not in deps:
            order.append(task)
            deps[task] = []
            template[task] = task
        for u in s.after:
            if u in skip or u not in by_name:
                continue
            up = member(by_name[u])
            if up is not None and up != task and up not in deps[task]:
                deps[task].append(up)
    ranked = _stable_order(order, deps)
    if ranked is None:
        return None
    # A task may read only the outputs of tasks of its own DAG: a gate in another part is
    # seen by the step's own pod instead (the runner skips it, reading the verdict).
    gated = _gated_ancestors(steps)
    when: dict[str, str | None] = {
        task_name(s.name): _when([g for g in gated[s.name] if member(by_name[g]) == task_name(g)])
        for s in steps
        if member(s) == task_name(s.name)
    }
    tasks = []
    for t in ranked:
        task: dict[str, Any] = {"name": t, "template": template[t]}
        if deps[t]:
            task["dependencies"] = deps[t]
        if when.get(t):
            task["when"] = when[t]
        tasks.append(task)
    name = "main" if scope is None else part_template(scope)
    return {"name": name, "dag": {"tasks": tasks, "failFast": False}}


# -- the global generators' chain ----------------------------------------------------------

#: The hidden-state providers of the global random generators: what a chained pod continues
#: from (cellpipe.execution.hidden_state).
GENERATORS = tuple(p.name for p in PROVIDERS if p.pseudo == "@random")


def hidden_chain(pipeline: Pipeline) -> dict[str, str]:
    """Step -> the step whose global generator states it starts from, on Argo.

    Locally the scheduler checks at run time that every step started from the generator
    state notebook order gives, and runs again in order one that did not (a library drew
    from ``np.random`` inside a step whose source never says so). A workflow has no such
    driver, so the DAG guarantees it statically: once a cell seeds or draws from a global
    generator (``@random``: ``np.random.seed``, ``random.random``, scikit-learn without
    ``random_state``...; any prelude cell counts for every step), every later step in
    notebook order follows the one before it, and its pod restores the generator states
    that one left (each pod saves all of them). Before the first such cell no generator is
    seeded: top to bottom draws from an unseeded state there too, so order cannot matter.
    A step that an earlier one waits for (a ``prev:`` against notebook order) continues
    from the last step before it that does not."""
    position = {c.id: c.index for c in pipeline.cells}
    order = sorted(
        pipeline.steps,
        key=lambda st: min((position.get(c, 0) for c in st.cells), default=0),
    )
    seeded_in_prelude, touches = generator_cells(pipeline)
    upstream = {st.name: set(st.after) for st in pipeline.steps}

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        todo = [name]
        while todo:
            for up in upstream.get(todo.pop(), ()):
                if up not in seen:
                    seen.add(up)
                    todo.append(up)
        return seen

    chain: dict[str, str] = {}
    started = seeded_in_prelude
    earlier: list[str] = []
    for st in order:
        started = started or st.name in touches
        if started:
            pred = next((e for e in reversed(earlier) if st.name not in ancestors(e)), None)
            if pred is not None:
                chain[st.name] = pred
                upstream[st.name].add(pred)
            earlier.append(st.name)
    return chain


def _chained(step: Step, chain: Mapping[str, str], skip: set[str]) -> Step:
    """``step`` waiting for the step whose generator states it continues from (unless that
    one finished in an earlier attempt)."""
    pred = chain.get(step.name)
    if pred is None or pred in skip or pred in step.after:
        return step
    return replace(step, after=(*step.after, pred))


def _read_from(step: Step, continues: str | None) -> list[str]:
    """The steps whose data folders ``step`` reads: its inputs' producers, and the step whose
    generator states it continues from (``hidden_chain``)."""
    return list(dict.fromkeys([*step.inputs.values(), *filter(None, [continues])]))


def _step_template(
    pipeline: Pipeline,
    step: Step,
    settings: ArgoSettings,
    image: str,
    key: str,
    reuse: Mapping[str, str],
    continues: str | None = None,
    with_folder: bool = False,
) -> dict[str, Any]:
    from cellpipe.compiling.compiler import step_script

    name = task_name(step.name)
    if name == FOLDER_TASK:
        raise ArgoSettingsError(
            f"step {step.name!r} would be the task {FOLDER_TASK}, which unpacks the notebook's "
            "folder on Argo: rename the step"
        )
    st = step.settings
    args = ["--run-dir", RUN_DIR, "--step", step.name, "--result-trailer"]
    if with_folder and settings.s3 is not None:  # no shared volume: each pod copies it
        args += ["--folder", str(layout.folder_copy(_POD_RUN))]
    for p in pipeline.parameters:
        args += ["--parameter", f"{p.name}={{{{workflow.parameters.{p.name}}}}}"]
    run_info = {"run_id": "{{workflow.name}}", "name": pipeline.name, "backend": "argo"}
    artifacts: list[dict[str, Any]] = [
        {
            "name": "pipeline",
            "path": str(layout.pipeline_file(_POD_RUN)),
            "raw": {"data": json.dumps(_step_pipeline(pipeline, step), separators=(",", ":"))},
        },
        {
            "name": "run-info",
            "path": str(layout.info_file(_POD_RUN)),
            "raw": {"data": json.dumps(run_info)},
        },
        {
            "name": "script",
            "path": str(layout.step_script_file(_POD_RUN, step.name)),
            "raw": {"data": step_script(pipeline, step.name, {})},
        },
    ]
    if continues is not None:  # whose generator states the step starts from (hidden_chain)
        artifacts.append(
            {
                "name": "hidden-entry",
                "path": str(layout.hidden_entry_file(_POD_RUN, step.name)),
                "raw": {"data": json.dumps(dict.fromkeys(GENERATORS, continues))},
            }
        )
    mounts: list[dict[str, Any]] = [
        {"name": "run", "mountPath": RUN_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    template: dict[str, Any] = {
        "name": name,
        "metadata": {
            "labels": {LABEL_STEP: label_value(step.name), **st.labels},
            "annotations": {ANNOTATION_STEP: step.name, **st.annotations},
        },
        "inputs": {"artifacts": artifacts},
    }
    if settings.s3 is not None:
        s3 = settings.s3
        if with_folder:
            artifacts.append(
                {
                    "name": "folder",
                    "path": str(layout.folder_copy(_POD_RUN)),
                    "s3": s3.location(_s3_key(s3, key, FOLDER_TASK, "folder.tgz")),
                }
            )
        for producer in _read_from(step, continues):
            made_in = reuse.get(producer, key)  # a cached producer's values: its run's keys
            artifacts.append(
                {
                    "name": f"data-{task_name(producer)}",
                    "path": str(layout.data_dir(_POD_RUN, producer)),
                    "s3": s3.location(_s3_key(s3, made_in, producer, "data.tgz")),
                }
            )
        template["outputs"] = {
            "artifacts": [
                {
                    "name": "data",
                    "path": str(layout.data_dir(_POD_RUN, step.name)),
                    "s3": s3.location(_s3_key(s3, key, step.name, "data.tgz")),
                },
                {
                    "name": "report",
                    "path": str(layout.report_file(_POD_RUN, step.name)),
                    "optional": True,
                    "archive": {"none": {}},
                    "s3": s3.location(_s3_key(s3, key, step.name, layout.RUN_REPORT)),
                },
            ]
        }
        mounts.append({"name": "work", "mountPath": WORK_DIR})
    else:
        mounts += [
            {
                "name": CLAIM_TEMPLATE,
                "mountPath": str(layout.data_root(_POD_RUN)),
                "subPath": f"{key}/{layout.DATA}",
            },
            {"name": CLAIM_TEMPLATE, "mountPath": WORK_DIR, "subPath": f"{key}/work"},
        ]
        # A cached producer's values stay where its run left them on the claim: mounted
        # read-only over its folder, so this step reads them as if made in this run.
        for producer in _read_from(step, continues):
            if producer in reuse:
                mounts.append(
                    {
                        "name": CLAIM_TEMPLATE,
                        "mountPath": str(layout.data_dir(_POD_RUN, producer)),
                        "subPath": f"{reuse[producer]}/{layout.DATA}/{producer}",
                        "readOnly": True,
                    }
                )
    from cellpipe.backends.images import numeric_environment

    env: list[dict[str, Any]] = [
        *({"name": k, "value": v} for k, v in numeric_environment().items()),
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    secret_volumes = _secret_volumes([step])
    for secret in st.secrets:
        if len(secret) == 3:
            sname, skey, var = secret
            env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": sname, "key": skey}}})
        else:
            sname, path = secret
            mounts.append({"name": secret_volumes[sname], "mountPath": path, "readOnly": True})
    container: dict[str, Any] = {
        "image": image,
        "command": ["python3", "-m", "cellpipe.runner"],
        "args": args,
        "workingDir": WORK_DIR,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = _resources(st.limits, st.gpu)
    if resources:
        container["resources"] = resources
    template["container"] = container
    if st.gate:
        # The runner writes the verdict as one word; absent (the step failed before its
        # gate was evaluated), the gate does not open.
        template.setdefault("outputs", {})["parameters"] = [
            {
                "name": GATE_PARAMETER,
                "valueFrom": {
                    "path": str(layout.gate_output_file(_POD_RUN, step.name)),
                    "default": "closed",
                },
            }
        ]
    if st.retry:
        template["retryStrategy"] = {
            "limit": st.retry,
            "retryPolicy": "Always",
            "backoff": {"duration": "5s", "factor": 2, "maxDuration": "5m"},
        }
    if st.timeout:
        template["activeDeadlineSeconds"] = max(1, round(st.timeout))
    if st.gpu:
        if settings.gpu_node_selector:
            template["nodeSelector"] = {**settings.node_selector, **settings.gpu_node_selector}
        if settings.gpu_tolerations:
            template["tolerations"] = [
                dict(t) for t in settings.tolerations + settings.gpu_tolerations
            ]
    return template


def _add_folder(
    templates: list[dict[str, Any]], folder: Folder, settings: ArgoSettings, image: str, key: str
) -> None:
    """The task ``cellpipe-folder`` first in ``main``, every task there without dependencies
    after it: its pod unpacks the notebook's folder (the text of a raw artifact) into the
    run's working directory, so a step finds the files next to the notebook where top to
    bottom finds them. With S3 (no shared volume) it unpacks into an output artifact that
    every step's pod copies into its own working directory."""
    archive = str(layout.folder_archive(_POD_RUN))
    mounts: list[dict[str, Any]] = [
        {"name": "run", "mountPath": RUN_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    template: dict[str, Any] = {
        "name": FOLDER_TASK,
        "metadata": {"annotations": {"cellpipe.io/folder-sha256": folder.sha256}},
        "inputs": {
            "artifacts": [{"name": "folder", "path": archive, "raw": {"data": folder.text}}]
        },
    }
    if settings.s3 is not None:
        dest = str(layout.folder_copy(_POD_RUN))
        s3 = settings.s3
        template["outputs"] = {
            "artifacts": [
                {
                    "name": "folder",
                    "path": dest,
                    "s3": s3.location(_s3_key(s3, key, FOLDER_TASK, "folder.tgz")),
                }
            ]
        }
    else:
        dest = WORK_DIR
        mounts.append({"name": CLAIM_TEMPLATE, "mountPath": WORK_DIR, "subPath": f"{key}/work"})
    template["container"] = {
        "image": image,
        "command": ["python3", "-m", "cellpipe.backends.argo.folder"],
        "args": [archive, dest],
        "workingDir": RUN_DIR,
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    main = next(t for t in templates if t["name"] == "main")
    tasks = main["dag"]["tasks"]
    for task in tasks:
        if not task.get("dependencies"):
            task["dependencies"] = [FOLDER_TASK]
    tasks.insert(0, {"name": FOLDER_TASK, "template": FOLDER_TASK})
    templates.append(template)


# -- the exit handler: notifications from the cluster ----------------------------------------

#: The exit handler template's name (a step whose task would have it makes it ``…-handler``).
NOTIFY_TEMPLATE = "cellpipe-notify"


def notify_warnings(notify: Notify | None) -> list[Diagnostic]:
    """What an Argo manifest cannot do of ``notify``: a command has no place on the cluster."""
    if notify is None or not notify.command:
        return []
    return [
        Diagnostic(
            "argo-notify",
            "notify: a command cannot run on the cluster, so this Argo run will not notify; "
            "give a webhook instead (its exit handler POSTs the run's status, see docs/argo.md)",
            "warning",
        )
    ]


def notify_template(
    pipeline: Pipeline,
    settings: ArgoSettings,
    notify: Notify,
    image: str,
    target: RunTarget | None,
    key: str,
    templates: list[dict[str, Any]],
) -> dict[str, Any]:
    """The exit handler: a pod in a step's image that POSTs the run's status to the webhook
    once the DAG has ended, whatever its outcome (``cellpipe.backends.argo.exit_handler``).

    The URL stays a template: each ``${NAME}`` in it is an environment variable of the pod
    from the Secret that ``notify_secrets`` names (a ``secretKeyRef``), so no secret is in
    the manifest. Raises ArgoSettingsError for a variable without a Secret."""
    missing = [v for v in notify.variables() if v not in settings.notify_secrets]
    if missing:
        raise ArgoSettingsError(
            f"notify: the webhook needs ${{{missing[0]}}}, which on Argo comes from a Kubernetes "
            "Secret, never from this machine: set metadata.cellpipe.argo.notify_secrets to "
            f'{{"{missing[0]}": "SECRET_NAME:KEY"}}'
        )
    taken = {t["name"] for t in templates}
    name = NOTIFY_TEMPLATE if NOTIFY_TEMPLATE not in taken else f"{NOTIFY_TEMPLATE}-handler"
    skip = set(target.skip) if target else set()
    planned = dict(target.planned) if target else {}
    gated_runs = any(s.settings.gate and s.name not in skip for s in pipeline.steps)
    on_volume = settings.s3 is None and gated_runs  # gates' verdicts: next to their values
    run = {
        "run_id": target.run_id if target else "{{workflow.name}}",
        "notebook": Path(pipeline.path).name if pipeline.path else pipeline.name,
        "workflow": "{{workflow.name}}",
        "namespace": "{{workflow.namespace}}",
        "steps": [
            [s.name, task_name(s.name), list(s.after), bool(s.settings.gate)]
            for s in pipeline.steps
        ],
        "planned": {
            s.name: planned.get(s.name, "cached") for s in pipeline.steps if s.name in skip
        },
        "data_on_volume": on_volume,
    }
    args = [
        "--notify",
        json.dumps(notify.to_json(), separators=(",", ":")),
        "--run",
        json.dumps(run, separators=(",", ":")),
        "--status",
        "{{workflow.status}}",
        "--failures",
        "{{workflow.failures}}",
        "--duration",
        "{{workflow.duration}}",
        "--created",
        "{{workflow.creationTimestamp.s}}",
    ]
    for p in pipeline.parameters:
        args += ["--parameter", f"{p.name}={{{{workflow.parameters.{p.name}}}}}"]
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    for var in notify.variables():
        # optional: a missing Secret must not keep the pod from starting (Argo would then
        # fail the Workflow); the handler logs the variable as not set and sends nothing.
        ref = {**settings.notify_secrets[var].selector(), "optional": True}
        env.append({"name": var, "valueFrom": {"secretKeyRef": ref}})
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if on_volume:
        mounts.append(
            {
                "name": CLAIM_TEMPLATE,
                "mountPath": str(layout.data_root(_POD_RUN)),
                "subPath": f"{key}/{layout.DATA}",
                "readOnly": True,
            }
        )
    return {
        "name": name,
        "metadata": {"labels": {LABEL_STEP: name}},
        "container": {
            "image": image,
            "command": ["python3", "-m", "cellpipe.backends.argo.exit_handler"],
            "args": args,
            "env": env,
            "volumeMounts": mounts,
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "runAsNonRoot": True,
                "capabilities": {"drop": ["ALL"]},
            },
        },
        # All attempts take at most the notification's timeout; then the pod's own start.
        "activeDeadlineSeconds": int(notify.timeout_s) + 60,
    }


def kale_volumes(
    raw: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Kale's ``metadata.kubeflow_notebook.volumes`` as the Workflow's volumes, its claim
    templates and every step's mounts: ``type: pvc`` mounts that existing claim, ``new_pvc``
    a claim made per run (``size`` ``size_type``, ``annotations``), at ``mount_point``.
    Raises ArgoSettingsError for what only Kubeflow's own storage can do (``pv``, ``clone``
    and snapshots are Arrikto Rok's)."""
    volumes: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    for i, vol in enumerate(raw or []):
        where = f"metadata.kubeflow_notebook.volumes[{i}]"
        if not isinstance(vol, Mapping):
            raise ArgoSettingsError(f"{where}: expects an object (name, mount_point, type)")
        kind, name, path = vol.get("type"), vol.get("name"), vol.get("mount_point")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ArgoSettingsError(f"{where}.mount_point: expects an absolute path")
        if vol.get("snapshot") or kind not in ("pvc", "new_pvc"):
            raise ArgoSettingsError(
                f"{where}: Kale volume type {kind!r}"
                + (" with a snapshot" if vol.get("snapshot") else "")
                + " needs Kubeflow's Rok storage; on Argo give type `pvc` (an existing claim) "
                "or `new_pvc` (a claim per run)"
            )
        if not isinstance(name, str) or not _DNS1123.match(name):
            raise ArgoSettingsError(f"{where}.name: expects a Kubernetes name (got {name!r})")
        volume = dns_name(f"kale-{name}")
        mounts.append({"name": volume, "mountPath": path})
        if kind == "pvc":
            volumes.append({"name": volume, "persistentVolumeClaim": {"claimName": name}})
            continue
        size = f"{vol.get('size', 1)}{vol.get('size_type', 'Gi')}"
        if not _QUANTITY.match(size):
            raise ArgoSettingsError(f"{where}.size: expects a quantity such as 5 Gi (got {size})")
        meta: dict[str, Any] = {"name": volume}
        notes = {
            a["key"]: str(a["value"])
            for a in vol.get("annotations") or []
            if isinstance(a, Mapping) and a.get("key")
        }
        if notes:
            meta["annotations"] = notes
        claims.append(
            {
                "metadata": meta,
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}},
                },
            }
        )
    return volumes, claims, mounts


def _step_pipeline(pipeline: Pipeline, step: Step) -> dict[str, Any]:
    """``pipeline.json`` as one step's pod needs it: the prelude and that step's cells, so
    the manifest grows with the notebook once, not once per step; no local path. The other
    code cells stay as placeholders without source or tags: a step's cells are numbered as
    top to bottom (``execution_counts``) from every code cell before them, so that ``Out[n]``
    and ``_n`` mean in the pod what they mean in the notebook."""
    own = set(step.cells)
    cells = tuple(
        c if c.role.prelude or c.id in own else replace(c, source="", tags=())
        for c in pipeline.cells
        if c.role.prelude or c.id in own or (c.kind == "code" and c.role is not Role.SKIP)
    )
    return replace(pipeline, cells=cells, diagnostics=(), path=None).to_json()


def _resources(limits: Mapping[str, str], gpu: int) -> dict[str, Any]:
    # Requests equal limits: the scheduler places the step where its limit fits, as the
    # local backend promises the limit and no less.
    amounts = {k: str(v) for k, v in limits.items() if k in ("cpu", "memory", "ephemeral-storage")}
    if gpu:
        amounts["nvidia.com/gpu"] = str(gpu)
    if not amounts:
        return {}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _secret_volumes(steps: list[Step]) -> dict[str, str]:
    """Secrets mounted as files (``secret:NAME:/path``) -> their volume names."""
    names: dict[str, str] = {}
    for s in steps:
        for secret in s.settings.secrets:
            if len(secret) == 2 and secret[0] not in names:
                names[secret[0]] = dns_name(f"secret-{secret[0]}")
    return names


def _s3_key(s3: S3Settings, run_key: str, step: str, leaf: str) -> str:
    return "/".join(p for p in (s3.key_prefix, run_key, step, leaf) if p)


def values_location(
    settings: ArgoSettings, namespace: str, claim: str | None, run_key: str, step: str
) -> dict[str, Any]:
    """Where the values ``step`` saved under ``run_key`` are kept, for ``remote.json``: the
    S3 object of its ``data`` artifact, or the claim and sub-path of its folder. Names
    only: no credential (those stay in the cluster's Secret, and on this machine the AWS
    tools' own)."""
    if settings.s3 is not None:
        s3 = settings.s3
        where: dict[str, Any] = {"key": _s3_key(s3, run_key, step, "data.tgz")}
        if s3.endpoint:
            where.update(endpoint=s3.endpoint, bucket=s3.bucket, insecure=s3.insecure)
            if s3.region:
                where["region"] = s3.region
        else:
            ref = s3.repository_ref
            where["repository"] = f"configmap {ref[0]}" if ref else "the controller's default"
        return {"s3": where}
    return {
        "claim": claim,
        "namespace": namespace,
        "sub_path": f"{run_key}/{layout.DATA}/{step}",
    }


# -- what cannot be known to work -------------------------------------------------------------


def file_warnings(pipeline: Pipeline, workdir: Path, settings: ArgoSettings) -> list[Diagnostic]:
    """Files next to the notebook that steps read by relative path, and local modules they
    import, that the folder shipped to the pods leaves out (``folder_ignore``, or
    ``ship_folder: false``). A file another step writes is a hand-off through the run's
    volume, which works, except with S3 (no shared volume)."""
    from cellpipe.execution.cache import files_read

    out = []
    for step in pipeline.steps:
        for name in files_read(pipeline, step, workdir):
            rel = file_path(name)
            handed = name in step.inputs
            if Path(rel).is_absolute():
                continue
            if handed and settings.s3 is None:
                continue
            if handed:
                why = (
                    f"step {step.name} reads `{rel}`, which step {step.inputs[name]} writes; with "
                    "an S3 artifact repository the steps share no directory, so the file is not "
                    "there: pass its contents as a variable, or use a volume"
                )
            elif (workdir / rel).exists():
                if settings.ship_folder and not left_out(rel, settings.folder_ignore):
                    continue  # shipped with the notebook's folder
                how = (
                    "ship_folder is false"
                    if not settings.ship_folder
                    else "the folder shipped to the pods leaves it out (folder_ignore and the "
                    "default ignores)"
                )
                why = (
                    f"step {step.name} reads `{rel}` next to the notebook, but {how}: on Argo "
                    f"a step runs in {WORK_DIR} on the run's volume, where that file is not; "
                    "put it in the image (`packages:` or `image:`), on an existing claim, or "
                    "read it from a URL"
                )
            else:
                continue
            out.append(Diagnostic("argo-file", why, "warning", step=step.name, name=rel))
    return out


def with_namespace(settings: ArgoSettings, namespace: str | None) -> ArgoSettings:
    """``settings`` with ``namespace`` when one is given."""
    return replace(settings, namespace=namespace) if namespace else settings


_YAML11_BOOL = re.compile(r"^(y|Y|n|N|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF)$")


def to_yaml(*docs: Mapping[str, Any]) -> str:
    """``docs`` as YAML, multi-line strings (step scripts) as readable literal blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
        style = "|" if "\n" in data else None
        if _YAML11_BOOL.match(data):
            # PyYAML writes `n` plain, but YAML 1.1 readers (kubectl's, Argo's) read a plain
            # y/n as a boolean: a parameter named `n` became `name: false`, which the API
            # server stored and the v4.0.5 controller crashed on. Quoted, it stays a string.
            style = "'"
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump_all(
        [dict(d) for d in docs], Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True
    )
