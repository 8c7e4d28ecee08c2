"""Subject-grouped, label-stratified splits and their leakage report.

    purrsight data split data/catmeows/all.jsonl --by subject_id --ratios 0.8,0.1,0.1 --seed 0

No group (a cat, by default) ever lands in two splits: recordings of one cat resemble
each other more than recordings of different cats in the same state, so a random split
lets a model recognise the cat instead of the emotion and inflates its scores.

Assignment is greedy, largest group first: each group goes to the split where it most
reduces the squared distance between the achieved and the target counts, per label and
in total, so labels are stratified as far as whole groups allow. Ties are broken by a
seeded shuffle, so a seed always gives the same split. A sample without a group key is
its own group (and counted in the report: it may share a cat with another sample).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from purrsight.data.manifest import MEDIA_FIELDS, ManifestError, read_manifest
from purrsight.hashing import file_sha256

SPLIT_NAMES = {2: ("train", "val"), 3: ("train", "val", "test")}
NO_LABEL = "(none)"


def parse_ratios(text: str) -> list[float]:
    """``"0.8,0.1,0.1"`` → [0.8, 0.1, 0.1]; two or three non-negative numbers summing to 1."""
    try:
        ratios = [float(part) for part in text.split(",")]
    except ValueError:
        raise ManifestError(f"--ratios {text!r}: expected numbers like 0.8,0.1,0.1") from None
    if len(ratios) not in SPLIT_NAMES:
        raise ManifestError(f"--ratios {text!r}: give 2 (train,val) or 3 (train,val,test) numbers")
    if any(r < 0 for r in ratios) or ratios[0] <= 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ManifestError(f"--ratios {text!r}: must be >= 0, train > 0, and sum to 1")
    return ratios


def group_key(record: dict, by: str) -> str | None:
    """The grouping value of one record: ``subject_id`` or ``meta.<key>``; None if absent."""
    if by == "subject_id":
        value = record.get("subject_id")
    elif by.startswith("meta.") and len(by) > 5:
        value = (record.get("meta") or {}).get(by[5:])
    else:
        raise ManifestError(f"--by {by!r}: use subject_id or meta.<key> (e.g. meta.owner)")
    return None if value in (None, "") else str(value)


def assign_groups(
    group_labels: dict[str, Counter], ratios: Sequence[float], seed: int
) -> dict[str, int]:
    """Split index for each group.

    Args:
        group_labels: {group: Counter(label → samples)}; every group has >= 1 sample.
        ratios: target fraction per split.
        seed: tie-breaking shuffle.
    """
    names = sorted(group_labels)
    rank = {names[i]: r for r, i in enumerate(np.random.default_rng(seed).permutation(len(names)))}
    size = {g: sum(c.values()) for g, c in group_labels.items()}
    order = sorted(names, key=lambda g: (-size[g], rank[g]))
    totals: Counter = Counter()
    for counts in group_labels.values():
        totals.update(counts)
    n = sum(totals.values())
    splits = [s for s, r in enumerate(ratios) if r > 0]
    count = [Counter() for _ in ratios]
    filled = [0] * len(ratios)

    def delta(s: int, group: str) -> tuple[float, float]:
        """(increase of squared deviation from target if ``group`` joins ``s``, -deficit)."""
        cost = 0.0
        for label, k in group_labels[group].items():
            target, scale = ratios[s] * totals[label], max(totals[label], 1)
            now = count[s][label]
            cost += ((now + k - target) / scale) ** 2 - ((now - target) / scale) ** 2
        target = ratios[s] * n
        cost += ((filled[s] + size[group] - target) / n) ** 2 - ((filled[s] - target) / n) ** 2
        return cost, -(target - filled[s])

    assignment: dict[str, int] = {}
    for group in order:
        best = min(splits, key=lambda s: (*delta(s, group), s))
        assignment[group] = best
        count[best].update(group_labels[group])
        filled[best] += size[group]
    _fill_empty_splits(assignment, splits, size)
    return assignment


def _fill_empty_splits(assignment: dict[str, int], splits: list[int], size: dict[str, int]):
    """A split with a positive ratio gets at least one group when another split has two."""
    for s in splits:
        members = defaultdict(list)
        for group, split in assignment.items():
            members[split].append(group)
        if members[s]:
            continue
        donor = max(splits, key=lambda d: (len(members[d]), -d))
        if len(members[donor]) < 2:
            return
        smallest = min(members[donor], key=lambda g: (size[g], g))
        assignment[smallest] = s


def split_records(
    records: list[dict], by: str, ratios: Sequence[float], seed: int
) -> tuple[list[list[dict]], dict[int, str]]:
    """Records per split (in input order), and the group key used for each record index."""
    keys = {}
    group_labels: dict[str, Counter] = defaultdict(Counter)
    for i, record in enumerate(records):
        key = group_key(record, by)
        keys[i] = key if key is not None else f"\0sample:{record['id']}"
        group_labels[keys[i]][record.get("label") or NO_LABEL] += 1
    assignment = assign_groups(group_labels, ratios, seed)
    parts: list[list[dict]] = [[] for _ in ratios]
    for i, record in enumerate(records):
        parts[assignment[keys[i]]].append(record)
    return parts, keys


# ----------------------------------------------------------------------------- report


def leakage_report(
    parts: list[list[dict]], names: Sequence[str], by: str, root: Path, ungrouped: int
) -> dict:
    """Per-split counts, groups found in more than one split (must be none), and media
    files with identical bytes in more than one split (copies or re-cuts of one clip)."""
    seen: dict[str, set[str]] = defaultdict(set)
    media: dict[str, dict[str, set]] = defaultdict(lambda: {"splits": set(), "files": set()})
    splits = {}
    labels = sorted({r.get("label") or NO_LABEL for part in parts for r in part})
    total = sum(len(p) for p in parts)
    for name, part in zip(names, parts, strict=True):
        groups = set()
        for record in part:
            key = group_key(record, by)
            if key is not None:
                groups.add(key)
                seen[key].add(name)
            for field in MEDIA_FIELDS:
                if record.get(field) and (root / record[field]).is_file():
                    entry = media[file_sha256(root / record[field])]
                    entry["splits"].add(name)
                    entry["files"].add(record[field])
        counts = Counter(r.get("label") or NO_LABEL for r in part)
        splits[name] = {
            "samples": len(part),
            "fraction": round(len(part) / total, 4) if total else 0.0,
            "groups": len(groups),
            "labels": {label: counts.get(label, 0) for label in labels},
        }
    return {
        "by": by,
        "splits": splits,
        "groups_in_several_splits": sorted(k for k, v in seen.items() if len(v) > 1),
        "samples_without_group": ungrouped,
        "identical_media_in_several_splits": [
            {"files": sorted(v["files"]), "splits": sorted(v["splits"])}
            for v in media.values()
            if len(v["splits"]) > 1
        ],
    }


def format_report(report: dict) -> str:
    """The leakage report as a few lines for the console."""
    lines = [f"split by {report['by']} (seed {report['seed']}, ratios {report['ratios']}):"]
    for name, info in report["splits"].items():
        labels = ", ".join(f"{k} {v}" for k, v in info["labels"].items())
        lines.append(
            f"  {name:5s} {info['samples']:5d} samples ({info['fraction']:.1%}), "
            f"{info['groups']} groups | {labels}"
        )
    for name, info in report["splits"].items():
        if info["samples"] == 0:
            lines.append(f"warning: {name} is empty (too few groups for every split)")
    leaked = report["groups_in_several_splits"]
    lines.append(f"groups in more than one split: {len(leaked)}" + (f" {leaked}" if leaked else ""))
    lines.append(
        f"samples without {report['by']} (each its own group): {report['samples_without_group']}"
    )
    dupes = report["identical_media_in_several_splits"]
    lines.append(f"identical media files in more than one split: {len(dupes)}")
    for dupe in dupes[:10]:
        lines.append(f"  {' = '.join(dupe['files'])} ({', '.join(dupe['splits'])})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files


def _rebase(record: dict, src: Path, out: Path) -> dict:
    """Media paths relative to ``out`` instead of ``src``; refused if they would leave it."""
    if src.resolve() == out.resolve():
        return record
    record = dict(record)
    for field in MEDIA_FIELDS:
        if record.get(field):
            target = (src / record[field]).resolve()
            relative = Path(os.path.relpath(target, out.resolve()))
            if relative.parts and relative.parts[0] == "..":
                raise ManifestError(
                    f"--out {out}: {record['id']}'s {field} {target} would lie outside it; "
                    "write the splits into the JSONL's folder (the default) or a folder above it"
                )
            record[field] = relative.as_posix()
    return record


def split_file(
    jsonl: str | Path,
    by: str = "subject_id",
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    out: str | Path | None = None,
) -> dict:
    """Split ``jsonl`` into ``<out>/{train,val[,test]}.jsonl`` + ``split_report.json``."""
    jsonl = Path(jsonl)
    read_manifest(jsonl)  # every line valid, ids unique: errors name file:line
    out = Path(out) if out is not None else jsonl.parent
    names = SPLIT_NAMES[len(ratios)]
    if jsonl.resolve() in {(out / f"{n}.jsonl").resolve() for n in names}:
        raise ManifestError(f"{jsonl}: the input would be overwritten by a split; rename it")
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    parts, keys = split_records(records, by, ratios, seed)
    ungrouped = sum(1 for key in keys.values() if key.startswith("\0sample:"))
    out.mkdir(parents=True, exist_ok=True)
    parts = [[_rebase(r, jsonl.parent, out) for r in part] for part in parts]
    for name, part in zip(names, parts, strict=True):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        (out / f"{name}.jsonl").write_text(text, encoding="utf-8")
    report = {
        "input": str(jsonl),
        "seed": seed,
        "ratios": list(ratios),
        **leakage_report(parts, names, by, out, ungrouped),
    }
    (out / "split_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
