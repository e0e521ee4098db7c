"""``python -m cellpipe.runner --run-dir DIR --step NAME``: execute ONE step of a run.

A stable entry point (backends and Argo manifests start steps with it); the runner itself
lives in cellpipe.execution.runner.
"""

import sys

from cellpipe.execution.runner import main

if __name__ == "__main__":
    sys.exit(main())
