"""Fit a bundle's reading heads at export (``purrsight export``, ``make demo``).

On the training split's frozen encoder features (the feature cache makes this seconds) a
head per target: the emotion (image and audio joined), the arousal, and each cue from its
own input (ears, eyes, tail, posture from the image; vocalization from the audio). The
validation split chooses each head's L2 strength and temperature, then the weights of the
emotion blend: the bundle's LLM label scores with the emotion head's logits. Targets come
from each line's ``label`` and its ``response`` (a structured report's evidence and
arousal); a data set without cues gets the emotion head only.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from purrsight.config import Config
from purrsight.data.manifest import Sample, read_manifest
from purrsight.features import FeatureSource
from purrsight.features.aligned import apply_head
from purrsight.features.raw import FeatureTable
from purrsight.inference.bundle_manifest import ReadingInfo, write_manifest
from purrsight.inference.bundle_manifest import read_manifest as read_bundle
from purrsight.inference.predictor import Predictor, Prepared
from purrsight.inference.reading import CUE_MODALITY, save_reading
from purrsight.inference.reading_fit import fit_blend, fit_head, fit_logistic
from purrsight.models.reading_heads import EMOTION, HeadSpec, ReadingHeads, head_input
from purrsight.models.typicality import Typicality
from purrsight.precision import predict_precision
from purrsight.report import Report
from purrsight.vocabulary import AROUSAL_LEVELS, MEDIA_MODALITIES

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
STACK_FOLDS = 5


def target(sample: Sample, name: str) -> str | None:
    """The sample's value of head ``name``: its label, arousal or a cue (None: unknown)."""
    if name == "emotion":
        return sample.label
    response = sample.response
    if not isinstance(response, Report):
        return None
    if name == "arousal":
        return response.arousal
    return getattr(response.evidence, name)


def head_specs(train: Sequence[Sample], labels: Sequence[str], modalities: Sequence[str]):
    """One spec per target with at least two values among the training samples that
    have the head's input."""
    specs = [HeadSpec(EMOTION, tuple(modalities), tuple(labels))]
    arousal = {target(s, "arousal") for s in train} - {None}
    if len(arousal) >= 2:
        order = [a for a in AROUSAL_LEVELS if a in arousal]
        specs.append(HeadSpec("arousal", tuple(modalities), tuple(order)))
    for cue, modality in CUE_MODALITY.items():
        if modality not in modalities:
            continue
        values = {target(s, cue) for s in train if _has(s, modality)} - {None}
        if len(values) >= 2:
            specs.append(HeadSpec(cue, (modality,), tuple(sorted(values))))
    return specs


def _has(sample: Sample, modality: str) -> bool:
    return getattr(sample, modality) is not None or sample.video is not None


def _rows(spec: HeadSpec, table: FeatureTable, samples: Sequence[Sample], dims):
    """(x [k, d], values) of the samples the head answers and whose target is known."""
    x, answered = head_input(spec, table.features, table.present, dims)
    keep = [
        i for i, s in enumerate(samples) if bool(answered[i]) and target(s, spec.name) is not None
    ]
    return x[keep], [target(samples[i], spec.name) for i in keep]


def fit_reading(bundle_dir: Path, config: Config, data_dir: str | Path | None = None):
    """Fit the heads and the blend for the bundle at ``bundle_dir`` on ``data_dir``'s
    (default: the config's ``data_dir``) train and val splits, write them into the bundle
    and its manifest. Returns the manifest's ``reading`` (None, with a warning, when the
    splits are not there)."""
    started = time.perf_counter()
    data = Path(data_dir or config.data_dir)
    paths = {s: data / f"{s}.jsonl" for s in SPLITS}
    if not all(p.is_file() for p in paths.values()):
        log.warning("reading heads not fitted: no %s and %s", *paths.values())
        return None
    samples = {s: read_manifest(p, config.labels) for s, p in paths.items()}
    predictor = Predictor.from_bundle(bundle_dir, precision=predict_precision(config.precision))
    modalities = [m for m in MEDIA_MODALITIES if m in predictor.modalities]
    source = FeatureSource.from_config(config, modalities)
    tables = {s: source.raw(samples[s], f"reading heads ({s})") for s in SPLITS}
    source.release()
    dims = {m: tables["train"].features[m].shape[1] for m in modalities}
    heads, fits = _fit_heads(
        head_specs(samples["train"], config.labels, modalities), tables, samples, dims
    )
    blend, blend_fit, val_probs = _fit_blend(
        predictor, heads, tables["val"], samples["val"], config.labels
    )
    typicality = fit_typicality(tables, dims)
    info = save_reading(bundle_dir, heads, blend, fits, blend_fit, str(data), typicality)
    manifest = read_bundle(bundle_dir)
    inference = manifest.inference.model_copy()
    pain = welfare_threshold(val_probs, samples["val"], config.labels, manifest.welfare_labels)
    if pain is not None:
        inference.welfare_threshold, info.welfare_fit = pain
    manifest = manifest.model_copy(update={"reading": info, "inference": inference})
    write_manifest(Path(bundle_dir), manifest)
    log.info(
        "reading heads fitted in %.1f s: %s; blend %s",
        time.perf_counter() - started,
        {k: v.get("val_accuracy") for k, v in fits.items()},
        blend_fit,
    )
    return info


