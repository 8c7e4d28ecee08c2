"""Phase 1 aligner: InfoNCE maths, missing modalities, save/load round trip."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from purrsight.models.aligner import Aligner, contrastive_loss, info_nce, load_aligner, save_aligner
from purrsight.models.retrieval import alignment_metrics, recall_at_k, unique_texts

DIMS = {"image": 12, "audio": 10, "text": 8}


def _unit(n: int, d: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_info_nce_is_symmetric() -> None:
    a, b = _unit(6, 5, 0), _unit(6, 5, 1)
    scale = torch.tensor(10.0)
    assert torch.allclose(info_nce(a, b, scale), info_nce(b, a, scale), atol=1e-6)


def test_info_nce_targets_are_the_diagonal() -> None:
    a = _unit(5, 5, 0)
    scale = torch.tensor(10.0)
    logits = scale * a @ a.t()
    expected = F.cross_entropy(logits, torch.arange(5))
    assert torch.allclose(info_nce(a, a, scale), expected, atol=1e-6)
    # Matching pairs score low; a shuffled pairing scores higher.
    shuffled = a[torch.tensor([1, 2, 3, 4, 0])]
    assert info_nce(a, a, scale) < info_nce(a, shuffled, scale)


def test_info_nce_equals_hand_computed_value() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale = torch.tensor(1.0)
    # a->b row 0: logits [1, .6]; row 1: [0, .8]; b->a row 0: [1, 0]; row 1: [.6, .8]
    lse = torch.logsumexp
    ab = ((lse(torch.tensor([1.0, 0.6]), 0) - 1.0) + (lse(torch.tensor([0.0, 0.8]), 0) - 0.8)) / 2
    ba = ((lse(torch.tensor([1.0, 0.0]), 0) - 1.0) + (lse(torch.tensor([0.6, 0.8]), 0) - 0.8)) / 2
    assert torch.allclose(info_nce(a, b, scale), (ab + ba) / 2, atol=1e-6)


def test_contrastive_loss_uses_only_samples_with_both_modalities() -> None:
    embeds = {"image": _unit(4, 3, 0), "audio": _unit(4, 3, 1), "text": _unit(4, 3, 2)}
    present = {
        "image": torch.tensor([True, True, True, False]),
        "audio": torch.tensor([False, True, True, True]),
        "text": torch.ones(4, dtype=torch.bool),
    }
    scale = torch.tensor(5.0)
    total, parts = contrastive_loss(embeds, present, scale)
    assert set(parts) == {"image_text", "audio_text", "image_audio"}
    expected = info_nce(embeds["image"][1:3], embeds["audio"][1:3], scale)
    assert torch.allclose(parts["image_audio"], expected)
    assert torch.allclose(total, torch.stack(list(parts.values())).mean())
    # Garbage in absent rows must not change the loss.
    embeds["image"][3] = 1e3
    assert torch.allclose(contrastive_loss(embeds, present, scale)[0], total)


def test_contrastive_loss_skips_pairs_with_under_two_samples() -> None:
    embeds = {"image": _unit(3, 3, 0), "text": _unit(3, 3, 1)}
    present = {"image": torch.tensor([True, False, False]), "text": torch.ones(3, dtype=torch.bool)}
    total, parts = contrastive_loss(embeds, present, torch.tensor(1.0))
    assert parts == {} and float(total) == 0.0


def test_heads_output_unit_vectors_and_temperature() -> None:
    aligner = Aligner(DIMS, embed_dim=16, hidden_dim=32, temperature_init=0.05)
    out = aligner({m: torch.randn(7, d) for m, d in DIMS.items()})
    for x in out.values():
        assert x.shape == (7, 16)
        assert torch.allclose(x.norm(dim=-1), torch.ones(7), atol=1e-5)
    assert aligner.temperature == pytest.approx(0.05, rel=1e-5)


def test_saved_aligner_loads_weights_only_and_rebuilds_same_heads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    aligner = Aligner(DIMS, embed_dim=16, hidden_dim=32).eval()
    path = save_aligner(
        tmp_path / "run", aligner, {"labels": ["a", "b"], "encoders": {"image": "x"}}
    )
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    rebuilt, info = load_aligner(path)
    rebuilt.eval()
    feats = {m: torch.randn(3, d) for m, d in DIMS.items()}
    for m in DIMS:
        assert torch.equal(aligner(feats)[m], rebuilt(feats)[m])
    assert info["labels"] == ["a", "b"] and info["embed_dim"] == 16
    assert json.loads((tmp_path / "run" / "aligner.json").read_text())["temperature"] > 0


def test_load_aligner_refuses_mismatched_weights(tmp_path: Path) -> None:
    path = save_aligner(tmp_path, Aligner(DIMS, embed_dim=16, hidden_dim=32), {})
    info = json.loads((tmp_path / "aligner.json").read_text())
    info["embed_dim"] = 8
    (tmp_path / "aligner.json").write_text(json.dumps(info))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_aligner(path)


def test_recall_counts_ties_in_favour_and_ranks() -> None:
    cands = torch.eye(4)
    queries = torch.tensor([[1.0, 0, 0, 0], [0, 0.9, 0.1, 0], [0.0, 0.6, 0.8, 0.0]])
    r = recall_at_k(queries, cands, torch.tensor([0, 2, 1]), ks=(1, 2))
    assert r[1] == pytest.approx(1 / 3)
    assert r[2] == pytest.approx(1.0)


def test_alignment_metrics_perfect_alignment() -> None:
    e = _unit(6, 8, 0)
    present = {m: torch.ones(6, dtype=torch.bool) for m in ("image", "audio", "text")}
    texts = ["t0", "t1", "t2", "t3", "t4", "t0"]  # one caption shared by two samples
    unique, index = unique_texts(texts)
    assert unique == ["t0", "t1", "t2", "t3", "t4"] and index.tolist() == [0, 1, 2, 3, 4, 0]
    text_embeds = e.clone()
    text_embeds[5] = e[0]
    embeds = {"image": text_embeds, "audio": text_embeds, "text": text_embeds}
    m = alignment_metrics(embeds, present, texts, torch.tensor([0, 1, 0, 1, 0, 1]), e[:2])
    assert m["i2t_r1"] == 1.0 and m["a2t_r1"] == 1.0
    assert m["chance_r1"] == pytest.approx(1 / 5)
    assert 0.0 <= m["zero_shot_acc"] <= 1.0
