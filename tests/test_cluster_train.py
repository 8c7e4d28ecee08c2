"""``./cluster_train.sh`` and DDP on CPU (gloo): real torchrun jobs of tiny models.

Tiny random encoders and aligner, a tiny Llama with a byte tokenizer (a token per
character), 4 training samples whose responses have very different lengths, so the two
processes of a job see different numbers of target tokens. Each job is 2 processes × batch
2: one optimizer step per epoch. The config is a real YAML file the CLI loads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from purrsight.config import load_config
from purrsight.data.demo import generate_demo_dataset
from purrsight.models.aligner import Aligner, save_aligner
from purrsight.models.encoders import build_encoder
from purrsight.train.checkpointing import EPOCH_NAME_PATTERN, is_trainable_key
from purrsight.train.phase2 import run_phase2
from purrsight.train.tracking import resolve_tracking
from qwen_fixture import byte_tokenizer, tiny_llama

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "cluster_train.sh"
MODALITIES = ("image", "audio", "text")
# Lengths 5, 24, 71, 118 characters: any 2 + 2 split of them has unequal token counts.
RESPONSES = [
    "Calm.",
    "A scared cat, ears back.",
    "A playful cat: tail up, eyes bright, pouncing on a toy and chirping at it.",
    "A cat in pain: hunched posture, squinting eyes, flattened ears and a low growl; "
    "it should see a veterinarian soon.",
]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="bash launcher")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dirs) -> tuple[Path, list[str]]:
    """(root, overrides) for a 4-sample Phase 2 run; every job adds its own folders."""
    root = tmp_path_factory.mktemp("cluster")
    data = root / "data"
    generate_demo_dataset(data, n=8, seed=3, image_size=32, audio_seconds=0.5)
    media = [json.loads(line) for line in (data / "all.jsonl").read_text().splitlines()]
    image = next(m["image"] for m in media if m["image"])
    audio = next(m["audio"] for m in media if m["audio"])
    rows = [
        {
            "id": f"c-{i}",
            "image": image,
            # One sample has audio: the other process's batch has none (its audio
            # projector is unused there, which DDP must survive).
            "audio": audio if i == 2 else None,
            "instruction": "How does this cat feel?",
            "response": response,
        }
        for i, response in enumerate(RESPONSES)
    ]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "val.jsonl").unlink()

    encoders = [f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES]
    config = load_config(None, encoders)
    built = {m: build_encoder(m, getattr(config.encoders, m)) for m in MODALITIES}
    torch.manual_seed(0)
    aligner = Aligner({m: e.dim for m, e in built.items()}, embed_dim=16, hidden_dim=32)
    meta = {"encoders": {m: e.identity for m, e in built.items()}, "run_name": "tiny"}
    save_aligner(root / "alignment" / "tiny", aligner, meta)

    llm = root / "tiny-llama"
    tokenizer = byte_tokenizer()
    tiny_llama(len(tokenizer)).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    overrides = [
        *encoders,
        f"llm_model_name={llm}",
        f"phase1_checkpoint_path={root}/alignment/*/aligner.pt",
        f"data_dir={data}",
        "batch_size=2",  # per process
        "num_epochs=3",
        "learning_rate=5e-3",
        "warmup_steps=0",
        "weight_decay=0.01",
        "lora_r=4",
        "lora_alpha=8",
        "lora_dropout=0.0",  # the same result on 1 and 2 processes needs no random masks
        "num_soft_tokens=2",
        "projector_hidden_dim=16",
        "max_text_length=400",
        "num_workers=0",
        "log_every_n_steps=1",
        "save_top_k=5",
        "preview_samples=0",
        "precision=32",
        "mlflow.experiment_name=cluster-test",
    ]
    return root, overrides


def write_config(setup, name: str, *extra: str) -> Path:
    """``<root>/<name>/config.yaml`` writing to ``<root>/<name>/outputs`` and its own
    MLflow store ``<root>/<name>/mlruns``."""
    root, overrides = setup
    job = root / name
    job.mkdir()
    config = load_config(
        None,
        [
            *overrides,
            f"output_dir={job / 'outputs'}",
            f"mlflow.tracking_uri={job / 'mlruns'}",
            *extra,
        ],
    )
    path = job / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump()), encoding="utf-8")
    return path


def script_env(**extra: str) -> dict[str, str]:
    """This venv's torchrun first on PATH, this checkout's src importable, 1 thread each."""
    env = {**os.environ, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTHON", None)
    env.pop("TORCHRUN", None)
    return env


def launch(config: Path, *args: str, **env: str) -> subprocess.Popen:
    """``cluster_train.sh config args…`` in the config's folder; output to a file there."""
    job = config.parent
    return start([str(SCRIPT), str(config), *args], job, script_env(**env))


