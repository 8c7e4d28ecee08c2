"""Decoding media files into arrays, with limits, and with errors that name the file.

Images decode with Pillow, audio with soundfile (libsndfile: wav, flac, ogg, mp3);
resampling is polyphase (scipy). Every failure is a :class:`MediaError` whose message
is ``<path>: <reason>``, never a traceback from inside a library.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError
from scipy.signal import resample_poly

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3"})

DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_SECONDS = 30.0
DEFAULT_MAX_BYTES = 100 * 1024 * 1024


class MediaError(ValueError):
    """A media file that cannot be used, and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


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
        raise MediaError(path, f"file is {size} bytes, over the limit of {max_bytes}")


def load_image(
    path: str | Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Decode an image file to RGB.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb is refused without allocating it.
    """
    path = Path(path)
    _check_file(path, IMAGE_EXTENSIONS, "image", max_bytes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise MediaError(
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
    path: str | Path,
    sample_rate: int,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Decode an audio file to mono float32 at ``sample_rate``.

    Returns:
        ``[n]`` float32 samples. The duration is checked from the header before the
        samples are read.
    """
    path = Path(path)
    _check_file(path, AUDIO_EXTENSIONS, "audio", max_bytes)
    try:
        with sf.SoundFile(str(path)) as f:
            frames, rate = f.frames, f.samplerate
            if rate <= 0:
                raise MediaError(path, "audio header has no sample rate")
            # Some containers (ogg, mp3) cannot report a frame count up front; then
            # read at most the allowed duration plus one sample and check after.
            limit = int(math.ceil(max_seconds * rate)) + 1
            if frames > 0 and frames / rate > max_seconds:
                raise MediaError(
                    path, f"audio is {frames / rate:.1f} s long, over the limit of {max_seconds} s"
                )
            data = f.read(frames=limit, dtype="float32", always_2d=True)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise MediaError(path, f"not decodable audio ({err})") from None
    if data.shape[0] >= limit:
        raise MediaError(path, f"audio is longer than the limit of {max_seconds} s")
    if data.shape[0] == 0:
        raise MediaError(path, "audio has no samples")
    mono = data.mean(axis=1)
    if not np.isfinite(mono).all():
        raise MediaError(path, "audio holds non-finite samples")
    return resample(mono, rate, sample_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Polyphase resampling of ``[n]`` samples; a no-op when the rates match."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    ratio = Fraction(to_rate, from_rate).limit_denominator(1000)
    out = resample_poly(samples, ratio.numerator, ratio.denominator)
    return out.astype(np.float32, copy=False)
