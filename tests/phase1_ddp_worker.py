"""One process of the Phase 1 DDP gradient test (tests/test_cluster_train.py): rank r
takes rows [4r, 4r + 4) of a fixed batch of 8, computes AlignmentModule.batch_loss
(features gathered across the 2 processes), backpropagates and averages the gradients
over the processes as DDP does. Rank 0 saves the loss and gradients."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

DIMS = {"image": 6, "audio": 5, "text": 4}
ROWS = 8


def make_module():
    """An AlignmentModule with a seeded dropout-free aligner."""
    from purrsight.config import Phase1Config
    from purrsight.models.aligner import Aligner
    from purrsight.train.phase1_module import AlignmentModule

    torch.manual_seed(0)
    aligner = Aligner(DIMS, embed_dim=8, hidden_dim=16, dropout=0.0)
    return AlignmentModule(aligner, Phase1Config(), total_steps=1, eval_set=None)


def make_batch() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Features {modality: [8, d]} and presence {modality: [8] bool} (audio absent in 2 rows,
    image in 1: the pairs have different sample counts)."""
    generator = torch.Generator().manual_seed(1)
    features = {m: torch.randn(ROWS, d, generator=generator) for m, d in DIMS.items()}
    present = {m: torch.ones(ROWS, dtype=torch.bool) for m in DIMS}
    present["audio"][[1, 6]] = False
    present["image"][3] = False
    return features, present


def run(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        module = make_module()
        features, present = make_batch()
        rows = slice(rank * ROWS // world, (rank + 1) * ROWS // world)
        loss, _, size = module.batch_loss(
            {m: x[rows] for m, x in features.items()}, {m: p[rows] for m, p in present.items()}
        )
        loss.backward()
        grads = {}
        for name, param in module.named_parameters():
            dist.all_reduce(param.grad)  # what DDP does: the mean over processes
            grads[name] = param.grad / world
        if rank == 0:
            torch.save(
                {"loss": loss.detach(), "size": size, "grads": grads}, Path(out_dir) / "ddp.pt"
            )
    finally:
        dist.destroy_process_group()
