"""Export, load, predict and evaluate on a tiny model trained for real (a Lightning run of
a tiny Llama with a byte tokenizer, tiny ViT / Wav2Vec2 / BERT encoders, a random aligner).

Data: 9 train + 3 val samples; 2 optimizer steps are enough: the LoRA B matrices are
non-zero afterwards, so merging and the adapter files are really exercised.
"""

from __future__ import annotations

import json
import logging
import re
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from purrsight.cli import main
from purrsight.config import load_config
from purrsight.data.instruction import SYSTEM_PROMPT, collate
from purrsight.data.media import MediaError, MediaTooLarge
from purrsight.inference.bundle import load_bundle
from purrsight.inference.bundle_manifest import (
    ADAPTER_CONFIG,
    ADAPTER_FILE,
    MANIFEST,
    PROJECTORS_FILE,
)
from purrsight.inference.errors import BundleError, InputError
from purrsight.inference.evaluate import OUTPUT_FILES, evaluate_bundle
from purrsight.inference.export import export_bundle, model_from_checkpoint, read_phase2_checkpoint
from purrsight.inference.generate import build_items
from purrsight.inference.predictor import Predictor, answer_start, label_options
from purrsight.inference.reading import CUE_MODALITY
from purrsight.inference.report_parse import parse_report
from purrsight.report import (
    ANSWER_FIELDS,
    LABEL_ONLY_FIELDS,
    READING_FIELDS,
    Report,
    compose_summary,
)
from purrsight.train.phase2 import run_phase2
from purrsight.vocabulary import UNSURE, label_advice
from test_phase2_train import tiny_llama_run
from video_fixture import write_test_video

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_encoder_dirs):
    """(root, checkpoint path, config) of a 2-step Phase 2 run on tiny models."""
    root = tmp_path_factory.mktemp("inference")
    config = load_config(
        None,
        [
            *tiny_llama_run(root, tiny_encoder_dirs),
            f"output_dir={root / 'outputs'}",
            "num_epochs=1",
            "max_steps=2",
            "learning_rate=5e-2",
            "warmup_steps=0",
            "max_text_length=600",
            "max_new_tokens=6",
            "precision=32",
        ],
    )
    result = run_phase2(config)
    return root, result.last_checkpoint, config


@pytest.fixture(scope="module")
def bundle(trained):
    root, checkpoint, _ = trained
    out = root / "bundle"
    export_bundle(checkpoint, out)
    return out


@pytest.fixture(scope="module")
def predictor(bundle):
    # fp32 whatever the CPU: several tests compare scores to 1e-4 (auto: bf16 on some CPUs).
    return Predictor.from_bundle(bundle, precision="32")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """{"image": png, "audio": wav, "video": a 3 s MP4 of frames + a tone}."""
    root = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    image = root / "cat.png"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    audio = root / "meow.wav"
    _write_wav(audio, _tone(16000, 1.0, 600.0), 16000)
    return {"image": image, "audio": audio, "video": write_test_video(root / "clip.mp4")}


