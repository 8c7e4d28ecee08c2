"""The feature cache: cached == freshly computed, keys change with content and models,
corrupt entries are recomputed, and a full cache needs no encoder at all.

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
from purrsight.features.cache import (
    FeatureCache,
    LazyEncoders,
    aligned_features,
    content_key,
    encoder_table,
    namespace,
    text_features,
)
from purrsight.features.raw import encode_samples
from purrsight.models.aligner import Aligner
from purrsight.models.encoders import build_encoder, encoder_identity
from purrsight.train.phase2_data import encode_aligned

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
    cache = FeatureCache(tmp_path / "cache")
    cold_encoders = LazyEncoders(encoder_cfgs, MODALITIES)
    cold = encoder_table(samples, cold_encoders, MEDIA, BATCH, cache)
    assert sorted(cold_encoders.built) == sorted(MODALITIES)
    stats = cache.stats["encoder"]
    assert stats.hits == 0 and stats.computed > 0 and stats.corrupt == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit ran an encoder")

    monkeypatch.setattr(encoders_module, "build_encoder", refuse)
    warm_cache = FeatureCache(tmp_path / "cache")
    warm_encoders = LazyEncoders(encoder_cfgs, MODALITIES)
    warm = encoder_table(samples, warm_encoders, MEDIA, BATCH, warm_cache)
    assert warm_encoders.built == []
    assert warm_cache.stats["encoder"].hits == stats.computed
    assert warm_cache.stats["encoder"].computed == 0
    for table in (cold, warm):
        assert table.ids == fresh.ids
        for m in MODALITIES:
            assert torch.equal(table.present[m], fresh.present[m])
            torch.testing.assert_close(table.features[m], fresh.features[m], atol=1e-6, rtol=0)
    assert not fresh.present["image"].all(), "the data should have image-less samples"


def test_equal_contents_are_computed_once(tmp_path, data_dir, encoder_cfgs) -> None:
    samples = _samples(data_dir)
    doubled = samples + samples  # the same files twice
    cache = FeatureCache(tmp_path / "cache")
    encoder_table(doubled, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)
    assert cache.stats["encoder"].computed == sum(s.image is not None for s in samples)


def test_cached_aligned_features_equal_fresh_ones_and_need_no_encoder(
    tmp_path, data_dir, encoder_cfgs, built, aligner, no_encoder_builds
) -> None:
    samples = _samples(data_dir)
    fresh = encode_aligned(samples, built, aligner, MEDIA, BATCH, "fresh")
    cache_dir = tmp_path / "cache"
    # Fill the encoder level only (as Phase 1 does), with the encoders already built.
    lazy = LazyEncoders(encoder_cfgs, ("image", "audio"))
    lazy._built.update({m: built[m] for m in ("image", "audio")})
    encoder_table(samples, lazy, MEDIA, BATCH, FeatureCache(cache_dir))
    for round_ in ("aligned from the encoder level", "aligned level"):
        cache = FeatureCache(cache_dir)
        lazy = LazyEncoders(encoder_cfgs, ("image", "audio"))
        for m in ("image", "audio"):
            got, present = aligned_features(
                samples, m, lazy, aligner.heads, 16, MEDIA, BATCH, cache, "t"
            )
            assert torch.equal(present, fresh.present[m])
            # Only present rows count (the plain path runs the head on absent zero rows).
            torch.testing.assert_close(got[present], fresh.features[m][present], atol=1e-6, rtol=0)
            assert not got[~present].any()
        assert lazy.built == [], round_
        if round_ == "aligned level":
            assert cache.stats["aligned"].computed == 0
            assert cache.stats["encoder"].hits == 0  # never reached
    assert aligner.training, "the aligner's mode is restored"


# ----------------------------------------------------------------------------- invalidation


def test_changed_media_bytes_give_a_new_key_and_a_fresh_feature(
    tmp_path, data_dir, encoder_cfgs, built
) -> None:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    samples = _samples(copy)
    cache = FeatureCache(tmp_path / "cache")
    encoder_table(samples, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)
    target = next(s for s in samples if s.image is not None)
    old_key = content_key(target, "image", MEDIA)
    image = Image.open(target.image).convert("RGB")
    Image.new("RGB", image.size, (250, 10, 10)).save(target.image)  # same name, new bytes
    assert content_key(target, "image", MEDIA) != old_key

    cache = FeatureCache(tmp_path / "cache")
    table = encoder_table(samples, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)
    assert cache.stats["encoder"].computed == 1
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

    def fill(cfgs, media=MEDIA, head=aligner.heads):
        cache, lazy = FeatureCache(cache_dir), LazyEncoders(cfgs, ("image",))
        feats, _ = aligned_features(samples, "image", lazy, head, 16, media, BATCH, cache, "t")
        return cache.stats, lazy, feats

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
    stats, lazy, moved = fill(encoder_cfgs, head=changed.heads)
    assert stats["aligned"].computed == n_images
    assert stats["encoder"].hits == n_images and lazy.built == []
    assert not torch.allclose(moved, base)


def test_text_features_are_keyed_by_the_text(tmp_path, encoder_cfgs, built) -> None:
    texts = ["a happy cat", "an angry cat", "a happy cat"]
    cache = FeatureCache(tmp_path / "cache")
    got = text_features(texts, LazyEncoders(encoder_cfgs, ("text",)), MEDIA, cache)
    assert cache.stats["encoder"].computed == 2
    with torch.no_grad():
        fresh = built["text"](texts)
    torch.testing.assert_close(got, fresh, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- corruption


def test_corrupt_entries_are_detected_and_recomputed(
    tmp_path, data_dir, encoder_cfgs, built, caplog
) -> None:
    samples = [s for s in _samples(data_dir) if s.image is not None][:5]
    fresh = encode_samples(samples, {"image": built["image"]}, MEDIA, BATCH).features["image"]
    cache = FeatureCache(tmp_path / "cache")
    encoder_table(samples, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)
    ns = namespace("encoder", "image", built["image"].identity, MEDIA)
    paths = [cache.path(ns, content_key(s, "image", MEDIA)) for s in samples]

    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) - 7])  # truncated
    data = bytearray(paths[1].read_bytes())
    data[-3] ^= 0x40  # one flipped bit in the values
    paths[1].write_bytes(bytes(data))
    paths[2].write_bytes(b"")  # empty (a torn write)
    shutil.copy(paths[4], paths[3])  # a valid entry under another key

    cache = FeatureCache(tmp_path / "cache")
    lazy = LazyEncoders(encoder_cfgs, ("image",))
    table = encoder_table(samples, lazy, MEDIA, BATCH, cache)
    stats = cache.stats["encoder"]
    assert (stats.corrupt, stats.computed, stats.hits) == (4, 4, 1)
    assert lazy.built == ["image"]
    torch.testing.assert_close(table.features["image"], fresh, atol=1e-6, rtol=0)
    assert sum("is corrupt" in r.getMessage() for r in caplog.records) == 4

    again = FeatureCache(tmp_path / "cache")  # the rewritten entries are sound
    encoder_table(samples, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, again)
    assert again.stats["encoder"].hits == 5 and again.stats["encoder"].corrupt == 0


def test_a_missing_media_file_is_one_named_error(tmp_path, data_dir, encoder_cfgs) -> None:
    from purrsight.data.media import MediaError

    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    samples = [s for s in _samples(copy) if s.image is not None][:2]
    cache = FeatureCache(tmp_path / "cache")
    encoder_table(samples, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)
    samples[1].image.unlink()
    with pytest.raises(MediaError, match=r"file not found \(sample .* at .*all.jsonl:\d+\)"):
        encoder_table(samples, LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)
    # Cached bytes under a name decoding refuses are refused too, not served from the cache.
    renamed = replace(samples[0], image=samples[0].image.rename(copy / "cat.gif"))
    with pytest.raises(MediaError, match=r"cat.gif: not a supported image type"):
        encoder_table([renamed], LazyEncoders(encoder_cfgs, ("image",)), MEDIA, BATCH, cache)


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
