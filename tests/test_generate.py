"""Batched report generation with a tiny random Qwen2 and the real Qwen2.5 tokenizer."""

from __future__ import annotations

import copy
import json
import logging
import re

import pytest
import torch

from purrsight.data.instruction import collate
from purrsight.inference.generate import build_items, generate_reports, generate_texts
from purrsight.models.mm_llm import build_multimodal_llm
from purrsight.vocabulary import DEFAULT_LABELS
from qwen_fixture import qwen_tokenizer, tiny_qwen

E, K = 8, 3  # aligned feature size, soft tokens per modality
NEW = 8  # tokens generated per sample: enough to tell rows apart, cheap on CPU


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tok = qwen_tokenizer()
    torch.manual_seed(0)
    model = build_multimodal_llm(
        copy.deepcopy(tiny_qwen(len(tok))),
        tok,
        in_dim=E,
        num_tokens=K,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
    )
    return model.eval(), tok


def _samples() -> tuple[list[dict[str, torch.Tensor]], list[str]]:
    """Six samples whose prompts differ in length (modality sets and instructions), in an
    order that sorting by length changes."""
    gen = torch.Generator().manual_seed(3)
    specs = [
        (["image", "audio", "text"], "How does this cat feel right now, in detail?"),
        (["audio"], "Mood?"),
        (["image"], "How does this cat feel?"),
        (["image", "audio"], "And this one?"),
        (["text"], "What does the owner's note say about the cat's state?"),
        (["audio", "image"], "Mood?"),  # order of keys must not matter
    ]
    features = [{m: torch.randn(E, generator=gen) for m in mods} for mods, _ in specs]
    return features, [instruction for _, instruction in specs]


def test_prompts_are_not_already_sorted(model_and_tokenizer):
    _, tok = model_and_tokenizer
    features, instructions = _samples()
    lengths = [len(item["input_ids"]) for item in build_items(tok, features, instructions, K)]
    assert lengths != sorted(lengths) and len(set(lengths)) > 3


def test_batched_generation_equals_one_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    features, instructions = _samples()
    single, stats1 = generate_texts(model, tok, features, instructions, K, NEW, batch_size=1)
    batched, stats4 = generate_texts(model, tok, features, instructions, K, NEW, batch_size=4)
    assert batched == single
    assert len(set(single)) == len(single)  # rows differ, so a mix-up would show
    assert (stats1.batches, stats4.batches) == (6, 2)
    assert stats1.generated_tokens == stats4.generated_tokens > 0
    assert stats1.truncated == stats4.truncated and len(stats1.truncated) == 6


def test_progress_lines_come_per_batch_only_when_asked(model_and_tokenizer, caplog):
    model, tok = model_and_tokenizer
    features, instructions = _samples()
    caplog.set_level(logging.INFO, logger="purrsight.inference.generate")
    generate_texts(model, tok, features, instructions, K, NEW, batch_size=4)
    assert not caplog.records  # a server's call: quiet
    generate_texts(model, tok, features, instructions, K, NEW, batch_size=4, progress="gen")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert re.fullmatch(r"gen report 4/6 \(66 %\): tokens/s \S+, \S+ s/report, ETA \d+ s", lines[0])
    assert lines[1].startswith("gen report 6/6 (100 %): ") and lines[1].endswith("ETA 0 s")


def test_left_padded_batch_gives_the_same_token_ids(model_and_tokenizer):
    # Token ids, not just text: left padding must change nothing (positions come from the
    # attention mask, padding is masked), so greedy choices agree exactly.
    model, tok = model_and_tokenizer
    features, instructions = _samples()
    items = build_items(tok, features, instructions, K)
    stop = {tok.eos_token_id}
    batch = collate(items, tok.pad_token_id, padding_side="left")
    assert not bool(batch.attention_mask.all())  # there is padding to get wrong
    together = model.generate_ids(max_new_tokens=NEW, stop_ids=stop, **batch.model_inputs())
    for row, item in enumerate(items):
        alone = collate([item], tok.pad_token_id, padding_side="left")
        ids = model.generate_ids(max_new_tokens=NEW, stop_ids=stop, **alone.model_inputs())
        n = ids.shape[1]
        assert torch.equal(together[row, :n], ids[0]), row


def test_generate_reports_keeps_order_and_parses(model_and_tokenizer, monkeypatch):
    """With generation replaced by a stub that answers a report naming a label chosen by
    each row's own feature values, every result must land at its own sample."""
    model, tok = model_and_tokenizer
    features, instructions = _samples()
    labels = list(DEFAULT_LABELS)

    def label_of(feats: dict[str, torch.Tensor]) -> str:
        total = sum(float(f.sum()) for f in feats.values())
        return labels[int(abs(total) * 1000) % len(labels)]

    def fake_generate_ids(max_new_tokens, stop_ids, features, present, **_):
        rows = []
        for row in range(next(iter(present.values())).shape[0]):
            feats = {m: features[m][row] for m in features if present[m][row]}
            report = {
                "emotion": label_of(feats).upper(),  # canonicalised by the parser
                "confidence": 0.7,
                "arousal": "low",
                "evidence": {"ears": "forward"},
                "summary": "s",
                "advice": "a",
                "modalities": ["video"],  # replaced by what the sample really had
            }
            ids = tok(json.dumps(report), add_special_tokens=False)["input_ids"]
            rows.append([*ids, tok.eos_token_id])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows])

    monkeypatch.setattr(model, "generate_ids", fake_generate_ids)
    results = generate_reports(model, tok, features, instructions, labels, K, batch_size=4)
    assert len(results) == len(features)
    for result, feats in zip(results, features, strict=True):
        assert result.status == "repaired" and result.report is not None
        assert result.report.emotion == label_of(feats)
        assert result.report.modalities == [m for m in ("image", "audio", "text") if m in feats]
        assert result.report.welfare_alert == (result.report.emotion == "in_pain")


def test_generate_reports_marks_random_output_invalid(model_and_tokenizer):
    model, tok = model_and_tokenizer
    features, _ = _samples()
    results = generate_reports(model, tok, features, "Mood?", DEFAULT_LABELS, K, NEW, 3)
    assert len(results) == 6
    for result in results:  # a random model writes no report; none may pass as one
        assert result.status == "invalid" and result.report is None and result.error


def test_instruction_count_must_match(model_and_tokenizer):
    model, tok = model_and_tokenizer
    features, _ = _samples()
    with pytest.raises(ValueError, match="2 instructions for 6 samples"):
        generate_texts(model, tok, features, ["a", "b"], K, NEW)
