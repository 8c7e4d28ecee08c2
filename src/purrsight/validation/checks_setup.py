"""Checks 1-4: configuration, model initialisation, parameter freezing, data pipeline.

They go through the same functions as ``purrsight train phase2`` (``plan_run``, the
``FeatureSource`` and its encoder check, the Phase 2 model builder, ``InstructionDataset``,
``build_loader``), on a couple of real samples instead of the whole data set.

Shapes: b = batch, s = sequence length, k = soft tokens per modality, e = aligned size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from purrsight.validation.context import CheckFailed, ValidationContext

BATCH_SIZE = 2
"""Samples in the validation batch (fewer if batch_size is smaller): enough to pad."""


# ----------------------------------------------------------------------------- 1


def check_configuration(ctx: ValidationContext) -> str:
    """Keys, types and ranges (pydantic), then every file and folder the run needs: the
    LLM folder, the Phase 1 aligner (+ aligner.json), the data files, their media and
    any encoder path. Raises ConfigError / ManifestError / CheckFailed with one line."""
    from purrsight.config import load_config
    from purrsight.data.manifest import read_manifest
    from purrsight.precision import with_resolved_precision
    from purrsight.train.phase2_data import used_modalities
    from purrsight.train.phase2_setup import plan_run

    # The checks run in the precision training would pick on this machine.
    config = load_config(ctx.config_path, ctx.overrides)
    config, precision = with_resolved_precision(config, ctx.device.type)
    plan = plan_run(config, ctx.config_path, None)
    if not plan.aligner_path.with_name("aligner.json").is_file():
        raise CheckFailed(
            f"phase1_checkpoint_path: aligner.json missing beside {plan.aligner_path}; "
            "copy the whole Phase 1 run folder"
        )
    train = read_manifest(plan.train_path, config.labels)
    val = read_manifest(plan.val_path, config.labels) if plan.val_path else []
    modalities = used_modalities([train, val])
    _check_media_exist([*train, *val], modalities)
    for modality in modalities:
        path = getattr(config.encoders, modality).path
        if path and not _exists(path):
            raise CheckFailed(f"encoders.{modality}.path: '{path}' does not exist")
    ctx.config, ctx.plan, ctx.train, ctx.val, ctx.modalities = config, plan, train, val, modalities
    ctx.note(f"LLM folder: {plan.llm_folder}")
    ctx.note(f"Phase 1 aligner: {plan.aligner_path}")
    ctx.note(f"precision: {precision.precision} ({precision.reason})")
    source = ctx.config_path or "<defaults>"
    return (
        f"{source}: {len(train)} train + {len(val)} val samples "
        f"({'+'.join(modalities)}), aligner {plan.aligner_path.parent.name}"
    )


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).expanduser().exists()


def _check_media_exist(samples: Iterable, modalities: Sequence[str]) -> None:
    for sample in samples:
        for modality in modalities:
            path = getattr(sample, modality)
            if path is not None and not path.is_file():
                raise CheckFailed(f"{sample.source}: {modality} file {path} not found")


# ----------------------------------------------------------------------------- 2


def check_model_initialization(ctx: ValidationContext) -> str:
    """The frozen encoders, the aligner from the Phase 1 checkpoint, the projectors and the
    LLM + LoRA, built exactly as Phase 2 training builds them."""
    from purrsight.features import FeatureSource
    from purrsight.models.aligner import load_aligner

    config, plan = ctx.config, ctx.plan
    aligner, info = load_aligner(plan.aligner_path)
    missing = [m for m in ctx.modalities if m not in aligner.heads]
    if missing:
        raise CheckFailed(f"phase1_checkpoint_path: {plan.aligner_path} has no head for {missing}")
    # Phase 2 only ever runs the aligner under no_grad; frozen states that explicitly.
    aligner.requires_grad_(False).eval()
    # Built now, not on first use, so check 3 sees them; no cache: nothing is written.
    features = FeatureSource.from_config(config, ctx.modalities, cache=False)
    features.check_trained_with(info)
    encoders = {m: features.encoder(m) for m in ctx.modalities}
    model, tokenizer = build_model(ctx, aligner.embed_dim)
    ctx.aligner, ctx.aligner_info, ctx.features, ctx.encoders = aligner, info, features, encoders
    ctx.model, ctx.tokenizer = model, tokenizer
    for modality, encoder in encoders.items():
        ctx.note(f"encoder {modality}: {encoder.identity} ({encoder.dim}-d)")
    if ctx.hooks.after_build is not None:
        ctx.hooks.after_build(ctx)
    trainable = sum(p.numel() for p in model.trainable_parameters())
    return (
        f"{len(encoders)} encoders, aligner {aligner.embed_dim}-d, projectors "
        f"{'+'.join(model.modalities)} (k={model.num_tokens}), {config.llm_model_name} + LoRA "
        f"r={config.lora_r}: {trainable:,} trainable parameters"
    )


def build_model(ctx: ValidationContext, embed_dim: int):
    """(MultimodalLLM on ``ctx.device``, tokenizer) through Phase 2 training's own builder."""
    from purrsight.train.phase2 import _build_model

    model, tokenizer = _build_model(ctx.config, ctx.plan, ctx.modalities, embed_dim)
    return model.to(ctx.device), tokenizer


