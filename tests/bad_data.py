"""A small data set seeded with one of each problem ``purrsight data check`` knows.

``make_seeded_dataset(root)`` writes ``root/data/{train,val}.jsonl`` and their media, and
returns ``{(split, line): kind}`` for every problem it planted, plus the media limits
(``--set`` overrides) under which the "too large / too long" files are over the limit.
Run as a script to make one by hand: ``python tests/bad_data.py /tmp/seeded``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

# Limits the seeded set is checked under (the good files are far below them).
LIMITS = {
    "media.max_image_pixels": 10_000,
    "media.max_audio_seconds": 2.0,
    "media.max_video_seconds": 1.5,
    "media.max_file_bytes": 60_000,
}
OVERRIDES = [f"{key}={value}" for key, value in LIMITS.items()]


def write_video(path: Path, frames: int = 10, size: tuple[int, int] = (32, 24), fps: int = 10):
    """A tiny MPEG-4 clip of ``frames`` grey frames at ``fps``."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.full((height, width, 3), 255 * i // max(frames - 1, 1), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _tone(seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _media(data: Path, outside: Path) -> None:
    """Every media file the lines below point at."""
    for folder in ("img", "aud", "vid"):
        (data / folder).mkdir(parents=True, exist_ok=True)
    for i, grey in enumerate((40, 80, 120, 160, 200)):
        Image.new("RGB", (32, 32), (grey, i * 30, 90)).save(data / f"img/good{i}.png")
    sf.write(data / "aud/good.wav", _tone(0.5), 8000)
    write_video(data / "vid/good.mp4")
    (outside / "secret.png").write_bytes((data / "img/good0.png").read_bytes())
    (data / "link").symlink_to(outside, target_is_directory=True)
    (data / "img/folder.png").mkdir()
    (data / "img/cat.gif").write_bytes(b"GIF89a")
    (data / "img/empty.png").write_bytes(b"")
    (data / "img/garbage.png").write_bytes(b"this is not a png at all")
    (data / "aud/garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (data / "vid/garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    Image.new("RGB", (200, 200), (1, 2, 3)).save(data / "img/huge_pixels.png")
    Image.effect_noise((300, 300), 80).convert("RGB").save(data / "img/huge_bytes.png")
    sf.write(data / "aud/long.wav", _tone(3.0), 8000)
    sf.write(data / "aud/no_samples.wav", np.zeros((0,), np.float32), 8000)
    write_video(data / "vid/long.mp4", frames=30)
    (data / "img/copy_of_good1.png").write_bytes((data / "img/good1.png").read_bytes())


def _line(i: str, subject: str = "cat-a", label: str = "content", **media) -> dict:
    media = media or {"image": "img/good0.png"}
    return {
        "id": i,
        **media,
        "response": "The cat is calm.",
        "label": label,
        "subject_id": subject,
    }


def make_seeded_dataset(root: Path) -> tuple[Path, dict[tuple[str, int], str]]:
    """Write the seeded set under ``root``; returns (its folder, {(split, line): kind})."""
    data, outside = root / "data", root / "outside"
    data.mkdir(parents=True)
    outside.mkdir()
    _media(data, outside)
    # (line, the problem it plants); a line that fails early is never looked at further.
    train: list[tuple[dict | str | bytes, str | None]] = [
        (_line("ok-1", image="img/good0.png", audio="aud/good.wav"), None),
        ('{"id": "broken", "image": "img/good0.png"', "malformed_json"),
        ({"id": "no-response", "image": "img/good0.png"}, "schema"),
        ({**_line("extra-key"), "colour": "ginger"}, "schema"),
        (_line("bad-label", label="sleepy"), "label"),
        (_line("absolute", image="/etc/hostname.png"), "path_outside"),
        (_line("dotdot", image="../outside/secret.png"), "path_outside"),
        (_line("symlink-out", image="link/secret.png"), "path_outside"),
        (_line("missing", image="img/nope.png"), "missing_media"),
        (_line("a-folder", image="img/folder.png"), "unreadable_media"),
        (_line("gif", image="img/cat.gif"), "unsupported_type"),
        (_line("empty", image="img/empty.png"), "empty_media"),
        (_line("no-samples", audio="aud/no_samples.wav"), "empty_media"),
        (_line("bad-png", image="img/garbage.png"), "undecodable_media"),
        (_line("bad-wav", audio="aud/garbage.wav"), "undecodable_media"),
        (_line("bad-mp4", video="vid/garbage.mp4"), "undecodable_media"),
        (_line("many-pixels", image="img/huge_pixels.png"), "too_large"),
        (_line("many-bytes", image="img/huge_bytes.png"), "too_large"),
        (_line("long-audio", audio="aud/long.wav"), "too_long"),
        (_line("long-video", video="vid/long.mp4"), "too_long"),
        (_line("ok-2", image="img/good1.png", label="playful"), None),
        (_line("ok-1", image="img/good2.png"), "duplicate_id"),
        (_line("reused-picture", label="playful"), "duplicate_content"),
        (b'{"id": "latin-1", "response": "caf\xe9"}', "malformed_json"),
        (_line("ok-video", video="vid/good.mp4", label="curious"), None),
    ]
    val: list[tuple[dict | str | bytes, str | None]] = [
        (_line("ok-val", subject="cat-b", image="img/good2.png"), None),
        (_line("leaked-subject", subject="cat-a", image="img/good3.png"), "subject_in_two_splits"),
        (
            _line("same-picture", subject="cat-b", image="img/copy_of_good1.png"),
            "duplicate_content_across_splits",
        ),
        (_line("ok-1", subject="cat-b", image="img/good4.png"), "duplicate_id"),
    ]
    expected: dict[tuple[str, int], str] = {}
    for split, lines in (("train", train), ("val", val)):
        with (data / f"{split}.jsonl").open("wb") as handle:
            for number, (line, kind) in enumerate(lines, start=1):
                text = json.dumps(line) if isinstance(line, dict) else line
                handle.write((text if isinstance(text, bytes) else text.encode()) + b"\n")
                if kind:
                    expected[(split, number)] = kind
    return data, expected


if __name__ == "__main__":
    folder, planted = make_seeded_dataset(Path(sys.argv[1]))
    print(f"seeded {folder}: {len(planted)} problems; check with")
    print(f"  purrsight data check {folder} " + " ".join(f"--set {o}" for o in OVERRIDES))
