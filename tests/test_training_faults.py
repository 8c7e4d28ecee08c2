"""Training faults (issue 7): a non-finite loss, a checkpoint write killed with SIGKILL,
an interruption at a random step, and bad samples under ``on_bad_sample``.

Same tiny set-up as tests/test_phase2_train.py (its fixtures are reused): 9 train +
3 val samples, batch 3 → 3 optimizer steps per epoch, a tiny Llama with a byte tokenizer.
"""

# The fixtures `setup` and `llama` are imported from test_phase2_train; pytest passes them
# as arguments of the same names, which ruff reads as redefinitions.
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from purrsight.train.checkpointing import read_checkpoint
from purrsight.train.phase2 import TrainingInterrupted, run_phase2
from test_phase2_train import (  # noqa: F401 - fixtures
    _assert_same_steps,
    _config,
    _SigtermAt,
    config_dir,
    llama,
    setup,
)

ROOT = Path(__file__).resolve().parents[1]
WRITER = Path(__file__).with_name("slow_checkpoint_writer.py")


def _trainable(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.model.trainable_state_dict().items()}


class _NanFeaturesAt(Callback):
    """Makes every feature of the batches at optimizer steps ``steps`` (1-based: the step
    the batch would make) NaN, and keeps the trainable weights around each of them."""

    def __init__(self, steps: set[int] | None = None, from_step: int | None = None) -> None:
        self.steps = steps or set()
        self.from_step = from_step
        self.before: dict[int, dict[str, torch.Tensor]] = {}
        self.after: dict[int, dict[str, torch.Tensor]] = {}

    def _hit(self, step: int) -> bool:
        return step in self.steps or (self.from_step is not None and step >= self.from_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        step = trainer.global_step + 1
        if self._hit(step):
            for modality, value in batch.features.items():
                batch.features[modality] = torch.full_like(value, float("nan"))
            self.before[step] = _trainable(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in self.before:
            self.after[trainer.global_step] = _trainable(pl_module)


# ----------------------------------------------------------------------------- non-finite


def test_a_nan_loss_skips_that_step_counts_it_and_training_goes_on(setup, llama) -> None:
    overrides, reference, _ = llama
    nan = _NanFeaturesAt(steps={3})
    result = run_phase2(_config(setup, "nan-once", *overrides), callbacks=[nan])
    # The step was taken as an optimizer step without an update: weights unchanged.
    assert set(nan.before) == set(nan.after) == {3}
    before, after = nan.before[3], nan.after[3]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.metrics["nonfinite_steps"] == 1.0
    assert result.metrics["steps"] == 6  # training went on to the end
    steps = [h["step"] for h in result.history]
    assert steps == [1, 2, 4, 5, 6]  # the skipped step is not in the loss curve
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    # Steps 1-2 are the reference's; the skip shows in the training log.
    _assert_same_steps(result.history[:2], reference.history[:2])
    log_text = (result.output_dir / "logs" / "training.log").read_text()
    assert "step 3: non-finite loss, batch skipped (no update; 1 skipped in all" in log_text


def test_nonfinite_losses_k_in_a_row_stop_with_an_emergency_checkpoint(setup, llama) -> None:
    overrides, reference, _ = llama
    nan = _NanFeaturesAt(from_step=3)
    config = _config(setup, "nan-always", *overrides, "max_nonfinite_steps=2")
    with pytest.raises(TrainingInterrupted) as stopped:
        run_phase2(config, callbacks=[nan])
    message = str(stopped.value)
    assert stopped.value.exit_code == 1 and "\n" not in message
    assert "NonFiniteLoss: the loss was NaN or infinite for 2 batches in a row" in message
    assert "max_nonfinite_steps=2" in message
    checkpoint = stopped.value.checkpoint
    assert checkpoint == config_dir(config) / "emergency-step=3.ckpt" and checkpoint.is_file()
    # The emergency checkpoint holds the last good weights (after step 2): nothing NaN.
    saved = read_checkpoint(checkpoint)
    assert saved["nonfinite"]["total"] == 2
    state = saved["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())
    for key, value in nan.before[3].items():
        assert torch.equal(state[f"model.{key}"], value), key


def test_max_nonfinite_steps_is_validated() -> None:
    from purrsight.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="max_nonfinite_steps"):
        load_config(None, ["max_nonfinite_steps=0"])
    with pytest.raises(ConfigError, match="on_bad_sample"):
        load_config(None, ["on_bad_sample=ignore"])
    assert load_config(None).on_bad_sample == "error"


# ----------------------------------------------------------------------------- kill -9


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_loadable(setup, llama) -> None:
    """A training subprocess is SIGKILLed half-way through writing the second
    ``last.ckpt`` (epoch 2): the first one (epoch 1, step 3) is intact, the half-written
    temp file is removed by the next run, and resuming from it trains steps 4-6 with the
    uninterrupted run's losses."""
    root, _ = setup
    overrides, reference, _ = llama
    config = _config(setup, "kill9", *overrides)
    config_file = root / "kill9.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump()), encoding="utf-8")
    checkpoints = config_dir(config)
    out_path, err_path = root / "kill9.out", root / "kill9.err"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(WRITER), "2", "train", "phase2", "--config", str(config_file)]
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(args, cwd=root, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 240
            while "HALF-WRITTEN" not in out_path.read_text():
                assert proc.poll() is None, err_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint write within 240 s"
                time.sleep(0.1)
            proc.kill()  # SIGKILL: no handler, no cleanup
            assert proc.wait(timeout=60) == -9
        finally:
            if proc.poll() is None:
                proc.kill()
    temps = list(checkpoints.glob(".last.ckpt.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size > 0  # the write really was cut off
    last = read_checkpoint(checkpoints / "last.ckpt")  # loadable, weights-only
    assert last["global_step"] == 3

    resumed = run_phase2(config, resume="last")
    assert not list(checkpoints.glob(".*.tmp"))  # the dead writer's temp file is gone
    # Another process trained steps 1-3 (thread counts may differ): 1e-5, not bit-exact.
    assert [h["step"] for h in resumed.history] == [4, 5, 6]
    for got, want in zip(resumed.history, reference.history[3:], strict=True):
        assert abs(got["loss"] - want["loss"]) < 1e-5, (got, want)


# ----------------------------------------------------------------------------- resume


def test_interrupted_at_a_random_step_resumes_exactly(setup, llama) -> None:
    """SIGTERM after a step drawn at random (1-5, printed on failure), resume from the
    emergency checkpoint: steps and losses equal the uninterrupted run's, bit for bit
    up to 1e-6 (one process, CPU)."""
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    root, _ = setup
    overrides, reference, _ = llama
    step = random.Random().randint(1, 5)
    print(f"interrupted after step {step} of 6")
    tracking = root / f"mlruns-random-{step}"
    config = _config(
        setup,
        f"random-{step}",
        *overrides,
        "mlflow.enabled=true",
        f"mlflow.tracking_uri={tracking}",
    )
    sigterm = _SigtermAt(step=step)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_phase2(config, callbacks=[sigterm])
    assert stopped.value.checkpoint.name == f"emergency-step={step}.ckpt", step
    resumed = run_phase2(config, resume=str(stopped.value.checkpoint))
    history = [*sigterm.module.history, *resumed.history]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6], step
    for got, want in zip(history, reference.history, strict=True):
        assert got["loss"] == want["loss"], (step, got, want)  # exact
        assert got["lr"] == want["lr"], (step, got, want)
    # The resumed run continued the interrupted one's MLflow run: one curve, 6 steps.
    client = MlflowClient(tracking_uri=resolve_tracking(str(tracking))[0])
    (run,) = client.search_runs([client.get_experiment_by_name("phase2-test").experiment_id])
    assert run.info.run_id == resumed.mlflow_run_id and run.info.status == "FINISHED"
    assert f"resume_step_{step}" in run.data.tags
    curve = client.get_metric_history(run.info.run_id, "train_loss")
    assert [round(m.value, 6) for m in sorted(curve, key=lambda m: m.step)] == [
        round(h["loss"], 6) for h in reference.history
    ]


class _SigtermAfterBatch(Callback):
    """SIGTERM to this process after its ``n``-th training batch (steps or not)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen, self.module = n, 0, None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.module = pl_module

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.seen += 1
        if self.seen == self.n:
            os.kill(os.getpid(), signal.SIGTERM)


def test_interrupted_mid_accumulation_resumes_exactly(setup, llama) -> None:
    """accumulate_grad_batches=2 (3 batches an epoch: steps after batches 2, 3, 5, 6).
    SIGTERM after batch 4, half-way through a window: the window's summed gradient is
    lost, so resume redoes batch 4 with the same dropout masks, and every later batch's
    loss equals the uninterrupted run's exactly."""
    overrides, _, _ = llama
    accumulate = [*overrides, "accumulate_grad_batches=2"]
    reference = run_phase2(_config(setup, "accumulate-reference", *accumulate))
    assert [h["step"] for h in reference.history] == [0, 1, 2, 2, 3, 4]  # batch 4: no step
    config = _config(setup, "accumulate-interrupted", *accumulate)
    sigterm = _SigtermAfterBatch(4)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_phase2(config, callbacks=[sigterm])
    assert stopped.value.checkpoint.name == "emergency-step=2.ckpt"
    resumed = run_phase2(config, resume=str(stopped.value.checkpoint))
    assert len(resumed.history) == 3  # batches 4 (again), 5, 6
    for got, want in zip(resumed.history, reference.history[3:], strict=True):
        assert (got["step"], got["loss"], got["lr"]) == (want["step"], want["loss"], want["lr"])
    assert sigterm.module.history[3]["loss"] == reference.history[3]["loss"]


# ----------------------------------------------------------------------------- bad samples


def _bad_data(setup, name: str) -> Path:
    """The fixture's 9 train samples, plus, in order: malformed JSON (line 3), a missing
    image (line 5), random bytes named .png (line 7), a path out of the folder (line 9)."""
    root, overrides = setup
    data_dir = Path(next(o for o in overrides if o.startswith("data_dir=")).split("=", 1)[1])
    folder = root / name
    folder.mkdir()
    rows = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    for row in rows:  # point the media back at the fixture's folder
        for key in ("image", "audio"):
            if row.get(key):
                (folder / key).mkdir(exist_ok=True)
                target = folder / key / Path(row[key]).name
                if not target.exists():
                    target.write_bytes((data_dir / row[key]).read_bytes())
                row[key] = f"{key}/{Path(row[key]).name}"
    (folder / "image" / "noise.png").write_bytes(random.Random(0).randbytes(300))
    bad = {
        3: '{"id": "broken", "image": ',
        5: json.dumps({"id": "gone", "image": "image/missing.png", "response": "A cat."}),
        7: json.dumps({"id": "noise", "image": "image/noise.png", "response": "A cat."}),
        9: json.dumps({"id": "out", "image": "../../etc/passwd.png", "response": "A cat."}),
    }
    lines = [json.dumps(r) for r in rows]
    for number in sorted(bad):
        lines.insert(number - 1, bad[number])
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "val.jsonl").write_text((data_dir / "val.jsonl").read_text(), encoding="utf-8")
    for row in map(json.loads, (data_dir / "val.jsonl").read_text().splitlines()):
        for key in ("image", "audio"):
            if row.get(key):
                target = folder / row[key]
                target.parent.mkdir(parents=True, exist_ok=True)
                if not target.exists():
                    target.write_bytes((data_dir / row[key]).read_bytes())
    return folder


def test_on_bad_sample_error_stops_at_the_first_bad_line(setup, llama) -> None:
    from purrsight.data.manifest import ManifestError

    overrides, _, _ = llama
    data = _bad_data(setup, "bad-error")
    config = _config(setup, "bad-error-run", *overrides, f"data_dir={data}")
    with pytest.raises(ManifestError) as err:
        run_phase2(config)
    assert str(err.value).startswith(f"{data / 'train.jsonl'}:3: malformed JSON")
    assert not (Path(config.output_dir) / "checkpoints").exists()


def test_on_bad_sample_skip_logs_every_skipped_sample_and_trains_on_the_rest(setup, llama) -> None:
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    root, _ = setup
    overrides, _, _ = llama
    data = _bad_data(setup, "bad-skip")
    config = _config(
        setup,
        "bad-skip-run",
        *overrides,
        f"data_dir={data}",
        "on_bad_sample=skip",
        "mlflow.enabled=true",
        "max_steps=2",
    )
    result = run_phase2(config)
    skipped_file = result.output_dir / "logs" / "skipped_samples.jsonl"
    skipped = [json.loads(line) for line in skipped_file.read_text().splitlines()]
    train = data / "train.jsonl"
    assert [s["source"] for s in skipped] == [f"{train}:{n}" for n in (3, 5, 7, 9)]
    assert [s["kind"] for s in skipped] == [
        "malformed_json",
        "missing_media",
        "undecodable_media",
        "path_outside",
    ], skipped
    assert skipped[0]["reason"].startswith("malformed JSON")
    assert "missing.png" in skipped[1]["reason"] and "noise.png" in skipped[2]["reason"]
    assert "leaves the data folder" in skipped[3]["reason"]
    assert all(s["split"] == "train" for s in skipped)
    # The 9 good samples trained: 3 batches of 3 per epoch, 2 steps (max_steps).
    assert result.metrics["steps"] == 2
    log_text = (result.output_dir / "logs" / "training.log").read_text()
    for s in skipped:
        assert f"skipped sample at {s['source']} (train)" in log_text
    client = MlflowClient(tracking_uri=resolve_tracking(str(root / "mlruns"))[0])
    run = client.get_run(result.mlflow_run_id)
    assert run.data.metrics["skipped_samples"] == 4.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "skipped_samples.jsonl" in artifacts


def test_skip_decisions_are_the_same_on_every_process(setup) -> None:
    """DDP ranks each read and screen the files: the kept list must be identical (so the
    DistributedSampler gives every rank the same number of batches)."""
    from purrsight.config import MediaConfig
    from purrsight.data.bad_samples import BadSamples, read_samples, screen_media

    data = _bad_data(setup, "bad-ranks")
    kept = []
    for _ in range(2):  # two "ranks"
        bad = BadSamples("skip")
        samples = read_samples(data / "train.jsonl", None, bad, "train")
        samples = screen_media(samples, ("image", "audio"), MediaConfig(), bad, "train")
        kept.append(([s.id for s in samples], [s.source for s in bad.skipped]))
    assert kept[0] == kept[1] and len(kept[0][0]) == 9 and len(kept[0][1]) == 4


def test_phase1_on_bad_sample_skip_and_error(tmp_path, tiny_encoder_dirs) -> None:
    from mlflow.tracking import MlflowClient

    from purrsight.config import load_config
    from purrsight.data.demo import generate_demo_dataset
    from purrsight.data.manifest import ManifestError
    from purrsight.data.media import MediaError
    from purrsight.train.phase1 import run_phase1
    from purrsight.train.tracking import resolve_tracking

    data = tmp_path / "data"
    generate_demo_dataset(data, n=28, seed=3, image_size=32, audio_seconds=0.5)
    (data / "noise.wav").write_bytes(random.Random(1).randbytes(500))
    train = data / "train.jsonl"
    lines = train.read_text().splitlines()
    lines.insert(1, json.dumps({"id": "noise", "audio": "noise.wav", "response": "A cat."}))
    lines.insert(3, "not json")
    train.write_text("\n".join(lines) + "\n")
    overrides = [
        *(f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in tiny_encoder_dirs),
        f"phase1.data_dir={data}",
        f"phase1.output_dir={tmp_path / 'checkpoints'}",
        "phase1.run_name=skip",
        "phase1.epochs=1",
        "phase1.batch_size=4",
        "phase1.embed_dim=16",
        "phase1.head_hidden_dim=32",
        f"mlflow.tracking_uri={tmp_path / 'mlruns'}",
    ]
    with pytest.raises(ManifestError, match=rf"^{train}:4: malformed JSON"):
        run_phase1(load_config(None, overrides))  # error: the first bad line (4) stops it
    lines.pop(3)
    train.write_text("\n".join(lines) + "\n")
    with pytest.raises(MediaError, match=rf"noise\.wav: .*at {train}:2\)"):
        run_phase1(load_config(None, overrides))  # error: the undecodable audio stops it
    lines.insert(3, "not json")
    train.write_text("\n".join(lines) + "\n")

    result = run_phase1(load_config(None, [*overrides, "on_bad_sample=skip"]))
    skipped = [json.loads(x) for x in (result.run_dir / "skipped_samples.jsonl").open()]
    assert [(s["source"], s["kind"]) for s in skipped] == [
        (f"{train}:2", "undecodable_media"),
        (f"{train}:4", "malformed_json"),
    ]
    client = MlflowClient(tracking_uri=resolve_tracking(str(tmp_path / "mlruns"))[0])
    (run,) = client.search_runs([client.get_experiment_by_name("purrsight").experiment_id])
    assert run.data.metrics["skipped_samples"] == 2.0
    assert "skipped_samples.jsonl" in {a.path for a in client.list_artifacts(run.info.run_id)}
