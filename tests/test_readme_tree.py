"""The README's file tree is the map a newcomer reads first: every module of the package
is on it, and no folder is listed twice."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "purrsight"


def tree_block() -> list[str]:
    """The lines of the fenced block under README's '## File tree'."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## File tree", 1)[1]
    return section.split("```", 2)[1].strip("\n").splitlines()


def tree_entries(lines: list[str]) -> list[tuple[str, str]]:
    """(full path of the entry, its description) for each line that names an entry; a line
    indented under a folder ``x/`` (two spaces per level) is inside it."""
    return [(folder + name, description) for folder, name, description in tree_lines(lines)]


def tree_lines(lines: list[str]) -> list[tuple[str, str, str]]:
    """(the folder it sits in, the name as written, its description) per entry line; a
    line indented deeper than any entry could be continues the description above."""
    entries: list[tuple[str, str, str]] = []
    folders: list[str] = []
    for line in lines:
        match = re.match(r"^( *)(\S.*?)(?:\s{2,}(.*))?$", line)
        if not match:
            continue
        if len(match.group(1)) > 2 * len(folders) + 1:
            if entries:
                folder, name, description = entries[-1]
                entries[-1] = (folder, name, f"{description} {line.strip()}")
            continue
        folders = folders[: len(match.group(1)) // 2]
        name, description = match.group(2), match.group(3) or ""
        entries.append(("".join(folders), name, description))
        if name.endswith("/"):
            folders.append(name)
    return entries


def test_every_module_is_on_the_tree() -> None:
    entries = tree_entries(tree_block())
    named = {path for path, _ in entries}
    text_of = "\n".join(f"{path} {description}" for path, description in entries)
    missing = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if module.name == "__init__.py":
            continue
        rel = "src/" + module.relative_to(PACKAGE.parent).as_posix()
        folder = rel.rsplit("/", 1)[0] + "/"
        # A module is named on its own line, on a shared line ("evaluate.py, plots.py"), or
        # in the description of its folder's line ("server/  app.py routes, …").
        on_a_line = any(
            p.startswith(folder) and module.name in p.removeprefix(folder).split(", ")
            for p in named
        )
        in_folder_text = any(
            p == folder and re.search(rf"\b{re.escape(module.name)}\b", d) for p, d in entries
        )
        if not (on_a_line or in_folder_text):
            missing.append(rel)
    assert missing == [], f"README file tree lacks: {missing}\n{text_of[:200]}"


def test_no_folder_is_listed_twice() -> None:
    # "docs/A.md" and "docs/B.md" on two lines of one level list the folder docs/ twice:
    # it gets one line, its files go under it.
    firsts = [
        (folder, name.split("/", 1)[0])
        for folder, name, _ in tree_lines(tree_block())
        if "/" in name
    ]
    twice = sorted(
        {f"{folder}{first}/" for folder, first in firsts if firsts.count((folder, first)) > 1}
    )
    assert twice == [], f"folders listed on more than one line: {twice}"


def test_the_tree_parser_nests_by_indentation() -> None:
    lines = ["src/x/", "  a.py            one", "  sub/            two", "    b.py   three"]
    assert tree_entries(lines) == [
        ("src/x/", ""),
        ("src/x/a.py", "one"),
        ("src/x/sub/", "two"),
        ("src/x/sub/b.py", "three"),
    ]
