"""Property tests (hypothesis): random JSONL lines, random and damaged media bytes, and
random config values give a clear error or a counted problem, never another exception and
never a hang (each example runs under a wall-clock alarm; hypothesis' deadline flags slow
ones). Each property stays within about ten seconds on two cores."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydantic import BaseModel

from bad_data import write_video
from purrsight.config import Config, ConfigError, MediaConfig, load_config
from purrsight.data.check import PROBLEM_KINDS, check_dataset
from purrsight.data.manifest import ManifestError, Sample, iter_manifest, read_manifest
from purrsight.data.media import MEDIA_ERROR_KINDS, MediaError, decode_media

# PURRSIGHT_FUZZ_EXAMPLES=2000 hunts longer with fresh random examples; by default CI sees
# the same 60 examples each run, so a failure there reproduces.
HUNT = int(os.environ.get("PURRSIGHT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=HUNT or 60,
    deadline=timedelta(seconds=3),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=not HUNT,
    database=None,
)


@contextlib.contextmanager
def no_hang(seconds: float = 10.0):
    """Fail (instead of hanging the suite) if the body runs longer than ``seconds``."""

    def _alarm(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------------------- JSONL lines

REPORT = {
    "emotion": "content",
    "confidence": 0.7,
    "arousal": "low",
    "evidence": {"ears": "upright"},
    "summary": "Calm.",
    "advice": "None.",
    "modalities": ["image"],
}
PATHS = st.one_of(
    st.sampled_from(
        [
            "img/ok.png",
            "aud/ok.wav",
            "vid/ok.mp4",
            "img/bad.png",
            "img/nope.png",
            "../x.png",
            "/etc/passwd",
            "link/x.png",
            "img",
            "a\x00b.png",
            "img/ok.png/x.png",
            "x" * 300 + ".png",
        ]
    ),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES = {
    "id": st.text(max_size=8) | JSON_VALUES,
    "image": PATHS | JSON_VALUES,
    "audio": PATHS,
    "video": PATHS,
    "instruction": st.text(max_size=30) | JSON_VALUES,
    "response": st.just(REPORT) | st.text(max_size=30) | JSON_VALUES,
    "label": st.sampled_from(["content", "playful", "sleepy", None]) | JSON_VALUES,
    "subject_id": st.sampled_from(["cat-1", "cat-2", None]) | JSON_VALUES,
    "meta": JSON_VALUES,
    "colour": JSON_VALUES,
}
BASE = {
    "id": st.sampled_from(["s-1", "s-2", "s-3"]),
    "image": PATHS,
    "response": st.just("A cat."),
}
NEAR_VALID = st.fixed_dictionaries(
    BASE, optional={k: v for k, v in FIELD_VALUES.items() if k not in BASE}
) | st.fixed_dictionaries({}, optional=FIELD_VALUES)


def _as_line(item) -> str:
    if isinstance(item, str):
        return item
    return json.dumps(item, allow_nan=True)


LINES = st.lists(
    st.one_of(
        NEAR_VALID.map(_as_line),
        JSON_VALUES.map(_as_line),
        st.text(max_size=80),
        st.sampled_from(['{"id": "x"', "[", "{" * 5000, "\ufeff{}", '{"id": "a", "image": ']).map(
            str
        ),
    ).map(lambda line: line.replace("\n", " ")),
    max_size=8,
)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A data folder with a good image, audio and video, a bad image, and an outward link."""
    root = tmp_path_factory.mktemp("fuzz_data")
    for sub in ("img", "aud", "vid"):
        (root / sub).mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "img/ok.png")
    (root / "img/bad.png").write_bytes(b"not an image")
    sf.write(root / "aud/ok.wav", np.zeros(800, np.float32), 8000)
    write_video(root / "vid/ok.mp4", frames=3)
    (root / "link").symlink_to(tmp_path_factory.mktemp("outside"))
    return root


@FUZZ
@given(lines=LINES)
def test_random_jsonl_lines_become_samples_or_line_errors(data_root: Path, lines) -> None:
    path = data_root / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    nonblank = [i for i, line in enumerate(lines, start=1) if line.strip()]
    with no_hang():
        items = list(iter_manifest(path, ["content", "playful"]))
        report = check_dataset([path], labels=["content", "playful"])
    assert len(items) == len(nonblank) == report.lines
    for item, number in zip(items, nonblank, strict=True):
        assert isinstance(item, Sample | ManifestError)
        if isinstance(item, ManifestError):
            assert str(item).startswith(f"{path}:{number}: ") and "\n" not in str(item)
    for problem in report.problems:
        assert problem.kind in PROBLEM_KINDS and problem.where.startswith(str(path))
    errors = [x for x in items if isinstance(x, ManifestError)]
    try:
        samples = read_manifest(path, ["content", "playful"])
    except ManifestError as err:
        assert errors or not nonblank, "read_manifest refused a file whose lines all parse"
        assert not nonblank or str(err) == str(errors[0])
    else:
        assert not errors and len(samples) == len(nonblank)


