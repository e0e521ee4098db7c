"""``cellpipe serve NB``: the command that serves a notebook pipeline over HTTP."""

from __future__ import annotations

from pathlib import Path

import click

from cellpipe.cli.common import Context, runs_root_option, runs_root_path


@click.command()
@click.argument("notebook", type=click.Path(dir_okay=False, exists=True))
@click.option("--port", default=8000, show_default=True, help="TCP port (0: any free port).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The endpoint has no authentication: keep it on localhost "
    "or behind a proxy that authenticates.",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Requests run at once; one more is answered 429 with Retry-After.",
)
@click.option("--verbose", is_flag=True, help="Log every request on stderr.")
@runs_root_option
@click.pass_obj
def serve(
    obj: Context,
    notebook: str,
    port: int,
    host: str,
    max_concurrent: int,
    verbose: bool,
    runs_root: str | None,
) -> None:
    """Serve NOTEBOOK's pipeline over HTTP: POST /run runs it with the given parameters.

    \b
    POST /run  {"parameters": {"x": 3}, "return": ["prediction"]}
            -> {"run_id", "state", "steps", "metrics", "values", "duration_s"}
    GET /health

    Steps whose code, inputs and parameters are unchanged come from the cache; a warm
    process is ready before each request. The notebook is read once, at start.
    """
    from cellpipe.driving.serve import PipelineService, make_server

    service = PipelineService(
        Path(notebook), runs_root_path(runs_root), max_concurrent=max_concurrent
    )
    server = make_server(service, host, port)
    server.verbose = verbose  # type: ignore[attr-defined]
    bound_host, bound_port = server.server_address[:2]
    click.echo(
        f"cellpipe: serving {notebook} on http://{bound_host}:{bound_port} "
        f"(POST /run, GET /health; {max_concurrent} at once). Ctrl-C stops.",
        err=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("cellpipe: stopping", err=True)
    finally:
        server.server_close()
        service.close()