# ----------------------------------------------------------------------------- 3


def check_parameter_freezing(ctx: ValidationContext) -> str:
    """Trainable and frozen counts per component against what Phase 2 must train:
    encoders, aligner and the base LLM fully frozen; projectors and LoRA fully trainable,
    with the sizes their shapes give; nothing else trainable."""
    model, config = ctx.model, ctx.config
    rows: list[tuple[str, int, int, int]] = []  # component, trainable, frozen, expected trainable
    for modality, encoder in ctx.encoders.items():
        encoder.train()  # Lightning calls .train() every epoch: a frozen encoder stays in eval
        if encoder.training:
            raise CheckFailed(f"encoder {modality}: .train() switched it to train mode")
        rows.append((f"encoder {modality}", *_counts(encoder.parameters()), 0))
    rows.append(("aligner", *_counts(ctx.aligner.parameters()), 0))
    named = list(model.llm.named_parameters())
    lora = [p for n, p in named if ".lora_" in n]
    base = [p for n, p in named if ".lora_" not in n]
    rows.append(("LLM base", *_counts(base), 0))
    rows.append(("LoRA", *_counts(lora), _expected_lora(model.llm, config)))
    hidden = model.projectors.llm_dim
    per = _expected_projector(ctx.aligner.embed_dim, hidden, model.num_tokens, config)
    rows.append(
        ("projectors", *_counts(model.projectors.parameters()), per * len(model.modalities))
    )
    for name, trainable, frozen, _ in rows:
        ctx.note(f"{name:<16} trainable {trainable:>12,}  frozen {frozen:>12,}")
    for name, trainable, frozen, expected in rows:
        if trainable != expected or (expected and frozen):
            state = "trainable" if expected else "frozen"
            raise CheckFailed(
                f"{name}: {trainable:,} trainable and {frozen:,} frozen parameters, expected "
                f"{expected or trainable + frozen:,} all {state}"
            )
        if name == "LoRA" and expected == 0:
            raise CheckFailed(f"lora_target_modules={config.lora_target_modules}: no LoRA layer")
    others = {n for n, p in model.named_parameters() if p.requires_grad} - {
        n for n, _ in model.named_parameters() if n.startswith("projectors.") or ".lora_" in n
    }
    if others:
        raise CheckFailed(f"trainable parameters outside projectors and LoRA: {sorted(others)[:3]}")
    trainable = sum(r[1] for r in rows)
    frozen = sum(r[2] for r in rows)
    return f"{trainable:,} trainable (projectors + LoRA), {frozen:,} frozen"


def _counts(params: Iterable[nn.Parameter]) -> tuple[int, int]:
    """(trainable, frozen) numbers of elements."""
    trainable = frozen = 0
    for p in params:
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def _expected_lora(llm: nn.Module, config) -> int:
    """r·(in + out) for every Linear the LoRA targets (PEFT keeps it as ``base_layer``)."""
    total = 0
    for name, module in llm.named_modules():
        parts = name.split(".")
        if (
            isinstance(module, nn.Linear)
            and len(parts) > 1
            and parts[-1] == "base_layer"
            and parts[-2] in config.lora_target_modules
        ):
            total += config.lora_r * (module.in_features + module.out_features)
    return total


def _expected_projector(in_dim: int, llm_dim: int, k: int, config) -> int:
    """LayerNorm(e) – Linear(e, h) – GELU – Linear(h, k·d), with biases."""
    hidden = config.projector_hidden_dim or llm_dim
    return 2 * in_dim + (in_dim + 1) * hidden + (hidden + 1) * k * llm_dim


# ----------------------------------------------------------------------------- 4


def check_data_pipeline(ctx: ValidationContext) -> str:
    """Decode the media (all of them; with --quick only the batch's), run a few real
    samples through the frozen encoders + aligner, tokenise and collate them with the
    training loader, and check shapes, slots, label masks and features."""
    from purrsight.train.phase2_data import InstructionDataset, build_loader

    config = ctx.config
    size = min(config.batch_size, BATCH_SIZE)
    samples = pick_samples(ctx.train or ctx.val, ctx.modalities, size)
    decoded = decode_all(ctx, samples if ctx.quick else [*ctx.train, *ctx.val])
    feats = ctx.features.aligned(samples, ctx.aligner, "validate")
    dataset = InstructionDataset(
        samples,
        feats,
        ctx.tokenizer,
        config.num_soft_tokens,
        config.max_text_length,
        config.answer_fields,
    )
    pad = int(ctx.tokenizer.pad_token_id)
    loader = build_loader(dataset, len(samples), pad, 0, config.seed, train=False)
    batch = next(iter(loader))
    check_batch(ctx, batch, samples)
    ctx.batch, ctx.batch_samples = batch.to(ctx.device), samples
    ctx.note(f"batch samples: {', '.join(s.id for s in samples)}")
    b, s = batch.input_ids.shape
    learned = int((batch.labels != -100).sum())
    return f"{decoded} media files decoded; batch {b} × {s} tokens, {learned} labelled"


