"""The instruction JSONL: schema, path safety, and errors naming file and line."""

import json
from pathlib import Path

import pytest

from purrsight.data.manifest import ManifestError, iter_manifest, read_manifest
from purrsight.report import Report

REPORT = {
    "emotion": "fearful",
    "confidence": 0.8,
    "alternatives": [{"emotion": "aggressive", "p": 0.1}],
    "arousal": "high",
    "evidence": {"ears": "flattened", "tail": "puffed", "vocalization": "hiss"},
    "summary": "The cat is frightened.",
    "advice": "Give it space.",
    "modalities": ["image"],
}


def _write(tmp_path: Path, lines: list) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _sample(i: int, **extra) -> dict:
    return {"id": f"s-{i}", "image": f"img/{i}.png", "response": REPORT, **extra}


def test_reads_samples_and_resolves_paths(tmp_path: Path) -> None:
    path = _write(
        tmp_path, [_sample(1, label="fearful", subject_id="cat-1"), "", _sample(2, audio="a/2.wav")]
    )
    samples = read_manifest(path, labels=["fearful", "content"])
    assert [s.id for s in samples] == ["s-1", "s-2"]
    assert samples[0].image == (tmp_path / "img/1.png").resolve()
    assert isinstance(samples[0].response, Report)
    assert samples[0].text == "The cat is frightened."
    assert samples[1].modalities == ["image", "audio"]
    assert samples[1].source == f"{path}:3"


def test_plain_text_response_is_its_own_caption(tmp_path: Path) -> None:
    s = read_manifest(_write(tmp_path, [{"id": "a", "audio": "x.wav", "response": "A hiss."}]))[0]
    assert s.text == "A hiss." and s.response_json() == "A hiss."


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("[" * 100_000 + "]" * 100_000, "malformed JSON (nested too deeply)"),
        ({"id": "x", "response": "r"}, "at least one of image, audio, video"),
        ({"id": "x", "image": "a.png"}, "response: Field required"),
        ({"id": "x", "image": "/etc/passwd", "response": "r"}, "absolute path"),
        ({"id": "x", "image": "../../secret.png", "response": "r"}, "leaves the data folder"),
        (
            {"id": "x", "image": "a.png", "response": "r", "label": "sleepy"},
            "label 'sleepy' is not one of",
        ),
        ({"id": "x", "image": "a.png", "response": "r", "colour": "red"}, "colour: Extra inputs"),
        ({"id": "x", "image": "a.png", "response": {**REPORT, "confidence": 2}}, "confidence"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line, fragment: str) -> None:
    path = _write(tmp_path, [_sample(1), line])
    with pytest.raises(ManifestError) as err:
        read_manifest(path, labels=["fearful"])
    assert str(err.value).startswith(f"{path}:2: ")
    assert fragment in str(err.value)


def test_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "data"
    root.mkdir()
    (root / "link").symlink_to(outside)
    path = root / "train.jsonl"
    path.write_text(json.dumps({"id": "x", "image": "link/a.png", "response": "r"}) + "\n")
    with pytest.raises(ManifestError, match="leaves the data folder"):
        read_manifest(path)


def test_duplicate_ids_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r":2: duplicate id 's-1' \(first at .*:1\)"):
        read_manifest(_write(tmp_path, [_sample(1), _sample(1)]))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ManifestError, match="no samples"):
        read_manifest(empty)
    with pytest.raises(ManifestError, match="data file not found"):
        read_manifest(tmp_path / "missing.jsonl")


def test_a_line_that_is_not_utf8_is_named_and_the_rest_still_read(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    good = json.dumps(_sample(1)).encode()
    path.write_bytes(
        good + b"\n" + b'{"id": "caf\xe9"}\n' + json.dumps(_sample(3)).encode() + b"\n"
    )
    items = list(iter_manifest(path))
    assert [type(x).__name__ for x in items] == ["Sample", "ManifestError", "Sample"]
    assert (
        str(items[1]).startswith(f"{path}:2: not UTF-8 text") and items[1].kind == "malformed_json"
    )
    with pytest.raises(ManifestError, match=r":2: not UTF-8"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("media", "kind", "fragment"),
    [
        ("a\x00b.png", "schema", "NUL character"),
        ("/etc/passwd", "path_outside", "absolute path"),
        ("img/../../x.png", "path_outside", "leaves the data folder"),
        ("loop/a.png", "unreadable_media", "cannot resolve"),
    ],
)
def test_unsafe_paths_are_refused_with_their_kind(
    tmp_path: Path, media: str, kind: str, fragment: str
) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    path = _write(tmp_path, [{"id": "x", "image": media, "response": "r"}])
    (item,) = list(iter_manifest(path))
    assert isinstance(item, ManifestError) and item.kind == kind and fragment in str(item)
    assert str(item).startswith(f"{path}:1: image: ")
