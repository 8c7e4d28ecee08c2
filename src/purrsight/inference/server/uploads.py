"""Reading a request's body within limits: the whole body, then each uploaded file.

Two caps, both enforced while bytes arrive rather than after: :class:`BodyLimit` (ASGI
middleware) answers 413 as soon as a body's ``Content-Length`` or its streamed bytes pass
``max_request_bytes``, so the multipart parser never sees (nor spools to disk) more than
that; :func:`read_form` then reads each file part in chunks and stops one chunk past
``max_upload_bytes``. Only uploaded bytes reach the decoders: a text field where a file
belongs (a path, a URL) is refused.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from purrsight.vocabulary import MEDIA_FIELDS, TEXT

TEXT_FIELDS = (TEXT, "mode")
CHUNK = 64 * 1024


class RequestRefused(Exception):
    """A request answered with ``status`` and the JSON ``{"error": message, "detail": …}``."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


class _BodyTooLarge(Exception):
    def __init__(self, limit: int, seen: int) -> None:
        super().__init__(f"request body is over the limit of {limit} bytes")
        self.refused = RequestRefused(
            413, str(self), {"limit_bytes": limit, "received_bytes_at_least": seen}
        )


class BodyLimit:
    """ASGI middleware: 413 for any HTTP body over ``max_bytes`` (checked on the header
    and again on every received chunk, since a header can lie or be absent)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    claimed = int(value)
                except ValueError:
                    await _send_json(send, 400, "Content-Length is not a number", None)
                    return
                if claimed > self.max_bytes:
                    refused = _BodyTooLarge(self.max_bytes, claimed).refused
                    await _send_json(send, 413, refused.message, refused.detail)
                    return
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes, seen)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge as err:  # read outside read_form (which answers it itself)
            if not started:
                await _send_json(send, 413, err.refused.message, err.refused.detail)


async def _send_json(send, status: int, message: str, detail: Any) -> None:
    body = json.dumps({"error": message, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_form(request: Request, max_upload_bytes: int, max_text_chars: int) -> dict:
    """``{"image"|"audio"|"video": bytes, "text": str, "mode": str}`` from a multipart
    request, each key only if given. Raises :class:`RequestRefused` (413 / 422)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise RequestRefused(
            422,
            "send the media as multipart/form-data",
            {"content_type": content_type or None, "fields": [*MEDIA_FIELDS, *TEXT_FIELDS]},
        )
    try:
        every = len(MEDIA_FIELDS) + len(TEXT_FIELDS)  # more parts than this is an error anyway
        form = await request.form(max_files=every, max_fields=every)
    except _BodyTooLarge as err:
        raise err.refused from None
    except Exception as err:  # noqa: BLE001 - the multipart parser's own errors
        raise RequestRefused(422, "the multipart body cannot be parsed", str(err)) from None
    try:
        return await _fields(form, max_upload_bytes, max_text_chars)
    finally:
        await form.close()


async def _fields(form, max_upload_bytes: int, max_text_chars: int) -> dict:
    out: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key in out:
            raise RequestRefused(422, f"field {key!r} is given twice", {"field": key})
        if key in MEDIA_FIELDS:
            if not isinstance(value, UploadFile):
                raise RequestRefused(
                    422,
                    f"{key} must be an uploaded file, not text (paths and URLs are not accepted)",
                    {"field": key},
                )
            out[key] = await _read_capped(value, key, max_upload_bytes)
        elif key in TEXT_FIELDS:
            if isinstance(value, UploadFile):
                raise RequestRefused(422, f"{key} must be a text field", {"field": key})
            if len(value) > max_text_chars:
                raise RequestRefused(
                    422,
                    f"{key} is {len(value)} characters, over the limit of {max_text_chars}",
                    {"field": key, "limit_chars": max_text_chars},
                )
            out[key] = value
        else:
            raise RequestRefused(
                422,
                f"unknown field {key!r}",
                {"field": key, "fields": [*MEDIA_FIELDS, *TEXT_FIELDS]},
            )
    return out


async def _read_capped(upload: UploadFile, key: str, max_bytes: int) -> bytes:
    """The file's bytes, read in chunks; 413 as soon as more than ``max_bytes`` arrive."""
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise RequestRefused(
                413,
                f"{key} upload is over the limit of {max_bytes} bytes",
                {"field": key, "limit_bytes": max_bytes, "filename": upload.filename},
            )
        chunks.append(chunk)
    if total == 0:
        raise RequestRefused(422, f"{key} upload is empty", {"field": key})
    return b"".join(chunks)
