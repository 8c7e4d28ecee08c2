"""The quality yardstick: what Purr-Sight reads from the demo data against what the data and
the frozen features hold, on the same subject-grouped splits, over several data seeds.

    python benchmarks/quality.py --seeds 0 1 2 [--n 2000] [--json] [--out outputs/quality]

Per seed it draws a demo data set (``--n`` samples, test split 300 at the config's default), runs
the demo job on it (Phase 1, Phase 2, export, evaluation: ``purrsight demo`` with the data
seed and size overridden) unless that run is already there, then scores on the test split,
as macro-F1 and accuracy with bootstrap 95 % intervals, overall and per modality subset:

- ``oracle``: logistic regression on the cues the generator recorded in each ``response``;
- ``probe raw`` / ``probe aligned``: logistic regression (L2 chosen on val) on the frozen
  encoders' features and on the Phase 1 aligned features (image, audio, and both joined);
- ``label scoring`` (the bundle, every test sample) and ``reports`` (generated on every
  test sample by the demo's stage 4), with ECE;
- per cue (ears, eyes, tail, posture, vocalization): the reports' accuracy against the
  recorded cue, the most-frequent-cue baseline and the probes.

The last table is the mean and standard deviation over the seeds. ``--json`` prints every
figure as one JSON document instead. Features come from the feature cache (filled by the
demo run), so the probes cost seconds. The time each part took is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_probes import (  # noqa: E402
    CUES,
    joint_features,
    linear_probe,
    oracle_predictions,
    recorded_cues,
)

SPLITS = ("train", "val", "test")
SUBSETS = ("image_only", "audio_only", "both")
VISUAL_CUES = ("ears", "eyes", "tail", "posture")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--n", type=int, default=None, help="demo samples per seed (default: the config's)"
    )
    parser.add_argument("--config", default="config/demo.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", default="outputs/quality", help="one folder per seed in it")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--probes-only", action="store_true", help="skip the pipeline (needs a Phase 1 run)"
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="export and evaluate each seed's trained Phase 2 checkpoint again (new reading "
        "heads or checks, same training)",
    )
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- one seed


def seed_config(args: argparse.Namespace, seed: int):
    """The demo config with this seed's data, outputs and summary in ``<out>/seed<k>/``."""
    from purrsight.config import load_config

    root = Path(args.out) / f"seed{seed}"
    overrides = [
        f"demo.seed={seed}",
        *([f"demo.n={args.n}"] if args.n is not None else []),
        f"data_dir={root / 'data'}",
        f"phase1.data_dir={root / 'data'}",
        f"phase1.output_dir={root / 'alignment'}",
        f"phase1_checkpoint_path={root / 'alignment'}/*/aligner.pt",
        f"output_dir={root / 'run'}",
        f"demo.summary_path={root / 'summary.json'}",
        "mlflow.enabled=false",
        *args.overrides,
    ]
    return load_config(args.config, overrides), root


def run_pipeline(config, root: Path, timings: dict[str, float]) -> dict[str, Any]:
    """The demo job on this seed (skipped when its summary is complete)."""
    summary_path = root / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    started = time.perf_counter()
    if "evaluate" in summary:
        return summary
    if "export" in summary:  # an interrupted run: its bundle is there, evaluate it
        from purrsight.jobs.demo import _evaluate_stage, write_summary

        summary = write_summary(
            summary_path, {"evaluate": _evaluate_stage(config, root / "bundle")}
        )
    else:
        from purrsight.jobs.demo import run_demo

        summary = run_demo(config, None)
    timings["pipeline"] = time.perf_counter() - started
    return summary


def refit(config, root: Path, timings: dict[str, float]) -> dict[str, Any]:
    """Stages 4 and 5 of the demo again on the seed's Phase 2 checkpoint."""
    from purrsight.jobs.demo import _evaluate_stage, _export_stage, write_summary

    summary_path = root / "summary.json"
    started = time.perf_counter()
    checkpoint = Path(json.loads(summary_path.read_text())["phase2"]["checkpoint"])
    export, bundle = _export_stage(config, checkpoint)
    write_summary(summary_path, {"export": export})
    summary = write_summary(summary_path, {"evaluate": _evaluate_stage(config, bundle)})
    timings["refit"] = time.perf_counter() - started
    return summary


