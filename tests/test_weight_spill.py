"""Spilled frozen weights left by a killed process are removed; live ones never."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

from purrsight.models.weight_spill import SPILL_PREFIX, remove_stale_spills, spill_path

# Enters frozen_linears_as with a spill folder, says so, and waits to be killed.
SPILLER = """
import sys, time, torch
from torch import nn
from purrsight.models.mm_llm import MultimodalLLM
model = MultimodalLLM.__new__(MultimodalLLM)
nn.Module.__init__(model)
model.llm = nn.Sequential(nn.Embedding(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
model.llm.get_input_embeddings = lambda: model.llm[0]
model.llm.get_output_embeddings = lambda: model.llm[2]
for p in model.llm.parameters():
    p.requires_grad_(False)
with model.frozen_linears_as(torch.bfloat16, spill_dir=sys.argv[1]):
    print("spilled", flush=True)
    time.sleep(60)
"""


def test_a_sigkilled_spill_is_removed_and_a_live_one_kept(tmp_path: Path) -> None:
    live = subprocess.Popen(
        [sys.executable, "-c", SPILLER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    dead = subprocess.Popen(
        [sys.executable, "-c", SPILLER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert live.stdout.readline().strip() == "spilled"
        assert dead.stdout.readline().strip() == "spilled"
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=30)
        host = socket.gethostname()
        dead_file = tmp_path / f"{SPILL_PREFIX}{host}-{dead.pid}.pt"
        live_file = tmp_path / f"{SPILL_PREFIX}{host}-{live.pid}.pt"
        assert dead_file.is_file() and live_file.is_file()  # SIGKILL leaves its spill
        elsewhere = tmp_path / f"{SPILL_PREFIX}other-node-{dead.pid}.pt"  # pid means nothing here
        elsewhere.write_bytes(b"x")
        mine = spill_path(tmp_path)
        mine.write_bytes(b"x")
        assert remove_stale_spills(tmp_path) == [dead_file]
        assert not dead_file.exists()
        assert live_file.is_file() and elsewhere.is_file() and mine.is_file()
    finally:
        live.kill()
        live.wait(timeout=30)
    assert remove_stale_spills(tmp_path / "missing") == []
    # The live writer was killed too: its spill is now stale.
    assert remove_stale_spills(tmp_path) == [live_file]
