"""One vocabulary: every list of modalities, label table and default text is the one in
:mod:`purrsight.vocabulary` (or a named subset of it), and the atomic writer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from purrsight import vocabulary as v
from purrsight.config import load_config
from purrsight.data import demo
from purrsight.data.importers.common import Candidate, build_report
from purrsight.data.instruction import MODALITY_NAMES, PLACEHOLDERS
from purrsight.files import atomic_write
from purrsight.inference.server.uploads import TEXT_FIELDS
from purrsight.models.projector import Projectors
from purrsight.report import Arousal, Modality
from purrsight.train.phase2_data import PHASE2_MODALITIES

ROOT = Path(__file__).resolve().parents[1]


def test_named_modality_subsets_come_from_the_one_tuple() -> None:
    assert v.MODALITIES == ("image", "audio", "text")
    assert set(v.MEDIA_MODALITIES) <= set(v.MODALITIES)
    assert set(PHASE2_MODALITIES) <= set(v.MODALITIES)
    assert (*v.MEDIA_MODALITIES, v.VIDEO) == v.MEDIA_FIELDS
    assert get_args(Modality) == v.INPUTS == ("image", "audio", "video", "text")
    assert set(PLACEHOLDERS) == set(MODALITY_NAMES) == set(v.MODALITIES)
    assert list(Projectors(in_dim=4, llm_dim=4, num_tokens=1)) == list(v.MODALITIES)


def test_label_tables_cover_the_default_labels() -> None:
    assert set(v.ADVICE) == set(v.LABEL_AROUSAL) == set(v.DEFAULT_LABELS)
    assert set(v.LABEL_AROUSAL.values()) <= set(v.AROUSAL_LEVELS)
    assert get_args(Arousal) == v.AROUSAL_LEVELS
    assert set(v.DEFAULT_LABELS) >= v.WELFARE_LABELS and v.UNSURE not in v.DEFAULT_LABELS
    # The advice a report built from label scores gives is the demo data's first text.
    assert v.label_advice("playful") == "Offer a wand toy or a ball to play with."
    assert v.label_advice("bored") == v.GENERIC_ADVICE
    assert v.label_arousal("bored") == v.DEFAULT_AROUSAL


def test_imported_reports_use_the_same_tables() -> None:
    report = build_report("fearful", Candidate("k", "Scared", None), ["audio"], 0.7)
    assert report.advice == v.ADVICE["fearful"][0]
    assert report.arousal == v.LABEL_AROUSAL["fearful"]


def test_default_instruction_is_the_one_everywhere() -> None:
    assert load_config(None).inference.instruction == v.DEFAULT_INSTRUCTION
    assert demo.INSTRUCTIONS_ANY[0] == v.DEFAULT_INSTRUCTION


def test_the_web_page_sends_only_fields_the_server_reads() -> None:
    page = (ROOT / "src/purrsight/inference/server/static/index.html").read_text()
    sent = set(re.findall(r'form\.append\("(\w+)"', page))
    assert sent and sent <= {*v.MEDIA_FIELDS, *TEXT_FIELDS}


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path) -> None:
    path = tmp_path / "sub" / "out.json"
    atomic_write(path, "first")
    atomic_write(path, b"second")
    atomic_write(path, lambda handle: handle.write(b"third"), durable=True)
    assert path.read_text() == "third"

    def broken(handle) -> None:
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "third"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]
