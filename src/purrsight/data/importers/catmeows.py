"""CatMeows (Ludovico et al., 2020; Zenodo 4008297): 440 meows of 21 cats in 3 contexts.

File names follow ``C_NNNNN_BB_SS_OOOOO_RXX.wav`` (the record's naming convention):

    C      emission context: B brushing, F waiting for food, I isolation in an unfamiliar place
    NNNNN  the cat's unique id                       → subject_id
    BB     breed: MC Maine Coon, EU European Shorthair
    SS     sex: FI / FN female intact / neutered, MI / MN male intact / neutered
    OOOOO  the owner's unique id
    R      recording session (1, 2 or 3);  XX  vocalisation counter (01..99)

e.g. ``B_ANI01_MC_FN_SIM01_101.wav``: brushing, cat ANI01, Maine Coon, neutered female,
owner SIM01, session 1, meow 01. The label is the context; the default mapping to the
emotion set is in :data:`DEFAULT_MAPPING` and argued for in docs/DATASETS.md.
"""

from __future__ import annotations

import re
from pathlib import Path

from purrsight.data.importers.common import (
    Candidate,
    Mapping,
    Skipped,
    SourceInfo,
    media_files,
)
from purrsight.data.media import AUDIO_EXTENSIONS

INFO = SourceInfo(
    name="CatMeows",
    url="https://doi.org/10.5281/zenodo.4008297 (download dataset.zip by hand)",
    citation=(
        "Ludovico, Ntalampiras, Presti, Cannas, Battini, Mattiello: CatMeows: A "
        "Publicly-Available Dataset of Cat Vocalizations, MultiMedia Modeling (MMM) 2021, "
        "LNCS 12573; data: Zenodo, doi:10.5281/zenodo.4008297"
    ),
    licence=(
        "the paper states Creative Commons Attribution 4.0; check the Zenodo record's terms "
        "of use for the version you download (they have mentioned research / "
        "non-commercial use)"
    ),
    subjects="the cat id (NNNNN) in each file name; 21 cats",
)

NAME = re.compile(
    r"^(?P<context>[A-Z])_(?P<cat>[A-Za-z0-9]+)_(?P<breed>[A-Z]{2})_(?P<sex>[FM][IN])_"
    r"(?P<owner>[A-Za-z0-9]+)_(?P<session>[1-9])(?P<counter>\d{2})$"
)
CONTEXTS = {
    "B": "meowing while being brushed by its owner at home",
    "F": "meowing while waiting for food",
    "I": "meowing while isolated in an unfamiliar place",
}
BREEDS = {"MC": "Maine Coon", "EU": "European Shorthair"}
SEXES = {
    "FI": "female, intact",
    "FN": "female, neutered",
    "MI": "male, intact",
    "MN": "male, neutered",
}

# Context → emotion. Brushing by the owner at home is an affiliative, low-arousal context;
# waiting for food is a solicitation (the classic "feed me" meow); isolation in an
# unfamiliar place is a stressor. These are proxies: the context, not an observed emotion.
DEFAULT_MAPPING: dict[str, str | None] = {"B": "content", "F": "demanding", "I": "fearful"}

EXPECTED = "C_NNNNN_BB_SS_OOOOO_RXX.wav (e.g. B_ANI01_MC_FN_SIM01_101.wav)"


def parse_name(stem: str) -> dict[str, str] | None:
    """The fields of a CatMeows file stem, or None if it does not follow the convention."""
    match = NAME.match(stem)
    if match is None or match["breed"] not in BREEDS:
        return None
    return match.groupdict()


def scan(source: Path, mapping: Mapping) -> tuple[list[Candidate], list[Skipped]]:
    """Candidates from every audio file named by the convention; the rest is skipped."""
    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    for path in media_files(source):
        rel = path.relative_to(source).as_posix()
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            skipped.append(Skipped(rel, "not media", "not an audio file"))
            continue
        fields = parse_name(path.stem)
        if fields is None:
            skipped.append(Skipped(rel, "malformed name", f"name does not follow {EXPECTED}"))
            continue
        candidates.append(
            Candidate(
                key=str(Path(rel).with_suffix("")),
                source_label=fields["context"],
                subject_id=fields["cat"],
                audio=path,
                context=CONTEXTS.get(fields["context"]),
                vocalization="meow",
                meta={
                    "context": fields["context"],
                    "breed": BREEDS[fields["breed"]],
                    "sex": SEXES[fields["sex"]],
                    "owner": fields["owner"],
                    "session": int(fields["session"]),
                    "counter": int(fields["counter"]),
                },
            )
        )
    return candidates, skipped
