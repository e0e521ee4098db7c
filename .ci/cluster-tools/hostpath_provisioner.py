"""A dynamic provisioner of hostPath volumes for the cluster harness (.ci/cluster).

Polls the API server (stdlib only: it runs before cellpipe's dependencies are installed):
each Pending claim of StorageClass ``cellpipe-hostpath`` gets a PersistentVolume bound to
it (``claimRef``), backed by a fresh world-writable directory under ROOT (the step pods run
as uid 1000, and fsGroup does not apply to hostPath); a Released volume of ours is deleted
with its directory. One node, so no topology.

    python3 hostpath_provisioner.py API_URL CA_FILE TOKEN_FILE ROOT
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CLASS = "cellpipe-hostpath"
PROVISIONER = "cellpipe.io/hostpath"


def main(api: str, ca: str, token_file: str, root: str) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    token = Path(token_file).read_text().strip()

    def call(method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            api + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    os.makedirs(root, exist_ok=True)
    while True:
        try:
            for pvc in call("GET", "/api/v1/persistentvolumeclaims")["items"]:
                spec, meta = pvc["spec"], pvc["metadata"]
                if spec.get("storageClassName") != CLASS or spec.get("volumeName"):
                    continue
                if pvc.get("status", {}).get("phase") != "Pending" or meta.get("deletionTimestamp"):
                    continue
                path = os.path.join(root, meta["namespace"], f"{meta['name']}-{meta['uid'][:8]}")
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o1777)
                pv = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": f"pvc-{meta['uid']}",
                        "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
                        "labels": {"app.kubernetes.io/managed-by": "cellpipe-cluster"},
                    },
                    "spec": {
                        "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                        "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Delete",
                        "storageClassName": CLASS,
                        "hostPath": {"path": path, "type": "Directory"},
                        "claimRef": {
                            "kind": "PersistentVolumeClaim",
                            "apiVersion": "v1",
                            "namespace": meta["namespace"],
                            "name": meta["name"],
                            "uid": meta["uid"],
                        },
                    },
                }
                try:
                    call("POST", "/api/v1/persistentvolumes", pv)
                    print(f"provisioned {pv['metadata']['name']} at {path}", flush=True)
                except urllib.error.HTTPError as e:
                    if e.code != 409:
                        raise
            for pv in call("GET", "/api/v1/persistentvolumes")["items"]:
                ann = pv["metadata"].get("annotations", {})
                if ann.get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
                    continue
                if pv.get("status", {}).get("phase") not in ("Released", "Failed"):
                    continue
                path = pv["spec"]["hostPath"]["path"]
                if os.path.realpath(path).startswith(os.path.realpath(root) + os.sep):
                    shutil.rmtree(path, ignore_errors=True)
                try:
                    call("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                    print(f"deleted {pv['metadata']['name']}", flush=True)
                except urllib.error.HTTPError as e:
                    if e.code != 404:
                        raise
        except (OSError, urllib.error.URLError, KeyError, ValueError) as e:
            print(f"provisioner: {e!r}", flush=True)
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