def pick_samples(samples: Sequence, modalities: Sequence[str], size: int) -> list:
    """The first samples that together show every modality, topped up to ``size``."""
    chosen: list = []
    for modality in modalities:
        if not any(getattr(s, modality) is not None for s in chosen):
            chosen.append(next(s for s in samples if getattr(s, modality) is not None))
    for sample in samples:
        if len(chosen) >= size:
            break
        if sample not in chosen:
            chosen.append(sample)
    return chosen


def decode_all(ctx: ValidationContext, samples: Sequence) -> int:
    """Decode every image and audio file of ``samples`` as training does (within the
    ``media`` limits); a MediaError names the file and the sample's ``file:line``.
    Returns the number of files."""
    from purrsight.data.media import MediaError, decode_media

    count = 0
    for sample in samples:
        for modality in ctx.modalities:
            path = getattr(sample, modality)
            if path is None:
                continue
            rate = ctx.encoders[modality].sample_rate if modality == "audio" else None
            try:
                decode_media(modality, path, ctx.config.media, rate)
            except MediaError as err:
                raise MediaError(err.path, f"{err.reason} (sample at {sample.source})") from None
            count += 1
    return count


def check_batch(ctx: ValidationContext, batch, samples: Sequence) -> None:
    """Shapes, right padding, soft-token slots, label masks and aligned features of a
    collated training batch; raises CheckFailed naming what is wrong."""
    from purrsight.data.instruction import IGNORE_INDEX, end_of_turn_id

    config = ctx.config
    b, s = batch.input_ids.shape
    k, e = config.num_soft_tokens, ctx.aligner.embed_dim
    _expect(b == len(samples), f"batch has {b} rows for {len(samples)} samples")
    _expect(s <= config.max_text_length, f"{s} tokens > max_text_length={config.max_text_length}")
    for name in ("attention_mask", "labels"):
        shape = tuple(getattr(batch, name).shape)
        _expect(shape == (b, s), f"{name} has shape {shape}, expected {(b, s)}")
    mask = batch.attention_mask.bool()
    lengths = mask.sum(1)
    right_padded = torch.equal(mask, torch.arange(s)[None, :] < lengths[:, None])
    _expect(right_padded, "attention_mask is not right padding")
    labels = batch.labels
    _expect(bool((labels[~mask] == IGNORE_INDEX).all()), "padding positions carry labels")
    eot = end_of_turn_id(ctx.tokenizer)
    for row, sample in enumerate(samples):
        learned = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        _expect(learned.numel() > 0, f"sample {sample.id}: no labelled token")
        first, last = int(learned[0]), int(learned[-1])
        _expect(
            bool((labels[row, first : last + 1] != IGNORE_INDEX).all()),
            f"sample {sample.id}: the labelled response is not one contiguous span",
        )
        _expect(
            int(labels[row, last]) == eot,
            f"sample {sample.id}: the last labelled token is {int(labels[row, last])}, "
            f"not the end-of-turn token {eot}",
        )
        for modality in ctx.modalities:
            has = getattr(sample, modality) is not None
            _check_slots(batch, row, modality, has, first, k, e, sample.id)


def _check_slots(batch, row: int, modality: str, has: bool, first_label: int, k, e, sid) -> None:
    present = bool(batch.present[modality][row]) if modality in batch.present else False
    _expect(present == has, f"sample {sid}: {modality} present={present}, the sample says {has}")
    if not has:
        if modality in batch.features:
            _expect(bool((batch.features[modality][row] == 0).all()), f"{sid}: absent {modality}")
        return
    positions = batch.placeholder_positions[modality][row]
    _expect(positions.shape == (k,), f"{modality} slots {tuple(positions.shape)}, expected ({k},)")
    consecutive = torch.equal(positions, torch.arange(int(positions[0]), int(positions[0]) + k))
    _expect(consecutive, f"sample {sid}: {modality} slots are not {k} consecutive positions")
    _expect(int(positions[-1]) < first_label, f"sample {sid}: {modality} slots inside the answer")
    _expect(
        bool((batch.labels[row, positions] == -100).all()),
        f"sample {sid}: {modality} slots carry labels",
    )
    feature = batch.features[modality][row]
    _expect(feature.shape == (e,), f"{modality} feature {tuple(feature.shape)}, expected ({e},)")
    _expect(bool(torch.isfinite(feature).all()), f"sample {sid}: {modality} feature not finite")
    norm = float(feature.norm())
    _expect(abs(norm - 1.0) < 1e-3, f"sample {sid}: {modality} feature norm {norm:.4f}, not 1")


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)
