"""Decoding media into arrays, with limits, and with errors that name the file.

Images decode with Pillow, audio with soundfile (libsndfile: wav, flac, ogg, mp3), video
with PyAV (frames + the audio track; PyAV bundles FFmpeg, no system ffmpeg); resampling
is polyphase (:mod:`purrsight.data.resample`: scipy's result without importing scipy).
Every loader takes a path or the raw bytes of an upload (named by ``name`` in errors).
Every failure is a :class:`MediaError` whose message is ``<path or name>: <reason>``,
never a traceback from inside a library: a corrupt file can make a decoder raise almost
anything, so each decode is wrapped as a whole.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from purrsight.config import MediaConfig
from purrsight.data.resample import resample_poly

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# The only Pillow decoders ever used, whatever the bytes claim: a file named .png that is
# really EPS (Ghostscript), PSD, TIFF, … is refused instead of reaching a rarer decoder.
# Any of the four for any image extension: mislabelled JPEG/PNG files are common.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3"})
# The FFmpeg demuxer each video extension is opened with. Naming it (instead of letting
# FFmpeg guess from the bytes) keeps a playlist or concat script renamed to .mp4 from
# being followed to other files or URLs.
VIDEO_DEMUXERS = {
    ".mp4": "mov",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "matroska",
    ".avi": "avi",
}
VIDEO_DEMUXERS[".m4v"] = "mov"
VIDEO_EXTENSIONS = frozenset(VIDEO_DEMUXERS)

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# A header may claim anything; these bound what a read may allocate before it is checked.
MAX_AUDIO_RATE = 768_000
MAX_AUDIO_CHANNELS = 64
MAX_VIDEO_FPS = 240

MediaSource = str | Path | bytes
"""A file path, or the raw bytes of an uploaded file."""

MEDIA_ERROR_KINDS = (
    "missing_media",
    "unreadable_media",
    "unsupported_type",
    "empty_media",
    "too_large",
    "too_long",
    "undecodable_media",
)


class MediaError(ValueError):
    """A media file that cannot be used, and why; ``kind`` is one of
    :data:`MEDIA_ERROR_KINDS` (how ``purrsight data check`` counts it)."""

    def __init__(self, path: str | Path, reason: str, kind: str = "undecodable_media") -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.kind = kind

    def __reduce__(self):  # DataLoader workers pickle errors back to the main process
        return (type(self), (self.path, self.reason, self.kind))


class MediaTooLarge(MediaError):
    """Media over a configured limit (bytes, pixels, seconds): a server's HTTP 413.
    ``kind`` is ``too_large`` (bytes, pixels) or ``too_long`` (seconds)."""

    def __init__(self, path: str | Path, reason: str, kind: str = "too_large") -> None:
        super().__init__(path, reason, kind)


def _check_file(path: Path, allowed: frozenset[str], kind: str, max_bytes: int) -> None:
    if path.suffix.lower() not in allowed:
        raise MediaError(
            path,
            f"not a supported {kind} type (allowed: {', '.join(sorted(allowed))})",
            "unsupported_type",
        )
    try:
        info = path.stat()  # follows symlinks: a dangling link is "not found"
    except (FileNotFoundError, NotADirectoryError):
        raise MediaError(path, "file not found", "missing_media") from None
    except OSError as err:  # a name too long, a loop, a component that is a file
        raise MediaError(
            path, f"cannot access the file ({err.strerror})", "unreadable_media"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise MediaError(path, "not a regular file", "unreadable_media")
    if not os.access(path, os.R_OK):
        raise MediaError(path, "file is not readable (permission denied)", "unreadable_media")
    size = info.st_size
    if size == 0:
        raise MediaError(path, "file is empty", "empty_media")
    if size > max_bytes:
        raise MediaTooLarge(path, f"file is {size} bytes, over the limit of {max_bytes}")


def _check_bytes(data: bytes, name: str, max_bytes: int) -> None:
    if len(data) == 0:
        raise MediaError(name, "file is empty", "empty_media")
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
            with Image.open(handle, formats=IMAGE_FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise MediaTooLarge(
                        path, f"image is {width}x{height} pixels, over the limit of {max_pixels}"
                    )
                return img.convert("RGB")
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        # Pillow's MAX_IMAGE_PIXELS (a server lowers it) is checked on open, before ours.
        raise MediaTooLarge(path, f"image is over the pixel limit ({_one_line(err)})") from None
    except UnidentifiedImageError:
        raise MediaError(path, "not a decodable image (corrupt or unknown format)") from None
    except Exception as err:  # noqa: BLE001 - a corrupt file makes Pillow raise many types
        raise MediaError(path, f"corrupt image: {_one_line(err)}") from None


def load_audio(
    source: MediaSource,
    sample_rate: int | None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> np.ndarray:
    """Decode audio (a path or raw bytes) to mono float32 at ``sample_rate`` (None: the
    file's own rate).

    Returns:
        ``[n]`` float32 samples. The duration is checked from the header before the
        samples are read.
    """
    handle, path = _open_source(source, AUDIO_EXTENSIONS, "audio", max_bytes, name)
    try:
        with sf.SoundFile(handle) as f:
            frames, rate = f.frames, f.samplerate
            if rate <= 0 or rate > MAX_AUDIO_RATE:
                raise MediaError(path, f"audio header has an implausible sample rate ({rate} Hz)")
            if not 0 < f.channels <= MAX_AUDIO_CHANNELS:
                raise MediaError(path, f"audio header has {f.channels} channels")
            # Some containers (ogg, mp3) cannot report a frame count up front; then
            # read at most the allowed duration plus one sample and check after.
            limit = int(math.ceil(max_seconds * rate)) + 1
            if frames > 0 and frames / rate > max_seconds:
                raise MediaTooLarge(
                    path,
                    f"audio is {frames / rate:.1f} s long, over the limit of {max_seconds} s",
                    "too_long",
                )
            data = f.read(frames=limit, dtype="float32", always_2d=True)
    except MediaError:
        raise
    except Exception as err:  # noqa: BLE001 - libsndfile reports corrupt files many ways
        raise MediaError(path, f"not decodable audio ({_one_line(err)})") from None
    if data.shape[0] >= limit:
        raise MediaTooLarge(path, f"audio is longer than the limit of {max_seconds} s", "too_long")
    if data.shape[0] == 0:
        raise MediaError(path, "audio has no samples", "empty_media")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise MediaError(path, "audio holds non-finite samples")
    return mono if sample_rate is None else resample(mono, rate, sample_rate)


@dataclass
class VideoClip:
    """What a video holds for the encoders: sampled frames and the audio track."""

    frames: list[Image.Image]
    """``num_frames`` RGB frames, evenly spaced in time (fewer if the video is shorter)."""
    audio: np.ndarray | None
    """``[n]`` mono float32 at the requested rate; None without an audio track or rate."""
    seconds: float | None
    """The duration the header gives (None if it gives none)."""


def load_video(
    source: MediaSource,
    sample_rate: int | None = None,
    num_frames: int = 8,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> VideoClip:
    """Decode a video (a path or raw bytes) with PyAV: ``num_frames`` RGB frames spread
    evenly over its duration, and (with a ``sample_rate``) its audio track as mono float32.

    Every frame is decoded, not only the kept ones, so a corrupt frame anywhere is found;
    only kept frames stay in memory. Size and duration are checked from the header first,
    then again on each decoded frame (headers lie), so an over-long stream stops decoding
    at the limit. The demuxer is fixed (by the extension, or by the magic bytes of an
    upload), so a playlist or concat script is never followed to other files.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    handle, path = _open_source(source, VIDEO_EXTENSIONS, "video", max_bytes, name)
    demuxer = _video_demuxer(source, path)
    import av  # ~0.1 s; only video needs it

    try:
        with av.open(
            handle,
            mode="r",
            format=demuxer,
            options={"protocol_whitelist": "file"},
            metadata_errors="ignore",
        ) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream in the file (is this an audio file?)")
            stream = container.streams.video[0]
            if stream.codec_context is None:  # a stream FFmpeg has no decoder for
                raise MediaError(path, "no decoder for the video stream")
            _check_video_size(
                path, stream.codec_context.width, stream.codec_context.height, max_pixels
            )
            duration = _video_seconds(container, stream)
            if duration is not None and duration > max_seconds:
                raise MediaTooLarge(
                    path,
                    f"video is {duration:.1f} s long, over the limit of {max_seconds} s",
                    "too_long",
                )
            frames = _decode_frames(
                path, container, stream, duration, max_pixels, max_seconds, num_frames
            )
            audio = None
            if sample_rate is not None and container.streams.audio:
                container.seek(0)
                audio = _decode_audio_track(container, sample_rate, max_seconds, path)
    except MediaError:
        raise
    except Exception as err:  # noqa: BLE001 - FFmpeg reports corrupt files many ways
        raise MediaError(path, f"not decodable video ({_one_line(err)})") from None
    return VideoClip(frames=frames, audio=audio, seconds=duration)


def _video_demuxer(source: MediaSource, path: str) -> str:
    """The FFmpeg demuxer to open a video with: from a path's extension, or from an
    upload's magic bytes (an upload's name is not trusted)."""
    if not isinstance(source, bytes | bytearray | memoryview):
        return VIDEO_DEMUXERS[Path(source).suffix.lower()]
    head = bytes(source[:16])
    if head[4:8] == b"ftyp":
        return "mov"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    raise MediaError(path, "not a supported video (MP4/MOV, MKV/WebM or AVI)", "unsupported_type")


def _decode_audio_track(container, sample_rate: int, max_seconds: float, path: str):
    """The first audio stream as ``[n]`` mono float32 at ``sample_rate`` (None if empty)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit = int(math.ceil(max_seconds * sample_rate)) + 1
    chunks: list[np.ndarray] = []
    total = 0
    for frame in container.decode(container.streams.audio[0]):
        for out in resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            chunks.append(chunk)
            total += len(chunk)
        if total >= limit:
            raise MediaTooLarge(
                path, f"audio track is longer than the limit of {max_seconds} s", "too_long"
            )
    for out in resampler.resample(None):  # flush the resampler's buffered tail
        chunks.append(out.to_ndarray().reshape(-1).astype(np.float32, copy=False))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if not np.isfinite(audio).all():
        raise MediaError(path, "audio track holds non-finite samples")
    return audio if len(audio) else None


def _decode_frames(path, container, stream, duration, max_pixels, max_seconds, num_frames):
    """The decode loop of :func:`load_video`; returns the kept frames as PIL RGB images."""
    # Keep the first frame at or after each target time; unknown duration → first frames.
    targets = [(k + 0.5) * duration / num_frames for k in range(num_frames)] if duration else []
    max_count = int(max_seconds * MAX_VIDEO_FPS) + 1
    kept: list[Image.Image] = []
    next_target, last = 0, None
    for count, frame in enumerate(container.decode(stream), start=1):
        _check_video_size(path, frame.width, frame.height, max_pixels)
        t = frame.time
        if (t is not None and t > max_seconds) or count > max_count:
            raise MediaTooLarge(
                path, f"video is longer than the limit of {max_seconds} s", "too_long"
            )
        last = frame
        if not targets:
            if len(kept) < num_frames:
                kept.append(frame.to_image())
        elif t is not None and next_target < len(targets) and t >= targets[next_target]:
            kept.append(frame.to_image())
            while next_target < len(targets) and targets[next_target] <= t:
                next_target += 1
    if last is None:
        raise MediaError(path, "video has no frames", "empty_media")
    if not kept:  # a header duration longer than the frames, or no timestamps
        kept.append(last.to_image())
    return kept


def _check_video_size(path: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaTooLarge(
            path, f"video is {width}x{height} pixels, over the limit of {max_pixels}"
        )


def _video_seconds(container, stream) -> float | None:
    """The stream's duration from the header, else the container's; None if neither says."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return None


def _one_line(err: BaseException) -> str:
    """``Type: first line of the message``, for errors raised inside a decoder."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def decode_media(
    modality: str, path: str | Path, limits: MediaConfig, sample_rate: int | None = None
) -> Image.Image | np.ndarray | VideoClip:
    """Decode one sample's ``image`` / ``audio`` / ``video`` file within the config's
    ``media`` limits: the one check that training and ``purrsight data check`` share.

    Returns:
        a PIL RGB image, ``[n]`` float32 mono samples (at ``sample_rate``; None: the file's
        own rate), or a :class:`VideoClip` (its sound track decoded when ``sample_rate``
        is given).
    """
    if modality == "image":
        return load_image(path, limits.max_image_pixels, limits.max_file_bytes)
    if modality == "audio":
        return load_audio(path, sample_rate, limits.max_audio_seconds, limits.max_file_bytes)
    if modality == "video":
        return load_video(
            path,
            sample_rate,
            max_seconds=limits.max_video_seconds,
            max_bytes=limits.max_file_bytes,
            max_pixels=limits.max_image_pixels,
        )
    raise ValueError(f"no decoder for modality {modality!r}")


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of ``[n]`` samples; a no-op when the rates match."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    ratio = Fraction(to_rate, from_rate).limit_denominator(1000)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)
