"""Constrained generation (purrsight.inference.grammar): tiny RANDOM models, which write
garbage when free, write only answers the report schema accepts, with no cue of an input
the request did not give."""

from __future__ import annotations

import copy
import json
import sys
from types import SimpleNamespace

import pytest
import torch

from purrsight.inference.generate import generate_texts
from purrsight.inference.grammar import AnswerGrammar, GrammarConstraint, bundle_grammar
from purrsight.inference.reading import CUE_MODALITY, UNCLEAR, ReadOut, reading_prefix
from purrsight.inference.report_parse import parse_report
from purrsight.models.mm_llm import build_multimodal_llm
from purrsight.models.reading_heads import HeadSpec
from purrsight.report import ANSWER_FIELDS, READING_FIELDS, Evidence
from purrsight.vocabulary import DEFAULT_LABELS
from qwen_fixture import byte_tokenizer, qwen_tokenizer, tiny_llama, tiny_qwen

E, K = 8, 3
LABELS = tuple(DEFAULT_LABELS)
CUES = {
    "ears": ("upright", "forward", "sideways", "flattened"),
    "eyes": ("half-closed", "normal", "wide", "dilated"),
    "tail": ("up", "up with hooked tip", "wrapped", "low", "puffed", "lashing"),
    "posture": ("lying loaf", "sitting", "standing", "crouched", "arched back", "hunched"),
    "vocalization": ("meow", "purr", "hiss", "growl", "trill", "yowl", "quiet"),
}
REQUESTS = (
    ["image"],
    ["audio"],
    ["image", "audio"],
    ["text"],
    ["image", "audio", "text"],
    ["audio", "text"],
    ["image"],
    ["audio"],
)
IMAGE_CUES = [c for c, m in CUE_MODALITY.items() if m == "image"]


def _model(tok, make, seed: int):
    torch.manual_seed(seed)
    llm = copy.deepcopy(make(len(tok), seed=seed))
    model = build_multimodal_llm(
        llm, tok, in_dim=E, num_tokens=K, lora_r=4, lora_alpha=8, lora_dropout=0.0
    )
    return model.eval()


