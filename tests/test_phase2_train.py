"""Phase 2 training end to end on CPU: tiny random encoders, a random aligner, a tiny Qwen2
with the real Qwen2.5 tokenizer and chat template, a real Lightning Trainer.

Data: 9 train + 3 val samples, batch 3 → 3 optimizer steps per epoch, 2 epochs = 6 steps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from purrsight import precision
from purrsight.cli import main
from purrsight.config import Config, ConfigError, load_config
from purrsight.data.demo import generate_demo_dataset
from purrsight.data.manifest import ManifestError
from purrsight.models.aligner import Aligner, save_aligner
from purrsight.models.encoders import build_encoder
from purrsight.models.llm import load_llm
from purrsight.train.checkpointing import (
    EPOCH_NAME_PATTERN,
    is_trainable_key,
    resolve_aligner,
)
from purrsight.train.phase2 import TrainingInterrupted, run_phase2
from qwen_fixture import byte_tokenizer, qwen_tokenizer, tiny_llama, tiny_qwen

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "audio", "text")
RESPONSES = ["A calm cat.", "A scared cat!", "A playful cat."]


# ----------------------------------------------------------------------------- fixtures


def _write_split(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _make_data(root: Path) -> Path:
    """Demo media, re-listed as 9 train + 3 val samples with short text responses (so the
    151k-vocabulary logits stay small)."""
    data = root / "data"
    generate_demo_dataset(data, n=14, seed=5, image_size=32, audio_seconds=0.5)
    media = [json.loads(line) for line in (data / "all.jsonl").read_text().splitlines()]
    rows = []
    for i in range(12):
        m = media[i % len(media)]
        # Every third sample has one modality only: batches mix present and absent rows.
        rows.append(
            {
                "id": f"p2-{i:02d}",
                "image": m["image"] if i % 3 != 1 else None,
                "audio": m["audio"] if i % 3 != 2 else None,
                "instruction": "How does this cat feel?",
                "response": RESPONSES[i % 3],
                "label": m["label"],
            }
        )
    for row in rows:  # demo rows may lack a modality
        if not row["image"] and not row["audio"]:
            row["image"] = next(m["image"] for m in media if m["image"])
    _write_split(data / "train.jsonl", rows[:9])
    _write_split(data / "val.jsonl", rows[9:])
    return data


def _make_aligner(root: Path, config: Config, name: str = "run-a") -> Path:
    """A random aligner (embed 16) recorded as trained on the tiny encoders."""
    encoders = {m: build_encoder(m, getattr(config.encoders, m)) for m in MODALITIES}
    torch.manual_seed(0)
    aligner = Aligner({m: e.dim for m, e in encoders.items()}, embed_dim=16, hidden_dim=32)
    meta = {"encoders": {m: e.identity for m, e in encoders.items()}, "run_name": name}
    return save_aligner(root / "alignment" / name, aligner, meta)


def _make_llm_folder(root: Path, family: str) -> Path:
    """A tiny Qwen2 with the Qwen2.5 tokenizer, or a tiny Llama with a byte tokenizer and
    SmolLM2's template (a 259-token vocabulary: steps cost milliseconds)."""
    folder = root / f"tiny-{family}"
    tokenizer = qwen_tokenizer() if family == "qwen" else byte_tokenizer()
    make = tiny_qwen if family == "qwen" else tiny_llama
    make(len(tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_llama_run(root: Path, tiny_encoder_dirs: dict[str, Path]) -> list[str]:
    """Overrides for a Phase 2 run on tiny models under ``root``: the data, an aligner, a
    tiny Llama (byte tokenizer) and small projectors and LoRA; tests add their own steps,
    output folder and logging."""
    data = _make_data(root)
    encoders = [f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES]
    _make_aligner(root, load_config(None, encoders))
    return [
        *encoders,
        f"llm_model_name={_make_llm_folder(root, 'llama')}",
        f"phase1_checkpoint_path={root}/alignment/*/aligner.pt",
        f"data_dir={data}",
        "batch_size=3",
        "lora_r=4",
        "lora_alpha=8",
        "num_soft_tokens=2",
        "projector_hidden_dim=16",
        "num_workers=0",
        "preview_samples=0",
        "mlflow.enabled=false",
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dirs):
    """(root, overrides): everything a run needs; each test adds its own output_dir."""
    root = tmp_path_factory.mktemp("phase2")
    data = _make_data(root)
    encoders = [f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES]
    _make_aligner(root, load_config(None, encoders))
    overrides = [
        *encoders,
        f"llm_model_name={_make_llm_folder(root, 'qwen')}",
        f"phase1_checkpoint_path={root}/alignment/*/aligner.pt",
        f"data_dir={data}",
        "batch_size=3",
        "num_epochs=2",
        "learning_rate=5e-3",
        "warmup_steps=2",
        "lora_r=4",
        "lora_alpha=8",
        "lora_dropout=0.1",  # dropout on: resume must restore the RNG state too
        "num_soft_tokens=2",
        "projector_hidden_dim=16",
        "max_text_length=96",
        "num_workers=0",
        "log_every_n_steps=1",
        "gradient_checkpointing=true",
        "preview_samples=1",
        "max_new_tokens=4",
        "precision=32",  # the same steps on every CPU; tests that use auto fake the CPU
        f"mlflow.tracking_uri={root / 'mlruns'}",
        "mlflow.experiment_name=phase2-test",
    ]
    return root, overrides


def _config(setup, name: str, *extra: str) -> Config:
    root, overrides = setup
    return load_config(None, [*overrides, f"output_dir={root / name}", *extra])


# What cpuinfo reports for an AVX2-only CPU (e.g. an AMD EPYC before Zen 4).
NO_NATIVE_BF16 = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}


@pytest.fixture(scope="module")
def straight(setup):
    """6 uninterrupted steps with ``precision: auto`` on a CPU faked to lack native bf16,
    which resolves to fp32: what the run records must be "32", never "auto"."""
    config = _config(setup, "straight", "precision=auto")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(precision, "cpu_capabilities", lambda: dict(NO_NATIVE_BF16))
        return config, run_phase2(config)


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_holds_only_projectors_and_lora(straight) -> None:
    config, result = straight
    path = result.last_checkpoint
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    expected = {f"model.{k}" for k in result.model.trainable_state_dict()}
    assert set(state) == expected
    assert all(is_trainable_key(k) for k in state)
    assert not any(
        part in k for k in state for part in ("embed_tokens", "lm_head", "base_layer", "encoder")
    )
    assert {"optimizer_states", "lr_schedulers", "loops", "rng_states"} <= set(checkpoint)
    # Size: the trainable tensors plus AdamW's two moments, nowhere near the LLM's weights.
    trainable_bytes = sum(v.numel() * v.element_size() for v in state.values())
    llm_bytes = sum(f.stat().st_size for f in Path(config.llm_model_name).glob("*.safetensors"))
    size = path.stat().st_size
    assert size < 3 * trainable_bytes + 200_000, (size, trainable_bytes)
    assert size < llm_bytes / 20, (size, llm_bytes)
    # Self-describing: the resolved config and the aligner it was trained with.
    hparams = checkpoint["hyper_parameters"]
    assert hparams["config"]["lora_r"] == 4
    assert (config.precision, hparams["config"]["precision"]) == ("auto", "32")  # as it ran
    assert hparams["aligner"]["path"] == str(result.aligner_path.resolve())
    assert len(hparams["aligner"]["sha256"]) == 64
    assert hparams["modalities"] == ["image", "audio"]


def test_checkpoint_names_follow_the_guide(straight) -> None:
    _, result = straight
    names = sorted(p.name for p in (result.output_dir / "checkpoints").iterdir())
    epoch_files = [n for n in names if n.startswith("phase2-")]
    assert "last.ckpt" in names
    assert len(epoch_files) == 2, names  # 2 epochs, save_top_k=3
    assert all(re.fullmatch(EPOCH_NAME_PATTERN, n) for n in epoch_files), epoch_files
    # Epochs count from 1 in file names, as in the guide (phase2-epoch=01-… is the first).
    assert {n.split("-train_loss")[0] for n in epoch_files} == {
        "phase2-epoch=01",
        "phase2-epoch=02",
    }
    assert not [n for n in names if n.endswith(".tmp")]  # atomic writes left nothing behind


def test_frozen_weights_unchanged_and_adapters_trained(straight) -> None:
    config, result = straight
    base, _ = load_llm(config.llm_model_name)
    reference = base.state_dict()
    trained = result.model.llm.get_base_model().state_dict()
    compared = 0
    for name, value in trained.items():
        if ".lora_" in name:
            continue
        assert torch.equal(value, reference[name.replace(".base_layer", "")]), name
        compared += 1
    assert compared == len(reference)
    lora_b = [v for k, v in trained.items() if "lora_B" in k]
    # B starts at zero: non-zero after training means LoRA got gradients through the
    # gradient-checkpointed layers.
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


# ----------------------------------------------------------------------------- resume


class _StopAtFirstEpochEnd(Callback):
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


class _SigtermAt(Callback):
    """Sends this process a real SIGTERM after optimizer step ``step``; keeps the module
    so the test can read the steps it made before the interruption."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.module = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.module = pl_module

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _losses_and_lrs(history: list[dict]) -> list[tuple[int, float, float]]:
    return [(int(h["step"]), h["loss"], h["lr"]) for h in history]


class _ModeProbe(Callback):
    """Records, at every batch, whether the whole model is in train mode (LoRA dropout
    on) and whether gradient checkpointing is active."""

    def __init__(self) -> None:
        self.seen: set[tuple[bool, bool]] = set()

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        model = pl_module.model
        checkpointing = model.llm.get_base_model().is_activation_checkpointing
        self.seen.add((all(m.training for m in model.modules()), bool(checkpointing)))


class _FailBefore(Callback):
    """Raises ``error`` inside the training loop once ``step`` optimizer steps are done."""

    def __init__(self, step: int, error: BaseException | None = None) -> None:
        self.step = step
        self.error = error or RuntimeError("boom\nsecond line")

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        if trainer.global_step == self.step:
            raise self.error


@pytest.fixture(scope="module")
def llama(setup):
    """(overrides for the tiny Llama, 6-step uninterrupted reference, mode probe)."""
    root, _ = setup
    overrides = [
        f"llm_model_name={_make_llm_folder(root, 'llama')}",
        "max_text_length=400",  # the byte tokenizer spends a token per character
        "mlflow.enabled=false",
        "preview_samples=0",
    ]
    probe = _ModeProbe()
    reference = run_phase2(_config(setup, "reference", *overrides), callbacks=[probe])
    return overrides, reference, probe


def _assert_same_steps(got: list[dict], want: list[dict]) -> None:
    got_rows, want_rows = _losses_and_lrs(got), _losses_and_lrs(want)
    assert [g[0] for g in got_rows] == [w[0] for w in want_rows]
    for (step, loss, lr), (_, ref_loss, ref_lr) in zip(got_rows, want_rows, strict=True):
        assert abs(loss - ref_loss) <= 1e-6, (step, loss, ref_loss)
        assert lr == pytest.approx(ref_lr, rel=1e-12, abs=0), (step, lr, ref_lr)


def test_training_runs_in_train_mode_with_checkpointing(llama) -> None:
    _, _, probe = llama
    assert probe.seen == {(True, True)}


def test_interrupted_and_resumed_equals_uninterrupted(setup, llama, monkeypatch) -> None:
    """Steps 1-3, stop at the epoch end (last.ckpt); ``--resume``: step 4 then SIGTERM
    mid-epoch (emergency checkpoint); resume from that: steps 5-6. Same losses and LRs
    as 6 uninterrupted steps (tiny Llama: the same code path, 100× cheaper steps)."""
    overrides, reference, _ = llama
    # precision: auto resolving to fp32 at every start (as the reference's explicit 32).
    monkeypatch.setattr(precision, "cpu_capabilities", lambda: dict(NO_NATIVE_BF16))
    config = _config(setup, "resumed", *overrides, "precision=auto")
    first = run_phase2(config, callbacks=[_StopAtFirstEpochEnd()])
    assert first.metrics["steps"] == 3 and first.last_checkpoint is not None

    sigterm = _SigtermAt(step=4)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_phase2(config, resume="last", callbacks=[sigterm])
    assert stopped.value.exit_code == 143
    emergency = config_dir(config) / "emergency-step=4.ckpt"
    assert stopped.value.checkpoint == emergency and emergency.is_file()
    assert "SIGTERM at step 4" in str(stopped.value) and "\n" not in str(stopped.value)

    third = run_phase2(config, resume=str(emergency))
    assert [h["step"] for h in reference.history] == [1, 2, 3, 4, 5, 6]
    _assert_same_steps([*first.history, *sigterm.module.history, *third.history], reference.history)
    assert third.metrics["steps"] == 6


def test_sigterm_on_an_epochs_last_batch_resumes_at_the_next_epoch(setup, llama) -> None:
    """Lightning raises for this SIGTERM only after the epoch is counted complete; with
    max_steps set it would then resume one epoch too far (other data order)."""
    overrides, reference, _ = llama
    config = _config(setup, "epoch-end", *overrides, "max_steps=6")  # same 6-step schedule
    sigterm = _SigtermAt(step=3)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_phase2(config, callbacks=[sigterm])
    resumed = run_phase2(config, resume=str(stopped.value.checkpoint))
    assert stopped.value.checkpoint.name == "emergency-step=3.ckpt"
    _assert_same_steps([*sigterm.module.history, *resumed.history], reference.history)


def test_an_error_mid_epoch_leaves_a_checkpoint_that_resumes_exactly(setup, llama) -> None:
    """The batch that failed was handed out but never learned from: resuming redoes it."""
    overrides, reference, _ = llama
    config = _config(setup, "failed", *overrides)
    with pytest.raises(TrainingInterrupted) as failed:
        run_phase2(config, callbacks=[_FailBefore(step=4)])
    message = str(failed.value)
    assert failed.value.exit_code == 1 and "\n" not in message
    assert message.startswith("training failed: RuntimeError: boom at step 4; emergency "), message
    resumed = run_phase2(config, resume=str(failed.value.checkpoint))
    _assert_same_steps(resumed.history, reference.history[4:])


def config_dir(config: Config) -> Path:
    return Path(config.output_dir) / "checkpoints"


def test_sigterm_to_a_training_subprocess_leaves_a_resumable_checkpoint(setup) -> None:
    root, _ = setup
    config = _config(setup, "sigterm", "num_epochs=1000", "mlflow.enabled=false")
    config_file = root / "sigterm.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump()), encoding="utf-8")
    log_file = Path(config.output_dir) / "logs" / "training.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOG_LEVEL": "DEBUG"}
    with (root / "sigterm.out").open("w") as out, (root / "sigterm.err").open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train_phase2.py"), "--config", str(config_file)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 240
            while not (log_file.is_file() and re.search(r" step \d+/", log_file.read_text())):
                assert proc.poll() is None, (root / "sigterm.err").read_text()[-3000:]
                assert time.monotonic() < deadline, "no training step within 240 s"
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = (root / "sigterm.err").read_text().strip().splitlines()
    assert code == 143, stderr[-20:]
    match = re.fullmatch(r"error: training stopped by SIGTERM at step (\d+); .*", stderr[-1])
    assert match, stderr[-5:]
    step = int(match.group(1))
    emergency = config_dir(config) / f"emergency-step={step}.ckpt"
    assert emergency.is_file()
    state = torch.load(emergency, map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(is_trainable_key(k) for k in state)
    log_text = log_file.read_text()
    assert " DEBUG " in log_text  # LOG_LEVEL=DEBUG reached the file
    assert "run failed:" in log_text  # the cause's traceback is kept in the file

    resumed = run_phase2(
        # num_epochs as in the killed run: the epoch count must not cap the resumed steps
        _config(
            setup, "sigterm", "num_epochs=1000", "mlflow.enabled=false", f"max_steps={step + 2}"
        ),
        resume=str(emergency),
    )
    assert [h["step"] for h in resumed.history] == [step + 1, step + 2]


class _AnomalyProbe(Callback):
    def __init__(self) -> None:
        self.seen: set[bool] = set()

    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        self.seen.add(torch.is_anomaly_enabled())


def test_debug_shortens_the_run_and_detects_anomalies(setup, llama) -> None:
    overrides, _, _ = llama
    probe = _AnomalyProbe()
    config = _config(setup, "debug", *overrides, "num_epochs=10")
    result = run_phase2(config, debug=True, callbacks=[probe])
    assert result.metrics["steps"] == 5 and probe.seen == {True}
    assert not torch.is_anomaly_enabled()  # switched off again after the run


def test_cli_batch_size_and_debug_flags(setup, llama, capsys) -> None:
    root, base = setup
    overrides, _, _ = llama
    out = root / "cli"
    args = ["train", "phase2", "--config", str(ROOT / "config/demo.yaml")]
    for item in [*base, *overrides, f"output_dir={out}", "num_epochs=10"]:
        args += ["--set", item]
    # train_phase2.py's form: --debug after the subcommand (the CLI's own goes before it).
    assert main([*args, "--batch-size", "9", "--debug"]) == 0
    metrics = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert metrics["steps"] == 5  # --debug: at most 5 steps of the 10 planned
    saved = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert saved["config"]["batch_size"] == 9
    # With --debug a failure keeps its traceback (raised, not turned into one line).
    with pytest.raises(ConfigError, match="data_dir"):
        main(["--debug", *args, "--set", f"data_dir={root / 'nowhere'}"])


def test_ctrl_c_writes_an_emergency_checkpoint_and_exits_130(setup, llama) -> None:
    overrides, _, _ = llama
    config = _config(setup, "ctrl-c", *overrides)
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_phase2(config, callbacks=[_FailBefore(step=2, error=KeyboardInterrupt())])
    assert stopped.value.exit_code == 130
    assert str(stopped.value).startswith("training stopped by SIGINT (Ctrl+C) at step 2; ")
    assert stopped.value.checkpoint == config_dir(config) / "emergency-step=2.ckpt"
    assert stopped.value.checkpoint.is_file()
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning's SIG_IGN undone


# ----------------------------------------------------------------------------- paths


def test_glob_resolution_picks_the_newest(tmp_path: Path) -> None:
    paths = []
    for name in ["a-old", "b-newest", "c-middle"]:
        path = tmp_path / "alignment" / name / "aligner.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
        paths.append(path)
    now = time.time()
    for path, age in zip(paths, [300, 0, 100], strict=True):
        os.utime(path, (now - age, now - age))
    assert resolve_aligner(str(tmp_path / "alignment/*/aligner.pt")) == paths[1]
    assert resolve_aligner(str(paths[0])) == paths[0]  # a plain path is taken as it is
    with pytest.raises(ConfigError) as err:
        resolve_aligner(str(tmp_path / "nothing/*/aligner.pt"), "config/x.yaml")
    assert "purrsight train phase1 --config config/x.yaml" in str(err.value)
    assert "\n" not in str(err.value)


def test_guide_config_without_the_qwen_folder_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no models/Qwen2.5-0.5B-Instruct here
    started = time.perf_counter()
    code = main(["train", "phase2", "--config", str(ROOT / "config/train_config.yaml")])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "Traceback" not in err
    err = err.splitlines()[-1]  # before it: the run's log lines
    assert err.startswith(
        "error: llm_model_name: no model folder at 'models/Qwen2.5-0.5B-Instruct'"
    )
    assert "models/Qwen2.5-0.5B-Instruct" in err
    assert "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct" in err
    assert "config/demo.yaml" in err
    assert seconds < 10, seconds
    assert not (tmp_path / "outputs" / "checkpoints").exists()


def test_resume_without_a_checkpoint_is_one_line(setup, capsys) -> None:
    root, overrides = setup
    args = ["train", "phase2", "--config", str(ROOT / "config/demo.yaml")]
    for item in [*overrides, f"output_dir={root / 'empty'}"]:
        args += ["--set", item]
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err == f"error: --resume: no checkpoint at {root / 'empty' / 'checkpoints' / 'last.ckpt'}"
    )


def test_encoders_other_than_the_aligners_are_refused(setup, tmp_path) -> None:
    from tiny_models import make_tiny_vit

    other_vit = make_tiny_vit(tmp_path / "vit-seed1", seed=1)  # same shapes, other weights
    config = _config(setup, "mismatch", f"encoders.image={{type: hf, path: {other_vit}}}")
    with pytest.raises(
        ConfigError, match=r"^encoders\.image: the config's encoder .* is not the one"
    ):
        run_phase2(config)
    assert not (Path(config.output_dir) / "checkpoints").exists()


def test_video_only_samples_are_refused_and_text_is_never_a_phase2_input(tmp_path) -> None:
    from purrsight.data.manifest import Sample
    from purrsight.train.phase2_data import used_modalities

    def sample(**media) -> Sample:
        fields = {"image": None, "audio": None, "video": None, **media}
        return Sample(
            "s",
            **fields,
            instruction="?",
            response="A cat.",
            label=None,
            subject_id=None,
            source="x.jsonl:3",
        )

    both = sample(image=tmp_path / "a.png", audio=tmp_path / "a.wav", video=tmp_path / "a.mp4")
    assert used_modalities([[both]]) == ["image", "audio"]
    with pytest.raises(ManifestError, match=r"^x.jsonl:3: Phase 2 needs an image or audio"):
        used_modalities([[sample(video=tmp_path / "a.mp4")]])


# ----------------------------------------------------------------------------- MLflow, logs


def test_mlflow_gets_params_metrics_and_the_config(setup, straight) -> None:
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    root, _ = setup
    config, result = straight
    client = MlflowClient(tracking_uri=resolve_tracking(str(root / "mlruns"))[0])
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["lora_r"] == "4" and params["batch_size"] == "3"
    assert params["encoders.image.type"] == "hf" and params["precision"] == "32"
    for key in ("train_loss", "lr", "tokens_per_second", "samples_per_second", "val_loss"):
        assert key in run.data.metrics, key
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [round(m.value, 5) for m in sorted(losses, key=lambda m: m.step)] == [
        round(h["loss"], 5) for h in result.history
    ]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "training.log", "preview.json"} <= artifacts
    logged = yaml.safe_load(
        Path(client.download_artifacts(run.info.run_id, "config.yaml")).read_text()
    )
    assert logged == {**config.model_dump(), "precision": "32"}  # "auto" as it resolved


def test_training_log_has_the_run(straight) -> None:
    _, result = straight
    text = (result.output_dir / "logs" / "training.log").read_text()
    assert "Phase 1 aligner:" in text
    assert "precision: 32 (auto: CPU has neither avx512_bf16 nor amx_bf16" in text
    assert "step 6/6" in text and "Phase 2 done" in text
    assert len(result.previews) == 1 and "generated" in result.previews[0]


def test_a_fresh_run_archives_the_previous_runs_checkpoints(setup, llama) -> None:
    overrides, _, _ = llama
    config = _config(setup, "twice", *overrides, "max_steps=2", "num_epochs=1")
    first = run_phase2(config)
    first_last = (first.output_dir / "checkpoints" / "last.ckpt").read_bytes()
    second = run_phase2(config)
    checkpoints = second.output_dir / "checkpoints"
    assert not list(checkpoints.glob("last-v*.ckpt"))  # no versioned copies beside last.ckpt
    assert second.last_checkpoint == checkpoints / "last.ckpt"
    archived = list((checkpoints / "previous").glob("*/last.ckpt"))
    assert len(archived) == 1 and archived[0].read_bytes() == first_last


class _RowsPerBatch(Callback):
    """Records (rows, samples) of every training batch."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, *args) -> None:
        self.seen.append((int(batch.input_ids.shape[0]), batch.num_samples))


def test_packing_trains_the_same_steps_in_fewer_rows(setup, llama, tmp_path) -> None:
    """``packing=true`` on data mixing long and short responses: short samples share
    rows, and every step's loss and LR equal those of the padded run (dropout off: its
    masks are drawn per row layout)."""
    overrides, _, _ = llama
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "val"):
        rows = [json.loads(line) for line in (setup[0] / "data" / f"{split}.jsonl").open()]
        for i, row in enumerate(rows):
            row["response"] = "A calm cat, " * 30 if i % 3 == 0 else row["response"]
        _write_split(data / f"{split}.jsonl", rows)
        for folder in ("img", "aud"):  # copies: media may not lie outside the data folder
            if not (data / folder).exists():
                shutil.copytree(setup[0] / "data" / folder, data / folder)
    common = [*overrides, f"data_dir={data}", "lora_dropout=0", "max_text_length=800"]
    histories, layouts = [], []
    for packing in ("false", "true"):
        probe = _RowsPerBatch()
        config = _config(setup, f"packing-{packing}", *common, f"packing={packing}")
        histories.append(run_phase2(config, callbacks=[probe]).history)
        layouts.append(probe.seen)
    assert all(rows == samples for rows, samples in layouts[0])
    assert all(rows <= samples for rows, samples in layouts[1]), layouts[1]
    assert any(rows < samples for rows, samples in layouts[1]), layouts[1]
    assert [s for _, s in layouts[0]] == [s for _, s in layouts[1]]
    got, want = _losses_and_lrs(histories[1]), _losses_and_lrs(histories[0])
    assert len(got) == len(want) == 6
    for (step, loss, lr), (_, ref_loss, ref_lr) in zip(got, want, strict=True):
        assert abs(loss - ref_loss) <= 1e-5, (step, loss, ref_loss)
        assert lr == ref_lr
