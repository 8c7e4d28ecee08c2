"""A short MP4 built in the test from coloured frames and a sine tone, with PyAV
(which bundles FFmpeg's libraries: no system ffmpeg)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np


def write_test_video(
    path: str | Path,
    seconds: float = 3.0,
    fps: int = 10,
    size: int = 64,
    tone_hz: float = 440.0,
    sample_rate: int = 16000,
    with_audio: bool = True,
) -> Path:
    """An H.264 + AAC MP4: a square moving across a coloured background, and a tone."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = size
        video.pix_fmt = "yuv420p"
        audio = None
        if with_audio:
            audio = container.add_stream("aac", rate=sample_rate)
            audio.layout = "mono"
        n_frames = int(seconds * fps)
        for i in range(n_frames):
            img = np.full((size, size, 3), (200, 120, 60), dtype=np.uint8)
            x = int((size - 16) * i / max(1, n_frames - 1))
            img[24:40, x : x + 16] = (30, 30, 30)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if audio is not None:
            t = np.arange(int(seconds * sample_rate)) / sample_rate
            tone = (0.4 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            step = 1024
            for start in range(0, len(tone), step):
                chunk = tone[start : start + step][None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)
    return path
