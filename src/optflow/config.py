"""Configuration from flags and the environment. Read once, in bootstrap, never at import."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _path_env(name: str) -> Path | None:
    value = _env(name)
    return Path(value) if value else None


# Where Twilio posts its delivery reports (StatusCallback); served by entrypoints/webhooks.py.
TWILIO_STATUS_PATH = "/webhooks/twilio/status"


@dataclass
class Config:
    database_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    flows_dir: Path | None = None
    template_dir: Path | None = None
    secret: str | None = None
    pin_key: str | None = field(default=None, repr=False)
    pin_key_file: Path | None = None
    data_dir: Path | None = None
    log_bodies: bool = False
    log_level: str = "WARNING"
    skip_signature_check: bool = False
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_from: str | None = None
    twilio_messaging_service_sid: str | None = None
    twilio_api_base_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str | None = None
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    chat_webhook_url: str | None = None
    chat_webhook_secret: str | None = None
    max_body_bytes: int = 64 * 1024
    max_import_bytes: int = 50 * 1024 * 1024  # a CSV file sent to POST /api/v1/imports
    # The ledger's key file and checkpoint file (adapters/ledger_files.py); by default beside the
    # SQLite database, or in `data_dir` (PostgreSQL: default ~/.local/share/optflow).
    ledger_key_file: Path | None = None
    ledger_checkpoint_file: Path | None = None
    webhook_secret: str | None = None  # `whsec_...` signing flow webhooks; None: derived from `secret`
    webhook_key: str | None = field(default=None, repr=False)  # derives event endpoints' secrets
    webhook_key_file: Path | None = None
    webhook_retry_base_seconds: float = 10.0  # first retry of a failed webhook or event, doubling after
    reply_budget_seconds: float = 10.0  # later than this after receipt, replies go through the API
    # Ask Twilio for delivery reports (StatusCallback) on each message; None: when public_url is https.
    status_callbacks: bool | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: object) -> Config:
        flows = _env("OPTFLOW_FLOWS_DIR")
        key_file, checkpoint_file = (
            _env(name) for name in ("OPTFLOW_LEDGER_KEY_FILE", "OPTFLOW_LEDGER_CHECKPOINT_FILE"))
        config = cls(
            database_url=_env("DATABASE_URL"),
            public_url=_env("OPTFLOW_PUBLIC_URL", "http://127.0.0.1:8000") or "http://127.0.0.1:8000",
            flows_dir=Path(flows) if flows else None,
            secret=_env("OPTFLOW_SECRET"),
            pin_key=_env("OPTFLOW_PIN_KEY"),
            pin_key_file=_path_env("OPTFLOW_PIN_KEY_FILE"),
            data_dir=_path_env("OPTFLOW_DATA_DIR"),
            log_bodies=_env("OPTFLOW_LOG_BODIES") == "1",
            log_level=(_env("OPTFLOW_LOG_LEVEL", "WARNING") or "WARNING").upper(),
            skip_signature_check=_env("OPTFLOW_SKIP_SIGNATURE_CHECK") == "1",
            twilio_account_sid=_env("TWILIO_ACCOUNT_SID"),
            twilio_auth_token=_env("TWILIO_AUTH_TOKEN"),
            twilio_from=_env("TWILIO_FROM_NUMBER"),
            twilio_messaging_service_sid=_env("TWILIO_MESSAGING_SERVICE_SID"),
            twilio_api_base_url=_env("TWILIO_API_BASE_URL"),
            smtp_host=_env("SMTP_HOST"),
            smtp_port=int(_env("SMTP_PORT", "25") or 25),
            smtp_from=_env("SMTP_FROM"),
            smtp_username=_env("SMTP_USERNAME"),
            smtp_password=_env("SMTP_PASSWORD"),
            smtp_starttls=_env("SMTP_STARTTLS") == "1",
            chat_webhook_url=_env("CHAT_WEBHOOK_URL"),
            chat_webhook_secret=_env("CHAT_WEBHOOK_SECRET"),
            ledger_key_file=Path(key_file) if key_file else None,
            ledger_checkpoint_file=Path(checkpoint_file) if checkpoint_file else None,
            webhook_secret=_env("OPTFLOW_WEBHOOK_SECRET"),
            webhook_key=_env("OPTFLOW_WEBHOOK_KEY"),
            webhook_key_file=_path_env("OPTFLOW_WEBHOOK_KEY_FILE"),
            webhook_retry_base_seconds=float(_env("OPTFLOW_WEBHOOK_RETRY_BASE_SECONDS", "10") or 10),
            reply_budget_seconds=float(_env("OPTFLOW_REPLY_BUDGET_SECONDS", "10") or 10),
            max_import_bytes=int(_env("OPTFLOW_MAX_IMPORT_BYTES", str(50 * 1024 * 1024)) or 50 * 1024 * 1024),
            status_callbacks={"1": True, "0": False}.get(_env("OPTFLOW_TWILIO_STATUS_CALLBACKS") or ""),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(config, key, value)
        return config
