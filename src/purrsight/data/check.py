"""``purrsight data check``: every problem of a data set, counted, each with its file:line.

A data set is one or more instruction JSONL files (DESIGN.md); each file is one split,
named by its stem (``train.jsonl`` → ``train``). A folder stands for its
``train/val/test.jsonl`` (or, without those, every ``*.jsonl`` in it). Every line goes
through the validator training uses (:func:`purrsight.data.manifest.iter_manifest`) and
every media file through the decoder training uses (:func:`purrsight.data.media.decode_media`)
with the config's ``media`` limits, so what passes here loads in training.

On top of that, across the whole set: repeated ids, media files with the same content
(sha256), the labels of each split, the subjects of each split, and subjects that appear in
two splits (a leak from train into evaluation). Problems are errors, except the same media
content twice within one split, which is a warning (a sample may reuse a picture).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from purrsight.config import MediaConfig
from purrsight.data.manifest import MEDIA_FIELDS, ManifestError, Sample, iter_manifest
from purrsight.data.media import MediaError, decode_media
from purrsight.hashing import file_sha256

SPLIT_NAMES = ("train", "val", "test")
NO_LABEL = "(none)"

# Every kind of problem, in report order; all are errors unless listed in WARNING_KINDS.
PROBLEM_KINDS = (
    "file",
    "malformed_json",
    "schema",
    "label",
    "path_outside",
    "duplicate_id",
    "missing_media",
    "unreadable_media",
    "unsupported_type",
    "empty_media",
    "undecodable_media",
    "too_large",
    "too_long",
    "duplicate_content",
    "duplicate_content_across_splits",
    "subject_in_two_splits",
)
WARNING_KINDS = frozenset({"duplicate_content"})


@dataclass(frozen=True)
class Problem:
    """One problem: its kind, where (``<file>:<line>``, or the file) and what."""

    kind: str
    where: str
    message: str

    @property
    def severity(self) -> str:
        return "warning" if self.kind in WARNING_KINDS else "error"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found."""

    files: dict[str, str] = field(default_factory=dict)
    """{file: split}."""
    lines: int = 0
    """Non-blank lines read."""
    samples_ok: int = 0
    """Lines whose record and media all passed."""
    problems: list[Problem] = field(default_factory=list)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    """{split: {label: samples}} over the lines whose record parsed."""
    subjects: dict[str, int] = field(default_factory=dict)
    """{split: distinct subjects}."""
    no_subject: dict[str, int] = field(default_factory=dict)
    """{split: samples without a subject_id}."""
    shared_subjects: dict[str, list[str]] = field(default_factory=dict)
    """{subject: splits it appears in}, only subjects in two or more splits."""

    @property
    def errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    @property
    def warnings(self) -> int:
        return sum(p.severity == "warning" for p in self.problems)

    def counts(self) -> dict[str, int]:
        """{kind: problems}, in :data:`PROBLEM_KINDS` order, kinds that occurred only."""
        found = Counter(p.kind for p in self.problems)
        return {kind: found[kind] for kind in PROBLEM_KINDS if found[kind]}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.errors == 0,
            "files": self.files,
            "lines": self.lines,
            "samples_ok": self.samples_ok,
            "errors": self.errors,
            "warnings": self.warnings,
            "counts": self.counts(),
            "problems": [{**asdict(p), "severity": p.severity} for p in self.problems],
            "labels": self.labels,
            "subjects": self.subjects,
            "no_subject": self.no_subject,
            "shared_subjects": self.shared_subjects,
        }

    def format(self) -> str:
        """The report as text for a terminal."""
        out = [
            f"checked {len(self.files)} file(s), {self.lines} lines: {self.samples_ok} samples ok, "
            f"{self.errors} errors, {self.warnings} warnings"
        ]
        for name, split in self.files.items():
            out.append(f"  {split}: {name}")
        if self.problems:
            out.append("problems by kind:")
            out += [f"  {kind:<32} {n}" for kind, n in self.counts().items()]
            out.append("problems (where: kind: what):")
            out += [f"  {p.where}: {p.kind}: {p.message}" for p in self.problems]
        out.append("labels per split:")
        for split, counts in self.labels.items():
            shown = ", ".join(f"{label} {n}" for label, n in sorted(counts.items()))
            out.append(f"  {split} ({sum(counts.values())}): {shown}")
        out.append("subjects per split:")
        for split, n in self.subjects.items():
            missing = self.no_subject.get(split, 0)
            out.append(
                f"  {split}: {n}" + (f" (+{missing} samples without one)" if missing else "")
            )
        if self.shared_subjects:
            out.append("subjects in two or more splits:")
            out += [f"  {s}: {', '.join(splits)}" for s, splits in self.shared_subjects.items()]
        out.append("result: " + ("OK" if self.errors == 0 else f"FAILED ({self.errors} errors)"))
        return "\n".join(out)