def _tone(rate: int, seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(rate)
        handle.writeframes((samples * 32767).astype(np.int16).tobytes())


def _batch(loaded, features_rows):
    """A left-padded prompt batch for the given feature rows."""
    items = build_items(
        loaded.tokenizer, features_rows, "How does this cat feel?", loaded.model.num_tokens
    )
    return collate(items, int(loaded.tokenizer.pad_token_id), padding_side="left")


def _rows(dim: int, n: int = 3) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    feats = torch.nn.functional.normalize(torch.randn(n, 2, dim), dim=-1)
    return [
        {"image": feats[0, 0], "audio": feats[0, 1]},
        {"image": feats[1, 0]},
        {"audio": feats[2, 1]},
    ][:n]


def _logits(model, batch) -> torch.Tensor:
    """[real tokens, v]: the logits at the batch's real (not padding) positions. Without
    labels: with them the training forward computes the loss only (no logits)."""
    inputs = {k: v for k, v in batch.model_inputs().items() if k != "labels"}
    with torch.no_grad():
        return model(**inputs).logits[batch.attention_mask.bool()]


# ----------------------------------------------------------------------------- export


def test_bundle_is_self_describing(trained, bundle) -> None:
    _, checkpoint, config = trained
    files = {p.name for p in bundle.iterdir()}
    for name in (MANIFEST, PROJECTORS_FILE, ADAPTER_FILE, ADAPTER_CONFIG, "aligner.pt"):
        assert name in files, name
    assert "aligner.json" in files and "llm" not in files  # the base LLM is referenced
    info = json.loads((bundle / MANIFEST).read_text())
    assert info["labels"] == config.labels and info["modalities"] == ["image", "audio"]
    assert info["num_soft_tokens"] == 2 and info["llm"]["kind"] == "adapter"
    assert info["llm"]["name"] == config.llm_model_name
    assert info["llm"]["identity"].startswith("llm:")
    assert info["lora"]["r"] == 4 and info["lora"]["target_modules"] == config.lora_target_modules
    assert info["encoders"]["image"]["identity"].startswith("hf-image:")
    assert info["prompt"]["system_prompt"] == SYSTEM_PROMPT
    assert info["prompt"]["answer_fields"] == list(ANSWER_FIELDS)
    assert info["inference"]["unsure_threshold"] == 0.4
    adapter = json.loads((bundle / ADAPTER_CONFIG).read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4
    assert info["source"]["global_step"] == 2


def test_exported_model_gives_the_checkpoints_logits(trained, bundle) -> None:
    _, checkpoint, _ = trained
    reference, _, _ = model_from_checkpoint(read_phase2_checkpoint(checkpoint))
    loaded = load_bundle(bundle)
    # LoRA really trained: B is not zero, so the adapter file matters.
    assert any(
        v.abs().sum() > 0 for k, v in reference.trainable_state_dict().items() if "lora_B" in k
    )
    batch = _batch(loaded, _rows(loaded.model.projectors.in_dim))
    # The bundle's LLM has LoRA folded into its weights (W + BA), the reference adds BA x
    # at run time: fp32 rounding differs by ~2e-5.
    torch.testing.assert_close(
        _logits(loaded.model, batch), _logits(reference, batch), atol=1e-4, rtol=0
    )


def test_merged_bundle_matches_the_adapter_bundle(trained, bundle) -> None:
    root, checkpoint, _ = trained
    merged_dir = root / "bundle-merged"
    info = export_bundle(checkpoint, merged_dir, merge_lora=True)
    assert info["llm"]["kind"] == "merged" and (merged_dir / "llm" / "config.json").is_file()
    assert not (merged_dir / ADAPTER_FILE).exists()
    adapter, merged = load_bundle(bundle), load_bundle(merged_dir)
    assert not hasattr(merged.model.llm, "peft_config")  # plain layers after the merge
    batch = _batch(adapter, _rows(adapter.model.projectors.in_dim))
    torch.testing.assert_close(
        _logits(merged.model, batch), _logits(adapter.model, batch), atol=1e-4, rtol=0
    )


def test_int8_bundle_is_smaller_and_agrees_on_labels(trained, bundle, media) -> None:
    root, checkpoint, _ = trained
    int8_dir = root / "bundle-int8"
    info = export_bundle(checkpoint, int8_dir, quantize="int8")
    sizes = info["quantization"]
    assert info["llm"]["kind"] == "int8"
    assert 0 < sizes["llm_int8_mb"] < sizes["llm_fp32_mb"], sizes
    fp32, int8 = Predictor.from_bundle(bundle), Predictor.from_bundle(int8_dir)
    requests = [
        {"image": media["image"]},
        {"audio": media["audio"]},
        {"image": media["image"], "audio": media["audio"]},
    ]
    p32 = fp32.predict_batch(requests, mode="labels")
    p8 = int8.predict_batch(requests, mode="labels")
    # int8 weights move the probabilities a little (a tiny model with sharp logits: a few
    # points) but not the answer.
    for a, b in zip(p32, p8, strict=True):
        top32 = max(a.probabilities, key=a.probabilities.get)
        top8 = max(b.probabilities, key=b.probabilities.get)
        assert top32 == top8, (a.probabilities, b.probabilities)
        diff = max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities)
        assert diff < 0.15, (a.probabilities, b.probabilities)


def test_export_refuses_to_overwrite_a_folder_that_is_no_bundle(trained, tmp_path) -> None:
    _, checkpoint, _ = trained
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not a Purr-Sight bundle"):
        export_bundle(checkpoint, tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_checkpoint_is_not_a_bundle(trained) -> None:
    _, checkpoint, _ = trained
    with pytest.raises(BundleError, match="purrsight export --checkpoint"):
        load_bundle(checkpoint)


# ----------------------------------------------------------------------------- predict


@pytest.mark.parametrize(
    ("given", "listed"),
    [
        (("image",), ["image"]),
        (("audio",), ["audio"]),
        (("image", "audio"), ["image", "audio"]),
        (("video",), ["video"]),
    ],
)
def test_any_media_subset_gives_a_valid_report(predictor, media, given, listed) -> None:
    prediction = predictor.predict(**{m: media[m] for m in given}, mode="report")
    report = Report.model_validate(prediction.report.model_dump())
    assert report.modalities == listed
    assert abs(sum(prediction.probabilities.values()) - 1) < 1e-4
    assert set(prediction.probabilities) == set(predictor.labels)
    # Generation is constrained to the report schema (purrsight.inference.grammar): even a
    # tiny random model with max_new_tokens=6 writes a whole valid answer, and no cue of an
    # input not given.
    assert prediction.status == "valid" and prediction.error is None and prediction.raw_text
    seen = {"image", "audio"} if "video" in given else set(given)
    unseen = [c for c, m in CUE_MODALITY.items() if m not in seen]
    assert all(getattr(report.evidence, c) is None for c in unseen), report.evidence
    top = max(prediction.probabilities, key=prediction.probabilities.get)
    assert report.emotion in (top, UNSURE)
    assert report.confidence == pytest.approx(prediction.probabilities[top], abs=1e-4)


def test_video_uses_its_frames_and_sound(predictor, media) -> None:
    video = predictor.prepare(video=media["video"])
    image = predictor.prepare(image=media["image"])
    assert set(video.features) == {"image", "audio"} and set(image.features) == {"image"}
    assert torch.linalg.vector_norm(video.features["image"]).item() == pytest.approx(1, abs=1e-4)


def test_bytes_give_the_same_answer_as_paths(predictor, media) -> None:
    from_path = predictor.predict(image=media["image"], audio=media["audio"], mode="labels")
    from_bytes = predictor.predict(
        image=media["image"].read_bytes(), audio=media["audio"].read_bytes(), mode="labels"
    )
    assert from_path.probabilities == pytest.approx(from_bytes.probabilities, abs=1e-6)
    assert from_bytes.report == from_path.report


def test_labels_mode_scores_without_generating(predictor, media) -> None:
    prediction = predictor.predict(image=media["image"], text="He hides all day.", mode="labels")
    assert prediction.status == "labels" and prediction.raw_text is None
    assert prediction.report.modalities == ["image", "text"]
    assert prediction.report.evidence.model_dump() == dict.fromkeys(
        ("ears", "eyes", "tail", "posture", "vocalization")
    )


def test_batch_equals_one_at_a_time(predictor, media) -> None:
    # The longest prompt (a video: image + audio slots) first: label scoring batches prompts
    # by length, so the scores must find their way back to the request they belong to.
    requests = [{"video": media["video"]}, {"image": media["image"]}, {"audio": media["audio"]}]
    batched = predictor.predict_batch(requests, mode="labels")
    for request, got in zip(requests, batched, strict=True):
        alone = predictor.predict(**request, mode="labels")
        assert got.probabilities == pytest.approx(alone.probabilities, abs=1e-5)


def test_low_confidence_is_unsure(bundle, media) -> None:
    strict = Predictor.from_bundle(bundle, unsure_threshold=0.9999)
    report = strict.predict(image=media["image"], mode="labels").report
    assert report.emotion == UNSURE and report.confidence < 0.9999
    assert report.arousal is None  # label scoring reads only the emotion
    assert report.alternatives and report.alternatives[0].emotion in strict.labels
    assert "Not sure" in report.summary


def test_pain_risk_sets_the_welfare_alert(predictor, media) -> None:
    calm = predictor.predict(image=media["image"], mode="labels")
    risk = calm.probabilities["in_pain"]
    predictor.settings.welfare_threshold = risk / 2  # this reading is now high-risk
    try:
        alarmed = predictor.predict(image=media["image"], mode="labels").report
    finally:
        predictor.settings.welfare_threshold = 0.3
    assert alarmed.welfare_alert and "vet" in alarmed.advice.lower()


def test_a_valid_generation_keeps_its_text_and_gets_scored_confidence(predictor, media) -> None:
    """The report path after a generation that parses: its text is kept; confidence and
    alternatives are label scoring's (an answer writes no numbers)."""
    prepared = predictor.prepare(image=media["image"])
    probs = predictor.label_probabilities([prepared])
    top = predictor.labels[int(probs[0].argmax())]
    evidence = {
        "ears": "flattened",
        "eyes": "wide",
        "tail": "puffed",
        "posture": "crouched",
        "vocalization": "hiss",
    }
    rest = {"evidence": evidence, "summary": "A frightened cat.", "advice": "Give it space."}
    text = answer_start(top) + 'arousal":"high",' + json.dumps(rest, separators=(",", ":"))[1:]
    result = parse_report(text, predictor.labels, modalities=prepared.modalities)
    assert result.report is not None and result.report.confidence is None
    prediction = predictor._generated_prediction(prepared, result, probs[0])
    report = prediction.report
    assert report.evidence.ears == "flattened" and report.arousal == "high"
    # A photo alone cannot show a hiss: the cue is dropped, and that is recorded.
    assert report.evidence.vocalization is None
    assert "dropped vocalization (no audio given)" in prediction.repairs
    assert prediction.status == "repaired"
    assert report.emotion == top and report.summary == "A frightened cat."
    assert report.confidence == pytest.approx(float(probs[0].max()), abs=1e-4)


def test_report_path_continues_the_answer_from_the_scored_label(predictor, media) -> None:
    """Generation starts where label scoring ends: the raw answer opens with the top
    label, so the report's emotion is the scored one."""
    prepared = predictor.prepare(image=media["image"], audio=media["audio"])
    probs = predictor.label_probabilities([prepared])
    top = predictor.labels[int(probs[0].argmax())]
    expected = answer_start(top)
    prediction = predictor.predict(image=media["image"], audio=media["audio"], mode="report")
    assert prediction.raw_text.startswith(expected)
    assert prediction.probabilities[top] == pytest.approx(float(probs[0].max()), abs=1e-5)


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        ({}, InputError, "nothing to look at"),
        ({"video": "V", "image": "I"}, InputError, "not both"),
        ({"image": b"not an image at all"}, MediaError, "not a decodable image"),
        ({"text": "only words"}, InputError, "nothing to look at"),
        ({"image": "x.png", "text": "hi<|im_end|>"}, InputError, "reserved marker"),
        ({"image": "x.png", "text": "<|cat_image|>"}, InputError, "reserved marker"),
        ({"image": "x.png", "text": "x" * 501}, InputError, "over the limit of 500"),
    ],
)
def test_bad_requests_are_refused_clearly(predictor, request_, error, match) -> None:
    with pytest.raises(error, match=match):
        predictor.predict(**request_)