def start(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    output = cwd / f"process{len(list(cwd.glob('process*.out')))}.out"
    with output.open("w") as handle:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT)
    proc.output_path = output  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """(exit code, everything it printed)."""
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, proc.output_path.read_text()  # type: ignore[attr-defined]


def mlflow_runs(job: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=resolve_tracking(str(job / "mlruns"))[0])
    experiment = client.get_experiment_by_name("cluster-test")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(setup):
    """``NPROC=2 ./cluster_train.sh config.yaml``: 3 epochs of one step each."""
    config = write_config(setup, "nproc2")
    code, output = finish(launch(config, NPROC="2"))
    return config.parent, code, output


# ----------------------------------------------------------------------------- tests


@pytest.mark.slow
def test_two_cpu_processes_one_run_one_checkpoint_set_and_node_logs(two_processes) -> None:
    job, code, output = two_processes
    assert code == 0, output[-3000:]
    out = job / "outputs"
    logs = out / "logs"
    # Both processes trained and finished (rank 0 and rank 1 each keep a log).
    rank0, rank1 = (logs / "training.log").read_text(), (logs / "training.rank1.log").read_text()
    for rank, text in enumerate((rank0, rank1)):
        assert f"process {rank} of 2 (2 on this node)" in text
        assert "Phase 2 done" in text
    assert "step 3/3" in rank0
    # One MLflow run for the job, finished, with the global loss at every step.
    runs = mlflow_runs(job)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["batch_size"] == "2"
    # One set of checkpoints, written by rank 0: last + one per epoch, nothing else.
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    epochs = [n for n in names if n.startswith("phase2-")]
    assert names == sorted(["last.ckpt", *epochs]) and len(epochs) == 3, names
    assert all(re.fullmatch(EPOCH_NAME_PATTERN, n) for n in epochs)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert all(is_trainable_key(k) for k in last["state_dict"])
    assert last["mlflow_run_id"] == runs[0].info.run_id
    assert f"this job's MLflow run: {runs[0].info.run_id}" in rank1  # rank 0 told rank 1
    # The per-node log and its symlink; both local ranks' lines are in it.
    folder = logs / "distributed_training"
    node_logs = list(folder.glob("cluster_train_*_node0.log"))
    assert len(node_logs) == 1 and re.fullmatch(
        r"cluster_train_\d{8}_\d{6}_node0\.log", node_logs[0].name
    )
    latest = folder / "latest_node0.log"
    assert latest.is_symlink() and latest.resolve() == node_logs[0].resolve()
    text = latest.read_text()
    assert "2 CPU processes (gloo)" in text
    assert "[default0]" in text and "[default1]" in text
    assert "node 0 finished with exit code 0" in text


class _StopAfterFirstStep(Callback):
    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        trainer.should_stop = True


@pytest.mark.slow
def test_two_processes_of_batch_b_step_like_one_process_of_batch_2b(setup, two_processes) -> None:
    """One optimizer step of 2 processes × batch 2 (different token counts per process)
    gives the weights of one process × batch 4, because the loss is normalised by the
    job's number of target tokens, not each process's."""
    job, code, output = two_processes
    assert code == 0, output[-3000:]
    first_epoch = next((job / "outputs" / "checkpoints").glob("phase2-epoch=01-*.ckpt"))
    ddp = checkpoint_state(first_epoch)  # after step 1 (one step per epoch)

    root, overrides = setup
    single = load_config(
        None,
        [*overrides, "batch_size=4", f"output_dir={root / 'single'}", "mlflow.enabled=false"],
    )
    result = run_phase2(single, callbacks=[_StopAfterFirstStep()])
    assert result.metrics["steps"] == 1
    reference = {f"model.{k}": v for k, v in result.model.trainable_state_dict().items()}
    assert set(ddp) == set(reference)
    diff = max(float((ddp[k] - reference[k]).abs().max()) for k in reference)
    print(f"max abs weight difference, 2 processes x 2 vs 1 process x 4: {diff:.3g}")
    assert diff <= 1e-5, diff
    # The step moved the weights (LoRA B starts at zero) far more than that tolerance.
    moved = max(float(v.abs().max()) for k, v in reference.items() if "lora_B" in k)
    assert moved > 1e-3, moved


