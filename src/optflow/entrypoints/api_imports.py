"""Bulk imports through the API: /api/v1/imports. A file sent here becomes a job the scheduler
processes in batches (`service_layer.imports.run_import_jobs`), never on the request."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, text
from sanic_ext.extensions.openapi import openapi

from ..domain.model import InvalidInput, NotFound
from ..service_layer import imports
from .api_common import caller_of, id_param, path_id, query_value, respond, route, system_of
from .errors import ApiError
from .schemas import ImportOut

TAG = "imports"
IMPORT = id_param("import_id", "The import's id.")
KIND = openapi.definitions.Parameter(
    "kind", openapi.String(enum=["consents", "suppressions"]), "query", required=True,
    description="`consents` (consents and opt-outs given elsewhere) or `suppressions` (the suppression list).")
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


async def _body(request: Request) -> bytes:
    """The whole body of a streamed request, refused with 413 past the import size limit (the
    route streams: the API's general body limit is far too small for a file of contacts)."""
    limit = system_of(request).config.max_import_bytes
    data = bytearray()
    while (chunk := await request.stream.read()) is not None:  # type: ignore[union-attr]
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"the file is larger than {limit} bytes "
                                                     "(OPTFLOW_MAX_IMPORT_BYTES); split it, or use `optflow import`")
    return bytes(data)


def _file_of(request: Request, data: bytes) -> str:
    """The CSV file of the request: the body itself (`text/csv`), or the part `file` of a
    multipart form. UTF-8 (a byte-order mark is accepted)."""
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        request.body = data
        upload = request.files.get("file") if request.files else None
        if upload is None:
            raise InvalidInput("the form has no part named 'file'", code="file_required")
        data = upload.body
    elif media_type not in CSV_TYPES:
        raise ApiError(415, "unsupported_media_type",
                       f"send the CSV file as 'Content-Type: text/csv' or as the part 'file' of a multipart form, "
                       f"not {media_type or 'nothing'!r}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(f"the file is not UTF-8: byte 0x{data[exc.start]:02X} at offset {exc.start} (line {line})",
                           code="not_utf8") from None


def _import_out(job: Any) -> ImportOut:
    return ImportOut(id=job.id, kind=job.kind, status=job.status, rows_total=job.rows_total,
                     rows_done=job.rows_done, imported=job.imported, skipped=job.skipped, rejected=job.rejected,
                     error=job.error, created_at=job.created_at, finished_at=job.finished_at)


def register(bp: Blueprint) -> None:
    @bp.post("/imports", stream=True)
    @openapi.body({"text/csv": openapi.String()}, required=True)
    @route("agent", ok=(202, ImportOut, "The import is queued; follow it at `Location`."),
           errors=(400, 413, 415, 422), params=(KIND,), tag=TAG)
    async def create_import(request: Request) -> HTTPResponse:
        """Import a CSV file of consents or of suppressions (the columns: docs/integrations.md).

        The body is the file (`Content-Type: text/csv`), or a multipart form whose part `file`
        is; up to 50 MiB (`OPTFLOW_MAX_IMPORT_BYTES`).

        The file's encoding and header are checked at once (422 saying what is wrong, nothing
        imported); its rows are then imported by the scheduler in batches of 500, each consent a
        ledger entry dated as given. Importing the same file again changes nothing.
        """
        kind = query_value(request, "kind") or ""
        if kind not in imports.COLUMNS:
            raise InvalidInput("kind must be 'consents' or 'suppressions'", code="invalid_kind")
        data = await _body(request)
        caller = caller_of(request)
        system = system_of(request)

        def queue() -> Any:
            """Off the event loop: decoding, checking and counting a large file, and the write."""
            content = _file_of(request, data)
            rows = imports.count_rows(content, kind)
            with system.bus.uow() as uow:
                job_id = uow.import_jobs.add(caller.org_id, caller.agent_id, kind, content, rows, system.clock(),
                                             header=imports.header_of(content))
                uow.commit()
            with system.bus.uow(read_only=True) as uow:
                return uow.import_jobs.get(caller.org_id, job_id)

        job = await asyncio.get_running_loop().run_in_executor(None, queue)
        return respond(_import_out(job), 202, {"Location": f"{bp.url_prefix}/imports/{job.id}"})

    @bp.get("/imports/<import_id:int>")
    @route("agent", ok=(200, ImportOut, "The import and its progress."), errors=(404,), params=(IMPORT,), tag=TAG)
    async def get_import(request: Request, import_id: int) -> HTTPResponse:
        """An import's status and progress: rows done of the total, imported, skipped, rejected."""
        with system_of(request).bus.uow(read_only=True) as uow:
            job = uow.import_jobs.get(caller_of(request).org_id, path_id(import_id, "import"))
        if job is None:
            raise NotFound(f"no import with id {import_id}", code="import_not_found")
        return respond(_import_out(job))

    @bp.get("/imports/<import_id:int>/rejects")
    @route("agent", ok=(200, {"text/csv": str}, "The rejected rows: `rejected_line`, `rejected_reason`, the row."),
           errors=(404,), params=(IMPORT,), tag=TAG)
    async def import_rejects(request: Request, import_id: int) -> HTTPResponse:
        """The rows rejected so far, as CSV: each row's line in the file and the reason, then the
        row as it was (correct them and send the file again: those two columns are ignored)."""
        out = io.StringIO()
        writer = csv.writer(out)
        with system_of(request).bus.uow(read_only=True) as uow:
            job = uow.import_jobs.get(caller_of(request).org_id, path_id(import_id, "import"))
            if job is None:
                raise NotFound(f"no import with id {import_id}", code="import_not_found")
            writer.writerow([*imports.REJECTS_COLUMNS, *job.header])
            for reject in uow.import_jobs.rejects(job.id):
                writer.writerow([reject.line, reject.reason, *reject.fields])
        return text(out.getvalue(), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="import-{import_id}-rejects.csv"'})

