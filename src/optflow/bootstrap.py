"""Builds the running system: engine, templates, senders, flows, bus, dispatcher. Called once per
process by an entry point; importing optflow builds nothing."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from sqlalchemy import URL, Engine, insert, select

from .adapters import db, ledger_files, orm
from .adapters.flow_loader import FlowDirectory
from .adapters.secrets import SecretSource, load_key, secret_file_beside_database
from .adapters.senders import ConsoleSender, Router, Sender, SmtpSender, TwilioSender, WebhookSender
from .adapters.templates import TemplateRenderer
from .adapters.unit_of_work import SqlUnitOfWorkFactory
from .adapters.webhook_poster import WebhookPoster, derived_secret
from .config import TWILIO_STATUS_PATH, Config
from .domain.model import Channel
from .domain.tokens import unsubscribe_url
from .service_layer import delivery_signals, imports
from .service_layer.dispatcher import Dispatcher
from .service_layer.flow_engine import FlowEngine
from .service_layer.handlers import Services
from .service_layer.messagebus import MessageBus
from .service_layer.webhook_dispatcher import WebhookDispatcher

log = logging.getLogger("optflow")

DEFAULT_ORG_NAME = "Demo organisation"
DEFAULT_ORG_NUMBER = "+12025550123"


def utc_now() -> datetime:
    return datetime.now(UTC)


def random_pin() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def repository_flows_dir() -> Path | None:
    candidate = Path.cwd() / "flows"
    return candidate if candidate.is_dir() else None


@dataclass
class System:
    config: Config
    engine: Engine
    uows: SqlUnitOfWorkFactory  # the service layer's way to the database (its `UnitOfWorkFactory` port)
    services: Services
    bus: MessageBus
    dispatcher: Dispatcher
    flows: FlowEngine
    clock: Callable[[], datetime]
    secret: str
    webhooks: WebhookDispatcher
    background: Callable[[], None] | None = None  # stops this process's background work (a web worker's)

    def writer_lock(self) -> db.WriterLock | None:
        """SQLite's write lock shared by this installation's processes (None on PostgreSQL): a
        web worker waits for it without blocking its event loop (`InboundBatcher`)."""
        return db.writer_lock(self.engine)

    def close(self) -> None:
        if self.background is not None:
            self.background()
        self.dispatcher.sender.close()
        self.webhooks.poster.close()
        self.engine.dispose()


def bootstrap_web_worker(config: Config) -> System:
    """The system of one web worker: its engine set up as web workers need it (on SQLite, the
    write-ahead log checkpointed by a background thread rather than inside a commit)."""
    engine, checkpointer = db.make_web_worker_engine(config.database_url)
    system = bootstrap(config, create_schema=False, engine=engine)
    if checkpointer is not None:
        system.background = checkpointer.stop
    return system


def installation_secret(engine: Engine, configured: str | None) -> str:
    """The secret that signs unsubscribe tokens: configured, or generated once and stored so
    every process of the installation shares it."""
    if configured:
        return configured
    with engine.begin() as conn:
        value = conn.execute(select(orm.app_meta.c.value).where(orm.app_meta.c.key == "secret")).scalar()
        if value is None:
            value = secrets.token_urlsafe(32)
            conn.execute(insert(orm.app_meta).values(key="secret", value=value))
    return str(value)


PIN_KEY_NAME = "PIN key"
PIN_KEY_SUFFIX = "pin.key"
DATA_DIR_PIN_KEY = "optflow-pin.key"


def pin_key(config: Config, database_url: URL) -> bytes:
    """The key PINs are hashed under, never stored in the database: `OPTFLOW_PIN_KEY`, else the
    file `OPTFLOW_PIN_KEY_FILE`, else a file beside the SQLite database (`optflow.db-pin.key`) or,
    for PostgreSQL, in the data directory (default: the working directory), created on first use."""
    path = config.pin_key_file or secret_file_beside_database(database_url, PIN_KEY_SUFFIX)
    in_memory = path is None and database_url.get_backend_name() == "sqlite"
    if path is None and not in_memory:
        path = ledger_files.data_dir(config) / DATA_DIR_PIN_KEY
    return load_key(SecretSource(PIN_KEY_NAME, config.pin_key, path), ephemeral_ok=in_memory)


WEBHOOK_KEY_NAME = "webhook key"
WEBHOOK_KEY_SUFFIX = "webhook.key"
DATA_DIR_WEBHOOK_KEY = "optflow-webhook.key"


def webhook_key(config: Config, database_url: URL) -> bytes:
    """The key event endpoints' secrets are derived from (`adapters.webhook_poster.endpoint_secret`),
    kept outside the database like the PIN key: `OPTFLOW_WEBHOOK_KEY`, else the file
    `OPTFLOW_WEBHOOK_KEY_FILE`, else `optflow.db-webhook.key` beside the SQLite database or
    `optflow-webhook.key` in the data directory, created on first use."""
    path = config.webhook_key_file or secret_file_beside_database(database_url, WEBHOOK_KEY_SUFFIX)
    in_memory = path is None and database_url.get_backend_name() == "sqlite"
    if path is None and not in_memory:
        path = ledger_files.data_dir(config) / DATA_DIR_WEBHOOK_KEY
    return load_key(SecretSource(WEBHOOK_KEY_NAME, config.webhook_key, path), ephemeral_ok=in_memory)


def status_callback_url(config: Config) -> str | None:
    """Twilio's StatusCallback for each message: on when the config says so, or by default when
    the public URL is https (Twilio cannot reach a development server on a loopback address)."""
    wanted = config.status_callbacks if config.status_callbacks is not None \
        else config.public_url.startswith("https://")
    return config.public_url.rstrip("/") + TWILIO_STATUS_PATH if wanted else None


def build_sender(config: Config, console_stream: TextIO | None = None) -> Sender:
    console = ConsoleSender(console_stream)
    routes: dict[Channel, Sender] = {channel: console for channel in Channel}
    twilio_identity = config.twilio_from or config.twilio_messaging_service_sid
    if config.twilio_account_sid and config.twilio_auth_token and twilio_identity:
        twilio = TwilioSender(config.twilio_account_sid, config.twilio_auth_token, from_number=config.twilio_from,
                              messaging_service_sid=config.twilio_messaging_service_sid,
                              base_url=config.twilio_api_base_url)
        routes[Channel.TEXT] = twilio
        routes[Channel.WHATSAPP] = twilio
    if config.smtp_host and config.smtp_from:
        routes[Channel.EMAIL] = SmtpSender(config.smtp_host, config.smtp_from, port=config.smtp_port,
                                           username=config.smtp_username, password=config.smtp_password,
                                           starttls=config.smtp_starttls)
    if config.chat_webhook_url and config.chat_webhook_secret:
        routes[Channel.CHAT] = WebhookSender(config.chat_webhook_url, config.chat_webhook_secret)
    return Router(routes)


def bootstrap(config: Config | None = None, *, clock: Callable[[], datetime] = utc_now,
              sender: Sender | None = None, pin_digits: Callable[[], str] = random_pin,
              create_schema: bool = True, engine: Engine | None = None) -> System:
    config = config or Config.from_env()
    engine = engine or db.make_engine(config.database_url)
    if create_schema:
        db.create_schema(engine)
    ledger_files.attach(engine, ledger_files.load_or_create(config, engine))
    renderer = TemplateRenderer(config.template_dir)
    flow_directory = FlowDirectory(config.flows_dir or repository_flows_dir())
    flows = flow_directory.load_all()
    secret = installation_secret(engine, config.secret)
    services = Services(renderer=renderer, pin_digits=pin_digits, public_url=config.public_url,
                        pin_key=pin_key(config, engine.url),
                        unsubscribe_url=functools.partial(unsubscribe_url, config.public_url, secret))
    engine_flows = FlowEngine(flows, services, flow_directory,
                              unsubscribe_url=functools.partial(unsubscribe_url, config.public_url, secret))
    uows = SqlUnitOfWorkFactory(engine)
    bus = MessageBus(uows, services, clock, {**engine_flows.command_handlers(), **imports.HANDLERS,
                                             **delivery_signals.HANDLERS})
    dispatcher = Dispatcher(uows, services, sender or build_sender(config), secret, config.public_url, clock,
                            status_callback_url=status_callback_url(config))
    poster = WebhookPoster(config.webhook_secret or derived_secret(secret), webhook_key=webhook_key(config, engine.url))
    webhooks = WebhookDispatcher(uows, poster,
                                 retry_base=timedelta(seconds=config.webhook_retry_base_seconds))
    return System(config, engine, uows, services, bus, dispatcher, engine_flows, clock, secret, webhooks)