def _features(seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(100 + seed)
    return [{m: torch.randn(E, generator=gen) for m in mods} for mods in REQUESTS]


@pytest.fixture(scope="module")
def qwen_model():
    tok = qwen_tokenizer()
    return _model(tok, tiny_qwen, 0), tok


def _check(texts, features, grammar: AnswerGrammar, truncated) -> None:
    assert not any(truncated)
    for text, feats in zip(texts, features, strict=True):
        result = parse_report(text, LABELS, modalities=list(feats))
        assert result.status == "valid", (result.error, text)
        evidence = result.report.evidence
        if "audio" not in feats:
            assert evidence.vocalization is None, text
        if "image" not in feats:
            assert all(getattr(evidence, c) is None for c in IMAGE_CUES), text
        answer = json.loads(text)
        assert list(answer) == [f for f in ANSWER_FIELDS if f in grammar.answer_fields]
        for cue, value in answer["evidence"].items():
            assert value is None or value in grammar.cues[cue], (cue, value)


@pytest.mark.parametrize("seed", range(4))
def test_random_byte_model_writes_only_valid_reports(seed):
    """A merge-free byte tokenizer is the worst case (one byte a token): every answer of a
    random model is complete and valid, whole answers and answers after a label prefix."""
    tok = byte_tokenizer()
    model = _model(tok, tiny_llama, seed)
    features = _features(seed)
    grammar = AnswerGrammar(LABELS, ANSWER_FIELDS, cues=CUES, text_chars=24)
    for prefixes in (None, [f'{{"emotion":"{LABELS[seed]}","'] * len(features)):
        texts, stats = generate_texts(
            model, tok, features, "Mood?", K, 4, batch_size=3, prefixes=prefixes, grammar=grammar
        )
        _check(texts, features, grammar, stats.truncated)
        if prefixes is not None:
            assert all(json.loads(t)["emotion"] == LABELS[seed] for t in texts)


def test_random_qwen_model_writes_only_valid_reports(qwen_model):
    model, tok = qwen_model
    for seed in range(3):
        features = _features(seed)
        grammar = AnswerGrammar(LABELS, READING_FIELDS, cues=CUES)
        starts = [f'{{"emotion":"{LABELS[(seed + i) % 7]}","' for i in range(len(features))]
        texts, stats = generate_texts(
            model, tok, features, "How does this cat feel?", K, 8, batch_size=4,
            prefixes=starts, grammar=grammar,
        )  # fmt: skip
        _check(texts, features, grammar, stats.truncated)


def test_unconstrained_random_model_writes_garbage(qwen_model):
    # The contrast: the same model without the grammar writes no report.
    model, tok = qwen_model
    texts, _ = generate_texts(model, tok, _features(0), "Mood?", K, 8, batch_size=4)
    assert not any(parse_report(t, LABELS).ok for t in texts)


def test_batched_constrained_generation_equals_one_at_a_time(qwen_model):
    model, tok = qwen_model
    features = _features(1)
    grammar = AnswerGrammar(LABELS, ANSWER_FIELDS, cues=CUES, text_chars=16)
    starts = ['{"emotion":"curious","'] * len(features)
    run = {
        size: generate_texts(
            model, tok, features, "Mood?", K, 8, batch_size=size, prefixes=starts, grammar=grammar
        )
        for size in (1, 4)
    }
    assert run[4][0] == run[1][0]
    assert run[4][1].generated_tokens == run[1][1].generated_tokens
    assert len(set(run[1][0])) > 2  # rows differ, so a mix-up would show


def _tokens(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("modalities", "answer", "accepted"),
    [
        (["image"], '{"emotion":"content","arousal":"low","evidence":{"ears":"upright",', True),
        (["image"], '"eyes":null,"tail":null,"posture":null,"vocalization":null}}', True),
        (["image"], '"eyes":null,"tail":null,"posture":null,"vocalization":"purr"}}', False),
        (["audio"], '{"emotion":"content","arousal":"low","evidence":{"ears":"upright"', False),
        (["audio"], '{"emotion":"content","arousal":"low","evidence":{"ears":null,', True),
        (["image", "audio"], '{"emotion":"happy"', False),
        (
            ["image", "audio"],
            '{"emotion":"content","arousal":"low","evidence":{"ears":"big"',
            False,
        ),
        (["image", "audio"], '{"emotion":"content", "arousal"', False),  # compact JSON only
    ],
)
def test_the_grammar_refuses_what_the_schema_does(modalities, answer, accepted):
    """An image-only answer can never name a sound, an audio-only one never ears (etc.),
    nor any emotion or cue value outside the bundle's."""
    tok = byte_tokenizer()
    grammar = AnswerGrammar(LABELS, READING_FIELDS, cues=CUES)
    head = '{"emotion":"content","arousal":"low","evidence":{"ears":"upright",'
    prefix = "" if answer.startswith("{") else head
    constraint = GrammarConstraint(tok, [grammar.schema(modalities)], [_tokens(tok, prefix)], [258])
    constraint.mask(torch.zeros(1, len(tok)))
    matcher = constraint.matchers[0]
    assert matcher.consume_tokens(_tokens(tok, answer)) == accepted


def test_the_grammar_allows_only_stop_tokens_once_complete():
    tok = byte_tokenizer()
    grammar = AnswerGrammar(LABELS, READING_FIELDS, cues=CUES)
    answer = (
        '{"emotion":"content","arousal":"low","evidence":{"ears":null,"eyes":null,'
        '"tail":null,"posture":null,"vocalization":"purr"}}'
    )
    constraint = GrammarConstraint(tok, [grammar.schema(["audio"])], [_tokens(tok, answer)], [258])
    masked = constraint.mask(torch.zeros(1, len(tok)))
    assert torch.isfinite(masked[0]).nonzero().flatten().tolist() == [258]
    assert len(answer.encode()) <= grammar.max_bytes(["audio"])


def test_a_start_outside_the_grammar_is_refused():
    tok = byte_tokenizer()
    grammar = AnswerGrammar(LABELS, READING_FIELDS)
    start = '{"emotion":"sleepy","'
    constraint = GrammarConstraint(tok, [grammar.schema(["image"])], [_tokens(tok, start)], [258])
    with pytest.raises(ValueError, match="sleepy.*breaks its grammar"):
        constraint.mask(torch.zeros(1, len(tok)))


def test_a_bundle_reading_prefix_is_accepted():
    """With reading heads, the LLM writes on after the reading (the predictor's prefix):
    ``unclear`` cues, a null arousal and absent inputs' null cues are all accepted."""
    tok = byte_tokenizer()
    specs = {c: HeadSpec(c, (m,), CUES[c]) for c, m in CUE_MODALITY.items() if c != "tail"}
    reading = SimpleNamespace(heads=SimpleNamespace(specs=specs))
    grammar = bundle_grammar(LABELS, ANSWER_FIELDS, reading)
    assert grammar.cues["tail"] == () and UNCLEAR in grammar.cues["ears"]
    read = ReadOut(Evidence(ears=UNCLEAR, eyes="wide", posture="sitting"), None, {})
    start = reading_prefix("fearful", read, "summary")
    constraint = GrammarConstraint(tok, [grammar.schema(["image"])], [_tokens(tok, start)], [258])
    constraint.mask(torch.zeros(1, len(tok)))  # consumes the prefix
    assert constraint.matchers[0].consume_tokens(_tokens(tok, 'Calm.","advice":"Wait."}'))
    assert constraint.matchers[0].is_accepting()


def test_missing_library_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    tok = byte_tokenizer()
    with pytest.raises(ImportError, match="llguidance"):
        GrammarConstraint(tok, [AnswerGrammar(LABELS).schema(["image"])], [[]], [258])


def test_pick_is_the_best_allowed_token():
    """``pick`` checks the model's own best token first; it must agree with the argmax of
    the fully masked logits, whether the best token is allowed or not."""
    tok = byte_tokenizer()
    grammar = AnswerGrammar(LABELS, ANSWER_FIELDS, cues=CUES)
    starts = ['{"emotion":"', '{"emotion":"content","arousal":"low","evidence":{"ears":null,']
    schemas = [grammar.schema(["image"]), grammar.schema(["audio"])]
    constraint = GrammarConstraint(tok, schemas, [_tokens(tok, s) for s in starts], [258])
    gen = torch.Generator().manual_seed(0)
    for trial in range(50):
        logits = torch.randn(2, len(tok), generator=gen)
        allowed = torch.isfinite(constraint.mask(logits))
        if trial % 2:  # make the best token an allowed one
            logits[allowed] += 100
        assert torch.equal(constraint.pick(logits), constraint.mask(logits).argmax(-1))
