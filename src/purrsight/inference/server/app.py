"""The FastAPI application of ``purrsight serve``.

Routes: ``POST /v1/analyze`` (multipart: image, audio, video files, text and mode fields,
any subset) answers the report (:class:`purrsight.report.Report` as JSON; ``?details=true``
adds probabilities, status and timings); ``GET /healthz``; ``GET /`` the web page;
``/docs`` the OpenAPI page. Every error is JSON ``{"error": "...", "detail": ...}``:
401 without the API key (when one is set), 413 over a limit, 422 for input that cannot be
used, 503 + ``Retry-After`` when the queue is full or the request ran out of time.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from concurrent.futures import Future
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from purrsight.data.media import MediaError, MediaTooLarge
from purrsight.inference.errors import InputError
from purrsight.inference.server.limits import ServerLimits
from purrsight.inference.server.sandbox import DecodeSandbox
from purrsight.inference.server.uploads import BodyLimit, RequestRefused, read_form
from purrsight.inference.server.worker import Busy, PredictorWorker
from purrsight.vocabulary import MEDIA_FIELDS

log = logging.getLogger(__name__)

MODES = ("report", "labels")
MAX_RUN_SECONDS = 600.0  # a model call already running is waited for at most this long

_ANALYZE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "string",
                            "format": "binary",
                            "description": "PNG/JPEG/WebP/BMP",
                        },
                        "audio": {
                            "type": "string",
                            "format": "binary",
                            "description": "WAV/FLAC/OGG/MP3",
                        },
                        "video": {
                            "type": "string",
                            "format": "binary",
                            "description": "MP4/MOV/MKV/WebM/AVI",
                        },
                        "text": {"type": "string", "description": "the owner's note"},
                        "mode": {"type": "string", "enum": list(MODES), "default": "report"},
                    },
                }
            }
        },
    }
}


def error_response(
    status: int, message: str, detail: Any = None, retry_after: int | None = None
) -> JSONResponse:
    headers = {"Retry-After": str(retry_after or 1)} if status == 503 else {}
    if status == 413:  # the rest of an oversized body is not read: end the connection
        headers["Connection"] = "close"
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)


def create_app(predictor, limits: ServerLimits, api_key: str | None = None):
    """The ASGI app (FastAPI wrapped in the request-body cap) serving ``predictor``.

    The worker thread starts with the app (lifespan) and stops with it.
    """
    worker = PredictorWorker(predictor, limits.queue_size, limits.max_batch)
    page = resources.files(__package__).joinpath("static/index.html").read_text("utf-8")

    async def lifespan(_app):
        media = predictor.media
        worker.sandbox = DecodeSandbox(
            {
                "pixels": media.max_image_pixels,
                "bytes": media.max_file_bytes,
                "audio_seconds": media.max_audio_seconds,
                "video_seconds": media.max_video_seconds,
            },
            limits.decode_seconds,
            limits.decode_memory_mb,
        )
        worker.start()
        yield
        worker.stop()
        worker.sandbox.close()

    app = FastAPI(
        title="Purr-Sight",
        version="0.1.0",
        description="How does this cat feel? Upload a photo, a sound or a video.",
        lifespan=lifespan,
    )
    app.state.worker = worker

    @app.exception_handler(RequestRefused)
    async def _refused(_request, err: RequestRefused):
        return error_response(err.status, err.message, err.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request, err: RequestValidationError):
        return error_response(422, "invalid request", _jsonable(err.errors()))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness and what the model accepts."""
        return {
            "status": "ok",
            "labels": list(predictor.labels),
            "modalities": list(predictor.modalities),
            "auth_required": api_key is not None,
            "waiting": worker.waiting,
            "limits": {
                "max_upload_bytes": limits.max_upload_bytes,
                "max_image_pixels": limits.max_image_pixels,
                "max_audio_seconds": limits.max_audio_seconds,
                "max_video_seconds": limits.max_video_seconds,
            },
        }

    @app.post("/v1/analyze", openapi_extra=_ANALYZE_BODY)
    async def analyze(request: Request, details: bool = False) -> JSONResponse:
        """The report for one cat from any subset of image, audio, video and text."""
        _check_key(request, api_key)
        form = await read_form(request, limits.max_upload_bytes, limits.max_text_chars)
        mode = form.pop("mode", "report")
        if mode not in MODES:
            raise RequestRefused(422, f"mode must be one of {list(MODES)}", {"mode": mode})
        if not any(k in form for k in MEDIA_FIELDS):
            raise RequestRefused(
                422, "nothing to look at: upload an image, an audio clip or a video", None
            )
        try:
            future = worker.submit(form, mode, limits.request_seconds)
        except Busy as err:
            return error_response(503, f"busy: {err}; retry shortly", None, worker.retry_after())
        try:
            prediction = await _answer(future, limits.request_seconds)
        except TimeoutError:
            return error_response(
                503,
                f"not started within {limits.request_seconds} s; retry shortly",
                None,
                worker.retry_after(),
            )
        except Busy as err:
            return error_response(503, f"busy: {err}; retry shortly", None, worker.retry_after())
        except MediaTooLarge as err:
            return error_response(413, str(err), {"reason": err.reason, "kind": err.kind})
        except MediaError as err:
            return error_response(422, str(err), {"reason": err.reason, "kind": err.kind})
        except InputError as err:
            return error_response(422, str(err), None)
        except Exception:  # noqa: BLE001 - a bug: logged in full, one JSON line to the client
            log.exception("analyze failed")
            return error_response(500, "internal error (logged on the server)", None)
        body = prediction.to_dict() if details else prediction.report.model_dump(mode="json")
        return JSONResponse(body, headers={"X-Purrsight-Status": prediction.status})

    return BodyLimit(app, limits.max_request_bytes)


async def _answer(future: Future, request_seconds: float):
    """The job's result. ``request_seconds`` bounds the wait in the queue: a job not
    started by then is cancelled (TimeoutError → 503), but one the model is already
    working on is waited for, so its work is never thrown away and redone on a retry."""
    waiting = asyncio.wrap_future(future)
    try:
        return await asyncio.wait_for(asyncio.shield(waiting), timeout=request_seconds)
    except TimeoutError:
        if future.cancel():  # still queued: the worker will skip it
            raise
    except asyncio.CancelledError:  # the client went away: drop the job if not started
        future.cancel()
        raise
    return await asyncio.wait_for(waiting, timeout=MAX_RUN_SECONDS)


def _check_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None or not secrets.compare_digest(given.encode(), api_key.encode()):
        raise RequestRefused(
            401,
            "missing or wrong API key",
            {"send": "X-API-Key: <key> or Authorization: Bearer <key>"},
        )


def _jsonable(errors: list) -> list:
    return [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