def data_files(paths: list[str | Path]) -> list[Path]:
    """The JSONL files ``paths`` name: files as given; a folder → its train/val/test.jsonl,
    or every ``*.jsonl`` in it when it has none of those. Order kept, repeats dropped.

    Raises:
        ManifestError: a path that does not exist, or a folder without JSONL files.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [path / f"{s}.jsonl" for s in SPLIT_NAMES if (path / f"{s}.jsonl").is_file()]
            found = found or sorted(path.glob("*.jsonl"))
            if not found:
                raise ManifestError(f"{path}: no .jsonl files in this folder", "file")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError(f"{path}: no such file or folder", "file")
    return list(dict.fromkeys(files))


def _split_where(problem: ManifestError) -> tuple[str, str]:
    """``"<file>:<line>: reason"`` → (``<file>:<line>``, reason)."""
    text = str(problem)
    where, sep, reason = text.partition(": ")
    return (where, reason) if sep else ("", text)


@dataclass
class _Seen:
    """What earlier lines held, for the checks across lines and files."""

    ids: dict[str, tuple[str, str]] = field(default_factory=dict)
    """{id: (split, where)}."""
    content: dict[str, tuple[str, str]] = field(default_factory=dict)
    """{sha256: (split, where)}."""
    subjects: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    """{subject: {split: first where}}."""


def check_dataset(
    paths: list[str | Path], media: MediaConfig | None = None, labels: list[str] | None = None
) -> CheckReport:
    """Check every line and media file of the data set ``paths`` name (see module doc)."""
    media = media or MediaConfig()
    report, seen = CheckReport(), _Seen()
    for path in data_files(paths):
        split = path.stem
        report.files[str(path)] = split
        label_counts = report.labels.setdefault(split, {})
        n_before = report.lines
        try:
            for item in iter_manifest(path, labels):
                report.lines += 1
                if isinstance(item, ManifestError):
                    report.problems.append(Problem(item.kind, *_split_where(item)))
                    continue
                label = item.label or NO_LABEL
                label_counts[label] = label_counts.get(label, 0) + 1
                if _check_sample(item, split, media, seen, report):
                    report.samples_ok += 1
        except ManifestError as err:  # the file itself: missing, not UTF-8
            report.problems.append(Problem(err.kind, *_split_where(err)))
        if report.lines == n_before:
            report.problems.append(Problem("file", str(path), "no samples in the file"))
    _subject_summary(report, seen)
    order = {name: i for i, name in enumerate(report.files)}
    report.problems.sort(key=lambda p: _position(p.where, order))  # stable: file, then line
    return report


def _position(where: str, order: dict[str, int]) -> tuple[int, int]:
    """``<file>:<line>`` (or ``<file>``) → (file index, line) for sorting problems."""
    name, _, line = where.rpartition(":")
    if line.isdigit() and name in order:
        return order[name], int(line)
    return order.get(where, len(order)), 0


def _check_sample(
    sample: Sample, split: str, media: MediaConfig, seen: _Seen, report: CheckReport
) -> bool:
    """Ids across files, each media file decoded and hashed, the subject noted. True if
    the sample has no error."""
    where, ok = sample.source, True
    first = seen.ids.setdefault(sample.id, (split, where))
    if first[1] != where:  # repeats inside one file were caught by iter_manifest
        report.problems.append(
            Problem("duplicate_id", where, f"duplicate id {sample.id!r} (first at {first[1]})")
        )
        ok = False
    if sample.subject_id is not None:
        seen.subjects[sample.subject_id].setdefault(split, where)
    else:
        report.no_subject[split] = report.no_subject.get(split, 0) + 1
    for name in MEDIA_FIELDS:
        path = getattr(sample, name)
        if path is None:
            continue
        try:
            decode_media(name, path, media)
            digest = file_sha256(path)
        except MediaError as err:
            report.problems.append(Problem(err.kind, where, f"{name}: {err}"))
            ok = False
            continue
        except OSError as err:  # read between decode and hash failed
            report.problems.append(Problem("unreadable_media", where, f"{name}: {path}: {err}"))
            ok = False
            continue
        ok &= _note_content(digest, f"{name} {path.name}", split, where, seen, report)
    return ok


def _note_content(
    digest: str, what: str, split: str, where: str, seen: _Seen, report: CheckReport
) -> bool:
    """Record one media file's hash; a repeat is a problem. False if it is an error."""
    first = seen.content.setdefault(digest, (split, where))
    if first[1] == where:
        return True
    if first[0] == split:
        report.problems.append(
            Problem("duplicate_content", where, f"{what}: same content as a file at {first[1]}")
        )
        return True
    report.problems.append(
        Problem(
            "duplicate_content_across_splits",
            where,
            f"{what} ({split}): same content as a file at {first[1]} ({first[0]})",
        )
    )
    return False


def _subject_summary(report: CheckReport, seen: _Seen) -> None:
    """Subjects per split, and a problem for each subject in two or more splits."""
    per_split: Counter[str] = Counter()
    for subject, splits in seen.subjects.items():
        per_split.update(splits.keys())
        if len(splits) > 1:
            report.shared_subjects[subject] = list(splits)
            first, *rest = splits.items()
            for split, where in rest:
                report.problems.append(
                    Problem(
                        "subject_in_two_splits",
                        where,
                        f"subject {subject!r} is in {split} and also in {first[0]} "
                        f"(first at {first[1]})",
                    )
                )
    report.subjects = {split: per_split[split] for split in report.labels}
