"""An Argo run's values, brought into its own run directory when asked for.

A step run on Argo leaves its values on the cluster's storage; the local run directory has
only ``data/<step>/remote.json`` (where they are, and their manifest with each value's
hash). :func:`fetch` copies them into ``data/<step>/`` here, so that ``cellpipe.load`` reads
them, pickles included, from the run's own directory as for a local run:

- **S3**: the step's ``data`` artifact (``<key_prefix>/<run>/<step>/data.tgz``), read with
  the credentials this machine has for the AWS tools (``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/credentials``; ``AWS_ENDPOINT_URL_S3``
  overrides the notebook's endpoint, for a bucket this machine reaches at another address).
- **A volume**: a one-pod Workflow mounts the step's sub-path of the claim read-only and
  prints the folder as one line of its log, which is read as the follower reads a step's:
  only the permissions of ``deploy/submitter-rbac.yaml`` (create workflows, read pod logs).

Every file is checked against the hash the step reported when it ran before anything is
written where ``load`` reads: a tampered or replaced object is refused.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from cellpipe.core.errors import CellpipeError
from cellpipe.rundir import layout
from cellpipe.rundir.data import has_manifest
from cellpipe.rundir.runs import RunDir

#: The line the reading pod prints its folder on (a tar.gz, base64).
MARK = "::cellpipe-values:: "
#: A folder read through a pod's log is at most this big (use S3 for bigger values).
MAX_LOG_BYTES = 512 * 1024 * 1024


class ValuesUnavailable(CellpipeError):
    """The values of an Argo run cannot be brought here (gone, refused, unreachable)."""

    exit_code = 1


def fetch(rd: RunDir, step: str) -> bool:
    """Bring ``step``'s values into ``rd``'s data folder when they are on the cluster.
    False when there is nothing to bring (local values, or the step saved none)."""
    directory = rd.data_dir(step)
    if has_manifest(directory):
        return False
    remote = rd.remote(step)
    if remote is None:
        return False
    manifest = remote.get("manifest") or {}
    if not manifest:
        return False
    location = remote.get("location") or {}
    where = f"step {step} of run {rd.run_id}"
    if "s3" in location:
        archive = _from_s3(location["s3"], where)
    elif location.get("claim"):
        archive = _from_claim(rd, step, location, where)
    else:
        raise ValuesUnavailable(
            f"{where} ran before cellpipe recorded where its values are kept; run it again"
        )
    _unpack(archive, directory, manifest, where)
    return True


# -- S3 -----------------------------------------------------------------------------------------


def _from_s3(loc: dict[str, Any], where: str) -> bytes:
    key = str(loc.get("key", ""))
    if not loc.get("bucket"):
        raise ValuesUnavailable(
            f"the values of {where} are in {loc.get('repository', 'an artifact repository')} "
            f"(key {key}), whose endpoint this machine does not know: give "
            "`metadata.cellpipe.argo.s3.endpoint` and `bucket` to read them here"
        )
    try:
        import boto3
        import botocore.exceptions as bex
        from botocore.config import Config
    except ImportError:
        raise ValuesUnavailable(
            f"reading the values of {where} from S3 needs boto3: pip install 'cellpipe[s3]'"
        ) from None
    bucket = str(loc["bucket"])
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        scheme = "http" if loc.get("insecure") else "https"
        endpoint = loc["endpoint"] if "://" in loc["endpoint"] else f"{scheme}://{loc['endpoint']}"
    url = f"s3://{bucket}/{key} at {endpoint}"
    # A session of its own: credentials as the environment has them now, not as cached.
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=loc.get("region") or None,
        config=Config(
            connect_timeout=10, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"}
        ),
    )
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except bex.NoCredentialsError:
        raise ValuesUnavailable(
            f"reading the values of {where} ({url}) needs S3 credentials on this machine: "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (docs/argo.md)"
        ) from None
    except bex.EndpointConnectionError as exc:
        raise ValuesUnavailable(f"cannot reach S3 for the values of {where}: {exc}") from None
    except bex.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code == "NoSuchBucket":
            why = f"the bucket `{bucket}` does not exist at {endpoint}"
        elif code in ("NoSuchKey", "404"):
            why = (
                f"{url} is gone (the bucket's lifecycle rules, or someone, deleted it): "
                "run the notebook again"
            )
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            why = (
                f"S3 refused this machine's credentials for {url} ({code}): check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
            )
        else:
            why = f"{url}: {code or exc}"
        raise ValuesUnavailable(f"cannot read the values of {where}: {why}") from None


# -- a volume, through a one-pod Workflow -------------------------------------------------------

_VALUES = "/cellpipe/values"
#: What the reading pod runs: the folder as a gzipped tar, base64, on one line.
_READER = (
    "import base64,io,sys,tarfile\n"
    "b=io.BytesIO()\n"
    "with tarfile.open(fileobj=b,mode='w:gz') as t:\n"
    "    t.add(sys.argv[1],arcname='.')\n"
    f"sys.stdout.write({MARK!r}+base64.b64encode(b.getvalue()).decode()+'\\n')\n"
)


def reader_workflow(rd: RunDir, step: str, location: dict[str, Any]) -> dict[str, Any]:
    """The Workflow whose one pod prints ``step``'s folder on the run's claim."""
    from cellpipe.backends.argo.manifest import MANAGED_BY, ArgoSettings, dns_name
    from cellpipe.backends.images import plan_images

    pipeline = rd.pipeline()
    settings = ArgoSettings.from_notebook(pipeline.settings)
    image = plan_images(pipeline, settings.registry)[step].ref
    pod_security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_group,
    }
    spec: dict[str, Any] = {
        "entrypoint": "main",
        "ttlStrategy": {"secondsAfterCompletion": 600},
        "activeDeadlineSeconds": 300,
        "securityContext": pod_security,
        "volumes": [
            {
                "name": "run",
                "persistentVolumeClaim": {"claimName": location["claim"], "readOnly": True},
            },
        ],
        "templates": [
            {"name": "main", "dag": {"tasks": [{"name": "read", "template": "read"}]}},
            {
                "name": "read",
                "container": {
                    "image": image,
                    "command": ["python3", "-c", _READER],
                    "args": [_VALUES],
                    "volumeMounts": [
                        {
                            "name": "run",
                            "mountPath": _VALUES,
                            "subPath": location["sub_path"],
                            "readOnly": True,
                        }
                    ],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                },
            },
        ],
    }
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": dns_name(f"cellpipe-read-{rd.run_id}-{step}", 50) + "-",
            "labels": dict(MANAGED_BY),
        },
        "spec": spec,
    }


def _from_claim(rd: RunDir, step: str, location: dict[str, Any], where: str) -> bytes:
    from cellpipe.backends.argo.backend import Cluster, pod_name

    argo = rd.info().get("argo") or {}
    namespace = location.get("namespace") or argo.get("namespace")
    claim = location["claim"]
    cluster = Cluster(argo.get("context"))
    if not cluster.claim_exists(namespace, claim):
        raise ValuesUnavailable(f"the values of {where} are gone: {_why_gone(rd, claim)}")
    created = cluster.create_workflow(namespace, reader_workflow(rd, step, location))
    name = created["metadata"]["name"]
    deadline = time.monotonic() + 300
    while True:
        wf = cluster.get_workflow(namespace, name)
        status = wf.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed", "Error"):
            break
        if time.monotonic() > deadline:
            cluster.shutdown(namespace, name)
            raise ValuesUnavailable(f"reading the values of {where}: pod of {name} did not end")
        time.sleep(1)
    nodes = [n for n in (status.get("nodes") or {}).values() if n.get("type") == "Pod"]
    text = cluster.pod_log(namespace, pod_name(name, nodes[0])) if nodes else None
    line = next((ln for ln in (text or "").splitlines() if ln.startswith(MARK)), None)
    if status.get("phase") != "Succeeded" or line is None:
        why = status.get("message") or (nodes[0].get("message") if nodes else "") or "no output"
        raise ValuesUnavailable(f"reading the values of {where} from volume {claim}: {why}")
    if len(line) > MAX_LOG_BYTES:
        raise ValuesUnavailable(f"the values of {where} are too big to read through a pod log")
    try:
        return base64.b64decode(line[len(MARK) :].strip(), validate=True)
    except ValueError:
        raise ValuesUnavailable(f"reading the values of {where}: unreadable pod output") from None


def _why_gone(rd: RunDir, claim: str) -> str:
    """Why a run's claim no longer exists, and the setting that keeps values."""
    argo = rd.info().get("argo") or {}
    keep = "give `metadata.cellpipe.argo.existing_claim` or `s3` to keep values after a run"
    if not str(claim).startswith(str(argo.get("workflow") or "\0")):
        return f"the claim {claim} no longer exists in namespace {argo.get('namespace')}"
    if rd.status().state.ok:
        return (
            f"Argo deleted the run's own volume {claim} when its Workflow succeeded "
            f"(volumeClaimGC; `ttl_after_success` keeps only the Workflow): {keep}"
        )
    return (
        f"its volume {claim} was deleted with the run's Workflow, "
        f"`metadata.cellpipe.argo.ttl_after_failure` after it failed: raise it, or {keep}"
    )