def test_oversized_upload_is_a_limit_error(bundle, media) -> None:
    small = Predictor.from_bundle(bundle)
    small.media = small.media.model_copy(update={"max_file_bytes": 100})
    with pytest.raises(MediaTooLarge, match="over the limit of 100"):
        small.predict(image=media["image"].read_bytes())


# ----------------------------------------------------------------------------- evaluate + CLI


def test_evaluate_writes_metrics_report_and_figures(trained, predictor, tmp_path, caplog) -> None:
    root, _, config = trained
    caplog.set_level(logging.INFO, logger="purrsight")
    metrics = evaluate_bundle(
        predictor, Path(config.data_dir) / "train.jsonl", tmp_path, max_generate=1
    )
    for name in OUTPUT_FILES:
        assert (tmp_path / name).stat().st_size > 0, name
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["n"] == metrics["n"] == 9
    for system in ("label_scoring", "generation", "report"):
        m = on_disk[system]
        for key in ("accuracy", "macro_f1", "balanced_accuracy", "ece", "per_class", "baseline"):
            assert key in m, (system, key)
        assert set(m["subsets"]) == {"image_only", "audio_only", "both"}
    assert on_disk["label_scoring"]["n"] == 9
    assert on_disk["generation"]["n"] == 3  # the first sample of each modality subset
    assert on_disk["generation"]["valid_rate"] == 1.0  # constrained: valid by construction
    for png in ("confusion_matrix.png", "reliability.png"):
        with Image.open(tmp_path / png) as img:
            assert img.size[0] > 1000 and img.size[1] > 500
    assert "| label_scoring |" in (tmp_path / "report.md").read_text()
    # Progress of each long loop, ending on its last item with an ETA.
    lines = [r.getMessage() for r in caplog.records]
    for start in (
        "decode and encode sample 9/9",
        "label scoring sample 9/9",
        "generate report 3/3",
    ):
        last = [line for line in lines if line.startswith(start)]
        assert len(last) == 1 and re.search(r"\(100 %\): .* s/\w+, ETA 0 s$", last[0]), lines


