"""Reading heads on synthetic frozen features with known answers: every cue learnt, missing
cues ignored, absent inputs never read, unsure cues reported as unclear, the blend
weighing the scorer that knows."""

from pathlib import Path

import numpy as np
import pytest
import torch

from purrsight.data.manifest import Sample
from purrsight.features.raw import FeatureTable
from purrsight.inference.reading import UNCLEAR, Reading, load_reading, save_reading
from purrsight.inference.reading_export import _fit_heads, head_specs
from purrsight.inference.reading_fit import fit_blend
from purrsight.models.reading_heads import EmotionBlend
from purrsight.report import Evidence, Report

LABELS = ["content", "fearful", "playful"]
# Each emotion comes with its own cue values: the cues explain the emotion.
CUES_OF = {
    "content": {"ears": "upright", "tail": "wrapped", "vocalization": "purr"},
    "fearful": {"ears": "flattened", "tail": "low", "vocalization": "hiss"},
    "playful": {"ears": "forward", "tail": "up", "vocalization": "chirp"},
}
DIMS = {"image": 12, "audio": 8}


def _sample(i: int, label: str, image: bool, audio: bool, cues: bool) -> Sample:
    evidence = {k: v for k, v in CUES_OF[label].items() if cues}
    if not image:
        evidence = {k: v for k, v in evidence.items() if k == "vocalization"}
    if not audio:
        evidence.pop("vocalization", None)
    report = Report(emotion=label, arousal="medium", evidence=Evidence(**evidence))
    return Sample(
        id=f"s{i}",
        image=Path(f"/x/{i}.png") if image else None,
        audio=Path(f"/x/{i}.wav") if audio else None,
        video=None,
        instruction="How does this cat feel?",
        response=report,
        label=label,
        subject_id=None,
        source=f"synthetic:{i}",
    )


def _split(n: int, seed: int, cue_rate: float = 1.0):
    """Samples and their separable features: each label lights its own block of the image
    and audio vectors, plus noise."""
    rng = np.random.default_rng(seed)
    samples, image, audio, has_image, has_audio = [], [], [], [], []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        k = LABELS.index(label)
        kind = rng.choice(["both", "image", "audio"], p=[0.6, 0.2, 0.2])
        img, aud = kind != "audio", kind != "image"
        samples.append(_sample(i, label, img, aud, cues=rng.random() < cue_rate))
        image.append(np.eye(3, DIMS["image"])[k] * 4 + rng.normal(0, 0.3, DIMS["image"]))
        audio.append(np.eye(3, DIMS["audio"])[k] * 4 + rng.normal(0, 0.3, DIMS["audio"]))
        has_image.append(img)
        has_audio.append(aud)
    table = FeatureTable(
        [s.id for s in samples],
        {
            "image": torch.tensor(np.array(image)).float(),
            "audio": torch.tensor(np.array(audio)).float(),
        },
        {"image": torch.tensor(has_image), "audio": torch.tensor(has_audio)},
    )
    return samples, table


@pytest.fixture(scope="module")
def fitted():
    splits = {"train": _split(150, 0, cue_rate=0.6), "val": _split(60, 1), "test": _split(90, 2)}
    samples = {k: v[0] for k, v in splits.items()}
    tables = {k: v[1] for k, v in splits.items()}
    specs = head_specs(samples["train"], LABELS, ["image", "audio"])
    heads, fits = _fit_heads(specs, tables, samples, DIMS)
    return heads, fits, samples, tables


def test_every_cue_is_learnt_from_separable_features_although_some_are_missing(fitted) -> None:
    heads, fits, samples, tables = fitted
    # 40 % of the training samples carry no cues at all: their rows are left out of the cue
    # heads' loss (a target of None is never a class), and the cues are still learnt.
    assert {"ears", "tail", "vocalization", "emotion"} <= set(heads.specs)
    assert "unknown" not in heads.specs["ears"].classes
    reading = Reading(heads, EmotionBlend(0.0, 1.0), cue_threshold=0.0)
    test, table = samples["test"], tables["test"]
    prepared = [_Prepared(table, i) for i in range(len(test))]
    reads = reading.read(prepared)
    for cue in ("ears", "tail", "vocalization"):
        truth = [getattr(s.response.evidence, cue) for s in test]
        said = [getattr(r.evidence, cue) for r in reads]
        pairs = [(t, a) for t, a in zip(truth, said, strict=True) if t is not None]
        assert pairs and all(t == a for t, a in pairs), cue


def test_a_cue_of_an_absent_input_is_never_read(fitted) -> None:
    heads, _, samples, tables = fitted
    reading = Reading(heads, EmotionBlend(0.0, 1.0), cue_threshold=0.0)
    table = tables["test"]
    reads = reading.read([_Prepared(table, i) for i in range(len(samples["test"]))])
    for sample, read in zip(samples["test"], reads, strict=True):
        if sample.image is None:
            assert read.evidence.ears is None and read.evidence.tail is None
            assert "ears" not in read.cue_confidence
        if sample.audio is None:
            assert read.evidence.vocalization is None


def test_a_cue_below_its_threshold_is_reported_as_unclear(fitted) -> None:
    heads, _, _, tables = fitted
    reading = Reading(heads, EmotionBlend(0.0, 1.0), cue_threshold=0.999)
    ambiguous = _Prepared(tables["test"], 0)
    ambiguous.raw = {"image": torch.zeros(DIMS["image"]), "audio": torch.zeros(DIMS["audio"])}
    (read,) = reading.read([ambiguous])
    assert read.evidence.ears == UNCLEAR
    assert read.cue_confidence["ears"] < 0.999


