"""The feature cache behind a FeatureSource: cached == freshly computed, keys change with
content and models, corrupt entries are recomputed, and a full cache needs no encoder.

Tiny random encoders (conftest), 14 generated demo samples, a random aligner.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

import purrsight.models.encoders as encoders_module
from purrsight.config import ConfigError, MediaConfig, load_config
from purrsight.data.demo import generate_demo_dataset
from purrsight.data.manifest import read_manifest
from purrsight.features import FeatureSource
from purrsight.features.cache import FeatureCache
from purrsight.features.keys import content_key, namespace
from purrsight.features.raw import encode_samples
from purrsight.models.aligner import Aligner
from purrsight.models.encoders import build_encoder, encoder_identity

MODALITIES = ("image", "audio", "text")
MEDIA = MediaConfig()
BATCH = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache_data")
    generate_demo_dataset(root / "data", n=14, seed=5, image_size=32, audio_seconds=0.5)
    return root / "data"


@pytest.fixture(scope="module")
def encoder_cfgs(tiny_encoder_dirs):
    overrides = [f"encoders.{m}={{type: hf, path: {tiny_encoder_dirs[m]}}}" for m in MODALITIES]
    return load_config(None, overrides).encoders


@pytest.fixture(scope="module")
def built(encoder_cfgs):
    return {m: build_encoder(m, getattr(encoder_cfgs, m)) for m in MODALITIES}


@pytest.fixture(scope="module")
def aligner(built) -> Aligner:
    torch.manual_seed(0)
    return Aligner({m: e.dim for m, e in built.items()}, embed_dim=16, hidden_dim=32)


def _samples(data_dir: Path):
    return read_manifest(data_dir / "all.jsonl")


def _source(cfgs, modalities, cache_dir: Path | None, media=MEDIA) -> FeatureSource:
    """A FeatureSource of ``cfgs``' encoders for ``modalities``, through the cache in
    ``cache_dir`` (None: no cache)."""
    cache = FeatureCache(cache_dir) if cache_dir is not None else None
    return FeatureSource({m: getattr(cfgs, m) for m in modalities}, media, cache, BATCH)


@pytest.fixture
def no_encoder_builds(monkeypatch):
    """Any attempt to load an encoder fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("an encoder was loaded although every feature is cached")

    monkeypatch.setattr(encoders_module, "build_encoder", refuse)


# ----------------------------------------------------------------------------- equality


def test_identity_without_loading_equals_the_built_encoders(encoder_cfgs, built) -> None:
    for m in MODALITIES:
        assert encoder_identity(m, getattr(encoder_cfgs, m)) == built[m].identity


def test_cached_encoder_features_equal_fresh_ones_and_hits_skip_the_encoders(
    tmp_path, data_dir, encoder_cfgs, built, monkeypatch
) -> None:
    samples = _samples(data_dir)
    fresh = encode_samples(samples, built, MEDIA, BATCH)
    cold_source = _source(encoder_cfgs, MODALITIES, tmp_path / "cache")
    cold = cold_source.raw(samples)
    assert sorted(cold_source.encoders.built) == sorted(MODALITIES)
    stats = cold_source.cache.stats["encoder"]
    assert stats.hits == 0 and stats.computed > 0 and stats.corrupt == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit ran an encoder")

    monkeypatch.setattr(encoders_module, "build_encoder", refuse)
    warm_source = _source(encoder_cfgs, MODALITIES, tmp_path / "cache")
    warm = warm_source.raw(samples)
    assert warm_source.encoders.built == []
    assert warm_source.cache.stats["encoder"].hits == stats.computed
    assert warm_source.cache.stats["encoder"].computed == 0
    for table in (cold, warm):
        assert table.ids == fresh.ids
        for m in MODALITIES:
            assert torch.equal(table.present[m], fresh.present[m])
            torch.testing.assert_close(table.features[m], fresh.features[m], atol=1e-6, rtol=0)
    assert not fresh.present["image"].all(), "the data should have image-less samples"


def test_equal_contents_are_computed_once(tmp_path, data_dir, encoder_cfgs) -> None:
    samples = _samples(data_dir)
    doubled = samples + samples  # the same files twice
    source = _source(encoder_cfgs, ("image",), tmp_path / "cache")
    source.raw(doubled)
    assert source.cache.stats["encoder"].computed == sum(s.image is not None for s in samples)


def test_texts_with_and_without_the_cache_are_the_encoders_own(
    tmp_path, encoder_cfgs, built
) -> None:
    texts = ["a happy cat", "an angry cat", "a happy cat"]
    with torch.no_grad():
        fresh = built["text"](texts)
    plain = _source(encoder_cfgs, ("text",), None)
    torch.testing.assert_close(plain.texts(texts), fresh, atol=1e-6, rtol=0)
    assert plain.cache is None and plain.encoders.built == ["text"]
    cached = _source(encoder_cfgs, ("text",), tmp_path / "cache")
    torch.testing.assert_close(cached.texts(texts), fresh, atol=1e-6, rtol=0)
    assert cached.cache.stats["encoder"].computed == 2  # keyed by the text


