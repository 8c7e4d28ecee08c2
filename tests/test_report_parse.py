"""Parsing generated text into a validated report: valid, repaired or invalid, never lax."""

from __future__ import annotations

import json

import pytest

from purrsight.inference.report_parse import (
    canonical_label,
    extract_emotion,
    first_json_object,
    parse_report,
    repair_json,
)
from purrsight.vocabulary import DEFAULT_LABELS

LABELS = DEFAULT_LABELS
REPORT = {
    "emotion": "fearful",
    "confidence": 0.81,
    "alternatives": [{"emotion": "aggressive", "p": 0.12}],
    "arousal": "high",
    "evidence": {
        "ears": "flattened",
        "eyes": "dilated",
        "tail": "puffed",
        "posture": "crouched",
        "vocalization": "hiss",
    },
    "summary": "The cat is frightened and defensive.",
    "advice": "Give it space and a hiding place; do not reach for it.",
    "welfare_alert": False,
    "modalities": ["image", "audio"],
}
TEXT = json.dumps(REPORT)


def _text(**changes) -> str:
    return json.dumps({**REPORT, **changes})


UNCHECKED = {"subject": None, "subject_reason": "", "in_range": None}
"""The subject / range check's fields of a report no predictor has checked."""


def test_valid_json_parses_unchanged():
    result = parse_report(TEXT, LABELS)
    assert result.status == "valid" and result.error is None and result.repairs == ()
    assert result.report is not None and result.ok
    assert result.report.model_dump() == {**REPORT, **UNCHECKED}
    assert result.raw == TEXT


def test_fenced_json_and_chatter_are_stripped():
    for text in [
        f"```json\n{TEXT}\n```",
        f"Here is the report:\n```\n{TEXT}\n```\nHope it helps!",
        f"Sure, here's my reading: {TEXT} Anything else?",
        f"```json\n{TEXT}",  # closing fence never generated
    ]:
        result = parse_report(text, LABELS)
        assert result.status == "valid", (text, result.error)
        assert result.report.emotion == "fearful"


def test_braces_inside_strings_do_not_end_the_object():
    text = _text(summary="Tail {puffed} and ears back }") + " trailing }"
    assert first_json_object(text) == (_text(summary="Tail {puffed} and ears back }"), True)
    assert parse_report(text, LABELS).status == "valid"


def test_truncated_json_is_closed_and_marked_repaired():
    # Cut inside the last (optional) field: the schema accepts what remains.
    cut = TEXT[: TEXT.index('"welfare_alert"') + len('"welfare_al')]
    result = parse_report(cut, LABELS)
    assert result.status == "repaired" and result.error is None
    assert "closed truncated output" in result.repairs
    assert result.report.advice == REPORT["advice"]
    assert result.report.welfare_alert is False and result.report.modalities == []

    # A string value cut mid-way is kept as far as it got.
    cut = TEXT[: TEXT.index("hiding place")]
    result = parse_report(cut, LABELS)
    assert result.status == "repaired"
    assert result.report.advice == "Give it space and a "


def test_truncated_json_is_valid_only_if_the_schema_accepts_it():
    # Cut before `evidence`: the JSON closes, but a required field is missing.
    cut = TEXT[: TEXT.index('"evidence"') + 3]
    closed, repairs = repair_json(cut)
    assert json.loads(closed)["arousal"] == REPORT["arousal"]
    assert repairs == ["closed truncated output"]
    result = parse_report(cut, LABELS)
    assert result.status == "invalid" and result.report is None
    assert "evidence: Field required" in result.error

    # A number cut off mid-way is dropped, never guessed ("0." is not 0.81).
    cut = TEXT[: TEXT.index("0.81") + 2]
    assert json.loads(repair_json(cut)[0]) == {"emotion": "fearful"}
    assert parse_report(cut, LABELS).status == "invalid"


def test_string_cut_inside_an_escape_is_closed_cleanly():
    text = json.dumps({**REPORT, "advice": "Café\u00e9 \\ done"}, ensure_ascii=True)
    start = text.index('"advice": "') + len('"advice": "')
    for end in range(start, text.index(" done")):
        closed, _ = repair_json(text[:end])
        assert json.loads(text)["advice"].startswith(json.loads(closed)["advice"])


