"""GPU report: Phase 2 training throughput, MFU and peak memory, the guide's design vs ours.

    PYTHONPATH=src bash benchmarks/gpu_report.sh            # one CUDA GPU, ~2-4 minutes
    PYTHONPATH=src python benchmarks/gpu_report.py --smoke  # tiny model on CPU, seconds

Model: a Qwen2.5-0.5B-shaped ``Qwen2ForCausalLM`` built from its config with random
weights (hidden 896, 24 layers, 14 query / 2 KV heads, FFN 4864, vocabulary 151,936, tied
embeddings), wrapped by :class:`purrsight.models.mm_llm.MultimodalLLM`: LoRA r16 on
q/k/v/o + an image and an audio projector (aligned features 512-d → 4 soft tokens each).
Weights are random because throughput does not depend on their values. The aligned
features are precomputed in both variants (encoders are not part of this report).

Data: batch 8. ``mixed``: 64 samples, lengths uniform in [128, 512] tokens, the last 40 %
of each sample is the response (the labelled tokens). ``dense``: 8 × 512 real tokens.

Variants:
* ``baseline`` — the guide literally: fp32 weights and compute, every batch padded to
  ``max_text_length`` 512, the full [b, s, v] logits and Hugging Face's loss, no
  gradient checkpointing, AdamW. On ``mixed``.
* ``baseline_bf16`` — the same with bf16 autocast (the guide's ``precision`` switch).
* ``ours`` — Purr-Sight's path: frozen base in bf16, LoRA and projector weights fp32 under
  bf16 autocast, SDPA attention, loss at target positions only in chunks
  (:mod:`purrsight.models.lm_loss`), length-grouped batches padded to the longest, fused
  AdamW. On ``mixed``.
* ``ours_dense`` — ours on 8 × 512 real tokens: the MFU and memory figure "at batch 8 × 512".
* ``ours_dense_ckpt`` — ``ours_dense`` with gradient checkpointing (the memory option).
* ``ours_dense_compiled`` — ``ours_dense`` with each decoder layer ``torch.compile``-d
  (regional compilation: the 24 identical layers share one compiled graph, so it compiles
  in tens of seconds; it fuses the elementwise work and cuts kernel launches). Last, and
  skipped if the time budget is spent; a compile failure is recorded, not fatal.
* ``ours_dense_graphs`` — the same compiled with ``mode="reduce-overhead"``: each layer's
  forward and backward replayed as CUDA graphs, so the CPU stops launching kernels one by
  one (the step was launch-bound).
* ``ours_dense_graphs_whole`` — CUDA graphs over the whole model (embedding, projectors,
  the chunked loss too), one compiled graph instead of one per layer.
* ``ours_dense32_compiled`` / ``ours_dense32_graphs`` — the two above at batch 32 × 512:
  how far a bigger step amortises the launch cost (not the 8 × 512 figure).

MFU = model FLOPs per second / the card's peak dense bf16 FLOP/s. Model FLOPs are the
work the training step needs, counted the same way for every variant (padding and
logits nobody learns from are not counted), per sample of ``L`` real tokens of which
``T`` are targets::

    4·N_dec·L          frozen decoder linears: forward 2N + backward input-gradient 2N
                       (frozen weights need no weight gradient, the 2N a full fine-tune adds)
  + 12·layers·d·L²     attention scores and values, forward + backward, counted without
                       the causal half (the PaLM / Megatron convention)
  + 4·N_head·T         the LM head at target positions, forward + input-gradient
  + 6·N_lora·L         LoRA matrices, forward + input- and weight-gradients

``executed_tflops_per_step`` also counts what a variant really computes (padding, full
logits), so baseline's wasted work is visible. Peak memory: ``torch.cuda.max_memory_allocated``
over the variant's steps (weights, optimizer state, activations, everything).

Writes ``$OUT/gpu_report.json`` (``$OUT`` unset: ``./outputs``) and prints a summary.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from purrsight.data.length_groups import length_grouped_order
from purrsight.models.lean_dropout import use_lean_lora_dropout
from purrsight.models.lm_loss import IGNORE_INDEX
from purrsight.models.mm_llm import MultimodalLLM, position_ids_from_mask
from purrsight.models.projector import Projectors

QWEN25_05B = {
    "hidden_size": 896,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "intermediate_size": 4864,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "max_position_embeddings": 512,
    "tie_word_embeddings": True,
}
# Peak dense bf16 tensor-core FLOP/s (no sparsity), by device-name fragment; first match.
PEAK_BF16 = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("RTX 4090", 165e12),
    ("A10", 125e12),
)
FEATURE_DIM, SOFT_TOKENS, MODALITIES = 512, 4, ("image", "audio")
RESPONSE_FRACTION = 0.4
TIME_BUDGET_S = 390  # variants still to run are skipped past this (the script must end < 8 min)


@dataclass
class Workload:
    """Samples as (length, targets) plus how they are batched and padded."""

    name: str
    lengths: list[int]
    batch_size: int
    max_length: int


@dataclass
class Variant:
    name: str
    workload: str
    bf16_weights: bool
    autocast: bool
    lean_loss: bool
    pad_to_max: bool
    length_grouped: bool
    gradient_checkpointing: bool = False
    compile: bool = False
    compile_mode: str | None = None  # "reduce-overhead": CUDA graphs
    compile_whole: bool = False  # the whole model (embedding, projectors, loss), not per layer


def _dense(name: str, workload: str = "dense", **options: Any) -> Variant:
    """Our path (bf16 base, autocast, lean loss) on unpadded dense batches."""
    return Variant(name, workload, True, True, True, False, False, **options)


GRAPHS = {"compile": True, "compile_mode": "reduce-overhead"}

VARIANTS = (
    Variant("baseline", "mixed", False, False, False, True, False),
    Variant("baseline_bf16", "mixed", False, True, False, True, False),
    Variant("ours", "mixed", True, True, True, False, True),
    _dense("ours_dense"),
    _dense("ours_dense_ckpt", gradient_checkpointing=True),
    _dense("ours_dense_compiled", compile=True),
    _dense("ours_dense_graphs", **GRAPHS),
    _dense("ours_dense_graphs_whole", **GRAPHS, compile_whole=True),
    _dense("ours_dense32_compiled", "dense32", compile=True),
    _dense("ours_dense32_graphs", "dense32", **GRAPHS),
)


# ----------------------------------------------------------------------------- data


def workloads(smoke: bool) -> dict[str, Workload]:
    batch, max_len, n = (2, 64, 8) if smoke else (8, 512, 64)
    gen = torch.Generator().manual_seed(0)
    mixed = torch.randint(max_len // 4, max_len + 1, (n,), generator=gen).tolist()
    big = 2 * batch if smoke else 32
    return {
        "mixed": Workload("mixed", mixed, batch, max_len),
        "dense": Workload("dense", [max_len] * batch, batch, max_len),
        "dense32": Workload("dense32", [max_len] * big, big, max_len),
    }


def target_count(length: int) -> int:
    """Labelled tokens of a sample: its response, the last 40 %."""
    return max(1, int(length * RESPONSE_FRACTION))


def make_batch(lengths: list[int], pad_to: int, vocab: int, seed: int) -> dict[str, Any]:
    """Right-padded [b, pad_to] batch with soft-token slots at positions 3-10."""
    gen = torch.Generator().manual_seed(seed)
    b = len(lengths)
    ids = torch.zeros(b, pad_to, dtype=torch.long)
    mask = torch.zeros(b, pad_to, dtype=torch.long)
    labels = torch.full((b, pad_to), IGNORE_INDEX, dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(0, vocab, (n,), generator=gen)
        mask[row, :n] = 1
        labels[row, n - target_count(n) : n] = ids[row, n - target_count(n) : n]
    slots = {m: torch.arange(3 + 4 * i, 3 + 4 * i + SOFT_TOKENS) for i, m in enumerate(MODALITIES)}
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "features": {m: torch.randn(b, FEATURE_DIM, generator=gen) for m in MODALITIES},
        "present": {m: torch.ones(b, dtype=torch.bool) for m in MODALITIES},
        "placeholder_positions": {m: slots[m].expand(b, -1).clone() for m in MODALITIES},
    }


def batches_for(work: Workload, variant: Variant, vocab: int) -> list[list[int]]:
    """Lists of sample lengths, one per batch, in training order."""
    lengths = work.lengths
    if variant.length_grouped:
        spans = length_grouped_order(lengths, work.batch_size, seed=0)
        return [[lengths[i] for i in span] for span in spans]
    return [lengths[i : i + work.batch_size] for i in range(0, len(lengths), work.batch_size)]


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: ({m: t.to(device) for m, t in v.items()} if isinstance(v, dict) else v.to(device))
        for k, v in batch.items()
    }


# ----------------------------------------------------------------------------- model


def build_model(shape: dict[str, Any], variant: Variant, device: torch.device) -> MultimodalLLM:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**shape, attn_implementation="sdpa", use_cache=False)
    torch.manual_seed(0)
    with device:
        llm = Qwen2ForCausalLM(config)
    if variant.bf16_weights:
        llm = llm.to(torch.bfloat16)  # frozen base in bf16; LoRA comes out fp32 (PEFT default)
    with device:
        projectors = Projectors(MODALITIES, FEATURE_DIM, shape["hidden_size"], SOFT_TOKENS)
    model = MultimodalLLM(
        llm,
        projectors,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.1,
        gradient_checkpointing=variant.gradient_checkpointing,
    )
    if not variant.lean_loss:  # the guide: PEFT's own dropout (a float mask)
        use_lean_lora_dropout(model, lean=False)
    model = model.to(device).train()
    if variant.compile and variant.compile_whole:
        model.compile(mode=variant.compile_mode)
    elif variant.compile:
        for layer in llm.model.layers:
            layer.compile(mode=variant.compile_mode)
    return model


def parameter_counts(model: MultimodalLLM, shape: dict[str, Any]) -> dict[str, int]:
    """N_dec: frozen linear weights of the decoder layers; N_head: the LM head's matmul;
    N_lora: LoRA matrices."""
    base = model.llm.get_base_model()
    n_dec = n_lora = 0
    for name, module in base.model.layers.named_modules():
        if isinstance(module, torch.nn.Linear):
            if ".lora_" in f".{name}":
                n_lora += module.weight.numel()
            else:
                n_dec += module.weight.numel()
    return {
        "n_dec": n_dec,
        "n_head": shape["vocab_size"] * shape["hidden_size"],
        "n_lora": n_lora,
        "n_trainable": sum(p.numel() for p in model.trainable_parameters()),
    }


def model_flops(lengths: list[int], counts: dict[str, int], shape: dict[str, Any]) -> float:
    """Needed FLOPs of one training step on samples of these real lengths (docstring)."""
    layers, d = shape["num_hidden_layers"], shape["hidden_size"]
    total = 0.0
    for n in lengths:
        total += 4 * counts["n_dec"] * n + 12 * layers * d * n * n
        total += 4 * counts["n_head"] * target_count(n) + 6 * counts["n_lora"] * n
    return total


def executed_flops(
    lengths: list[int], padded: int, full_head: bool, counts: dict[str, int], shape
) -> float:
    """FLOPs a variant really computes: every padded position, and the head everywhere
    when it builds full logits."""
    layers, d = shape["num_hidden_layers"], shape["hidden_size"]
    b = len(lengths)
    total = b * (4 * counts["n_dec"] * padded + 12 * layers * d * padded * padded)
    total += b * 6 * counts["n_lora"] * padded
    head_rows = b * padded if full_head else sum(target_count(n) for n in lengths)
    return total + 4 * counts["n_head"] * head_rows


# ----------------------------------------------------------------------------- timing


def train_step(model: MultimodalLLM, batch: dict[str, Any], variant: Variant, optimizer) -> float:
    device_type = batch["input_ids"].device.type
    if variant.compile_mode == "reduce-overhead":
        # A new step: CUDA graph trees may reuse the last step's output buffers.
        torch.compiler.cudagraph_mark_step_begin()
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=variant.autocast):
        if variant.lean_loss:
            loss = model(**batch).loss
        else:  # the plain path: full logits, Hugging Face's loss
            embeds = model.embed(
                batch["input_ids"],
                batch["features"],
                batch["present"],
                batch["placeholder_positions"],
            )
            mask = batch["attention_mask"]
            loss = model.llm(
                inputs_embeds=embeds,
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
                labels=batch["labels"],
                use_cache=False,
            ).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def run_variant(
    variant: Variant, work: Workload, shape: dict[str, Any], device, warmup: int, steps: int
) -> dict[str, Any]:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # cuDNN's SDPA builds a new plan for every new sequence length (measured: 3.5 ms of CPU
    # per attention backward with length-grouped batches); flash attention does not.
    cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(not variant.lean_loss)
    model = build_model(shape, variant, device)
    counts = parameter_counts(model, shape)
    optimizer = torch.optim.AdamW(
        model.trainable_parameters(), lr=2e-4, weight_decay=0.01, fused=cuda and variant.lean_loss
    )
    plan = batches_for(work, variant, shape["vocab_size"])
    prepared = []
    for i, lengths in enumerate(plan):
        pad = work.max_length if variant.pad_to_max else max(lengths)
        prepared.append(
            (lengths, pad, to_device(make_batch(lengths, pad, shape["vocab_size"], i), device))
        )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for i in range(warmup):
        train_step(model, prepared[i % len(prepared)][2], variant, optimizer)
    sync()
    needed = executed = 0.0
    samples = tokens = 0
    losses = []
    started = time.perf_counter()
    for i in range(steps):
        lengths, pad, batch = prepared[(warmup + i) % len(prepared)]
        losses.append(train_step(model, batch, variant, optimizer))
        needed += model_flops(lengths, counts, shape)
        executed += executed_flops(lengths, pad, not variant.lean_loss, counts, shape)
        samples += len(lengths)
        tokens += sum(lengths)
    sync()
    seconds = time.perf_counter() - started
    result = {
        **asdict(variant),
        "steps": steps,
        "step_time_ms": 1000 * seconds / steps,
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "model_tflops_per_step": needed / steps / 1e12,
        "executed_tflops_per_step": executed / steps / 1e12,
        "achieved_tflops": needed / seconds / 1e12,
        "loss_last": float(losses[-1]),
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "peak_reserved_mb": torch.cuda.max_memory_reserved() / 2**20 if cuda else None,
        **counts,
    }
    del model, optimizer, prepared
    gc.collect()
    torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)
    return result


# ----------------------------------------------------------------------------- report


def peak_bf16(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for fragment, flops in PEAK_BF16:
        if fragment in name:
            return name, flops
    return name, None


def summarise(results: dict[str, dict[str, Any]], peak: float | None) -> dict[str, Any]:
    for r in results.values():
        if "error" not in r:
            r["mfu"] = r["achieved_tflops"] * 1e12 / peak if peak else None
    ratios = {}
    base = results.get("baseline", {})
    for other in ("ours", "baseline_bf16"):
        r = results.get(other, {})
        if "tokens_per_s" in r and "tokens_per_s" in base:
            ratios[f"{other}_vs_baseline"] = r["tokens_per_s"] / base["tokens_per_s"]
    if "tokens_per_s" in results.get("ours", {}) and "tokens_per_s" in results.get(
        "baseline_bf16", {}
    ):
        ratios["ours_vs_baseline_bf16"] = (
            results["ours"]["tokens_per_s"] / results["baseline_bf16"]["tokens_per_s"]
        )
    return ratios


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['device']}  (peak bf16 {report['peak_bf16_tflops']} TFLOP/s)")
    head = f"{'variant':<16}{'step ms':>9}{'samples/s':>11}{'tokens/s':>11}{'MFU':>7}{'peak MB':>9}"
    print(head)
    for name, r in report["variants"].items():
        if "error" in r:
            print(f"{name:<16} {r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        peak = f"{r['peak_mb']:.0f}" if r.get("peak_mb") is not None else "-"
        print(
            f"{name:<16}{r['step_time_ms']:>9.1f}{r['samples_per_s']:>11.1f}"
            f"{r['tokens_per_s']:>11.0f}{mfu:>7}{peak:>9}"
        )
    for key, value in report["ratios"].items():
        print(f"{key}: {value:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, CPU unless CUDA")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--variants",
        nargs="*",
        default=None,
        help="default: all (in --smoke all but the compiled one, which takes minutes on a CPU)",
    )
    parser.add_argument("--out", default=os.environ.get("OUT") or "outputs")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=TIME_BUDGET_S,
        help="variants still to run past this many seconds are skipped (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU: run with --smoke for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 baseline stays real fp32
    shape = TINY if args.smoke else QWEN25_05B
    if args.variants is None:
        args.variants = [v.name for v in VARIANTS if not (args.smoke and v.compile)]
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    # 16 = every batch of `mixed` exactly twice (8 batches), so the variants see the same data.
    steps = args.steps if args.steps is not None else (2 if args.smoke else 16)
    loads = workloads(args.smoke)
    started = time.perf_counter()
    name, peak = peak_bf16(device)
    results: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [v for v in VARIANTS if v.name in args.variants]
    for variant in chosen:
        if time.perf_counter() - started > args.budget_s:
            results[variant.name] = {"error": "skipped: time budget spent"}
        else:
            try:
                results[variant.name] = run_variant(
                    variant, loads[variant.workload], shape, device, warmup, steps
                )
            except Exception as err:  # noqa: BLE001 - one failed variant must not lose the rest
                first = (str(err).strip().splitlines() or [""])[0][:300]
                results[variant.name] = {"error": f"{type(err).__name__}: {first}"}
                gc.collect()
        print(f"{variant.name}: done at {time.perf_counter() - started:.0f} s", flush=True)
        # Written after every variant: a run cut short by the outer timeout keeps its figures.
        report = {
            "device": name,
            "peak_bf16_tflops": peak / 1e12 if peak else None,
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "shape": shape,
            "batch_size": loads["mixed"].batch_size,
            "max_length": loads["mixed"].max_length,
            "mixed_mean_length": sum(loads["mixed"].lengths) / len(loads["mixed"].lengths),
            "warmup_steps": warmup,
            "variants": results,
            "ratios": summarise(results, peak),
            "seconds": time.perf_counter() - started,
            "smoke": args.smoke,
        }
        (out / "gpu_report.json").write_text(json.dumps(report, indent=2, default=str))
    print_table(report)
    print(f"written: {out / 'gpu_report.json'} ({report['seconds']:.0f} s)")
    return 0 if any("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
