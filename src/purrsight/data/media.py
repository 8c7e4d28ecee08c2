"""Decoding media into arrays, with limits, and with errors that name the file.

Images decode with Pillow, audio with soundfile (libsndfile: wav, flac, ogg, mp3), video
with PyAV (frames + the audio track; no system ffmpeg); resampling is polyphase (scipy).
Every loader takes a path or the raw bytes of an upload (named by ``name`` in errors).
Every failure is a :class:`MediaError` whose message is ``<path or name>: <reason>``,
never a traceback from inside a library.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"})

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_MAX_VIDEO_SECONDS = 60.0
DEFAULT_MAX_BYTES = 100 * 1024 * 1024

MediaSource = str | Path | bytes
"""A file path, or the raw bytes of an uploaded file."""


class MediaError(ValueError):
    """A media file that cannot be used, and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class MediaTooLarge(MediaError):
    """Media over a configured limit (bytes, pixels, seconds): a server's HTTP 413."""


def _check_file(path: Path, allowed: frozenset[str], kind: str, max_bytes: int) -> None:
    if path.suffix.lower() not in allowed:
        raise MediaError(
            path, f"not a supported {kind} type (allowed: {', '.join(sorted(allowed))})"
        )
    if not path.exists():
        raise MediaError(path, "file not found")
    if not path.is_file():
        raise MediaError(path, "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise MediaError(path, "file is empty")
    if size > max_bytes:
        raise MediaTooLarge(path, f"file is {size} bytes, over the limit of {max_bytes}")


def _check_bytes(data: bytes, name: str, max_bytes: int) -> None:
    if len(data) == 0:
        raise MediaError(name, "file is empty")
    if len(data) > max_bytes:
        raise MediaTooLarge(name, f"file is {len(data)} bytes, over the limit of {max_bytes}")


def _open_source(
    source: MediaSource, allowed: frozenset[str], kind: str, max_bytes: int, name: str | None
) -> tuple[str | BinaryIO, str]:
    """(what a decoder opens, the name errors use) for a path or raw bytes, after the
    size checks. Bytes have no trustworthy extension: the decoder sniffs the format."""
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or f"<{kind} upload>"
        data = bytes(source)
        _check_bytes(data, label, max_bytes)
        return io.BytesIO(data), label
    path = Path(source)
    _check_file(path, allowed, kind, max_bytes)
    return str(path), str(path)


def load_image(
    source: MediaSource,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> Image.Image:
    """Decode an image (a path or raw bytes) to RGB.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb is refused without allocating it.
    """
    handle, path = _open_source(source, IMAGE_EXTENSIONS, "image", max_bytes, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise MediaTooLarge(
                        path, f"image is {width}x{height} pixels, over the limit of {max_pixels}"
                    )
                return img.convert("RGB")
    except MediaError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise MediaError(path, "not a decodable image (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise MediaError(path, f"corrupt image: {err}") from None


def load_audio(
    source: MediaSource,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> np.ndarray:
    """Decode audio (a path or raw bytes) to mono float32 at ``sample_rate``.

    Returns:
        ``[n]`` float32 samples. The duration is checked from the header before the
        samples are read.
    """
    handle, path = _open_source(source, AUDIO_EXTENSIONS, "audio", max_bytes, name)
    try:
        with sf.SoundFile(handle) as f:
            frames, rate = f.frames, f.samplerate
            if rate <= 0:
                raise MediaError(path, "audio header has no sample rate")
            # Some containers (ogg, mp3) cannot report a frame count up front; then
            # read at most the allowed duration plus one sample and check after.
            limit = int(math.ceil(max_seconds * rate)) + 1
            if frames > 0 and frames / rate > max_seconds:
                raise MediaTooLarge(
                    path, f"audio is {frames / rate:.1f} s long, over the limit of {max_seconds} s"
                )
            data = f.read(frames=limit, dtype="float32", always_2d=True)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise MediaError(path, f"not decodable audio ({err})") from None
    if data.shape[0] >= limit:
        raise MediaTooLarge(path, f"audio is longer than the limit of {max_seconds} s")
    if data.shape[0] == 0:
        raise MediaError(path, "audio has no samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise MediaError(path, "audio holds non-finite samples")
    return resample(mono, rate, sample_rate)


@dataclass
class VideoClip:
    """What a video holds for the encoders: sampled frames and the audio track."""

    frames: list[Image.Image]
    """``num_frames`` RGB frames, evenly spaced in time (fewer if the video is shorter)."""
    audio: np.ndarray | None
    """``[n]`` mono float32 at the requested rate, or None when there is no audio track."""
    seconds: float


def load_video(
    source: MediaSource,
    sample_rate: int,
    num_frames: int = 8,
    max_seconds: float = DEFAULT_MAX_VIDEO_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> VideoClip:
    """Decode a video (a path or raw bytes) with PyAV: ``num_frames`` frames evenly spaced
    over its duration, and its audio track as mono float32 at ``sample_rate``.

    The duration and frame size are checked from the container header before decoding;
    a stream that decodes past ``max_seconds`` anyway is refused as it is read.
    """
    import av  # PyAV bundles its own FFmpeg libraries: no system ffmpeg needed

    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    handle, path = _open_source(source, VIDEO_EXTENSIONS, "video", max_bytes, name)
    try:
        with av.open(handle, mode="r") as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream (is this an audio file?)")
            video = container.streams.video[0]
            width, height = video.codec_context.width, video.codec_context.height
            if width * height > max_pixels:
                raise MediaTooLarge(
                    path, f"video is {width}x{height} pixels, over the limit of {max_pixels}"
                )
            seconds = _container_seconds(container, video)
            if seconds > max_seconds:
                raise MediaTooLarge(
                    path, f"video is {seconds:.1f} s long, over the limit of {max_seconds} s"
                )
            frames = _sample_frames(container, video, num_frames, max_seconds, path)
            audio = None
            if container.streams.audio:
                container.seek(0)
                audio = _decode_audio_track(container, sample_rate, max_seconds, path)
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise MediaError(path, f"not a decodable video ({err})") from None
    if not frames:
        raise MediaError(path, "video has no decodable frames")
    return VideoClip(frames=frames, audio=audio, seconds=seconds)


def _container_seconds(container, video) -> float:
    """Duration from the header: the container's, else the video stream's (0 if unknown)."""
    if container.duration:
        return container.duration / 1_000_000  # av.time_base is microseconds
    if video.duration and video.time_base:
        return float(video.duration * video.time_base)
    return 0.0


def _sample_frames(container, video, num_frames: int, max_seconds: float, path: str):
    """Every frame is decoded once (a few hundred for a short clip) and the one nearest
    each target time kept; only kept frames become images."""
    decoded = []  # (time, frame)
    for frame in container.decode(video):
        t = float(frame.time) if frame.time is not None else len(decoded) / 25.0
        if t > max_seconds:
            raise MediaTooLarge(path, f"video is longer than the limit of {max_seconds} s")
        decoded.append((t, frame))
    if not decoded:
        return []
    start, end = decoded[0][0], decoded[-1][0]
    targets = np.linspace(start, end, num=min(num_frames, len(decoded)))
    times = np.array([t for t, _ in decoded])
    chosen = sorted({int(np.abs(times - target).argmin()) for target in targets})
    return [decoded[i][1].to_image().convert("RGB") for i in chosen]


def _decode_audio_track(container, sample_rate: int, max_seconds: float, path: str):
    """The first audio stream as mono float32 at ``sample_rate`` (None if it is silent-empty)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit = int(math.ceil(max_seconds * sample_rate)) + 1
    chunks: list[np.ndarray] = []
    total = 0
    stream = container.streams.audio[0]
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            chunks.append(chunk)
            total += len(chunk)
        if total >= limit:
            raise MediaTooLarge(path, f"audio track is longer than the limit of {max_seconds} s")
    for out in resampler.resample(None):  # flush the resampler's buffered tail
        chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    if not chunks:
        return None
    audio = np.concatenate(chunks)
    if not np.isfinite(audio).all():
        raise MediaError(path, "audio track holds non-finite samples")
    return audio if len(audio) else None


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of ``[n]`` samples; a no-op when the rates match."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    ratio = Fraction(to_rate, from_rate).limit_denominator(1000)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)
