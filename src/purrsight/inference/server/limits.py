"""What one request and the whole server may take: bytes, pixels, seconds, queue places."""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024


@dataclass(frozen=True)
class ServerLimits:
    """Limits of ``purrsight serve`` (each a ``--max-…`` / ``--…`` option of the command).

    Memory held by requests is bounded by ``(queue_size + max_connections) *
    max_request_bytes``: a body over ``max_request_bytes`` is cut off as it streams in.
    """

    max_upload_bytes: int = 20 * MB
    """Largest single uploaded file (image, audio or video)."""
    max_request_bytes: int = 45 * MB
    """Largest whole request body (all parts together)."""
    max_image_pixels: int = 16_000_000
    """Largest image (width x height, from the header, before decoding); also Pillow's
    decompression-bomb limit (its default is 89 M)."""
    max_audio_seconds: float = 30.0
    max_video_seconds: float = 30.0
    max_text_chars: int = 500
    request_seconds: float = 60.0
    """A request still waiting in the queue after this gets 503 + Retry-After and its job
    is dropped (one the model has started is waited for)."""
    decode_seconds: float = 10.0
    """Each upload is first decoded in a child process; one taking longer is killed (422)."""
    decode_memory_mb: int = 2048
    """Address-space cap of that child process (RLIMIT_AS)."""
    queue_size: int = 32
    """Requests waiting for the model; more get 503 + Retry-After at once."""
    max_batch: int = 8
    """Waiting requests gathered into one model call."""
    max_connections: int = 128
    """Open connections uvicorn accepts; more get 503."""

    def __post_init__(self) -> None:
        for name in (
            "max_upload_bytes",
            "max_request_bytes",
            "max_image_pixels",
            "max_text_chars",
            "queue_size",
            "max_batch",
            "max_connections",
            "decode_memory_mb",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"serve: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_audio_seconds", "max_video_seconds", "request_seconds", "decode_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"serve: {name} must be > 0, got {getattr(self, name)}")
        if self.max_request_bytes < self.max_upload_bytes:
            raise ValueError(
                f"serve: max_request_bytes ({self.max_request_bytes}) must be at least "
                f"max_upload_bytes ({self.max_upload_bytes}); raise it or lower the upload cap"
            )
