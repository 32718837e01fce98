"""`optflow bounces ingest`: the bounce mailbox. An MTA pipes each message that reaches the
bounce address into it (e.g. a Postfix alias `bounces: "|optflow bounces ingest --org 1 -"`);
permanent bounces put the address on email do-not-contact, ARF complaints opt it out."""

from __future__ import annotations

from typing import BinaryIO

import click

from ..domain import commands as c
from ..domain import mail_feedback
from .cli import Ctx, friendly_errors, pass_ctx

MAX_MESSAGE_BYTES = 10 * 1024 * 1024


def register(main: click.Group) -> None:
    @main.group()
    def bounces() -> None:
        """Email bounces and complaints from a bounce mailbox."""

    @bounces.command("ingest")
    @click.argument("message", type=click.File("rb"))
    @click.option("--org", type=int, help="The org whose addresses the report is about (default: the first).")
    @pass_ctx
    @friendly_errors
    def ingest(obj: Ctx, message: BinaryIO, org: int | None) -> None:
        """Read one RFC 822 message (a file, or - for standard input): an RFC 3464 delivery status
        notification, a non-standard bounce, or an ARF spam complaint. Exit 0 also when it reports
        nothing permanent (a delay), so an MTA does not bounce the bounce."""
        raw = message.read(MAX_MESSAGE_BYTES + 1)
        if len(raw) > MAX_MESSAGE_BYTES:
            raise click.ClickException(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
        items = mail_feedback.from_report(raw)
        org_id = obj.org_id(org)
        if not items:
            click.echo("no permanent bounce or complaint in this message; nothing changed")
            return
        result = obj.system.bus.handle(c.ReportMailFeedback(org_id, tuple(items), "bounce_mailbox"))
        click.echo(f"bounced: {result.bounced}, complained: {result.complained}, already known: {result.unchanged}"
                   + (f", not an email address: {len(result.invalid)}" if result.invalid else ""))
