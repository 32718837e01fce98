"""The Sanic application factory. There is no module-level app: `create_app(config)` builds one,
and each worker process builds its own `System` (engine, bus) when it starts."""

from __future__ import annotations

import logging
from typing import Any

from sanic import Request, Sanic
from sanic.response import BaseHTTPResponse, HTTPResponse, json

from ..bootstrap import System, bootstrap_web_worker
from ..config import Config
from ..domain import commands as c
from .docs_ui import configure_docs_ui, install_docs_assets
from .errors import install_error_handlers
from .inbound_batcher import InboundBatcher
from .logging_setup import REQUEST_ID_HEADER, bind_request_id, configure_logging, forget_request_id, request_id_from
from .org_directory import OrgDirectory

log = logging.getLogger("optflow.app")

APP_NAME = "optflow"


class CommandGateway:
    """Hands the commands of requests (webhooks and the API) to the bus. Kept behind one
    awaitable so the request handlers do not care how commands are committed: here, in groups
    (`InboundBatcher`), each answered only after its group's commit, and never by blocking the
    event loop on the database's write lock."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.batcher = InboundBatcher(system, reply_budget=system.config.reply_budget_seconds)

    def start(self) -> None:
        self.batcher.start()

    async def submit(self, command: c.Command, received_at: float | None = None) -> Any:
        """`received_at`: when the request arrived, on `time.perf_counter`'s clock."""
        return await self.batcher.submit(command, received_at)

    async def close(self) -> None:
        await self.batcher.close()


def install_request_ids(app: Sanic) -> None:
    """Every request gets an id (the caller's `X-Request-ID` when it is sane, else a new one),
    carried by every log line written while it is handled and returned in the same header."""

    async def assign_request_id(request: Request) -> None:
        request.ctx.request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        bind_request_id(request.ctx.request_id)

    async def return_request_id(request: Request, response: BaseHTTPResponse) -> None:
        request_id = getattr(request.ctx, "request_id", None)
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        forget_request_id()

    # First in, last out: the id is bound before any other middleware or handler logs.
    app.register_middleware(assign_request_id, "request", priority=1000)
    app.register_middleware(return_request_id, "response", priority=-1000)


def create_app(config: Config | None = None, system: System | None = None, *, name: str = APP_NAME,
               scheduler: bool = False, structured_logs: bool = False) -> Sanic:
    """Build the app. `system` lets tests inject a prepared one (fake clock or sender);
    `scheduler=True` runs the periodic jobs in one Sanic-managed process beside the workers;
    `structured_logs=True` (`optflow serve`) sends this process's logs, Sanic's included, to
    stderr as redacted JSON lines."""
    from sanic_ext import Extend
    from sanic_ext.extensions.http.extension import HTTPExtension
    from sanic_ext.extensions.openapi.extension import OpenAPIExtension

    config = config or Config.from_env()
    if structured_logs:
        configure_logging(json=True, level=config.log_level, log_bodies=config.log_bodies)
    app = Sanic(name, configure_logging=not structured_logs)
    app.config.REQUEST_MAX_SIZE = config.max_body_bytes
    app.config.FALLBACK_ERROR_FORMAT = "json"
    configure_docs_ui(app)
    app.config.API_TITLE = "optflow"
    app.config.API_VERSION = "1"
    app.config.API_DESCRIPTION = "Consent and opt-in workflow engine: agent, supervisor and admin API."
    app.ctx.config = config
    # Only the extensions optflow uses: the API's OpenAPI document, and HEAD and OPTIONS answered
    # for every route. Of the others, dependency injection (a signal on every request) and CORS
    # (middleware on every request and answer, with no origin allowed) ran on every webhook for
    # nothing; templating is Sanic's, not the Jinja templates optflow renders itself.
    app.config.CORS = False
    Extend(app, built_in_extensions=False, extensions=[OpenAPIExtension, HTTPExtension])
    install_docs_assets(app)
    install_error_handlers(app)
    install_request_ids(app)

    from .api import api_blueprint
    from .console import install_console
    from .metrics import metrics_blueprint
    from .webhooks import webhooks_blueprint

    app.blueprint(metrics_blueprint())
    app.blueprint(webhooks_blueprint())
    app.blueprint(api_blueprint())
    install_console(app)

    @app.before_server_start
    async def start_system(app: Sanic, _: Any = None) -> None:
        if system is not None:
            app.ctx.system = system
        else:
            app.ctx.system = bootstrap_web_worker(config)
        app.ctx.commands = CommandGateway(app.ctx.system)
        app.ctx.orgs = OrgDirectory(app.ctx.system.bus)
        app.ctx.commands.start()

    @app.after_server_stop
    async def stop_system(app: Sanic, _: Any = None) -> None:
        if getattr(app.ctx, "commands", None) is not None:
            await app.ctx.commands.close()
        if system is None and getattr(app.ctx, "system", None) is not None:
            app.ctx.system.close()

    @app.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        """Liveness and database reachability."""
        with request.app.ctx.system.bus.uow(read_only=True) as uow:
            uow.orgs.first_id()
        return json({"status": "ok"})

    if scheduler:
        from .scheduler import run_scheduler

        @app.main_process_ready
        async def start_scheduler(app: Sanic, _: Any = None) -> None:
            app.manager.manage("optflow-scheduler", run_scheduler, {"config": config})

    return app