def test_cached_aligned_features_equal_fresh_ones_and_need_no_encoder(
    tmp_path, data_dir, encoder_cfgs, built, aligner, no_encoder_builds
) -> None:
    samples = _samples(data_dir)
    media_modalities = ("image", "audio")
    plain = _source(encoder_cfgs, media_modalities, None)  # the encoders already built:
    plain.encoders._built.update({m: built[m] for m in media_modalities})
    fresh = plain.aligned(samples, aligner, "fresh")
    cache_dir = tmp_path / "cache"
    # Fill the encoder level only (as Phase 1 does), with the encoders already built.
    filler = _source(encoder_cfgs, media_modalities, cache_dir)
    filler.encoders._built.update({m: built[m] for m in media_modalities})
    filler.raw(samples)
    for round_ in ("aligned from the encoder level", "aligned level"):
        source = _source(encoder_cfgs, media_modalities, cache_dir)
        got = source.aligned(samples, aligner, "t")
        assert got.ids == fresh.ids
        for m in media_modalities:
            present = got.present[m]
            assert torch.equal(present, fresh.present[m])
            # Only present rows count (the plain path runs the head on absent zero rows).
            torch.testing.assert_close(
                got.features[m][present], fresh.features[m][present], atol=1e-6, rtol=0
            )
            assert not got.features[m][~present].any()
        assert source.encoders.built == [], round_
        if round_ == "aligned level":
            assert source.cache.stats["aligned"].computed == 0
            assert source.cache.stats["encoder"].hits == 0  # never reached
    assert aligner.training, "the aligner's mode is restored"


# ----------------------------------------------------------------------------- invalidation


def test_changed_media_bytes_give_a_new_key_and_a_fresh_feature(
    tmp_path, data_dir, encoder_cfgs, built
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    samples = _samples(copy)
    _source(encoder_cfgs, ("image",), tmp_path / "cache").raw(samples)
    target = next(s for s in samples if s.image is not None)
    old_key = content_key(target, "image", MEDIA)
    image = Image.open(target.image).convert("RGB")
    Image.new("RGB", image.size, (250, 10, 10)).save(target.image)  # same name, new bytes
    assert content_key(target, "image", MEDIA) != old_key

    source = _source(encoder_cfgs, ("image",), tmp_path / "cache")
    table = source.raw(samples)
    assert source.cache.stats["encoder"].computed == 1
    fresh = encode_samples([target], {"image": built["image"]}, MEDIA, BATCH)
    row = [s.id for s in samples].index(target.id)
    torch.testing.assert_close(
        table.features["image"][row], fresh.features["image"][0], atol=1e-6, rtol=0
    )


def test_encoder_config_media_limits_and_aligner_weights_are_part_of_the_key(
    tmp_path, data_dir, encoder_cfgs, aligner, tiny_encoder_dirs
) -> None:
    samples = _samples(data_dir)
    cache_dir = tmp_path / "cache"
    n_images = sum(s.image is not None for s in samples)

    def fill(cfgs, media=MEDIA, heads=aligner):
        source = _source(cfgs, ("image",), cache_dir, media)
        feats = source.aligned(samples, heads, "t").features["image"]
        return source.cache.stats, source.encoders, feats

    stats, _, base = fill(encoder_cfgs)
    assert stats["aligned"].computed == n_images

    stats, _, _ = fill(encoder_cfgs)
    assert stats["aligned"].hits == n_images and stats["aligned"].computed == 0

    # Another pooling is another encoder identity: both levels are recomputed.
    cls_cfgs = load_config(
        None, [f"encoders.image={{type: hf, path: {tiny_encoder_dirs['image']}, pooling: cls}}"]
    ).encoders
    stats, lazy, pooled = fill(cls_cfgs)
    assert stats["aligned"].computed == n_images and stats["encoder"].computed == n_images
    assert lazy.built == ["image"]
    assert not torch.allclose(pooled, base)

    # Other media limits: recomputed (a file the new limits refuse must not be served).
    stats, _, _ = fill(encoder_cfgs, MediaConfig(max_audio_seconds=20))
    assert stats["aligned"].computed == n_images

    # Other aligner weights: the aligned level is recomputed from the cached encoder level.
    changed = Aligner({"image": aligner.input_dims["image"]}, embed_dim=16, hidden_dim=32)
    changed.load_state_dict(
        {
            k: v
            for k, v in aligner.state_dict().items()
            if not k.startswith(("heads.audio", "heads.text"))
        }
    )
    with torch.no_grad():
        changed.heads["image"].net[1].weight[0, 0] += 0.5
    stats, lazy, moved = fill(encoder_cfgs, heads=changed)
    assert stats["aligned"].computed == n_images
    assert stats["encoder"].hits == n_images and lazy.built == []
    assert not torch.allclose(moved, base)


# ----------------------------------------------------------------------------- corruption


def test_corrupt_entries_are_detected_and_recomputed(
    tmp_path, data_dir, encoder_cfgs, built, caplog
) -> None:
    samples = [s for s in _samples(data_dir) if s.image is not None][:5]
    fresh = encode_samples(samples, {"image": built["image"]}, MEDIA, BATCH).features["image"]
    source = _source(encoder_cfgs, ("image",), tmp_path / "cache")
    source.raw(samples)
    ns = namespace("encoder", "image", built["image"].identity, MEDIA)
    paths = [source.cache.path(ns, content_key(s, "image", MEDIA)) for s in samples]

    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) - 7])  # truncated
    data = bytearray(paths[1].read_bytes())
    data[-3] ^= 0x40  # one flipped bit in the values
    paths[1].write_bytes(bytes(data))
    paths[2].write_bytes(b"")  # empty (a torn write)
    shutil.copy(paths[4], paths[3])  # a valid entry under another key

    source = _source(encoder_cfgs, ("image",), tmp_path / "cache")
    table = source.raw(samples)
    stats = source.cache.stats["encoder"]
    assert (stats.corrupt, stats.computed, stats.hits) == (4, 4, 1)
    assert source.encoders.built == ["image"]
    torch.testing.assert_close(table.features["image"], fresh, atol=1e-6, rtol=0)
    assert sum("is corrupt" in r.getMessage() for r in caplog.records) == 4

    again = _source(encoder_cfgs, ("image",), tmp_path / "cache")  # rewritten entries are sound
    again.raw(samples)
    assert again.cache.stats["encoder"].hits == 5 and again.cache.stats["encoder"].corrupt == 0


