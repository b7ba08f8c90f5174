"""Reading a `multipart/form-data` upload as a stream: the file part goes to a sink chunk by
chunk as it arrives, the small text fields are kept.

    form = await read_upload(request, "file", upload.write)
    form.fields["purpose"], form.filename, form.has_file

Why not FastAPI's `UploadFile`: FastAPI reads the whole form before it runs a route's
dependencies, so an upload was received (spooled to a temporary file) before its API key
was checked, and then copied again into storage. Here the route authenticates first (its
dependencies never touch the body) and the bytes are written once, where they are kept.
Parsing is python-multipart's (the parser Starlette uses); this module only routes its
events. `write` is a blocking function: it runs in a worker thread, once per received
chunk of the body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from jobs.errors import InvalidRequest

# Text fields (`purpose`, ...) are a few bytes; this bounds what a hostile form can make us hold.
MAX_FIELD_BYTES = 64 * 1024

# The OpenAPI description of the body the route reads itself (FastAPI cannot infer it).
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "maxLength": 64},
                    },
                }
            }
        },
    }
}


@dataclass
class UploadForm:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    has_file: bool = False


@dataclass
class _Part:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    name: str = ""
    is_file: bool = False
    text: bytearray = field(default_factory=bytearray)


class _Events:
    """python-multipart's callbacks, collecting file data until the next flush."""

    def __init__(self, file_field: str, form: UploadForm):
        self.file_field = file_field
        self.form = form
        self.part = _Part()
        self.field_name = b""
        self.field_value = b""
        self.pending: list[bytes] = []
        self.field_bytes = 0
        self.ended = False

    def on_part_begin(self) -> None:
        self.part = _Part()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.field_value += data[start:end]

    def on_header_end(self) -> None:
        self.part.headers.append((self.field_name.lower(), self.field_value))
        self.field_name, self.field_value = b"", b""

    def on_headers_finished(self) -> None:
        disposition = dict(self.part.headers).get(b"content-disposition", b"")
        _, options = parse_options_header(disposition)
        self.part.name = options.get(b"name", b"").decode("utf-8", "replace")
        self.part.is_file = self.part.name == self.file_field
        if self.part.is_file:
            if self.form.has_file:
                raise InvalidRequest("only one file per upload", param=self.file_field)
            self.form.has_file = True
            raw = options.get(b"filename")
            self.form.filename = raw.decode("utf-8", "replace") if raw is not None else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.part.is_file:
            self.pending.append(data[start:end])
            return
        self.field_bytes += end - start
        if self.field_bytes > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"form fields may hold at most {MAX_FIELD_BYTES} bytes", param=self.part.name
            )
        self.part.text += data[start:end]

    def on_part_end(self) -> None:
        if not self.part.is_file and self.part.name:
            self.form.fields[self.part.name] = self.part.text.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def take(self) -> bytes:
        data, self.pending = b"".join(self.pending), []
        return data


async def read_upload(
    request: Request, file_field: str, write: Callable[[bytes], None]
) -> UploadForm:
    """Parse the request body as multipart/form-data, giving `file_field`'s bytes to `write`.

    Raises InvalidRequest (400, `param` = `file_field` or the field at fault) for a body that
    is not multipart/form-data or is malformed, or a second file part. What `write` raises
    propagates. A form without the file part returns `has_file=False` (the caller says what
    is missing).
    """
    content_type, options = parse_options_header(request.headers.get("content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "the body must be multipart/form-data with a file field", param=file_field
        )
    form = UploadForm()
    events = _Events(file_field, form)
    callbacks = {
        name: getattr(events, name)
        for name in (
            "on_part_begin",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_part_data",
            "on_part_end",
            "on_end",
        )
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    except (MultipartParseError, ValueError) as exc:
        raise InvalidRequest(f"malformed multipart body: {exc}", param=file_field) from None
    async for chunk in request.stream():
        try:
            parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}", param=file_field) from None
        if data := events.take():
            await run_in_threadpool(write, data)
    if not events.ended:  # a truncated body: the last part may be cut anywhere
        raise InvalidRequest(
            "malformed multipart body: it ends before its closing boundary", param=file_field
        )
    return form
