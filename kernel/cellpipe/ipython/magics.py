"""``%cellpipe``: run the notebook being edited as a pipeline, from its own kernel."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

_USAGE = """\
%cellpipe run [NOTEBOOK] [--backend local|docker|argo] [-p NAME=VALUE]... [--jobs N] [--no-cache]

Runs the saved NOTEBOOK (default: the notebook of this kernel) as a pipeline in a process of
its own and shows a live monitor; returns it (`m = %cellpipe run`, then `m.states`,
`m.wait()`, `m.cancel()`). Save the notebook first: the file on disk is what runs.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit the kernel's process
        raise UsageError(f"{message}\n\n{_USAGE}")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="%cellpipe run", add_help=False)
    parser.add_argument("notebook", nargs="?")
    parser.add_argument("--backend", default="local")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("-j", "--jobs", type=int)
    parser.add_argument("--no-cache", action="store_true")
    return parser


@magics_class
class CellpipeMagics(Magics):
    @line_magic
    def cellpipe(self, line: str) -> Any:
        """Run this notebook as a pipeline: `%cellpipe run [NOTEBOOK] [-p NAME=VALUE]...`"""
        words = shlex.split(line)
        if not words or words[0] in ("-h", "--help", "help"):
            print(_USAGE)
            return None
        if words[0] != "run":
            raise UsageError(f"unknown subcommand {words[0]!r}\n\n{_USAGE}")
        return self._run(words[1:])

    def _run(self, words: list[str]) -> Any:
        from IPython.display import display

        from cellpipe.compiling.notebook import parse_parameter_options
        from cellpipe.core.errors import CellpipeError, ParameterError
        from cellpipe.ipython.launch import start
        from cellpipe.ipython.session import current_notebook

        args = _parser().parse_args(words)
        try:
            params = parse_parameter_options(args.parameter)
            path = args.notebook or current_notebook(self.shell.user_ns)
            monitor = start(
                path,
                backend=args.backend,
                parameters=params,
                options={"jobs": args.jobs, "no_cache": args.no_cache},
            )
        except ParameterError as exc:
            raise UsageError(str(exc)) from None
        except CellpipeError as exc:
            # One short message, as the command line prints it, not a traceback into cellpipe.
            raise UsageError(_describe(exc)) from None
        display(monitor)
        return monitor


def _describe(exc: Exception) -> str:
    from cellpipe.core.errors import CompileError

    if isinstance(exc, CompileError):
        lines = [f"cellpipe: {len(exc.diagnostics)} problem(s) in the notebook:"]
        lines += [f"  error: {d}" for d in exc.diagnostics]
        return "\n".join(lines)
    return f"cellpipe: {exc}"
