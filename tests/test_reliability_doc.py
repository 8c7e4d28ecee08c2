"""docs/RELIABILITY.md: every row names at least one test, and every test it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "RELIABILITY.md"
REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def _rows() -> list[str]:
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        is_row = line.startswith("|") and len(cells) == 3 and not set(line) <= set("|- ")
        if is_row and cells[2] != "test":  # not the header row
            rows.append(line)
    return rows


def test_every_row_is_backed_by_a_test_that_exists() -> None:
    rows = _rows()
    assert len(rows) >= 25
    for row in rows:
        refs = REF.findall(row.rsplit("|", 2)[-2])
        assert refs, f"row without a test: {row}"
        for file, name in refs:
            source = (ROOT / file).read_text(encoding="utf-8")
            assert re.search(rf"^def {name}\(", source, re.MULTILINE), f"{file}::{name} missing"
