"""Memory-lean next-token loss: the LM head and cross-entropy at target positions only,
a chunk of rows at a time, never the full ``[b, s, v]`` logits.

A plain causal-LM loss materialises logits for every position (Qwen2.5's vocabulary is
151,936: 8 × 512 positions is 2.5 GB in fp32, and autograd keeps two more copies for
backward). Only labelled positions — the response, a fraction of each prompt — need them.
:func:`lm_loss` gathers those rows of the final hidden states and runs
:class:`_ChunkedLinearCrossEntropy`, which computes the loss *and its gradient* one chunk
of rows at a time in the forward pass (the gradient of softmax cross-entropy is
``softmax - onehot``, known as soon as the logits are), so at most one chunk of logits is
ever alive and backward is a multiply by the incoming scalar.

Shapes: b = batch, s = sequence length, d = hidden size, v = vocabulary, t = target
tokens, c = rows per chunk.
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100
LOGIT_ELEMENTS_PER_CHUNK = 1 << 23
"""fp32 logits per chunk (32 MiB): 55 rows for Qwen2.5's vocabulary, 170 for SmolLM2's.
A chunk's logits live in three copies at once (the head's output, its fp32 cast, the
gradient in the compute dtype), so at 128 MiB a chunk added ~330 MB to the demo's peak."""


def shift_targets(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token targets and the hidden states that predict them.

    Args:
        hidden: [b, s, d] final hidden states.
        labels: [b, s] long, ``IGNORE_INDEX`` where nothing is learned.
    Returns:
        ([t, d] hidden rows, [t] target ids): position ``j`` predicts ``labels[:, j + 1]``.
    """
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return hidden[:, :-1][keep], targets[keep]


def lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    head: nn.Linear,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens (what Hugging Face's
    ``ForCausalLMLoss`` returns), computed in fp32 without full logits.

    Args:
        hidden: [b, s, d] final hidden states (after the last norm).
        labels: [b, s] long, ``IGNORE_INDEX`` where nothing is learned.
        head: the LM head (``weight`` [v, d], optional bias).
        chunk_rows: rows of logits per chunk (default: 128 MiB of fp32 logits).
    Returns:
        scalar fp32. With no labelled token it is 0 (connected to the graph so backward
        works), where the plain computation would give NaN.
    """
    rows, targets = shift_targets(hidden, labels)
    weight, bias = head.weight, head.bias
    if chunk_rows is None:
        chunk_rows = max(1, LOGIT_ELEMENTS_PER_CHUNK // weight.shape[0])
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        # The head runs in the autocast dtype, as it would inside the model's forward.
        compute = torch.get_autocast_dtype(device_type)
    else:
        compute = torch.promote_types(rows.dtype, weight.dtype)
    with torch.autocast(device_type, enabled=False):
        total = _ChunkedLinearCrossEntropy.apply(rows, weight, bias, targets, chunk_rows, compute)
    return total / max(int(targets.numel()), 1)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of ``cross_entropy(rows @ weight.T + bias, targets)``; gradients for
    ``rows`` (and ``weight``/``bias`` when they require grad) are computed in forward,
    chunk by chunk, and scaled in backward."""

    @staticmethod
    def forward(ctx, rows, weight, bias, targets, chunk_rows: int, compute: torch.dtype):
        need_rows = ctx.needs_input_grad[0]
        need_weight = ctx.needs_input_grad[1]
        need_bias = bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=rows.device)
        grad_rows = torch.empty_like(rows) if need_rows else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_bias else None
        w = weight.to(compute)
        b = bias.to(compute) if bias is not None else None
        for start in range(0, rows.shape[0], chunk_rows):
            x = rows[start : start + chunk_rows].to(compute)  # [c, d]
            y = targets[start : start + chunk_rows]  # [c]
            logits = nn.functional.linear(x, w, b).float()  # [c, v]
            log_norm = torch.logsumexp(logits, dim=-1)  # [c]
            total += (log_norm - logits.gather(1, y[:, None]).squeeze(1)).sum()
            if not (need_rows or need_weight or need_bias):
                continue
            # d(sum CE)/d logits = softmax - onehot, built in place over the logits.
            grad = logits.sub_(log_norm[:, None]).exp_()
            grad[torch.arange(y.shape[0], device=y.device), y] -= 1.0
            if need_rows:
                grad_rows[start : start + chunk_rows] = (grad.to(compute) @ w).to(rows.dtype)
            if need_weight:
                grad_weight += grad.T @ x.float()
            if need_bias:
                grad_bias += grad.sum(0)
        ctx.save_for_backward(grad_rows, grad_weight, grad_bias)
        ctx.param_dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_rows, grad_weight, grad_bias = ctx.saved_tensors
        scale = grad_total.float()
        weight_dtype, bias_dtype = ctx.param_dtypes
        return (
            (grad_rows * scale.to(grad_rows.dtype)) if grad_rows is not None else None,
            (grad_weight * scale).to(weight_dtype) if grad_weight is not None else None,
            (grad_bias * scale).to(bias_dtype) if grad_bias is not None else None,
            None,
            None,
            None,
        )