# ----------------------------------------------------------------------------- media bytes


def _seed_files() -> dict[str, bytes]:
    """One small valid file per extension, to mutate."""
    out: dict[str, bytes] = {}
    img = Image.effect_noise((24, 16), 40).convert("RGB")
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP")):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[ext] = buf.getvalue()
    tone = np.sin(np.arange(4000) / 5).astype(np.float32) * 0.3
    for ext, fmt in (("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG")):
        buf = io.BytesIO()
        sf.write(buf, tone, 8000, format=fmt)
        out[ext] = buf.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        write_video(Path(tmp) / "v.mp4", frames=4)
        out["mp4"] = (Path(tmp) / "v.mp4").read_bytes()
    return out


SEEDS = _seed_files()
MODALITY = {"png": "image", "jpg": "image", "webp": "image", "bmp": "image"}
MODALITY |= {"wav": "audio", "flac": "audio", "ogg": "audio", "mp4": "video"}
LIMITS = MediaConfig(max_image_pixels=1_000_000, max_audio_seconds=5, max_video_seconds=5)


@st.composite
def damaged(draw) -> tuple[str, bytes]:
    """(extension, bytes): a valid file with bytes overwritten and maybe truncated, or noise."""
    ext = draw(st.sampled_from(sorted(SEEDS)))
    if draw(st.booleans()):
        return ext, draw(st.binary(max_size=2048))
    data = bytearray(SEEDS[ext])
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return ext, bytes(data[:cut])


def _assert_valid(modality: str, out) -> None:
    if modality == "image":
        assert isinstance(out, Image.Image) and out.mode == "RGB"
    elif modality == "audio":
        assert out.ndim == 1 and out.dtype == np.float32 and np.isfinite(out).all() and len(out)
    else:
        frames = out.frames
        assert frames and all(isinstance(f, Image.Image) and f.mode == "RGB" for f in frames)


@FUZZ
@given(case=damaged())
def test_damaged_media_is_a_media_error_or_a_valid_decode(tmp_path_factory, case) -> None:
    ext, data = case
    path = tmp_path_factory.getbasetemp() / f"fuzz.{ext}"
    path.write_bytes(data)
    modality = MODALITY[ext]
    try:
        with no_hang():
            out = decode_media(modality, path, LIMITS)
    except MediaError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
        assert err.kind in MEDIA_ERROR_KINDS
    else:
        _assert_valid(modality, out)


def test_the_seed_files_decode(tmp_path: Path) -> None:
    """Without this the property above could pass with every file refused."""
    for ext, data in SEEDS.items():
        path = tmp_path / f"seed.{ext}"
        path.write_bytes(data)
        _assert_valid(MODALITY[ext], decode_media(MODALITY[ext], path, LIMITS))


# ----------------------------------------------------------------------------- config


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


CONFIG_KEYS = _leaf_keys(Config)
SECTIONS = sorted({k.rsplit(".", 1)[0] for k in CONFIG_KEYS if "." in k})
CONFIG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.sampled_from([0, 1, -1, 2, 32, 4096, 4097]),
    st.floats(),
    st.sampled_from([0.0, 0.5, 1.0, 1e-5, -0.1]),
    st.text(max_size=12),
    st.sampled_from(["32", "bf16-mixed", "hf", "mean", "minilm", "aisfx", "efficientnet_lite0"]),
    st.lists(st.text(max_size=6) | st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def _set(raw: dict, dotted: str, value) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _floats(node) -> list[float]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in _floats(v)]
    if isinstance(node, list):
        return [x for v in node for x in _floats(v)]
    return [node] if isinstance(node, float) else []


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(CONFIG_KEYS + SECTIONS + ["nonsense", "media.nope"]),
        CONFIG_VALUES,
        min_size=1,
        max_size=3,
    )
)
def test_random_config_values_give_a_config_error_naming_the_key_or_a_valid_config(
    tmp_path_factory, values: dict
) -> None:
    raw: dict = {}
    for key in sorted(values, key=len):  # sections first, so a leaf can sit inside one
        with contextlib.suppress(AttributeError, TypeError):
            _set(raw, key, values[key])
    path = tmp_path_factory.getbasetemp() / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    try:
        config = load_config(path)
    except ConfigError as err:
        text = str(err)
        assert text.startswith(f"{path}: ") and "\n" not in text
        named = text.split(": ", 2)[1]  # "<file>: <key>: <problem>" / "unknown key 'k'; …"
        assert any(k in named for k in _keys_in(raw)), text
    else:
        assert all(math.isfinite(x) for x in _floats(config.model_dump()))


def _keys_in(raw: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in raw.items():
        out.append(prefix + str(key))
        if isinstance(value, dict):
            out += _keys_in(value, f"{prefix}{key}.")
    return out