def fit_reading_for_checkpoint(
    bundle_dir: Path, checkpoint: str | Path, data_dir: str | Path | None = None
) -> ReadingInfo | None:
    """:func:`fit_reading` with the config the checkpoint was trained with."""
    from purrsight.models.weights import read_phase2_checkpoint

    meta = read_phase2_checkpoint(checkpoint)["hyper_parameters"]
    return fit_reading(Path(bundle_dir), Config.model_validate(meta["config"]), data_dir)


def fit_typicality(tables: dict[str, FeatureTable], dims: dict[str, int]) -> Typicality:
    """Per modality, a Gaussian of the training features and the threshold that keeps
    99 % of the validation inputs in range (per modality)."""
    typicality = Typicality(dims)
    for modality, model in typicality.items():
        rows = {s: tables[s].present[modality].bool() for s in SPLITS}
        model.fit(
            tables["train"].features[modality][rows["train"]],
            tables["val"].features[modality][rows["val"]],
        )
    return typicality


def _fit_heads(specs, tables, samples, dims) -> tuple[ReadingHeads, dict[str, dict]]:
    """The cue and arousal heads on train (L2 and temperature from val), then the emotion
    head on their out-of-fold probabilities (:func:`_stacked`)."""
    heads = ReadingHeads(specs, dims)
    fits = {}
    for spec in specs:
        if spec.name == EMOTION:
            continue
        train = _rows(spec, tables["train"], samples["train"], dims)
        val = _rows(spec, tables["val"], samples["val"], dims)
        head, fits[spec.name] = fit_head(spec, train, val)
        heads.heads[spec.name] = head
    emotion = heads.specs[EMOTION]
    train = _stacked(heads, fits, tables["train"], samples["train"], dims)
    val = _stack_rows(heads, tables["val"], samples["val"], own_only=True)
    heads.heads[EMOTION], fits[EMOTION] = fit_head(emotion, train, val)
    return heads.eval(), fits


def _stacked(heads: ReadingHeads, fits, table, samples, dims, folds: int = STACK_FOLDS):
    """The emotion head's training rows: each training sample's stack input computed by
    reading heads fitted without its fold (so the emotion head learns how reliable the
    cues are on unseen cats, not on memorised ones), for its own inputs and, for a
    sample with both, as if only the image or only the audio were given (so single-input
    requests are trained for). Folds are grouped by ``subject_id`` (:func:`stack_folds`)."""
    xs, ys = [], []
    for held in stack_folds(samples, folds):
        kept = sorted(set(range(len(samples))) - set(held))
        fold_heads = _refit(heads, fits, _subset(table, kept), [samples[i] for i in kept], dims)
        x, y = _stack_rows(fold_heads, _subset(table, held), [samples[i] for i in held])
        xs.append(x)
        ys += y
    return torch.cat(xs), ys


def stack_folds(samples: Sequence[Sample], folds: int = STACK_FOLDS) -> list[list[int]]:
    """Row indices of each fold, every subject (cat) in one fold only: val and test hold
    cats that training never saw, so the cue probabilities the emotion head learns from
    must come from heads that never saw that cat either (random folds let a head
    recognise the cat and look more reliable than it is on a new one). Samples without a
    ``subject_id`` are their own subject. Fewer subjects than ``folds``: one per fold."""
    subjects = sorted({s.subject_id or f"#{i}" for i, s in enumerate(samples)})
    order = torch.randperm(len(subjects), generator=torch.Generator().manual_seed(0)).tolist()
    fold_of = {subjects[j]: rank % folds for rank, j in enumerate(order)}
    rows: list[list[int]] = [[] for _ in range(min(folds, len(subjects)))]
    for i, sample in enumerate(samples):
        rows[fold_of[sample.subject_id or f"#{i}"]].append(i)
    return [r for r in rows if r]