def load_splits(config) -> dict[str, list]:
    from purrsight.data.manifest import read_manifest

    data = Path(config.phase1.data_dir)
    return {s: read_manifest(data / f"{s}.jsonl", config.labels) for s in SPLITS}


def feature_arrays(config, splits: dict[str, list], aligner_path: str | None) -> dict[str, Any]:
    """{"raw" | "aligned": {split: {modality: ([n, d] array, [n] present)}}} from the cache."""
    from purrsight.features import FeatureSource
    from purrsight.models.aligner import load_aligner
    from purrsight.vocabulary import MEDIA_MODALITIES

    source = FeatureSource.from_config(config, MEDIA_MODALITIES, cache=True)
    out: dict[str, Any] = {"raw": {}, "aligned": {}}
    aligner = load_aligner(aligner_path)[0] if aligner_path else None
    for split, samples in splits.items():
        raw = source.raw(samples, split)
        out["raw"][split] = _arrays(raw)
        if aligner is not None:
            out["aligned"][split] = _arrays(source.aligned(samples, aligner, split))
    source.release()
    return out


def _arrays(table) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        m: (table.features[m].float().numpy(), table.present[m].numpy()) for m in table.features
    }


def subset_name(sample) -> str:
    has_image = sample.image is not None or sample.video is not None
    has_audio = sample.audio is not None or sample.video is not None
    return "both" if has_image and has_audio else "image_only" if has_image else "audio_only"


# ----------------------------------------------------------------------------- scoring


def scored(truth: list[str], predicted: list[str | None], labels: list[str]) -> dict[str, Any]:
    """macro-F1 and accuracy with their bootstrap 95 % intervals, and n."""
    from purrsight.inference.metrics import bootstrap_intervals, classification_metrics

    if not truth:
        return {"n": 0}
    m = classification_metrics(truth, predicted, labels)
    return {
        "n": len(truth),
        "macro_f1": m["macro_f1"],
        "accuracy": m["accuracy"],
        "intervals": bootstrap_intervals(truth, predicted, labels),
    }


def by_subset(
    truth: list[str], predicted: list[str | None], subsets: list[str], labels: list[str]
) -> dict[str, Any]:
    """:func:`scored` overall and per modality subset."""
    out = {"overall": scored(truth, predicted, labels)}
    for name in SUBSETS:
        rows = [i for i, s in enumerate(subsets) if s == name]
        out[name] = scored([truth[i] for i in rows], [predicted[i] for i in rows], labels)
    return out


def emotion_probes(feats: dict, splits: dict, labels: list[str]) -> dict[str, Any]:
    """Probes on one feature level: joint (any subset), image only, audio only."""
    y = {s: [x.label for x in splits[s]] for s in SPLITS}
    test_subsets = [subset_name(x) for x in splits["test"]]
    joint = {s: _joint(feats[s]) for s in SPLITS}
    predicted, _ = linear_probe(joint["train"], y["train"], joint["val"], y["val"], joint["test"])
    out = {"joint": by_subset(y["test"], predicted, test_subsets, labels)}
    for modality, subset in (("image", "image_only"), ("audio", "audio_only")):
        rows = {s: np.flatnonzero(feats[s][modality][1]) for s in SPLITS}
        x = {s: feats[s][modality][0][rows[s]] for s in SPLITS}
        yy = {s: [y[s][i] for i in rows[s]] for s in SPLITS}
        pred, _ = linear_probe(x["train"], yy["train"], x["val"], yy["val"], x["test"])
        sub = [test_subsets[i] for i in rows["test"]]
        out[modality] = by_subset(yy["test"], pred, sub, labels)
        out[modality]["own_subset"] = out[modality][subset]
    return out


