"""``purrsight serve``: load a bundle, tighten the media limits, run uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os

from PIL import Image

from purrsight.inference.errors import InputError
from purrsight.inference.server.limits import MB, ServerLimits

log = logging.getLogger(__name__)

API_KEY_ENV = "PURRSIGHT_API_KEY"


def apply_limits(predictor, limits: ServerLimits) -> None:
    """The predictor's media limits become the tighter of the bundle's and the server's;
    Pillow's decompression-bomb limit (default 89 M pixels, an error at twice that) drops
    to the server's pixel limit, so even a path around our header check stops there."""
    media = predictor.media
    predictor.media = media.model_copy(
        update={
            "max_image_pixels": min(media.max_image_pixels, limits.max_image_pixels),
            "max_audio_seconds": min(media.max_audio_seconds, limits.max_audio_seconds),
            "max_video_seconds": min(media.max_video_seconds, limits.max_video_seconds),
            "max_file_bytes": min(media.max_file_bytes, limits.max_upload_bytes),
        }
    )
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    threshold: float | None = None,
) -> None:
    """Serve the bundle ``model`` until interrupted (see :mod:`.app` for the routes)."""
    import uvicorn

    from purrsight.inference.predictor import Predictor
    from purrsight.inference.server.app import create_app

    limits = limits or ServerLimits()
    api_key = api_key or os.environ.get(API_KEY_ENV) or None
    if not is_loopback(host) and api_key is None:
        log.warning(
            "serving on %s without an API key: anyone who can reach this address can use "
            "the model (set --api-key or %s)",
            host,
            API_KEY_ENV,
        )
    predictor = Predictor.from_bundle(model, unsure_threshold=threshold)
    apply_limits(predictor, limits)
    app = create_app(predictor, limits, api_key)
    log.info(
        "serving %s on http://%s:%d (API key %s)", model, host, port, "on" if api_key else "off"
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        limit_concurrency=limits.max_connections,
        timeout_keep_alive=5,
        log_level="warning",
        server_header=False,
    )


def add_arguments(parser) -> None:
    """``purrsight serve``'s options (the parser lives in purrsight.cli)."""
    d = ServerLimits()
    parser.add_argument("--model", required=True, help="bundle folder (purrsight export)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key", default=None, help=f"require this key (X-API-Key header); or ${API_KEY_ENV}"
    )
    parser.add_argument("--threshold", type=float, default=None, help="unsure below this p")
    parser.add_argument("--max-upload-mb", type=float, default=d.max_upload_bytes / MB)
    parser.add_argument("--max-request-mb", type=float, default=d.max_request_bytes / MB)
    parser.add_argument("--max-image-pixels", type=int, default=d.max_image_pixels)
    parser.add_argument("--max-audio-seconds", type=float, default=d.max_audio_seconds)
    parser.add_argument("--max-video-seconds", type=float, default=d.max_video_seconds)
    parser.add_argument("--request-seconds", type=float, default=d.request_seconds)
    parser.add_argument("--decode-seconds", type=float, default=d.decode_seconds)
    parser.add_argument("--decode-memory-mb", type=int, default=d.decode_memory_mb)
    parser.add_argument("--queue-size", type=int, default=d.queue_size)
    parser.add_argument("--max-batch", type=int, default=d.max_batch)
    parser.add_argument("--max-connections", type=int, default=d.max_connections)


def run_from_args(args) -> int:
    """``purrsight serve`` with parsed ``args`` (see :func:`add_arguments`)."""
    try:
        limits = ServerLimits(
            max_upload_bytes=int(args.max_upload_mb * MB),
            max_request_bytes=int(args.max_request_mb * MB),
            max_image_pixels=args.max_image_pixels,
            max_audio_seconds=args.max_audio_seconds,
            max_video_seconds=args.max_video_seconds,
            request_seconds=args.request_seconds,
            decode_seconds=args.decode_seconds,
            decode_memory_mb=args.decode_memory_mb,
            queue_size=args.queue_size,
            max_batch=args.max_batch,
            max_connections=args.max_connections,
        )
    except ValueError as err:
        raise InputError(str(err)) from None
    serve(args.model, args.host, args.port, args.api_key, limits, args.threshold)
    return 0