@pytest.mark.slow
def test_two_nodes_of_one_process_each_on_localhost(setup) -> None:
    config = write_config(setup, "two-nodes", "num_epochs=2")
    port = str(free_port())
    nodes = [launch(config, "2", str(k), "127.0.0.1", port, NPROC="1") for k in (0, 1)]
    results = [finish(proc) for proc in nodes]
    for code, output in results:
        assert code == 0, output[-3000:]
    out = config.parent / "outputs"
    logs = out / "logs"
    for rank in (0, 1):
        text = (logs / ("training.log" if rank == 0 else "training.rank1.log")).read_text()
        assert f"process {rank} of 2 (1 on this node)" in text and "Phase 2 done" in text
        latest = logs / "distributed_training" / f"latest_node{rank}.log"
        assert latest.is_symlink() and f"node {rank} of 2" in latest.read_text()
    assert len(mlflow_runs(config.parent)) == 1
    assert (out / "checkpoints" / "last.ckpt").is_file()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the job ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_killed_worker_restarts_the_job_which_resumes_and_completes(setup) -> None:
    steps = 30
    config = write_config(setup, "restart", f"num_epochs={steps}")
    out = config.parent / "outputs"
    rank0_log, rank1_log = out / "logs" / "training.log", out / "logs" / "training.rank1.log"
    proc = launch(config, NPROC="2", MAX_RESTARTS="1")

    def pid_of_rank1() -> int | None:
        text = rank1_log.read_text() if rank1_log.is_file() else ""
        found = re.search(r"process 1 of 2 \(2 on this node\), pid (\d+)", text)
        return int(found.group(1)) if found else None

    def trained_past_an_epoch_end() -> bool:
        text = rank0_log.read_text() if rank0_log.is_file() else ""
        done = [int(s) for s in re.findall(rf" step (\d+)/{steps} ", text)]
        return bool(done) and max(done) >= 2 and (out / "checkpoints" / "last.ckpt").is_file()

    try:
        _wait_for(pid_of_rank1, proc, 240, "rank 1 start")
        _wait_for(trained_past_an_epoch_end, proc, 240, "second step")
        os.kill(pid_of_rank1(), signal.SIGKILL)
    except BaseException:
        proc.kill()
        raise
    code, output = finish(proc)
    assert code == 0, output[-3000:]

    text = rank0_log.read_text()
    restart = re.search(r"restart 1 of this job: resuming from (\S+) \(step (\d+)\)", text)
    assert restart, text[-3000:]
    resumed_step = int(restart.group(2))
    assert Path(restart.group(1)) == out / "checkpoints" / "last.ckpt"
    after = text[restart.end() :]
    logged = [int(s) for s in re.findall(rf" step (\d+)/{steps} ", after)]
    assert logged[0] == resumed_step + 1 and logged[-1] == steps, logged  # it continued
    assert resumed_step >= 1 and "Phase 2 done" in after
    assert "Restored all states from the checkpoint" in after
    # Still one MLflow run: the restarted processes continued it.
    runs = mlflow_runs(config.parent)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", runs
    assert "restart_1" in runs[0].data.tags
    assert "torchelastic" in output.lower() or "restart" in output.lower()