def _refit(heads: ReadingHeads, fits, table, samples, dims) -> ReadingHeads:
    """A copy of ``heads`` whose cue and arousal heads are fitted again on ``samples``
    with the L2 and temperature chosen for the full ones."""
    fold = copy.deepcopy(heads)
    for name in heads.reading_names:
        spec = heads.specs[name]
        x, y = _rows(spec, table, samples, dims)
        index = {c: i for i, c in enumerate(spec.classes)}
        head = fit_logistic(
            x.float(), torch.tensor([index[v] for v in y]), len(spec.classes), fits[name]["l2"]
        )
        head.temperature.fill_(fits[name]["temperature"])
        fold.heads[name] = head
    return fold


def _stack_rows(heads: ReadingHeads, table, samples, own_only: bool = False):
    """(x [k, D], labels) of the emotion head: each labelled sample with its own inputs,
    plus image-only and audio-only views of samples with both (unless ``own_only``)."""
    present = {m: p.bool() for m, p in table.present.items()}
    views = [present]
    if not own_only and len(present) == 2:
        both = torch.stack(list(present.values())).all(dim=0)
        for kept in present:  # only ``kept``: the other input dropped where both were given
            views.append({m: p if m == kept else p & ~both for m, p in present.items()})
    xs, ys = [], []
    labelled = torch.tensor([s.label is not None for s in samples])
    for i, view in enumerate(views):
        x = heads.stack_input(table.features, view)
        rows = labelled.clone()
        if i > 0:  # the extra views: only the samples that had both inputs
            rows &= torch.stack(list(present.values())).all(dim=0)
        keep = rows.nonzero().flatten().tolist()
        xs.append(x[keep])
        ys += [samples[j].label for j in keep]
    return torch.cat(xs), ys


def _subset(table: FeatureTable, rows: list[int]) -> FeatureTable:
    return FeatureTable(
        [table.ids[i] for i in rows],
        {m: f[rows] for m, f in table.features.items()},
        {m: p[rows] for m, p in table.present.items()},
    )


def _fit_blend(predictor: Predictor, heads: ReadingHeads, table, samples, labels):
    """The LLM's label scores on val (aligned features from the bundle's aligner, as the
    predictor would compute them) blended with the emotion head's logits."""
    aligned = {
        m: apply_head(predictor.bundle.aligner.heads[m], x) for m, x in table.features.items()
    }
    prepared = []
    for i, sample in enumerate(samples):
        here = [m for m in table.features if bool(table.present[m][i])]
        prepared.append(
            Prepared(
                features={m: aligned[m][i] for m in here},
                modalities=here,
                instruction=sample.instruction,
                raw={m: table.features[m][i] for m in here},
            )
        )
    with torch.no_grad():
        llm = predictor.label_scores(prepared, progress="reading heads: LLM scores (val)")
    head = heads.logits("emotion", table.features, table.present).detach()
    targets = [list(labels).index(s.label) for s in samples]
    blend, info = fit_blend(llm, head, targets)
    return blend, info, blend(llm, head)


WELFARE_PRECISION = 0.8
"""The welfare alert's threshold is the lowest whose validation precision reaches this."""


def welfare_threshold(probs: torch.Tensor, samples, labels, welfare_labels):
    """(threshold, {"precision", "recall", "n_positive"} on val) of the welfare alert: the
    lowest probability of the welfare labels together at which the alert's precision on
    the validation split reaches :data:`WELFARE_PRECISION` (recall is what is left); None
    when val has no welfare sample."""
    columns = [i for i, label in enumerate(labels) if label in welfare_labels]
    risk = probs[:, columns].sum(dim=1)
    truth = torch.tensor([s.label in welfare_labels for s in samples])
    if not bool(truth.any()):
        return None
    for threshold in sorted({round(float(r), 4) for r in risk}):
        alert = risk >= threshold
        precision = float((alert & truth).sum() / alert.sum().clamp_min(1))
        if precision >= WELFARE_PRECISION:
            recall = float((alert & truth).sum() / truth.sum())
            fit = {"precision": round(precision, 4), "recall": round(recall, 4)}
            return max(threshold, 0.05), {**fit, "n_positive": float(truth.sum())}
    return None


__all__ = ["ReadingInfo", "fit_reading", "head_specs", "target"]