# -- into the run directory ---------------------------------------------------------------------


def _unpack(archive: bytes, directory: Path, manifest: dict[str, Any], where: str) -> None:
    """The folder in ``archive`` into ``directory``, once every value's file matches the hash
    the step reported; its ``manifest.json`` last, so a half-written folder never loads."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".fetch-") as tmp:
        root = Path(tmp)
        try:
            with tarfile.open(fileobj=io.BytesIO(archive), mode="r:*") as tar:
                tar.extractall(root, filter="data")
        except (tarfile.TarError, zlib.error, OSError) as exc:
            raise ValuesUnavailable(
                f"the values of {where} are not a readable archive: {exc}"
            ) from None
        # Argo archives a folder under its own name; the reading pod under ".".
        entries = list(root.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not (root / layout.MANIFEST).exists():
            root = entries[0]
        try:
            got = json.loads((root / layout.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValuesUnavailable(f"the values of {where} have no readable manifest") from None
        for name, record in manifest.items():
            mine = got.get(name) or {}
            if mine.get("sha256") != record.get("sha256"):
                raise ValuesUnavailable(
                    f"the stored `{name}` of {where} is not the value the step saved "
                    "(its hash differs): refusing to load it"
                )
            file = record.get("file") or ""
            if file and record.get("format") != "module":
                path = root / file
                if not path.is_file() or _sha256(path) != record.get("sha256"):
                    raise ValuesUnavailable(
                        f"the file of `{name}` of {where} does not match its recorded hash: "
                        "refusing to load it"
                    )
        for item in sorted(root.iterdir()):
            if item.name == layout.MANIFEST or (directory / item.name).exists():
                continue
            shutil.move(str(item), directory / item.name)
        shutil.move(str(root / layout.MANIFEST), directory / layout.MANIFEST)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
