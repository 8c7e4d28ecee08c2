"""MLflow set-up shared by both training phases.

MLflow 3.17 refuses its plain file store, so a folder given as the tracking URI
becomes a SQLite store inside it (``<folder>/mlflow.db``) with artifacts beside it
(``<folder>/artifacts``). ``mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db``
shows the runs.
"""

from __future__ import annotations

import os
from pathlib import Path

# Before mlflow is imported anywhere: no telemetry from an offline machine.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

_URI_SCHEMES = ("sqlite:", "http:", "https:", "file:", "postgresql", "mysql", "databricks")


def resolve_tracking(uri_or_folder: str) -> tuple[str, str | None]:
    """(tracking URI, artifact location or None) for a folder or an MLflow URI."""
    if uri_or_folder.startswith(_URI_SCHEMES):
        return uri_or_folder, None
    folder = Path(uri_or_folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def ui_command(uri_or_folder: str) -> str:
    """The command that shows these runs in a browser."""
    uri, _ = resolve_tracking(uri_or_folder)
    return f"mlflow ui --backend-store-uri {uri}"


def make_logger(tracking: str, experiment: str, run_name: str, run_id: str | None = None):
    """A Lightning MLFlowLogger writing to ``tracking`` (folder or URI): a new run named
    ``run_name``, or the existing run ``run_id`` continued.

    Call it on rank 0 only: two processes creating one new SQLite store at once crash."""
    from lightning.pytorch.loggers import MLFlowLogger

    uri, artifacts = resolve_tracking(tracking)
    return MLFlowLogger(
        experiment_name=experiment,
        run_name=run_name,
        tracking_uri=uri,
        artifact_location=artifacts,
        run_id=run_id,
    )


def log_evaluation(metrics: dict, out_dir: Path, bundle_info: dict) -> str:
    """One MLflow run for a ``purrsight evaluate``: the headline metrics per system and
    modality subset, the bundle's identity as params, the four output files as artifacts.
    Written to ``outputs/mlruns`` (the same SQLite store training uses)."""
    import mlflow

    uri, artifacts = resolve_tracking("outputs/mlruns")
    mlflow.set_tracking_uri(uri)
    experiment = "purrsight-evaluate"
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=f"evaluate-{Path(metrics['data']).stem}") as run:
        mlflow.log_params(
            {
                "bundle": metrics["bundle"],
                "data": metrics["data"],
                "llm": bundle_info["llm"]["name"],
                "llm_kind": bundle_info["llm"]["kind"],
                "unsure_threshold": metrics["unsure_threshold"],
                "max_generate": str(metrics["max_generate"]),
            }
        )
        values = {}
        for system in ("label_scoring", "llm_alone", "generation", "report"):
            m = metrics.get(system, {})
            if not m.get("n"):
                continue
            for key in ("accuracy", "macro_f1", "balanced_accuracy", "ece"):
                if m.get(key) is not None:  # free generation has no ECE
                    values[f"{system}.{key}"] = m[key]
            for subset, sm in m["subsets"].items():
                if sm.get("n"):
                    values[f"{system}.{subset}.macro_f1"] = sm["macro_f1"]
        mlflow.log_metrics(values)
        for name in ("metrics.json", "report.md", "confusion_matrix.png", "reliability.png"):
            if (out_dir / name).is_file():
                mlflow.log_artifact(str(out_dir / name))
        return run.info.run_id
