"""The server extension application: configuration, the route table, the run manager."""

from __future__ import annotations

from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Dict, Float, Integer, Type, Unicode, Union, default

from .handlers import Limits, handlers
from .manager import SCHEMA_ID, RunManager

_SCHEMA = Path(__file__).parent / "events" / "run-state.json"


class CellpipeApp(ExtensionApp):
    """cellpipe in Jupyter Server: REST API under /cellpipe/api, history and live events."""

    name = "cellpipe_server"

    runs_root = Unicode(
        config=True,
        help="Where run directories live. Default: <server root>/.cellpipe/runs, the same "
        "place `cellpipe run` uses when started in the server root.",
    )
    default_backend = Unicode(
        "local", config=True, help="Backend for runs whose request names none: local, docker, argo."
    )
    default_profile = Unicode(
        config=True,
        help="Cluster profile for argo runs whose request names none (see `cellpipe profile "
        "--help`). Default: $CELLPIPE_PROFILE of the server's environment; '' for none.",
    )
    profile_dir = Unicode(
        config=True,
        help="Where cluster profiles are read from. Default: $CELLPIPE_PROFILE_DIR, else "
        "$XDG_CONFIG_HOME/cellpipe/profiles, as for the `cellpipe` command.",
    )
    max_concurrent_runs = Integer(
        4,
        config=True,
        help="Runs driven at once; further runs wait in a queue (which survives restarts).",
    )
    max_queued_runs = Integer(
        64,
        config=True,
        help="Runs that may wait for a free slot; one more is refused with 429.",
    )
    max_request_bytes = Integer(
        32 * 2**20,
        config=True,
        help="Largest request body accepted (a notebook's content included); a larger "
        "one is refused with 413.",
    )
    max_parameter_bytes = Integer(
        64 * 2**10,
        config=True,
        help="Largest value of one run parameter, as JSON; a larger one is refused with "
        "413 (parameters are stored in the run directory and listed in the history).",
    )
    poll_interval = Float(
        0.25, config=True, help="Seconds between looks at active runs' event files."
    )
    notify = Union(
        [Unicode(), Dict()],
        default_value="",
        config=True,
        help="Where to say that a run ended, for notebooks whose metadata.cellpipe.notify says "
        "nothing: a webhook URL (POST of the run's JSON status), a shell command (the status "
        "on stdin), or {'webhook'|'webhook_env'|'command': ..., 'on': [...], 'timeout': s, "
        "'retries': n}. Put secrets in ${VARIABLES} of the server's environment: they are read "
        "when sending and never stored. Local and Docker runs notify from their driver, so it "
        "works with the server stopped.",
    )
    run_manager_class = Type(RunManager, config=True, help="The RunManager implementation.")

    @default("default_profile")
    def _default_default_profile(self) -> str:
        from cellpipe.backends.argo.profiles import selected_name

        return selected_name(None) or ""

    @default("profile_dir")
    def _default_profile_dir(self) -> str:
        from cellpipe.backends.argo.profiles import profile_dir

        return str(profile_dir())

    @default("runs_root")
    def _default_runs_root(self) -> str:
        return str(Path(self.serverapp.root_dir) / ".cellpipe" / "runs")

    def initialize_settings(self) -> None:
        event_logger = self.serverapp.event_logger
        event_logger.register_event_schema(_SCHEMA)

        def emit(data: dict) -> None:
            event_logger.emit(schema_id=SCHEMA_ID, data=data)

        self.manager = self.run_manager_class(
            Path(self.serverapp.root_dir),
            Path(self.runs_root).expanduser(),
            default_backend=self.default_backend,
            default_profile=self.default_profile or None,
            profile_dir=Path(self.profile_dir).expanduser(),
            max_concurrent_runs=self.max_concurrent_runs,
            poll_interval=self.poll_interval,
            notify=self.notify or None,
            emit=emit,
            log=self.log,
        )
        self.manager.rediscover()
        self.settings.update(
            cellpipe_manager=self.manager,
            cellpipe_limits=Limits(
                max_queued_runs=self.max_queued_runs,
                max_request_bytes=self.max_request_bytes,
                max_parameter_bytes=self.max_parameter_bytes,
            ),
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def _start_jupyter_server_extension(self, serverapp) -> None:  # type: ignore[no-untyped-def]
        await self.manager.start()

    async def stop_extension(self) -> None:
        # Also called when loading failed before the manager existed: raising here kept
        # the server from shutting down (it ignored SIGTERM).
        manager = getattr(self, "manager", None)
        if manager is None:
            return
        try:
            await manager.stop()
        except Exception:
            self.log.exception("cellpipe: stopping the run manager failed")