@pytest.mark.parametrize("cut", range(0, len(TEXT) + 1, 7))
def test_every_truncation_point_gives_a_report_or_a_reason(cut):
    result = parse_report(TEXT[:cut], LABELS, modalities=["image"])
    assert (result.report is None) == (result.status == "invalid")
    assert (result.error is None) == (result.status != "invalid")
    if result.report is not None:
        assert result.report.emotion == "fearful"
        assert result.report.modalities == ["image"]


def test_trailing_commas_and_single_quotes_are_repaired():
    result = parse_report(TEXT.replace("}", ", }").replace("]", ",]"), LABELS)
    assert result.status == "repaired" and result.repairs == ("removed trailing commas",)
    assert result.report.model_dump() == {**REPORT, **UNCHECKED}

    single = TEXT.replace('"', "'").replace("The cat is", "The cat\\'s")
    result = parse_report(single, LABELS)
    assert result.status == "repaired" and "converted single quotes" in result.repairs
    assert result.report.summary == "The cat's frightened and defensive."


def test_wrong_label_is_invalid():
    result = parse_report(_text(emotion="sleepy"), LABELS)
    assert result.status == "invalid" and result.report is None
    assert "'sleepy' is not one of the labels" in result.error


def test_label_spelling_is_repaired_to_the_canonical_label():
    result = parse_report(_text(emotion="  Fearful "), LABELS)
    assert result.status == "repaired" and result.report.emotion == "fearful"
    assert canonical_label("In-Pain", LABELS) == "in_pain"
    assert canonical_label("in pain", LABELS) == "in_pain"
    assert canonical_label("pain", LABELS) is None


def test_alternatives_outside_the_label_set_are_dropped():
    alts = [{"emotion": "Aggressive", "p": 0.1}, {"emotion": "bored", "p": 0.05}]
    result = parse_report(_text(alternatives=alts), LABELS)
    assert result.status == "repaired"
    assert [a.emotion for a in result.report.alternatives] == ["aggressive"]


def test_in_pain_sets_the_welfare_alert():
    result = parse_report(_text(emotion="In Pain", welfare_alert=False), LABELS)
    assert result.report.emotion == "in_pain" and result.report.welfare_alert is True


def test_out_of_range_or_mistyped_values_are_invalid_not_clamped():
    for changes, field in [
        ({"confidence": 1.3}, "confidence"),
        ({"confidence": -0.1}, "confidence"),
        ({"confidence": "0.8"}, "confidence"),  # strict: no str → float coercion
        ({"welfare_alert": "yes"}, "welfare_alert"),
        ({"arousal": "extreme"}, "arousal"),
        ({"evidence": {"whiskers": "forward"}}, "evidence.whiskers"),
    ]:
        result = parse_report(_text(**changes), LABELS)
        assert result.status == "invalid", changes
        assert result.error.startswith("report schema:") and field in result.error
    assert parse_report(TEXT.replace("0.81", "NaN"), LABELS).status == "invalid"


def test_given_modalities_replace_what_the_text_claims():
    result = parse_report(TEXT, LABELS, modalities=["audio"])
    assert result.status == "valid" and result.report.modalities == ["audio"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no JSON object"),
        ("The cat looks scared to me.", "no JSON object"),
        ("{{{{", "cannot be closed"),
        ('{"emotion": fearful}', "not valid JSON"),
        ("[1, 2, 3]", "no JSON object"),
        ('{"emotion": "fearful" "confidence": 0.5}', "not valid JSON"),
    ],
)
def test_garbage_is_invalid_with_a_reason(text, reason):
    result = parse_report(text, LABELS)
    assert result.status == "invalid" and result.report is None
    assert reason in result.error
    assert result.raw == text


def test_extract_emotion_reads_broken_text():
    assert extract_emotion('{"emotion": "Playful", "confidence": 0.9, "arou', LABELS) == "playful"
    assert extract_emotion("blah {'emotion': 'in pain', oops", LABELS) == "in_pain"
    assert extract_emotion('{"emotion":"curious"}}}}', LABELS) == "curious"
    assert extract_emotion('{"emotion": "sleepy"}', LABELS) is None
    assert extract_emotion('{"emotion": "fear', LABELS) is None  # cut off: unknown
    assert extract_emotion("no json here", LABELS) is None
