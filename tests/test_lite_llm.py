"""The ready LLM: the plain-torch decoder against transformers (logits, masks, cached
generation) on tiny random Llama and Qwen2 models, its tokenizer against the
transformers tokenizers, the numpy resampler against scipy, and the adaptive threads'
early window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from purrsight.data.instruction import build_messages, collate, encode_prompt
from purrsight.data.resample import resample_poly
from purrsight.inference.scoring import Block, score_blocks, shared_prefix
from purrsight.models.lite_llm import (
    LiteConfig,
    LiteDecoder,
    UnsupportedModel,
    lite_state_dict,
    load_lite_weights,
    save_lite_weights,
)
from purrsight.models.lite_tokenizer import LiteTokenizer, chat_pieces, tokenizer_spec
from purrsight.threads import AdaptiveThreads, CpuSample
from qwen_fixture import byte_tokenizer, qwen_tokenizer, tiny_llama, tiny_qwen

FAMILIES = ["llama", "qwen2"]


def _pair(family: str):
    """(transformers model, the same as a LiteDecoder), fp32."""
    hf = tiny_llama(300) if family == "llama" else tiny_qwen(300)
    config = LiteConfig.from_hf(hf.config, [258])
    return hf, LiteDecoder(config, lite_state_dict(hf, config)).eval()


def _left_padded(b: int = 3, s: int = 11, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 300, (b, s), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :1] = 0
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_logits_equal_transformers_with_padding_masks_and_kept_positions(family) -> None:
    hf, lite = _pair(family)
    ids, mask, positions = _left_padded()
    real = mask.bool()
    want = hf(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    got = lite(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-4)
    # No mask: causal; a 4D additive mask (label scoring's tree) and kept columns.
    torch.testing.assert_close(lite(input_ids=ids).logits, hf(input_ids=ids).logits)
    tree = torch.zeros(3, 1, 11, 11).masked_fill_(
        ~torch.ones(11, 11, dtype=torch.bool).tril(), torch.finfo(torch.float32).min
    )
    keep = torch.tensor([2, 5, 10])
    kwargs = {"attention_mask": tree, "position_ids": positions, "logits_to_keep": keep}
    torch.testing.assert_close(
        lite(input_ids=ids, **kwargs).logits, hf(input_ids=ids, **kwargs).logits
    )


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_cached_steps_give_the_full_forwards_logits(family) -> None:
    _, lite = _pair(family)
    ids, mask, positions = _left_padded()
    full = lite(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    first = lite(
        input_ids=ids[:, :7],
        attention_mask=mask[:, :7],
        position_ids=positions[:, :7],
        use_cache=True,
    )
    cache, steps = first.past_key_values, []
    for t in range(7, 11):
        out = lite(
            input_ids=ids[:, t : t + 1],
            attention_mask=mask[:, : t + 1],
            position_ids=positions[:, t : t + 1],
            past_key_values=cache,
            use_cache=True,
        )
        cache = out.past_key_values
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 7:], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_file_round_trip_and_bf16(family, tmp_path) -> None:
    hf, lite = _pair(family)
    config = lite.lite_config
    for dtype in (torch.float32, torch.bfloat16):
        path = tmp_path / f"{dtype}.safetensors"
        save_lite_weights(path, lite_state_dict(hf, config), dtype)
        loaded = load_lite_weights(config, path)
        assert {p.dtype for p in loaded.parameters()} == {dtype}
        assert loaded.lm_head.weight is loaded.embed.weight or not config.tie_word_embeddings
        ids, mask, positions = _left_padded()
        with torch.no_grad():
            got = loaded(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            want = lite(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        # bf16 weights round to 3 significant digits: the distributions stay close.
        if dtype == torch.float32:
            assert float((got - want)[mask.bool()].abs().max()) < 1e-5
        else:
            p, q = got.float().softmax(-1), want.softmax(-1)
            assert float((p - q)[mask.bool()].abs().max()) < 0.02
    state = lite_state_dict(hf, config)
    state.pop("norm.weight")
    save_lite_weights(tmp_path / "broken.safetensors", state, torch.float32)
    with pytest.raises(ValueError, match="missing"):
        load_lite_weights(config, tmp_path / "broken.safetensors")


def test_unsupported_models_are_named() -> None:
    hf = tiny_llama(300)
    hf.config.hidden_act = "gelu"
    with pytest.raises(UnsupportedModel, match="hidden_act"):
        LiteConfig.from_hf(hf.config)
    hf.config.hidden_act = "silu"
    hf.config.model_type = "gpt2"
    with pytest.raises(UnsupportedModel, match="model_type"):
        LiteConfig.from_hf(hf.config)


@torch.no_grad()
def test_a_cached_prefix_scores_as_the_whole_prompt() -> None:
    """Label scoring with the prompts' shared opening taken from the prefix cache gives
    the scores of the full forward pass."""
    from purrsight.inference.ready_llm import ReadyMultimodalLLM
    from purrsight.models.projector import Projectors

    tokenizer = byte_tokenizer()
    _, lite = _pair("llama")
    torch.manual_seed(0)
    model = ReadyMultimodalLLM(lite, Projectors(("image", "audio"), 8, 32, 2, 16), tokenizer)
    feats = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    items = []
    from purrsight.data.instruction import make_item

    for i, modalities in enumerate((["image", "audio"], ["image"], ["image", "audio"])):
        encoded = encode_prompt(tokenizer, modalities, "How?" if i else "Hm", 2, "")
        items.append(make_item(encoded, {m: feats[i] for m in modalities}))
    assert shared_prefix(items) > 3
    blocks = [[Block([1, 2]), Block([3]), Block([4, 5], parent=0)]] * 3
    with_cache = torch.stack(score_blocks(model, tokenizer, items, blocks))
    lite.prefix_cache = None  # the plain path
    without = torch.stack(score_blocks(model, tokenizer, items, blocks))
    torch.testing.assert_close(with_cache, without, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("make", [byte_tokenizer, qwen_tokenizer], ids=["byte", "qwen"])
def test_the_ready_tokenizer_is_the_transformers_one(make, tmp_path) -> None:
    hf = make()
    hf.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    lite = LiteTokenizer(tmp_path / "tokenizer.json", tokenizer_spec(hf, ""))
    texts = [
        '{"emotion":"content","arousal":"low"}',
        "Owner's note: elle miaule la nuit \u2014 \U0001f63f !",
        "<|im_start|>user\nhi<|im_end|>\n",
    ]
    for text in texts:
        ids = hf(text, add_special_tokens=False)["input_ids"]
        assert lite(text, add_special_tokens=False)["input_ids"] == ids
        for skip in (True, False):
            assert lite.decode(ids, skip_special_tokens=skip) == hf.decode(
                ids, skip_special_tokens=skip
            )
    assert (lite.eos_token_id, lite.pad_token_id) == (hf.eos_token_id, hf.pad_token_id)
    assert set(lite.all_special_tokens) == set(hf.all_special_tokens)
    # The prompt the predictor renders, for every modality subset.
    for modalities in (["image"], ["audio"], ["image", "audio"]):
        messages = build_messages(modalities, "How does this cat feel?\nOwner's note: x", None, "")
        assert lite.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        ) == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert encode_prompt(lite, modalities, "How?", 2, "") == encode_prompt(
            hf, modalities, "How?", 2, ""
        )
    with pytest.raises(ValueError, match="renders only"):
        lite.apply_chat_template(build_messages(["image"], "x", "an answer", ""))


def test_a_template_that_rewrites_the_text_is_refused() -> None:
    hf = byte_tokenizer()

    class Upper:
        def apply_chat_template(self, messages, **kwargs):
            return hf.apply_chat_template(
                [{**m, "content": m["content"].upper()} for m in messages], **kwargs
            )

    with pytest.raises(ValueError, match="user's text"):
        chat_pieces(Upper(), "")


def test_collate_is_the_same_with_either_tokenizer(tmp_path) -> None:
    hf = byte_tokenizer()
    hf.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    lite = LiteTokenizer(tmp_path / "tokenizer.json", tokenizer_spec(hf, ""))
    feats = {"image": torch.ones(4)}
    from purrsight.data.instruction import make_item

    batches = [
        collate([make_item(encode_prompt(t, ["image"], "How?", 2, ""), feats)], 258, "left")
        for t in (hf, lite)
    ]
    assert torch.equal(batches[0].input_ids, batches[1].input_ids)


# ----------------------------------------------------------------------------- resample


@pytest.mark.parametrize(
    ("up", "down", "n"),
    [(2, 1, 22050), (147, 160, 48000), (441, 160, 16000), (160, 147, 999), (1, 3, 7), (5, 3, 1)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_resample_poly_is_scipys(up, down, n, dtype) -> None:
    from scipy.signal import resample_poly as scipy_resample_poly

    x = (np.random.default_rng(0).standard_normal(n) * 1000).astype(dtype)
    want = scipy_resample_poly(x, up, down)
    got = resample_poly(x, up, down)
    assert got.shape == want.shape and got.dtype == want.dtype
    tolerance = 1e-6 if dtype == np.float32 else 1e-12
    assert np.abs(got - want).max() <= tolerance * max(1.0, np.abs(want).max())


# ----------------------------------------------------------------------------- threads


def test_a_window_begun_earlier_is_not_slept_again(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    clock = [0.0]
    samples = iter(
        [CpuSample(busy_s=0.0, own_s=0.0, wall_s=0.0), CpuSample(busy_s=0.5, own_s=0.5, wall_s=0.5)]
    )
    slept: list[float] = []
    threads = AdaptiveThreads(
        cores=[0, 1],
        limit=2,
        sample=lambda cores: next(samples),
        get_threads=lambda: 2,
        set_threads=lambda n: None,
        sleep=slept.append,
        clock=lambda: clock[0],
    )
    threads.begin()
    clock[0] = 0.5  # imports and loading ran meanwhile, all of it this process's CPU
    assert threads.start(window_s=0.2) == 2
    assert slept == [0.0]
    assert threads.reason == "2.0 of 2 cores idle"