def test_a_missing_media_file_is_one_named_error(tmp_path, data_dir, encoder_cfgs) -> None:
    from purrsight.data.media import MediaError

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    samples = [s for s in _samples(copy) if s.image is not None][:2]
    _source(encoder_cfgs, ("image",), tmp_path / "cache").raw(samples)
    samples[1].image.unlink()
    with pytest.raises(MediaError, match=r"file not found \(sample .* at .*all.jsonl:\d+\)"):
        _source(encoder_cfgs, ("image",), tmp_path / "cache").raw(samples)
    # Cached bytes under a name decoding refuses are refused too, not served from the cache.
    renamed = replace(samples[0], image=samples[0].image.rename(copy / "cat.gif"))
    with pytest.raises(MediaError, match=r"cat.gif: not a supported image type"):
        _source(encoder_cfgs, ("image",), tmp_path / "cache").raw([renamed])


# ----------------------------------------------------------------------------- config


def test_feature_cache_config_keys(tmp_path) -> None:
    config = load_config(None)
    assert config.feature_cache is False and config.feature_cache_dir == "cache/features"
    assert load_config(Path("config/demo.yaml")).feature_cache is True
    with pytest.raises(ConfigError, match="feature_cache_dir: must name a folder"):
        load_config(None, ["feature_cache_dir=' '"])
    with pytest.raises(ConfigError, match="feature_cache: "):
        load_config(None, ["feature_cache=maybe"])
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="feature_cache_dir: .* is not a folder"):
        FeatureCache(blocker)


# ----------------------------------------------------------------------------- compute dtype


def test_bf16_encoders_are_their_own_key_and_close_to_fp32(tmp_path, data_dir, encoder_cfgs):
    """Features computed in bf16 autocast land under their own key (a cache filled in fp32
    never answers a bf16 run, nor the reverse), float32 and within bf16 rounding of fp32's."""
    samples = _samples(data_dir)
    n_images = sum(s.image is not None for s in samples)
    cache = FeatureCache(tmp_path / "cache")
    configs = {"image": encoder_cfgs.image}

    def fill(dtype):
        source = FeatureSource(configs, MEDIA, cache, BATCH, compute_dtype=dtype)
        return source.raw(samples, "t").features["image"], source.encoders

    before = cache.stats["encoder"].computed
    fp32, _ = fill(torch.float32)
    bf16, lazy = fill(torch.bfloat16)
    assert cache.stats["encoder"].computed - before == 2 * n_images
    assert lazy.built == ["image"] and lazy.get("image").compute_dtype == torch.bfloat16
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    rows = fp32.abs().sum(1) > 0
    cosine = torch.nn.functional.cosine_similarity(bf16[rows], fp32[rows])
    assert cosine.min() > 0.99
    # fp32's key is what it was before compute dtypes were keyed: old caches stay valid.
    ns = namespace("encoder", "image", "id", MEDIA)
    assert ns == namespace("encoder", "image", "id", MEDIA, None, "float32")
    assert ns != namespace("encoder", "image", "id", MEDIA, None, "bfloat16")


@pytest.mark.parametrize(
    ("precision", "native", "want"),
    [
        ("auto", True, torch.bfloat16),
        ("auto", False, torch.float32),
        ("32", True, torch.float32),
        ("bf16-mixed", False, torch.bfloat16),
        ("16-mixed", True, torch.float32),
    ],
)
def test_encoders_compute_in_the_precision_decision(monkeypatch, precision, native, want):
    import purrsight.precision as precision_module
    from purrsight.precision import encoder_dtype

    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native)
    assert encoder_dtype(precision) == want
    config = load_config(None, [f"precision={precision}"] if precision != "16-mixed" else [])
    if precision != "16-mixed":
        source = FeatureSource.from_config(config, ["text"], cache=False)
        assert source.encoders.compute_dtype == want
