"""The nine validation checks on a tiny setup: all pass, and breaking one part on purpose
makes exactly that check fail while the others pass or, if they need it, skip.

Setup: tiny random HF encoders, a random aligner, a tiny Llama with a byte tokenizer
(SmolLM2's chat template), demo media re-listed as 9 train + 3 val samples.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from purrsight.cli import main
from purrsight.config import dump_config, load_config
from purrsight.data.demo import generate_demo_dataset
from purrsight.models.aligner import Aligner, save_aligner
from purrsight.models.encoders import build_encoder
from purrsight.validate import _checks, run_validation
from purrsight.validation.context import Hooks
from qwen_fixture import byte_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[1]
MODALITIES = ("image", "audio", "text")
GUIDE_ORDER = [
    "Configuration Validation",
    "Model Initialization",
    "Parameter Freezing",
    "Data Pipeline",
    "Forward Pass",
    "Training Step",
    "Checkpoint Saving",
    "MLflow Logging",
    "Short Training Run",
]


# ----------------------------------------------------------------------------- setup


def _make_data(root: Path) -> Path:
    data = root / "data"
    generate_demo_dataset(data, n=14, seed=5, image_size=32, audio_seconds=0.5)
    media = [json.loads(line) for line in (data / "all.jsonl").read_text().splitlines()]
    rows = []
    for i in range(12):
        m = media[i % len(media)]
        rows.append(
            {
                "id": f"v-{i:02d}",
                "image": m["image"] or next(x["image"] for x in media if x["image"]),
                "audio": m["audio"] if i % 3 else None,  # some samples have no audio
                "instruction": "How does this cat feel?",
                "response": ["A calm cat.", "A scared cat!", "A playful cat."][i % 3],
                "label": m["label"],
            }
        )
    for split, part in (("train", rows[:9]), ("val", rows[9:])):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return data


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dirs):
    """(root, overrides) for a config on which all nine checks pass."""
    root = tmp_path_factory.mktemp("validate")
    data = _make_data(root)
    encoders = [f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES]
    built = {
        m: build_encoder(m, getattr(load_config(None, encoders).encoders, m)) for m in MODALITIES
    }
    torch.manual_seed(0)
    aligner = Aligner({m: e.dim for m, e in built.items()}, embed_dim=16, hidden_dim=32)
    save_aligner(
        root / "alignment" / "run-a",
        aligner,
        {"encoders": {m: e.identity for m, e in built.items()}},
    )
    llm = root / "tiny-llama"
    tokenizer = byte_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    mlruns = root / "mlruns"
    _migrated_store(mlruns)
    overrides = [
        *encoders,
        f"llm_model_name={llm}",
        f"phase1_checkpoint_path={root}/alignment/*/aligner.pt",
        f"data_dir={data}",
        "batch_size=3",
        "learning_rate=5e-3",
        "warmup_steps=1",
        "lora_r=4",
        "lora_alpha=8",
        "num_soft_tokens=2",
        "projector_hidden_dim=16",
        "max_text_length=400",
        "num_workers=0",
        "precision=32",
        f"mlflow.tracking_uri={mlruns}",
        "mlflow.experiment_name=validate-test",
    ]
    return root, overrides


def _migrated_store(folder: Path) -> None:
    """An MLflow SQLite store made once (its migrations take seconds) holding the config's
    experiment, as a real outputs/mlruns would; validation tests a copy of it."""
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    client = MlflowClient(tracking_uri=resolve_tracking(str(folder))[0])
    client.create_experiment("validate-test", (folder / "artifacts").as_uri())


def _validate(setup, tmp_path: Path, *extra: str, hooks: Hooks | None = None, quick=False):
    _, overrides = setup
    out = [*overrides, f"output_dir={tmp_path / 'outputs'}", *extra]
    return run_validation(None, out, quick=quick, hooks=hooks)


def _dependants(number: int) -> set[int]:
    """Checks that (transitively) need check ``number`` (1-based)."""
    needs = {i + 1: set(c.needs) for i, c in enumerate(_checks())}
    found: set[int] = set()
    changed = True
    while changed:
        changed = False
        for check, wanted in needs.items():
            if check not in found and wanted & (found | {number}):
                found.add(check)
                changed = True
    return found


def _assert_only_failure(results, number: int, words: str) -> None:
    statuses = {i + 1: r.status for i, r in enumerate(results)}
    failed = results[number - 1]
    assert failed.status == "FAIL", [(r.name, r.status, r.detail) for r in results]
    assert words in failed.detail, failed.detail
    assert "\n" not in failed.detail
    skipped = _dependants(number)
    for i, status in statuses.items():
        if i == number:
            continue
        want = "SKIP" if i in skipped else "PASS"
        assert status == want, (results[i - 1].name, status, results[i - 1].detail)
        if want == "SKIP":
            assert f"needs {failed.name}, which failed" in results[i - 1].detail


# ----------------------------------------------------------------------------- all pass


def test_checks_are_the_guides_nine_in_order() -> None:
    assert [c.name for c in _checks()] == GUIDE_ORDER


def test_all_nine_pass_and_json_has_nine_entries(setup, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    root, overrides = setup
    config_file = tmp_path / "tiny.yaml"
    dump_config(load_config(None, [*overrides, f"output_dir={tmp_path / 'out'}"]), config_file)
    code = main(["validate", "--config", str(config_file), "--json"])
    document = json.loads(capsys.readouterr().out)  # nothing but the JSON on stdout
    assert code == 0, document
    assert [c["name"] for c in document["checks"]] == GUIDE_ORDER
    assert [c["status"] for c in document["checks"]] == ["PASS"] * 9, document
    assert (document["passed"], document["total"]) == (9, 9)
    assert all(set(c) == {"name", "status", "seconds", "detail"} for c in document["checks"])
    # Validation leaves nothing behind: no run in the user's store, no file in outputs.
    assert not (tmp_path / "out").exists()
    from mlflow.tracking import MlflowClient

    from purrsight.train.tracking import resolve_tracking

    client = MlflowClient(tracking_uri=resolve_tracking(str(root / "mlruns"))[0])
    assert {e.name for e in client.search_experiments()} == {"validate-test", "Default"}
    assert not client.search_runs([client.get_experiment_by_name("validate-test").experiment_id])
    assert not [p for p in (root / "mlruns").rglob("*") if p.is_file() and p.name != "mlflow.db"]


def test_quick_runs_the_guides_quick_set(setup, tmp_path) -> None:
    cache = tmp_path / "cache"
    results = _validate(
        setup, tmp_path, "feature_cache=true", f"feature_cache_dir={cache}", quick=True
    )
    statuses = [r.status for r in results]
    assert statuses == ["PASS"] * 5 + ["SKIP"] * 3 + ["PASS"], results
    assert all(r.detail == "not in the --quick set" for r in results[5:8])
    assert not cache.exists()  # the short run filled a cache of its own


# ----------------------------------------------------------------------------- one broken


class _CrashInTraining(Callback):
    def on_train_batch_start(self, trainer, pl_module, *args) -> None:
        raise RuntimeError("the loop broke")


def _unfreeze_image_encoder(ctx) -> None:
    ctx.encoders["image"].requires_grad_(True)


def _nan_projector(ctx) -> None:
    with torch.no_grad():
        ctx.model.projectors["image"].net[1].weight.fill_(float("nan"))


def test_bad_config_key_fails_check_1(setup, tmp_path) -> None:
    results = _validate(setup, tmp_path, "not_a_key=1")
    _assert_only_failure(results, 1, "unknown key 'not_a_key'")


def test_missing_llm_folder_fails_check_1_with_how_to(setup, tmp_path) -> None:
    folder = tmp_path / "models" / "Qwen2.5-0.5B-Instruct"
    results = _validate(setup, tmp_path, f"llm_model_name={folder}")
    _assert_only_failure(results, 1, "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct")


def test_lora_target_the_llm_lacks_fails_check_2(setup, tmp_path) -> None:
    results = _validate(setup, tmp_path, "lora_target_modules=[no_such_proj]")
    _assert_only_failure(results, 2, "lora_target_modules")


def test_unfrozen_encoder_fails_check_3(setup, tmp_path) -> None:
    hooks = Hooks(after_build=_unfreeze_image_encoder)
    _assert_only_failure(_validate(setup, tmp_path, hooks=hooks), 3, "encoder image")


def test_unreadable_media_file_fails_check_4(setup, tmp_path) -> None:
    root, _ = setup
    data = shutil.copytree(root / "data", tmp_path / "data")
    first = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    (data / first["image"]).write_bytes(b"this is not an image")
    results = _validate(setup, tmp_path, f"data_dir={data}")
    _assert_only_failure(results, 4, Path(first["image"]).name)


def test_nan_loss_fails_check_5(setup, tmp_path) -> None:
    results = _validate(setup, tmp_path, hooks=Hooks(after_build=_nan_projector))
    _assert_only_failure(results, 5, "loss is nan")


def test_loss_that_does_not_fall_fails_check_6(setup, tmp_path) -> None:
    results = _validate(setup, tmp_path, "learning_rate=1e-12")
    _assert_only_failure(results, 6, "the loss did not fall")


def test_unwritable_checkpoint_folder_fails_check_7(setup, tmp_path) -> None:
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "checkpoints").write_text("a file where the folder should be")
    _assert_only_failure(_validate(setup, tmp_path), 7, "cannot write a checkpoint")


def test_broken_mlflow_store_fails_check_8(setup, tmp_path) -> None:
    broken = tmp_path / "mlruns"
    broken.mkdir()
    (broken / "mlflow.db").write_bytes(b"not a database at all" * 100)
    results = _validate(setup, tmp_path, f"mlflow.tracking_uri={broken}")
    _assert_only_failure(results, 8, "MLflow store")


def test_trainer_failure_fails_check_9(setup, tmp_path) -> None:
    hooks = Hooks(trainer_callbacks=[_CrashInTraining()])
    _assert_only_failure(_validate(setup, tmp_path, hooks=hooks), 9, "the loop broke")


# ----------------------------------------------------------------------------- the script


def test_script_without_the_qwen_folder_fails_check_1_and_skips_the_rest(tmp_path) -> None:
    """The guide's `python validate_phase2.py` on config/train_config.yaml in a checkout
    with no models/ folder: one FAIL with the how-to, eight SKIPs, exit 1."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "train_config.yaml", tmp_path / "config")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "validate_phase2.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stderr
    assert lines[0].startswith("FAIL: Configuration Validation (")
    assert "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct" in lines[1]
    skips = [line for line in lines if line.startswith("SKIP: ")]
    assert len(skips) == 8
    reasons = [lines[lines.index(skip) + 1] for skip in skips]
    assert all(r.startswith("    needs Configuration Validation, which failed") for r in reasons)
    assert lines[-1] == "Results: 0/9 checks passed"
