"""Importers for public cat data sets: ``purrsight data import <kind> <source> --out <dir>``.

Each kind scans a source folder by its own naming convention (catmeows, catsound,
folders); :mod:`.writer` does the rest the same way for all of them.
"""

from __future__ import annotations

from pathlib import Path

from purrsight.data.importers import catmeows, catsound, folders
from purrsight.data.importers.common import DataImportError, load_mapping
from purrsight.data.importers.writer import ImportResult, write_import

KINDS = {"catmeows": catmeows, "catsound": catsound, "folders": folders}


def import_dataset(
    kind: str,
    source: str | Path,
    out: str | Path,
    mapping_path: str | Path | None = None,
    copy: bool = False,
) -> ImportResult:
    """Import the data set at ``source`` into ``out`` (all.jsonl, media/, dataset_card.md,
    import_report.json). ``copy`` copies media instead of hard-linking them."""
    if kind not in KINDS:
        raise DataImportError(f"unknown data set kind {kind!r}; known: {', '.join(KINDS)}")
    module = KINDS[kind]
    source = Path(source)
    if not source.is_dir():
        raise DataImportError(f"{source}: source folder not found")
    mapping = load_mapping(mapping_path, module.DEFAULT_MAPPING)
    if kind == "folders":
        mapping = folders.mapping_for(source, mapping)
    candidates, skipped = module.scan(source, mapping)
    return write_import(module.INFO, kind, source, Path(out), candidates, skipped, mapping, copy)


__all__ = ["KINDS", "DataImportError", "ImportResult", "import_dataset"]
