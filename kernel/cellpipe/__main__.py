"""The ``cellpipe`` command, also as ``python -m cellpipe``.

A local run's warm process is started first of all, before the command-line interface and
the engine are imported, so that their imports overlap with its IPython import (see
cellpipe.execution.warm_ahead).
"""

import sys

from cellpipe.execution.warm_ahead import start_ahead


def main() -> None:
    start_ahead(sys.argv[1:])
    from cellpipe.cli.app import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