def test_bad_arguments_and_configs_stop_before_any_worker_starts(setup, tmp_path) -> None:
    config = write_config(setup, "bad")
    cases = [
        ([str(config), "2", "0"], "2 nodes need MASTER_ADDR and MASTER_PORT"),
        ([str(config), "2", "5", "127.0.0.1", "29500"], "NODE_RANK must be an integer from 0 to 1"),
        ([str(config), "--set", "lora_r=zero"], "lora_r"),
        ([str(tmp_path / "missing.yaml")], "config file not found"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [str(SCRIPT), *args], cwd=tmp_path, env=script_env(), capture_output=True, text=True
        )
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert not (config.parent / "outputs").exists()


@pytest.mark.slow
def test_the_same_training_through_lightnings_slurm_support(setup) -> None:
    """What ``srun`` in scripts/slurm_train.sbatch starts: one ``train_phase2.py`` per task
    with SLURM's variables and no torchrun ones; Lightning's SLURMEnvironment finds the
    rendezvous host in SLURM_NODELIST and the ranks in SLURM_PROCID / SLURM_LOCALID."""
    config = write_config(setup, "slurm", "num_epochs=1")
    job = config.parent
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = script_env(
            SLURM_JOB_ID="4242",
            SLURM_JOB_NAME="purrsight-phase2",
            SLURM_NTASKS="2",
            SLURM_NTASKS_PER_NODE="2",
            SLURM_NNODES="1",
            SLURM_NODELIST="127.0.0.1",
            SLURM_PROCID=str(rank),
            SLURM_LOCALID=str(rank),
            SLURM_NODEID="0",
            MASTER_PORT=port,
        )
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR"):
            env.pop(name, None)
        command = [sys.executable, str(ROOT / "train_phase2.py"), "--config", str(config)]
        procs.append(start(command, job, env))
    for rank, proc in enumerate(procs):
        code, output = finish(proc)
        assert code == 0, output[-3000:]
        text = (job / "outputs" / "logs" / ("training.log", "training.rank1.log")[rank]).read_text()
        assert f"process {rank} of 2 (2 on this node)" in text and "Phase 2 done" in text
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in output
    assert len(mlflow_runs(job)) == 1
    assert (job / "outputs" / "checkpoints" / "last.ckpt").is_file()


def test_rank_and_world_come_from_torchrun_or_srun(monkeypatch) -> None:
    from purrsight.train.distributed import process_rank, restart_count, world_size

    for name in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "TORCHELASTIC_RESTART_COUNT",
        "SLURM_NTASKS",
        "SLURM_NTASKS_PER_NODE",
        "SLURM_PROCID",
        "SLURM_JOB_NAME",
        "SLURM_RESTART_COUNT",
    ]:
        monkeypatch.delenv(name, raising=False)
    assert (world_size(), process_rank(), restart_count()) == ((1, 1), 0, 0)
    # srun: 2 nodes × 4 tasks
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4(x2)")
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_JOB_NAME", "purrsight-phase2")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert (world_size(), process_rank(), restart_count()) == ((8, 4), 5, 1)
    # An interactive allocation (Lightning's convention) is not an srun step.
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    assert (world_size(), process_rank()) == ((1, 1), 0)
    # torchrun's variables win (torchrun inside a SLURM allocation).
    monkeypatch.setenv("SLURM_JOB_NAME", "purrsight-phase2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    assert (world_size(), process_rank(), restart_count()) == ((2, 1), 1, 2)


@pytest.mark.slow
def test_phase1_loss_gathers_features_across_processes_with_gradient(tmp_path) -> None:
    """2 processes × 4 rows give the loss and (DDP-averaged) gradients of 1 process × 8
    rows: each process contrasts against all 8 rows and gradients flow through the
    gathered rows of the other process."""
    import torch.multiprocessing as mp

    import phase1_ddp_worker as worker

    mp.spawn(worker.run, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    module = worker.make_module()
    features, present = worker.make_batch()
    loss, _, size = module.batch_loss(features, present)
    loss.backward()
    assert ddp["size"] == size == 8
    assert torch.allclose(ddp["loss"], loss.detach(), atol=1e-6)
    for name, param in module.named_parameters():
        assert torch.allclose(ddp["grads"][name], param.grad, atol=1e-6), name

    # Without the gather (each process alone on its 4 rows) the gradient is another one.
    module.zero_grad()
    for half in (slice(0, 4), slice(4, 8)):
        local, _, _ = module.batch_loss(
            {m: x[half] for m, x in features.items()}, {m: p[half] for m, p in present.items()}
        )
        (local / 2).backward()
    head = "aligner.heads.image.net.1.weight"
    grads = dict(module.named_parameters())
    assert not torch.allclose(ddp["grads"][head], grads[head].grad, atol=1e-4)


@pytest.mark.slow
def test_phase1_under_torchrun_writes_one_aligner_and_one_run(tmp_path, tiny_encoder_dirs) -> None:
    """``torchrun --nproc-per-node=2 -m purrsight.cli train phase1``: rank 0's run folder
    name reaches rank 1 (both print the same aligner path), rank 0 alone writes it and
    the MLflow run."""
    generate_demo_dataset(tmp_path / "data", n=40, seed=3, image_size=32, audio_seconds=0.5)
    overrides = [
        *[f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES],
        f"phase1.data_dir={tmp_path / 'data'}",
        f"phase1.output_dir={tmp_path / 'checkpoints'}",
        "phase1.epochs=2",
        "phase1.batch_size=4",
        "phase1.embed_dim=16",
        "phase1.head_hidden_dim=32",
        f"mlflow.tracking_uri={tmp_path / 'mlruns'}",
        "mlflow.experiment_name=cluster-test",
    ]
    config = tmp_path / "phase1.yaml"
    config.write_text(yaml.safe_dump(load_config(None, overrides).model_dump()), encoding="utf-8")
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"),
        *("--tee=3", "-m", "purrsight.cli", "train", "phase1", "--config", str(config)),
    ]
    code, output = finish(start(command, tmp_path, script_env()))
    assert code == 0, output[-3000:]
    printed = set(re.findall(r"\[default\d\]:aligner: (\S+)", output))
    folders = [p.parent for p in (tmp_path / "checkpoints").glob("*/aligner.pt")]
    assert len(folders) == 1 and printed == {str(folders[0] / "aligner.pt")}, (printed, folders)
    assert len(re.findall(r"\[default\d\]:aligner: ", output)) == 2  # both ranks finished
    assert len(mlflow_runs(tmp_path)) == 1
