"""Phase 1 end to end on CPU: tiny random encoders, generated demo data, a real Trainer."""

import contextlib
import logging
import re
from collections.abc import Iterator

import pytest
import torch

from purrsight.config import load_config
from purrsight.data.demo import generate_demo_dataset
from purrsight.models.aligner import load_aligner
from purrsight.train.phase1 import run_phase1


class _Messages(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__(logging.INFO)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _logged_into(messages: list[str]) -> Iterator[None]:
    """Every INFO+ record of the block appended to ``messages`` (the root logger lets INFO
    through for the duration)."""
    root, handler = logging.getLogger(), _Messages(messages)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture(scope="module")
def phase1_messages() -> list[str]:
    """What the module's Phase 1 run logged (filled by ``phase1_run``)."""
    return []


@pytest.fixture(scope="module")
def phase1_run(tmp_path_factory, tiny_encoder_dirs, phase1_messages):
    root = tmp_path_factory.mktemp("phase1")
    generate_demo_dataset(root / "data", n=56, seed=3, image_size=64, audio_seconds=1.0)
    overrides = [
        f"encoders.image={{type: hf, path: {tiny_encoder_dirs['image']}}}",
        f"encoders.audio={{type: hf, path: {tiny_encoder_dirs['audio']}}}",
        f"encoders.text={{type: hf, path: {tiny_encoder_dirs['text']}}}",
        f"phase1.data_dir={root / 'data'}",
        f"phase1.output_dir={root / 'checkpoints'}",
        "phase1.run_name=test-run",
        "phase1.epochs=3",
        "phase1.batch_size=8",
        "phase1.embed_dim=16",
        "phase1.head_hidden_dim=32",
        f"mlflow.tracking_uri={root / 'mlruns'}",
        "mlflow.experiment_name=phase1-test",
    ]
    config = load_config(None, overrides)
    with _logged_into(phase1_messages):
        result = run_phase1(config)
    return config, result, root


def test_phase1_logs_progress_of_encoding_and_training(phase1_run, phase1_messages) -> None:
    encoded = [m for m in phase1_messages if re.match(r"\w+ encoder \((train|val)\) ", m)]
    for modality in ("image", "audio", "text"):
        finished = [m for m in encoded if m.startswith(f"{modality} encoder (train) sample ")]
        assert finished and "(100 %)" in finished[-1] and finished[-1].endswith("ETA 0 s")
    trained = [m for m in phase1_messages if m.startswith("phase1 step ")]
    done, total = map(int, re.match(r"phase1 step (\d+)/(\d+)", trained[-1]).groups())
    assert done == total > 0 and len(trained) >= min(total, 10)  # every tenth at least
    assert re.fullmatch(
        r"phase1 step \d+/\d+ \(100 %\): epoch 2, loss [\d.]+, .* ETA 0 s", trained[-1]
    )


def test_phase1_writes_a_weights_only_aligner_with_its_description(phase1_run) -> None:
    config, result, root = phase1_run
    assert result.aligner_path == root / "checkpoints" / "test-run" / "aligner.pt"
    state = torch.load(result.aligner_path, weights_only=True)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())
    aligner, info = load_aligner(result.aligner_path)
    assert set(aligner.heads) == {"image", "audio", "text"}
    assert info["embed_dim"] == 16 and info["labels"] == config.labels
    assert set(info["encoders"]) == {"image", "audio", "text"}
    assert all(identity.startswith("hf-") for identity in info["encoders"].values())
    assert len(info["data_hash"]) == 16 and info["temperature"] > 0
    assert (result.run_dir / "config.yaml").is_file()


def test_phase1_reports_retrieval_and_zero_shot_metrics(phase1_run) -> None:
    _, result, _ = phase1_run
    for key in ("i2t_r1", "i2t_r5", "a2t_r1", "a2t_r5", "i2a_r1", "chance_r1", "zero_shot_acc"):
        assert 0.0 <= result.metrics[key] <= 1.0, key
    assert result.metrics["i2t_r5"] >= result.metrics["i2t_r1"]


def test_phase1_logs_params_and_metrics_to_mlflow(phase1_run) -> None:
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    config, _, root = phase1_run
    uri, _ = resolve_tracking(str(root / "mlruns"))
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("phase1-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["phase1.epochs"] == "3"
    assert "train_loss" in run.data.metrics and "final_i2t_r1" in run.data.metrics
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) >= 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "aligner.json"} <= artifacts