def _joint(split_feats: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    image, image_present = split_feats["image"]
    audio, audio_present = split_feats["audio"]
    dims = (image.shape[1], audio.shape[1])
    return np.stack(
        [
            joint_features(
                image[i] if image_present[i] else None,
                audio[i] if audio_present[i] else None,
                dims,
            )
            for i in range(len(image))
        ]
    )


def oracle(splits: dict, labels: list[str]) -> dict[str, Any]:
    cues = {s: [recorded_cues(_response(x)) for x in splits[s]] for s in SPLITS}
    truth = [x.label for x in splits["test"]]
    predicted = oracle_predictions(cues["train"], [x.label for x in splits["train"]], cues["test"])
    return by_subset(truth, predicted, [subset_name(x) for x in splits["test"]], labels)


def _response(sample) -> Any:
    response = sample.response
    return response.model_dump() if hasattr(response, "model_dump") else response


def cue_table(
    feats: dict, splits: dict, reports: dict[str, dict] | None, probes: dict | None = None
) -> dict[str, Any]:
    """Per cue: the reports' accuracy, the majority baseline and the probes, on the test
    samples that carry the cue (visual cues read from image features, vocalization from
    audio). ``probes``: the probes' figures of an earlier run on the same data, reused."""
    out = {}
    recorded = {s: [recorded_cues(_response(x)) for x in splits[s]] for s in SPLITS}
    for cue in CUES:
        modality = "image" if cue in VISUAL_CUES else "audio"
        rows = {
            s: [i for i, c in enumerate(recorded[s]) if cue in c and _has(splits[s][i], modality)]
            for s in SPLITS
        }
        y = {s: [recorded[s][i][cue] for i in rows[s]] for s in SPLITS}
        if not y["test"] or not y["train"]:
            continue
        majority = Counter(y["train"]).most_common(1)[0][0]
        row = {"n": len(y["test"]), "majority": _accuracy(y["test"], [majority] * len(y["test"]))}
        for level in ("raw", "aligned"):
            known = (probes or {}).get(cue, {}).get(f"probe_{level}")
            if known is not None:
                row[f"probe_{level}"] = known
                continue
            if not feats[level]:
                continue
            x = {s: feats[level][s][modality][0][rows[s]] for s in SPLITS}
            if len(set(y["train"])) < 2:
                continue
            pred, _ = linear_probe(x["train"], y["train"], x["val"], y["val"], x["test"])
            row[f"probe_{level}"] = _accuracy(y["test"], pred)
        if reports is not None:
            ids = [splits["test"][i].id for i in rows["test"]]
            said = [((reports.get(i) or {}).get("evidence") or {}).get(cue) for i in ids]
            row["reports"] = _accuracy(y["test"], said)
        out[cue] = row
    return out


def _has(sample, modality: str) -> bool:
    return getattr(sample, modality) is not None or sample.video is not None


def _accuracy(truth: list[str], predicted: list[Any]) -> float:
    return float(np.mean([t == p for t, p in zip(truth, predicted, strict=True)]))


def pipeline_scores(root: Path, splits: dict, labels: list[str]) -> dict[str, Any]:
    """The bundle's evaluation on the test split (``<seed>/evaluate``): label scoring (the
    calibrated blend), the LLM's own label scores, and the reports ``predict`` gives."""
    predictions = root / "evaluate" / "predictions.jsonl"
    if not predictions.is_file():
        return {}
    lines = [json.loads(line) for line in predictions.read_text().splitlines()]
    metrics = json.loads(predictions.with_name("metrics.json").read_text())
    truth = [x["label"] for x in lines]
    subsets = [x["subset"] for x in lines]
    out: dict[str, Any] = {}
    for system in ("label_scoring", "llm_alone", "report"):
        if all(system in x for x in lines):
            predicted = [x[system]["predicted"] for x in lines]
            out[system] = by_subset(truth, predicted, subsets, labels)
            out[system]["ece"] = metrics.get(system, {}).get("ece")
    out.update(alert_scores(root, lines))
    if "report" in out:
        out["report"]["valid_rate"] = metrics["report"].get("valid_rate")
        agree = [
            x["report_json"]["emotion"] in (x["label_scoring"]["predicted"], "unsure")
            for x in lines
        ]
        out["report"]["agrees_with_label_scoring"] = sum(agree) / len(agree)
    return out


WELFARE = ("in_pain",)
OLD_WELFARE_THRESHOLD = 0.3
"""The welfare rule before reading heads: the LLM's in_pain probability at least 0.3."""


def alert_scores(root: Path, lines: list[dict]) -> dict[str, Any]:
    """The pain alert's precision and recall on the test split: before (the LLM's own
    probabilities, the old fixed 0.3 rule) and after (the alert ``predict`` gave)."""
    truth = [x["label"] in WELFARE for x in lines]
    out: dict[str, Any] = {}
    if all(x.get("llm_probabilities") for x in lines):
        before = [
            sum(x["llm_probabilities"].get(w, 0.0) for w in WELFARE) >= OLD_WELFARE_THRESHOLD
            or max(x["llm_probabilities"], key=x["llm_probabilities"].get) in WELFARE
            for x in lines
        ]
        out["alert_before"] = _precision_recall(before, truth)
    if all(x.get("report_json") for x in lines):
        after = [bool(x["report_json"]["welfare_alert"]) for x in lines]
        out["alert_after"] = _precision_recall(after, truth)
    return out


def _precision_recall(alert: list[bool], truth: list[bool]) -> dict[str, float]:
    hits = sum(a and t for a, t in zip(alert, truth, strict=True))
    return {
        "precision": hits / max(sum(alert), 1),
        "recall": hits / max(sum(truth), 1),
        "alerts": sum(alert),
        "positives": sum(truth),
    }


def _reports(root: Path) -> dict[str, dict] | None:
    """{sample id: the report ``predict`` gave} of the bundle's evaluation."""
    path = root / "evaluate" / "predictions.jsonl"
    if not path.is_file():
        return None
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {x["id"]: x.get("report_json") for x in lines}


def one_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    timings: dict[str, float] = {}
    config, root = seed_config(args, seed)
    summary: dict[str, Any] = {}
    if args.refit:
        summary = refit(config, root, timings)
    elif not args.probes_only:
        summary = run_pipeline(config, root, timings)
    elif not (Path(config.phase1.data_dir) / "train.jsonl").is_file():
        from purrsight.data.demo import generate_demo_dataset

        generate_demo_dataset(
            config.phase1.data_dir,
            n=args.n,
            seed=seed,
            labels=config.labels,
            n_subjects_per_label=config.demo.subjects_per_label,
        )
    splits = load_splits(config)
    labels = list(config.labels)
    result = {
        "seed": seed,
        "sizes": {s: len(v) for s, v in splits.items()},
        "test_subsets": dict(Counter(subset_name(x) for x in splits["test"])),
        **reference_scores(config, root, splits, summary, timings),
    }
    result.update(pipeline_scores(root, splits, labels))
    cached = root / "cue_probes.json"
    known = json.loads(cached.read_text()) if cached.is_file() else None
    result["cues"] = cue_table(result.pop("_feats"), splits, _reports(root), known)
    if known is None:
        cached.write_text(json.dumps(result["cues"]))
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return result


def reference_scores(config, root: Path, splits, summary, timings) -> dict[str, Any]:
    """Oracle and probes (cached in ``<seed>/references.json``: they depend only on the data
    and the Phase 1 aligner), plus the features the cue table needs (key ``_feats``)."""
    started = time.perf_counter()
    aligner = (summary.get("phase1") or {}).get("aligner") or _latest_aligner(root)
    feats = feature_arrays(config, splits, aligner)
    timings["features"] = time.perf_counter() - started
    cached = root / "references.json"
    if cached.is_file() and json.loads(cached.read_text()).get("aligner") == aligner:
        return {**json.loads(cached.read_text())["scores"], "_feats": feats}
    started = time.perf_counter()
    labels = list(config.labels)
    scores = {
        "oracle": oracle(splits, labels),
        "probe_raw": emotion_probes(feats["raw"], splits, labels),
    }
    if feats["aligned"]:
        scores["probe_aligned"] = emotion_probes(feats["aligned"], splits, labels)
    timings["probes"] = time.perf_counter() - started
    cached.write_text(json.dumps({"aligner": aligner, "scores": scores}))
    return {**scores, "_feats": feats}


def _latest_aligner(root: Path) -> str | None:
    found = sorted((root / "alignment").glob("*/aligner.pt"))
    return str(found[-1]) if found else None


# ----------------------------------------------------------------------------- printing


def _cell(m: dict[str, Any] | None) -> str:
    if not m or not m.get("n"):
        return "–"
    low, high = m["intervals"]["macro_f1"]
    return f"{m['macro_f1']:.3f} [{low:.2f},{high:.2f}] n={m['n']}"


def emotion_rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(row name, {overall, image_only, audio_only, both}) of the emotion table."""
    rows = [("oracle (recorded cues)", result["oracle"])]
    for level in ("raw", "aligned"):
        probes = result.get(f"probe_{level}")
        if probes:
            rows.append((f"probe {level}: joint", probes["joint"]))
            rows.append((f"probe {level}: image", probes["image"]))
            rows.append((f"probe {level}: audio", probes["audio"]))
    for system in ("llm_alone", "label_scoring", "report"):
        if system in result:
            rows.append((system.replace("_", " "), result[system]))
    return rows


def print_seed(result: dict[str, Any]) -> None:
    print(f"\n== seed {result['seed']}: sizes {result['sizes']}, test {result['test_subsets']}")
    print(f"{'emotion macro-F1 [95 %]':28s}" + "".join(f"{c:>30s}" for c in ("overall", *SUBSETS)))
    for name, row in emotion_rows(result):
        print(f"{name:28s}" + "".join(f"{_cell(row.get(c)):>30s}" for c in ("overall", *SUBSETS)))
    if "label_scoring" in result:
        ece, before = result["label_scoring"].get("ece"), result.get("llm_alone", {}).get("ece")
        print(f"ECE: label scoring {ece:.3f}; the LLM alone, uncalibrated {before or 0:.3f}")
    for name in ("alert_before", "alert_after"):
        if name in result:
            a = result[name]
            print(
                f"pain alert {name.split('_')[1]}: precision {a['precision']:.3f}, recall "
                f"{a['recall']:.3f} ({a['alerts']} alerts, {a['positives']} in pain)"
            )
    if "report" in result:
        r = result["report"]
        print(
            f"reports: valid {r['valid_rate']:.3f}, emotion = label scoring's "
            f"{r['agrees_with_label_scoring']:.3f}"
        )
    print(f"{'cue accuracy':14s}{'n':>6s}" + "".join(f"{c:>14s}" for c in _cue_columns()))
    for cue, row in result["cues"].items():
        cells = "".join(f"{row[c]:>14.3f}" if c in row else f"{'–':>14s}" for c in _cue_columns())
        print(f"{cue:14s}{row['n']:>6d}{cells}")
    print(f"seconds: {result['seconds']}")


def _cue_columns() -> tuple[str, ...]:
    return ("majority", "probe_raw", "probe_aligned", "reports")


def across_seeds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every macro-F1 and cue accuracy."""
    out: dict[str, Any] = {"emotion": {}, "cues": {}}
    names = [name for name, _ in emotion_rows(results[0])]
    for name in names:
        out["emotion"][name] = {}
        for column in ("overall", *SUBSETS):
            values = [
                dict(emotion_rows(r))[name].get(column, {}).get("macro_f1")
                for r in results
                if name in dict(emotion_rows(r))
            ]
            values = [v for v in values if v is not None]
            if values:
                out["emotion"][name][column] = _mean_sd(values)
    for cue in results[0]["cues"]:
        out["cues"][cue] = {}
        for column in _cue_columns():
            values = [r["cues"][cue][column] for r in results if column in r["cues"].get(cue, {})]
            if values:
                out["cues"][cue][column] = _mean_sd(values)
    for system in ("label_scoring", "llm_alone"):
        eces = [r[system]["ece"] for r in results if r.get(system, {}).get("ece") is not None]
        if eces:
            out[f"{system}_ece"] = _mean_sd(eces)
    for name in ("alert_before", "alert_after"):
        for key in ("precision", "recall"):
            values = [r[name][key] for r in results if name in r]
            if values:
                out[f"{name}_{key}"] = _mean_sd(values)
    ratios = _target_ratios(results)
    if ratios:
        out["ratios"] = ratios
    return out


def _target_ratios(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Issue 15's and 20's targets as ratios per seed (mean, sd): label scoring against the
    best raw probe and the oracle, each single-input subset against its own probe, each
    cue's reports against the best probe."""
    rows: dict[str, list[float]] = {}
    for r in results:
        if "label_scoring" not in r:
            continue
        ls, probes = r["label_scoring"], r["probe_raw"]
        # the best probe on frozen features: raw or aligned, over all test samples
        best = max(
            r[level]["joint"]["overall"]["macro_f1"]
            for level in ("probe_raw", "probe_aligned")
            if level in r
        )
        rows.setdefault("label_scoring / best probe", []).append(ls["overall"]["macro_f1"] / best)
        rows.setdefault("label_scoring / oracle", []).append(
            ls["overall"]["macro_f1"] / r["oracle"]["overall"]["macro_f1"]
        )
        for modality, subset in (("image", "image_only"), ("audio", "audio_only")):
            own = probes[modality]["own_subset"].get("macro_f1")
            if own:
                rows.setdefault(f"{subset} / own probe", []).append(ls[subset]["macro_f1"] / own)
        for cue, row in r["cues"].items():
            best_cue = max(row.get("probe_raw", 0), row.get("probe_aligned", 0))
            if "reports" in row and best_cue:
                rows.setdefault(f"{cue} reports / best probe", []).append(row["reports"] / best_cue)
    return {name: _mean_sd(values) for name, values in rows.items()}


def _mean_sd(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n_seeds": len(values)}


def print_summary(summary: dict[str, Any], seeds: list[int]) -> None:
    print(f"\n== mean ± sd over seeds {seeds}: emotion macro-F1")
    print(f"{'':28s}" + "".join(f"{c:>18s}" for c in ("overall", *SUBSETS)))
    for name, row in summary["emotion"].items():
        cells = "".join(
            f"{row[c]['mean']:>11.3f} ±{row[c]['sd']:.3f}" if c in row else f"{'–':>18s}"
            for c in ("overall", *SUBSETS)
        )
        print(f"{name:28s}{cells}")
    print("cue accuracy")
    for cue, row in summary["cues"].items():
        cells = "".join(
            f"{c} {row[c]['mean']:.3f} ±{row[c]['sd']:.3f}   " for c in _cue_columns() if c in row
        )
        print(f"  {cue:14s}{cells}")
    for system in ("label_scoring", "llm_alone"):
        if f"{system}_ece" in summary:
            e = summary[f"{system}_ece"]
            print(f"ECE {system}: {e['mean']:.3f} ±{e['sd']:.3f}")
    for name in ("alert_before", "alert_after"):
        if f"{name}_precision" in summary:
            p, r = summary[f"{name}_precision"], summary[f"{name}_recall"]
            print(
                f"pain alert {name.split('_')[1]}: precision {p['mean']:.3f} ±{p['sd']:.3f}, "
                f"recall {r['mean']:.3f} ±{r['sd']:.3f}"
            )
    for name, v in summary.get("ratios", {}).items():
        print(f"ratio {name:34s} {v['mean']:.3f} ±{v['sd']:.3f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results = []
    for seed in args.seeds:
        results.append(one_seed(args, seed))
        if not args.json:
            print_seed(results[-1])
    summary = across_seeds(results)
    document = {"seeds": results, "summary": summary, "seconds": time.perf_counter() - started}
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print_summary(summary, args.seeds)
        print(f"total {document['seconds']:.0f} s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
