"""Checks 5-7 on the validation batch: forward pass, training step, checkpoint round trip.

Shapes: b = batch, s = sequence length, v = vocabulary.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from purrsight.models.modes import eval_mode
from purrsight.validation.context import CheckFailed, ValidationContext

TRAIN_STEPS = 2
"""Optimizer steps on the fixed batch (LoRA's B starts at zero, so A's gradient is zero
at the first step: two steps show every trainable tensor a gradient)."""
MIN_DROP = 1e-3
"""The loss must fall by at least this fraction of itself over the steps."""


# ----------------------------------------------------------------------------- 5


def check_forward_pass(ctx: ValidationContext) -> str:
    """Finite loss and logits on the real batch, under the config's precision; and the
    soft tokens reach the LLM (other features give other logits)."""
    model, batch = ctx.model, ctx.batch
    inputs = batch.model_inputs()
    with torch.no_grad(), eval_mode(model), ctx.autocast():
        out = model(**inputs)  # the training loss (at target positions; no logits)
        out.logits = model(**{**inputs, "labels": None}).logits
        flipped = {m: -f for m, f in batch.features.items()}
        other = model(**{**inputs, "labels": None, "features": flipped})
    b, s = batch.input_ids.shape
    vocab = model.llm.get_output_embeddings().weight.shape[0]
    shape = tuple(out.logits.shape)
    if shape != (b, s, vocab):
        raise CheckFailed(f"logits have shape {shape}, expected {(b, s, vocab)}")
    loss = float(out.loss)
    if not torch.isfinite(out.loss):
        raise CheckFailed(
            f"loss is {loss} on the batch {batch.ids} (precision {ctx.config.precision})"
        )
    mask = batch.attention_mask.bool()
    if not bool(torch.isfinite(out.logits[mask]).all()):
        raise CheckFailed("logits are not finite at attended positions")
    if torch.equal(out.logits, other.logits):
        raise CheckFailed("the logits do not depend on the media features: soft tokens unused")
    ctx.forward_loss = loss
    return f"loss {loss:.4f} on {b} × {s} tokens (precision {ctx.config.precision})"


# ----------------------------------------------------------------------------- 6


def check_training_step(ctx: ValidationContext) -> str:
    """A few AdamW steps (learning_rate, weight_decay and clipping from the config; no
    warmup) on the fixed batch: the loss falls, every trainable tensor gets a non-zero
    gradient, no tensor that must stay frozen gets one."""
    model, batch, config = ctx.model, ctx.batch, ctx.config
    should_train = {n for n, _ in model.named_parameters() if _is_trainable_name(n)}
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    before = ctx.forward_loss if ctx.forward_loss is not None else _eval_loss(ctx)
    got_gradient: set[str] = set()
    model.train()
    for _ in range(TRAIN_STEPS):
        with ctx.autocast():
            loss = model(**batch.model_inputs()).loss
        if not torch.isfinite(loss):
            raise CheckFailed(f"training loss became {float(loss)}")
        loss.backward()
        for name, param in params.items():
            if param.grad is not None and bool(param.grad.abs().sum() > 0):
                got_gradient.add(name)
        if config.gradient_clip_val is not None:
            torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), config.gradient_clip_val)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()
    after = _eval_loss(ctx)
    leaked = sorted(got_gradient - should_train)
    if leaked:
        raise CheckFailed(f"{len(leaked)} frozen tensors got a gradient, e.g. {leaked[:3]}")
    starved = sorted(should_train - got_gradient)
    if starved:
        raise CheckFailed(
            f"{len(starved)} of {len(should_train)} trainable tensors never got a non-zero "
            f"gradient in {TRAIN_STEPS} steps, e.g. {starved[:3]}"
        )
    if not after < before - MIN_DROP * abs(before):
        raise CheckFailed(
            f"the loss did not fall on a fixed batch: {before:.4f} → {after:.4f} after "
            f"{TRAIN_STEPS} AdamW steps at learning_rate={config.learning_rate:g}"
        )
    return (
        f"loss {before:.4f} → {after:.4f} in {TRAIN_STEPS} steps; "
        f"{len(should_train)} trainable tensors got gradients, frozen ones none"
    )


def _is_trainable_name(name: str) -> bool:
    """What Phase 2 must train, by name (the rule checkpoints are built on)."""
    return name.startswith("projectors.") or ".lora_" in name


def _eval_loss(ctx: ValidationContext) -> float:
    with torch.no_grad(), eval_mode(ctx.model), ctx.autocast():
        return float(ctx.model(**ctx.batch.model_inputs()).loss)


# ----------------------------------------------------------------------------- 7


def check_checkpoint_saving(ctx: ValidationContext) -> str:
    """Save the trainable state the way training does (Phase2Module's state_dict, an atomic
    write into ``<output_dir>/checkpoints/``), load it into a freshly built model and get
    identical outputs. The file is a hidden temporary one, removed afterwards."""
    from purrsight.train.checkpointing import atomic_torch_save, read_checkpoint
    from purrsight.validation.checks_setup import build_model

    model = ctx.model
    _perturb(model, ctx.config.seed)  # a fresh model must differ, or equality proves nothing
    saved = _module(ctx, model)
    checkpoint = {"state_dict": saved.state_dict(), "hyper_parameters": dict(saved.hparams)}
    saved.on_save_checkpoint(checkpoint)  # refuses anything but projector / LoRA tensors
    folder = Path(ctx.config.output_dir) / "checkpoints"
    made = _first_missing(folder)
    path = folder / f".validate-{os.getpid()}.ckpt"
    try:
        try:
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(0, "exists and is not a folder")
            atomic_torch_save(checkpoint, path)
        except OSError as err:
            raise CheckFailed(
                f"output_dir: cannot write a checkpoint into {folder}: {err.strerror or err}"
            ) from None
        size = path.stat().st_size
        loaded = read_checkpoint(path)
    finally:
        if folder.is_dir():
            path.unlink(missing_ok=True)
            _remove_empty(folder, made)
    fresh, _ = build_model(ctx, ctx.aligner.embed_dim)
    initial = fresh.trainable_state_dict()
    if all(torch.equal(initial[k], v) for k, v in model.trainable_state_dict().items()):
        raise CheckFailed("a freshly built model already has the saved model's weights")
    reference = _logits(model, ctx)
    _module(ctx, fresh).load_state_dict(loaded["state_dict"])
    restored = _logits(fresh, ctx)
    if not torch.equal(restored, reference):
        diff = float((restored - reference).abs().max())
        raise CheckFailed(f"outputs after loading differ from the saved model's (max |Δ| {diff:g})")
    del fresh
    tensors = len(loaded["state_dict"])
    return f"{tensors} tensors ({size / 1e6:.1f} MB) saved, reloaded: identical logits"


def _first_missing(folder: Path) -> Path | None:
    """The topmost folder of ``folder``'s path that does not exist yet (None: it exists)."""
    missing = None
    for candidate in [folder, *folder.parents]:
        if candidate.exists():
            break
        missing = candidate
    return missing


def _remove_empty(folder: Path, made: Path | None) -> None:
    """Remove the empty folders this check created, up to ``made``; nothing else."""
    if made is None:
        return
    for candidate in [folder, *folder.parents]:
        if not candidate.is_dir() or any(candidate.iterdir()):
            return
        candidate.rmdir()
        if candidate == made:
            return


def _module(ctx: ValidationContext, model):
    from purrsight.train.phase2_module import OptimSettings, Phase2Module

    config = ctx.config
    optim = OptimSettings(config.learning_rate, config.weight_decay, config.warmup_steps, 1)
    hparams = {"config": config.model_dump(), "modalities": list(ctx.modalities)}
    return Phase2Module(model, optim, config.log_every_n_steps, hparams)


@torch.no_grad()
def _perturb(model, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for param in model.trainable_parameters():
        noise = torch.randn(param.shape, generator=generator) * 0.02
        param.add_(noise.to(param.device, param.dtype))


@torch.no_grad()
def _logits(model, ctx: ValidationContext) -> torch.Tensor:
    """[b, s, v] in full precision and eval mode: equal weights give equal bits."""
    with eval_mode(model):
        return model(**{**ctx.batch.model_inputs(), "labels": None}).logits.float()