def test_evaluate_scores_each_sample_once_for_labels_and_reports(
    trained, predictor, tmp_path, monkeypatch
) -> None:
    """The report pass reuses the labels pass's LLM scores of the same prepared sample
    (the demo's evaluation paid for label scoring twice)."""
    import purrsight.inference.predictor as predictor_module

    scored = []
    real = predictor_module.score_options

    def counting(model, tokenizer, items, *args, **kwargs):
        scored.append(len(items))
        return real(model, tokenizer, items, *args, **kwargs)

    monkeypatch.setattr(predictor_module, "score_options", counting)
    _, _, config = trained
    data = Path(config.data_dir) / "train.jsonl"
    metrics = evaluate_bundle(predictor, data, tmp_path, max_generate=1)
    assert metrics["label_scoring"]["n"] == 9 and metrics["report"]["n"] == 3
    assert sum(scored) == 9


def test_evaluate_with_no_generation_scores_labels_only(trained, predictor, tmp_path) -> None:
    from purrsight.inference.evaluate import summary_for_demo

    root, _, config = trained
    metrics = evaluate_bundle(
        predictor, Path(config.data_dir) / "train.jsonl", tmp_path, max_generate=0
    )
    assert metrics["label_scoring"]["n"] == 9
    assert metrics["generation"] == {"n": 0} and metrics["report"] == {"n": 0}
    assert "free generation on none" in (tmp_path / "report.md").read_text()
    part = summary_for_demo(metrics)
    assert "generation_macro_f1" not in part and "report_macro_f1" not in part
    assert part["macro_f1"] == round(metrics["label_scoring"]["macro_f1"], 4)


