"""The Argo backend: Workflow and CronWorkflow manifests (manifest), submit, follow, cancel
and resume against the Kubernetes API (backend), one-line errors (errors), the result
trailer a pod's log ends with (trailer; also imported by the runner in the pod) and the
commands ``cellpipe compile --target argo`` / ``cellpipe schedule`` (cli). Never imports
another backend.
"""
