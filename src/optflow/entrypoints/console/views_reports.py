"""Reports: opt-ins, opt-outs, opt-in requests and re-authorisations over time as a chart (SVG made
on the server) with its numbers as a table, by channel, method and mode, and as CSV. The chart
and the breakdown count what the API's report counts (the org's sub-orgs included, each entry
under the mode it was made under) and the mode selector keeps the entries made under that mode."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, time, timedelta

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, text

from ...domain.model import Channel, InvalidInput, Mode
from ...service_layer.report_timeline import METRICS, timeline
from ...service_layer.reports import consent_report
from ..api_common import system_of
from ..api_org import report_csv
from ..charts import legend, line_chart
from .security import ConsoleRefusal, Person, page, render

DEFAULT_DAYS = 30


def _date(request: Request, name: str) -> date | None:
    raw = request.args.get(name) or ""
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ConsoleRefusal(422, "Not a date", f"{name}: {raw[:40]!r} is not a date such as 2026-11-23.") from None


def _choice(request: Request, name: str, choices: type[Channel] | type[Mode]) -> Channel | Mode | None:
    raw = request.args.get(name) or ""
    if not raw:
        return None
    try:
        return choices(raw)
    except ValueError:
        raise ConsoleRefusal(422, "Unknown choice", f"{name}: {raw[:40]!r} is not one of "
                             f"{', '.join(c.value for c in choices)}.") from None


def register(bp: Blueprint) -> None:
    @bp.get("/reports")
    @page("supervisor")
    async def reports(request: Request, person: Person) -> HTTPResponse:
        system = system_of(request)
        today = system.clock().astimezone(UTC).date()
        last = _date(request, "to") or today
        first = _date(request, "from") or last - timedelta(days=DEFAULT_DAYS - 1)
        channel = _choice(request, "channel", Channel)
        mode = _choice(request, "mode", Mode)
        method = (request.args.get("method") or "").strip()[:100] or None
        fmt = request.args.get("format") or "html"
        with system.bus.uow(read_only=True) as uow:
            try:
                series = timeline(uow, person.org_id, first, last, channel=channel,  # type: ignore[arg-type]
                                  method=method, mode=mode)  # type: ignore[arg-type]
            except InvalidInput as exc:
                raise ConsoleRefusal(422, "Not a period", str(exc)) from None
            since = datetime.combine(first, time.min, tzinfo=UTC)
            breakdown = consent_report(uow, person.org_id, since, since + timedelta(days=(last - first).days + 1),
                                       mode=mode)  # type: ignore[arg-type]
        if fmt == "csv":
            out = io.StringIO()
            csv.writer(out, lineterminator="\r\n").writerows(series.rows())
            return text(out.getvalue(), content_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="consent-over-time-{first}-{last}.csv"'})
        if fmt == "breakdown-csv":
            return text(report_csv(breakdown), content_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="consent-{first}-{last}.csv"'})
        labels = [start.isoformat() for start in series.starts]
        names = {METRICS[metric]: values for metric, values in series.series.items()}
        chart = line_chart(f"Consent per {series.bucket}, {first} to {last}", labels, names, chart_id="consent")
        return render(request, "console/reports.html", title="Reports", series=series, chart=chart,
                      legend=legend(list(names)), metrics=METRICS, breakdown=breakdown, channels=list(Channel),
                      modes=list(Mode), query=request.query_string)
