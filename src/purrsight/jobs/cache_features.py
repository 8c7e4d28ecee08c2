"""``purrsight cache-features``: fill the feature cache for a config's data.

    purrsight cache-features --config config/demo.yaml

Two levels (see :mod:`purrsight.features.cache`): raw encoder features of Phase 1's
splits (``phase1.data_dir``: train, val) and of the label descriptions; aligned features
of Phase 2's splits (``data_dir``: train, val, test) with the aligner that
``phase1_checkpoint_path`` resolves to. Without an aligner yet, only the first level is
filled (Phase 2 then aligns from it without loading an encoder).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from purrsight.config import Config, ConfigError
from purrsight.data.manifest import Sample, read_manifest
from purrsight.features import FeatureSource
from purrsight.vocabulary import MODALITIES

log = logging.getLogger(__name__)

PHASE1_SPLITS = ("train", "val")
PHASE2_SPLITS = ("train", "val", "test")


def _splits(data_dir: Path, names: tuple[str, ...], labels: list[str]):
    """[(name, samples)] of the split files that exist in ``data_dir``."""
    found = [(n, data_dir / f"{n}.jsonl") for n in names]
    return [(n, read_manifest(p, labels)) for n, p in found if p.is_file()]


def fill_feature_cache(config: Config, config_path: str | None = None) -> dict[str, Any]:
    """Compute every feature the config's training runs will ask for that the cache lacks.

    Returns counts per level (hits, computed, corrupt, bytes written), the cache's entries
    and size on disk, the encoders that had to be loaded, and the seconds taken.
    Raises:
        ConfigError / ManifestError / MediaError: naming the key, file:line or media file.
    """
    from purrsight.report import label_description

    started = time.perf_counter()
    source = FeatureSource.from_config(config, MODALITIES, cache=True)
    phase1 = _splits(Path(config.phase1.data_dir), PHASE1_SPLITS, config.labels)
    if not phase1:
        raise ConfigError(
            f"phase1.data_dir: no train.jsonl or val.jsonl in {config.phase1.data_dir}"
        )
    for name, samples in phase1:
        source.raw(samples, f"phase1 {name}")
    source.texts([label_description(lb) for lb in config.labels])

    report: dict[str, Any] = {
        "cache_dir": str(Path(config.feature_cache_dir)),
        "phase1_samples": {n: len(s) for n, s in phase1},
    }
    report.update(_fill_aligned(config, config_path, source))
    report.update(source.cache_usage())
    report["seconds"] = round(time.perf_counter() - started, 1)
    if not config.feature_cache:
        report["note"] = "feature_cache is false in this config: training will not read the cache"
    return report


def _fill_aligned(config: Config, config_path: str | None, source: FeatureSource) -> dict:
    """The aligned level for Phase 2's splits, if an aligner exists."""
    from purrsight.models.aligner import load_aligner
    from purrsight.train.checkpointing import resolve_aligner
    from purrsight.train.phase2_data import used_modalities

    phase2: list[tuple[str, list[Sample]]] = _splits(
        Path(config.data_dir), PHASE2_SPLITS, config.labels
    )
    if not phase2:
        return {"aligner": None, "note_aligned": f"no Phase 2 splits in {config.data_dir}"}
    try:
        aligner_path = resolve_aligner(config.phase1_checkpoint_path, config_path)
    except ConfigError as err:
        log.warning("aligned features skipped: %s", err)
        return {"aligner": None, "note_aligned": f"skipped: {err}"}
    aligner, info = load_aligner(aligner_path)
    modalities = used_modalities([s for _, s in phase2])
    missing = [m for m in modalities if m not in aligner.heads]
    if missing:
        raise ConfigError(f"phase1_checkpoint_path: {aligner_path} has no head for {missing}")
    source.aligned_splits(phase2, aligner, info, modalities)
    return {"aligner": str(aligner_path), "phase2_samples": {n: len(s) for n, s in phase2}}