def test_the_emotion_head_reads_the_stacked_cues(fitted) -> None:
    heads, fits, samples, tables = fitted
    table = tables["test"]
    probs = heads.probabilities(table.features, table.present)["emotion"][0]
    predicted = [LABELS[i] for i in probs.argmax(dim=1).tolist()]
    assert predicted == [s.label for s in samples["test"]]
    assert fits["emotion"]["val_accuracy"] == 1.0


def test_the_blend_weighs_the_scorer_that_knows() -> None:
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 3, 300)
    knowing = torch.tensor(np.eye(3)[targets] * 3 + rng.normal(0, 0.5, (300, 3)))
    noise = torch.tensor(rng.normal(0, 1, (300, 3)))
    blend, info = fit_blend(noise, knowing, targets.tolist())
    llm_weight, head_weight = blend.weights.tolist()
    assert head_weight > 5 * llm_weight
    assert info["val_nll"] <= info["val_nll_llm_only"]


def test_heads_survive_the_bundle_round_trip(fitted, tmp_path: Path) -> None:
    heads, fits, _, tables = fitted
    info = save_reading(tmp_path, heads, EmotionBlend(0.5, 2.0), fits, {"val_nll": 0.1}, "d")
    loaded = load_reading(tmp_path, info)
    assert loaded is not None and loaded.blend.weights.tolist() == [0.5, 2.0]
    table = tables["test"]
    before = heads.probabilities(table.features, table.present)["emotion"][0]
    after = loaded.heads.probabilities(table.features, table.present)["emotion"][0]
    assert torch.allclose(before, after)


class _Prepared:
    """What :class:`Reading` reads of a prepared request: its raw features."""

    def __init__(self, table: FeatureTable, i: int) -> None:
        self.raw = {m: f[i] for m, f in table.features.items() if bool(table.present[m][i])}


def test_typicality_flags_far_points_and_keeps_near_ones() -> None:
    from purrsight.models.typicality import GaussianTypicality

    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 40))

    def draw(n):
        return torch.tensor(rng.normal(size=(n, 6)) @ basis + rng.normal(0, 0.1, (n, 40))).float()

    model = GaussianTypicality(40, components=8).fit(draw(400), draw(200))
    near = model.score(draw(200)) <= model.threshold
    far = model.score(torch.tensor(rng.normal(0, 3, (50, 40))).float()) <= model.threshold
    assert near.float().mean() > 0.9  # ~99 % by construction
    assert far.float().mean() == 0.0


def test_the_subject_verdict() -> None:
    from purrsight.inference.reading import judge

    in_range = {"image": (0.8, True), "audio": (0.5, True)}
    assert judge(in_range, (0.001, 0.0)).subject == "cat"  # a drawn demo cat: in range
    real_cat = judge({"image": (9.0, False)}, (0.95, 0.01))
    assert real_cat.subject == "cat" and not real_cat.in_range
    astronaut = judge({"image": (12.0, False)}, (0.001, 0.0))
    assert astronaut.subject == "no_cat" and "no cat" in astronaut.reason
    assert judge({"image": (12.0, False)}, (0.2, 0.1)).subject == "unsure"
    barking = judge({"audio": (30.0, False)}, None)
    assert barking.subject == "unsure" and "audio" in barking.reason


def test_absent_cue_words_are_found() -> None:
    from purrsight.inference.reading import absent_cue_words

    text = "The cat seems fearful, ears flattened, hissing."
    assert absent_cue_words(text, ["audio"]) == ["ear"]
    assert absent_cue_words(text, ["image"]) == ["hiss"]
    assert absent_cue_words(text, ["image", "audio"]) == []
    assert absent_cue_words(text, ["video"]) == []


def test_a_head_is_calibrated_on_val() -> None:
    # Few noisy samples in many dimensions: the fitted logistic regression's confidence is
    # off; the head's temperature, fitted on val, must lower the val NLL.
    import torch.nn.functional as F

    from purrsight.inference.reading_fit import fit_head
    from purrsight.models.reading_heads import HeadSpec

    rng = np.random.default_rng(3)
    classes = ("a", "b", "c")

    def draw(n):
        y = rng.integers(0, 3, n)
        x = np.eye(3, 60)[y] * 1.0 + rng.normal(0, 1.0, (n, 60))
        return torch.tensor(x).float(), [classes[k] for k in y]

    spec = HeadSpec("ears", ("image",), classes)
    val = draw(300)
    head, fit = fit_head(spec, draw(60), val)
    targets = torch.tensor([classes.index(c) for c in val[1]])
    with torch.no_grad():
        calibrated = F.cross_entropy(head(val[0]), targets)
        raw = F.cross_entropy(head(val[0]) * head.temperature, targets)
    assert fit["temperature"] != 1.0
    assert calibrated < raw


def test_stack_folds_keep_each_cat_in_one_fold_and_cover_every_row() -> None:
    """The emotion head learns from cue probabilities of heads that never saw the cat:
    every subject's rows sit in one fold, every row in exactly one fold; samples without
    a subject are their own; fewer subjects than folds give one fold each."""
    from types import SimpleNamespace

    from purrsight.inference.reading_export import stack_folds

    cats = [f"cat-{i % 7}" for i in range(40)] + [None, None]
    samples = [SimpleNamespace(subject_id=c) for c in cats]
    folds = stack_folds(samples, 5)
    assert len(folds) == 5
    assert sorted(i for fold in folds for i in fold) == list(range(len(samples)))
    for fold in folds:
        others = {cats[i] for f in folds if f is not fold for i in f if cats[i]}
        assert not others & {cats[i] for i in fold if cats[i]}
    assert len(stack_folds(samples[:3], 5)) == 3  # three cats, three folds