def test_cli_predict_prints_a_valid_report(bundle, media, capsys) -> None:
    code = main(
        ["predict", "--model", str(bundle), "--image", str(media["image"]), "--mode", "labels"]
    )
    assert code == 0
    report = Report.model_validate_json(capsys.readouterr().out)
    assert report.modalities == ["image"]


def test_cli_errors_are_one_line(bundle, tmp_path, capsys) -> None:
    missing = tmp_path / "nope.png"
    assert main(["predict", "--model", str(bundle), "--image", str(missing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {missing}: file not found"
    assert main(["predict", "--model", str(tmp_path)]) == 2
    assert "not a Purr-Sight bundle" in capsys.readouterr().err


def test_option_scores_are_the_plain_forward_log_likelihoods(predictor, media) -> None:
    """Each option's score equals the summed log-probabilities of its tokens from one
    uncached forward pass over prompt + prefix + option."""
    from purrsight.data.instruction import collate
    from purrsight.inference.scoring import _ids, score_options, split_candidates

    prepared = [predictor.prepare(image=media["image"]), predictor.prepare(audio=media["audio"])]
    items = predictor._items(prepared)
    model, tokenizer = predictor.bundle.model, predictor.bundle.tokenizer
    prefixes = ['{"emotion":"', '{"arousal":"low","emotion":"']
    options = [f'{label}","' for label in predictor.labels[:3]]
    config = model.base_llm().config
    loaded = config._attn_implementation
    scores = score_options(model, tokenizer, items, prefixes, options)
    try:
        config._attn_implementation = "eager"  # adds the tree mask instead of passing it
        assert torch.allclose(score_options(model, tokenizer, items, prefixes, options), scores)
    finally:
        config._attn_implementation = loaded
    assert scores.shape == (2, 3)
    model.eval()
    for i, (item, prefix) in enumerate(zip(items, prefixes, strict=True)):
        shared, rest = split_candidates(tokenizer, prefix, options)
        for j, continuation in enumerate(rest):
            assert shared + continuation == _ids(tokenizer, prefix + options[j])
            option_len = len(continuation)
            answer = torch.tensor(shared + continuation)
            full = {**item, "input_ids": torch.cat([item["input_ids"], answer])}
            full["labels"] = torch.full_like(full["input_ids"], -100)
            batch = collate([full], tokenizer.pad_token_id)
            with torch.no_grad():
                logits = model(**{**batch.model_inputs(), "labels": None}).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            ids = batch.input_ids[0]
            n = len(ids)
            expected = sum(float(logp[t - 1, ids[t]]) for t in range(n - option_len, n))
            assert scores[i, j].item() == pytest.approx(expected, abs=1e-4), (i, j)


def test_tree_layout_sees_prompt_ancestors_and_own_branch_only() -> None:
    from purrsight.inference.scoring import Block, _layout

    # Prompt of 2; block 0 = [7, 8] after the prompt; block 1 = [9] after block 0;
    # block 2 = [5] after the prompt (a sibling of block 0).
    lay = _layout(2, [Block([7, 8]), Block([9], parent=0), Block([5])])
    assert lay.ids == [7, 8, 9, 5]
    assert lay.positions == [0, 1, 2, 3, 4, 2]  # block 2 starts where block 0 did
    assert lay.predictor == [1, 2, 3, 1] and lay.block_of == [0, 0, 1, 2]
    expected = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 0],
        [1, 1, 0, 0, 0, 1],
    ]
    assert lay.sees.int().tolist() == expected
    with pytest.raises(ValueError, match="block 1: empty, or its parent 1 is not earlier"):
        _layout(2, [Block([1]), Block([2], parent=1)])


def test_a_reading_only_answer_gets_a_summary_of_what_was_given(predictor, media) -> None:
    """A bundle trained to write only its reading (``answer_fields``): the summary is
    composed from the evidence after the cues of absent inputs are dropped, so a photo's
    report never mentions a sound; the advice comes from the advice table."""
    prepared = predictor.prepare(image=media["image"])
    probs = predictor.label_probabilities([prepared])
    top = predictor.labels[int(probs[0].argmax())]
    evidence = {"ears": "flattened", "eyes": None, "tail": "puffed", "posture": None}
    rest = json.dumps({"evidence": {**evidence, "vocalization": "hiss"}}, separators=(",", ":"))
    text = answer_start(top) + 'arousal":"high",' + rest[1:]
    result = parse_report(text, predictor.labels, modalities=prepared.modalities)
    before = predictor.answer_fields
    predictor.answer_fields = READING_FIELDS
    try:
        report = predictor._generated_prediction(prepared, result, probs[0]).report
    finally:
        predictor.answer_fields = before
    assert report.summary == compose_summary(top, report.evidence)
    assert "flattened" in report.summary and "hiss" not in report.summary
    assert report.advice.endswith(label_advice(top))


def test_labels_are_scored_with_what_follows_them_in_the_trained_answer() -> None:
    """A model trained on the emotion alone ended it with ``"}``; one trained on more
    fields with ``","`` before the next: each label is scored with the text its model
    learned after it."""
    labels = ["calm", "fearful"]
    assert label_options(labels, LABEL_ONLY_FIELDS) == ['calm"}', 'fearful"}']
    assert label_options(labels, READING_FIELDS) == ['calm","', 'fearful","']
    assert label_options(labels, ANSWER_FIELDS) == ['calm","', 'fearful","']


def test_an_emotion_only_llm_needs_reading_heads_for_a_report(bundle, read_bundle, media):
    """``answer_fields: [emotion]``: the LLM never learned to write the evidence, so a
    bundle without reading heads answers labels and refuses a report with the fix in one
    line; with heads, the report is the heads' reading and the LLM generates nothing."""
    alone = Predictor.from_bundle(bundle, precision="32")
    alone.answer_fields = LABEL_ONLY_FIELDS
    assert alone.predict(image=media["image"], mode="labels").report.emotion
    with pytest.raises(BundleError, match=r"only \['emotion'\].*reading heads.*--mode labels"):
        alone.predict(image=media["image"])
    read = Predictor.from_bundle(read_bundle, precision="32")
    read.answer_fields = LABEL_ONLY_FIELDS
    prediction = read.predict(image=media["image"], audio=media["audio"])
    assert prediction.raw_text is None and prediction.status == "valid"


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_inference_precision_follows_the_cpu(bundle, media, monkeypatch, native, expected) -> None:
    """``auto``: bf16 weights where the CPU does bf16 natively, fp32 elsewhere (bf16 on an
    AVX2-only CPU is torch's slow scalar path); ``32`` is fp32 everywhere."""
    import purrsight.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    auto = Predictor.from_bundle(bundle)
    assert next(auto.bundle.model.llm.parameters()).dtype == expected
    forced = Predictor.from_bundle(bundle, precision="32")
    assert next(forced.bundle.model.llm.parameters()).dtype == torch.float32
    probabilities = auto.predict(image=media["image"], mode="labels").probabilities
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    top = max(probabilities, key=probabilities.get)
    assert forced.predict(image=media["image"], mode="labels").report.emotion in (top, UNSURE)


# ----------------------------------------------------------------------------- reading heads


@pytest.fixture(scope="module")
def read_bundle(trained, tmp_path_factory):
    """The tiny bundle with reading heads and the subject / range check fitted on its
    training data (as ``purrsight export`` and ``make demo`` do)."""
    from purrsight.inference.reading_export import fit_reading

    _, checkpoint, config = trained
    out = tmp_path_factory.mktemp("read") / "bundle"
    export_bundle(checkpoint, out)
    assert fit_reading(out, config) is not None
    return out


def test_an_image_only_answer_never_names_a_sound(read_bundle, media) -> None:
    from purrsight.inference.reading import absent_cue_words

    predictor = Predictor.from_bundle(read_bundle, precision="32")
    for mode in ("report", "labels"):
        prediction = predictor.predict(image=media["image"], mode=mode)
        report = prediction.report
        assert report.evidence.vocalization is None
        assert absent_cue_words(f"{report.summary} {report.advice}", ["image"]) == []
        assert report.subject in ("cat", "no_cat", "unsure") and report.subject_reason
        assert report.in_range is not None
        if report.subject != "cat" or not report.in_range:
            assert report.emotion == UNSURE and not report.welfare_alert


def test_an_audio_only_answer_never_names_ears_eyes_tail_or_posture(read_bundle, media) -> None:
    from purrsight.inference.reading import absent_cue_words

    predictor = Predictor.from_bundle(read_bundle, precision="32")
    report = predictor.predict(audio=media["audio"]).report
    assert (report.evidence.ears, report.evidence.eyes, report.evidence.tail) == (None,) * 3
    assert report.evidence.posture is None
    assert absent_cue_words(f"{report.summary} {report.advice}", ["audio"]) == []


def test_a_read_report_is_valid_and_agrees_with_label_scoring(read_bundle, media) -> None:
    predictor = Predictor.from_bundle(read_bundle, precision="32")
    labels = predictor.predict(image=media["image"], audio=media["audio"], mode="labels")
    report = predictor.predict(image=media["image"], audio=media["audio"]).report
    assert report.emotion == labels.report.emotion
    assert report.confidence == labels.report.confidence
    assert labels.llm_probabilities is not None
    assert sum(labels.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    manifest = json.loads((read_bundle / "purrsight.json").read_text())
    assert manifest["reading"]["typicality_file"] and manifest["reading"]["heads"]
