"""``python -m cellpipe``: the same as the ``cellpipe`` command."""

from .cli import main

main()
