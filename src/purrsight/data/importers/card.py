"""``dataset_card.md``: source, licence, label mapping, counts, and every skipped file."""

from __future__ import annotations

from collections import Counter
from datetime import date
from pathlib import Path

from purrsight.data.importers.common import Mapping, Skipped, SourceInfo, outside_default
from purrsight.vocabulary import MEDIA_MODALITIES

MAX_LISTED = 200  # skipped files listed in the card; import_report.json has them all


def _table(header: tuple[str, ...], rows: list[tuple]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def render_card(
    info: SourceInfo,
    kind: str,
    source: Path,
    records: list[dict],
    skipped: list[Skipped],
    mapping: Mapping,
) -> str:
    """The card as Markdown."""
    by_source = Counter(r["meta"]["source_label"] for r in records)
    by_label = Counter(r["label"] for r in records)
    by_subject = Counter(r["subject_id"] or "(none)" for r in records)
    by_modality = Counter("+".join(m for m in MEDIA_MODALITIES if r[m]) for r in records)
    lines = [
        f"# Dataset card: {info.name}",
        "",
        f"Imported with `purrsight data import {kind}` on {date.today().isoformat()} "
        f"from `{source}`.",
        "",
        f"- **Source:** {info.url}",
        f"- **Cite:** {info.citation}",
        f"- **Licence:** {info.licence}",
        f"- **Subjects:** {info.subjects}",
        f"- **Samples written:** {len(records)} ({', '.join(f'{k}: {v}' for k, v in sorted(by_modality.items())) or 'none'})",
        f"- **Files skipped:** {len(skipped)} (listed below)",
        f"- **Report confidence:** {mapping.confidence} (every imported label)",
        "",
        "## Label mapping (source class → emotion)",
        "",
        *_table(
            ("source class", "emotion", "samples"),
            [
                (k, v if v is not None else "(excluded)", by_source.get(k, 0))
                for k, v in sorted(mapping.labels.items())
            ],
        ),
        "",
        "## Samples per emotion",
        "",
        *_table(("emotion", "samples"), sorted(by_label.items())),
        "",
    ]
    extra = outside_default(set(by_label))
    if extra:
        lines += [
            f"Not in the default label set: {', '.join(extra)} — add them to the config's "
            "`labels:` before training.",
            "",
        ]
    lines += [
        f"## Samples per subject ({len(by_subject)} subjects)",
        "",
        *_table(("subject_id", "samples"), sorted(by_subject.items())),
        "",
        "## Skipped files",
        "",
    ]
    if not skipped:
        return "\n".join([*lines, "None: every file in the source folder was imported.", ""])
    lines += _table(("reason", "files"), sorted(Counter(s.kind for s in skipped).items()))
    lines += [
        "",
        *_table(("file", "reason"), [(f"`{s.path}`", s.reason) for s in skipped[:MAX_LISTED]]),
    ]
    if len(skipped) > MAX_LISTED:
        lines += ["", f"… and {len(skipped) - MAX_LISTED} more: see `import_report.json`."]
    return "\n".join([*lines, ""])
