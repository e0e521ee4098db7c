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
    help="Address to listen on. Any other than the loopback address needs --token.",
)
@click.option(
    "--token",
    envvar="CELLPIPE_SERVE_TOKEN",
    default=None,
    help="Require `Authorization: Bearer TOKEN` on every request (also from "
    "$CELLPIPE_SERVE_TOKEN). Required when --host is not a loopback address.",
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
    token: str | None,
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
    from cellpipe.driving.serve import PipelineService, is_loopback, make_server

    if not token and not is_loopback(host):
        raise click.UsageError(
            f"--host {host} makes the endpoint reachable from other machines, and it runs "
            "the notebook's code: give --token too (or bind 127.0.0.1 behind a proxy that "
            "authenticates)"
        )
    service = PipelineService(
        Path(notebook), runs_root_path(runs_root), max_concurrent=max_concurrent
    )
    server = make_server(service, host, port, token=token)
    server.verbose = verbose
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
