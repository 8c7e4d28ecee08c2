"""Phase 2 model: projectors, soft-token splicing, LoRA, checkpoints, generation, training.

Tiny config-built LLMs (random weights): a 2-layer Qwen2 with the real Qwen2.5 tokenizer
(vocab 151665) and a 2-layer Llama with tied embeddings and a byte tokenizer carrying
SmolLM2's template. One ``integration`` test loads the embedded SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from purrsight.data.instruction import (
    IGNORE_INDEX,
    collate,
    encode_example,
    encode_prompt,
    make_item,
)
from purrsight.models.llm import load_llm
from purrsight.models.mm_llm import MultimodalLLM, build_multimodal_llm, is_right_padded
from purrsight.models.projector import ModalityProjector, Projectors
from qwen_fixture import byte_tokenizer, qwen_tokenizer, tiny_llama, tiny_qwen

E, K = 8, 3  # aligned feature size, soft tokens per modality
MODS = ("image", "audio")
RESPONSE = '{"emotion": "fearful", "confidence": 0.8, "summary": "Scared."}'


@pytest.fixture(scope="module")
def qwen_pair():
    """(tokenizer, tiny Qwen2): built once; tests take deep copies of the model."""
    tok = qwen_tokenizer()
    return tok, tiny_qwen(len(tok))


@pytest.fixture(scope="module")
def llama_pair():
    tok = byte_tokenizer()
    return tok, tiny_llama(len(tok))


@pytest.fixture(scope="module", params=["qwen", "llama"])
def pair(request: pytest.FixtureRequest, qwen_pair, llama_pair):
    return qwen_pair if request.param == "qwen" else llama_pair


def _model(pair, seed: int = 0, **kwargs) -> MultimodalLLM:
    tok, base = pair
    torch.manual_seed(seed)
    # No text projector: these batches have no text modality, and an unused head would
    # (rightly) get no gradient.
    kwargs = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "modalities": MODS, **kwargs}
    return build_multimodal_llm(copy.deepcopy(base), tok, in_dim=E, num_tokens=K, **kwargs)


def _batch(tok, padding_side: str = "right", prompts_only: bool = False):
    """Two samples: image+audio and audio only, with fixed random features."""
    gen = torch.Generator().manual_seed(1)
    specs = [
        (["image", "audio"], "How does this cat feel?", RESPONSE),
        (["audio"], "And now?", '{"emotion": "content"}'),
    ]
    items = []
    for modalities, instruction, response in specs:
        if prompts_only:
            ex = encode_prompt(tok, modalities, instruction, K)
        else:
            ex = encode_example(tok, modalities, instruction, response, K, 512)
        feats = {m: torch.randn(E, generator=gen) for m in modalities}
        items.append(make_item(ex, feats))
    return collate(items, pad_token_id=tok.pad_token_id, padding_side=padding_side)


def _capture_inputs_embeds(model: MultimodalLLM) -> tuple[dict, object]:
    """Record the kwargs the decoder stack is called with (inputs_embeds etc.)."""
    seen: dict = {}

    def hook(_module, _args, kwargs):
        seen.update(kwargs)

    # The decoder stack: forward with labels runs it without the LM head (lean loss).
    base = model.llm.get_base_model()
    decoder = getattr(base, base.base_model_prefix)
    handle = decoder.register_forward_pre_hook(hook, with_kwargs=True)
    return seen, handle


# ----------------------------------------------------------------------------- projector


def test_projector_shapes_and_checks() -> None:
    proj = ModalityProjector(in_dim=E, llm_dim=16, num_tokens=K, hidden_dim=12)
    assert proj(torch.randn(5, E)).shape == (5, K, 16)
    with pytest.raises(ValueError, match=r"\[b, 8\]"):
        proj(torch.randn(5, E + 1))
    heads = Projectors(("image", "audio"), in_dim=E, llm_dim=16, num_tokens=K)
    assert heads.modalities == ["image", "audio"]
    out = heads.project({"audio": torch.randn(2, E)})
    assert out["audio"].shape == (2, K, 16)
    with pytest.raises(KeyError, match="text"):
        heads.project({"text": torch.randn(2, E)})
    with pytest.raises(ValueError, match="subset"):
        Projectors(("smell",), in_dim=E, llm_dim=16)


# ----------------------------------------------------------------------------- splicing


def test_soft_tokens_sit_exactly_at_the_slots(pair) -> None:
    tok, _ = pair
    model = _model(pair).eval()
    batch = _batch(tok)
    seen, handle = _capture_inputs_embeds(model)
    with torch.no_grad():
        model(**batch.model_inputs())
    handle.remove()
    embeds = seen["inputs_embeds"]  # [b, s, d]
    assert "input_ids" not in seen or seen["input_ids"] is None
    expected = model.llm.get_input_embeddings()(batch.input_ids).detach().clone()
    for modality, positions in batch.placeholder_positions.items():
        soft = model.projectors[modality](batch.features[modality]).detach()  # [b, k, d]
        for row in range(batch.input_ids.shape[0]):
            if batch.present[modality][row]:
                expected[row, positions[row]] = soft[row]
    # allclose, not equal: the model projects only the present rows, and a matmul over
    # fewer rows may round differently in the last bit.
    assert torch.allclose(embeds, expected, rtol=0, atol=1e-6)
    # Sanity: the spliced rows really differ from the slot token's embedding.
    img = batch.placeholder_positions["image"][0]
    slot_row = model.llm.get_input_embeddings()(batch.input_ids[0, img])
    assert not torch.allclose(embeds[0, img], slot_row)


def test_zero_lora_b_gives_the_base_models_logits(pair) -> None:
    tok, base = pair
    model = _model(pair).eval()
    reference = copy.deepcopy(base).eval()
    batch = _batch(tok)
    seen, handle = _capture_inputs_embeds(model)
    with torch.no_grad():
        logits = model(**{**batch.model_inputs(), "labels": None}).logits
        handle.remove()
        expected = reference(
            inputs_embeds=seen["inputs_embeds"],
            attention_mask=batch.attention_mask,
            position_ids=seen["position_ids"],
        ).logits
    assert torch.allclose(logits, expected, atol=1e-6)


def test_loss_counts_only_labelled_tokens(qwen_pair) -> None:
    tok, _ = qwen_pair
    model = _model(qwen_pair).eval()
    batch = _batch(tok)
    with torch.no_grad():
        out = model(**batch.model_inputs())
        logits = model(**{**batch.model_inputs(), "labels": None}).logits
    assert out.logits is None  # the lean loss never builds [b, s, v] logits
    shifted_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
    shifted_labels = batch.labels[:, 1:].reshape(-1)
    expected = torch.nn.functional.cross_entropy(
        shifted_logits, shifted_labels, ignore_index=IGNORE_INDEX
    )
    assert torch.allclose(out.loss, expected, atol=1e-5)


def test_right_padding_runs_maskless_with_the_masked_result(pair) -> None:
    """A right-padded batch goes to the decoder without a mask (causality hides the
    padding); a left-padded one keeps its mask. Same loss and gradients either way."""
    tok, _ = pair
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[1, 0, 1]]))
    results = []
    for side in ("right", "left"):
        model = _model(pair).train()
        with torch.no_grad():  # non-zero B: every adapter gets a gradient
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.1)
        seen, handle = _capture_inputs_embeds(model)
        loss = model(**_batch(tok, padding_side=side).model_inputs()).loss
        handle.remove()
        assert (seen["attention_mask"] is None) == (side == "right")
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (right_loss, right_grads), (left_loss, left_grads) = results
    assert torch.allclose(right_loss, left_loss, atol=1e-5)
    for name, grad in right_grads.items():
        assert torch.allclose(grad, left_grads[name], atol=1e-5), name


# ----------------------------------------------------------------------------- training


def _frozen_and_trainable(model: MultimodalLLM):
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return frozen, trainable


def test_training_lowers_loss_and_leaves_the_base_frozen(qwen_pair) -> None:
    tok, _ = qwen_pair
    model = _model(qwen_pair).train()
    batch = _batch(tok)
    frozen_before, trainable_before = _frozen_and_trainable(model)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=3e-2, weight_decay=0.01)
    losses = []
    for _ in range(10):
        loss = model(**batch.model_inputs()).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    for name, param in model.named_parameters():
        if name in frozen_before:
            assert torch.equal(param, frozen_before[name]), f"frozen {name} changed"
        else:
            assert not torch.equal(param, trainable_before[name]), f"{name} did not train"
    kinds = {"lora_A", "lora_B", "projectors"}
    assert all(any(kind in n for n in trainable_before) for kind in kinds)


def test_only_projectors_and_lora_train(qwen_pair) -> None:
    model = _model(qwen_pair)
    state = model.trainable_state_dict()
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(k.startswith("projectors.") or ".lora_" in k for k in state)
    assert not any(k.endswith("embed_tokens.weight") or "lm_head" in k for k in state)
    total = sum(p.numel() for p in model.parameters())
    assert sum(v.numel() for v in state.values()) < 0.01 * total
    assert model.llm.get_input_embeddings().weight.requires_grad is False


def test_bad_lora_targets_and_sizes_are_refused(qwen_pair) -> None:
    with pytest.raises(ValueError, match="lora_target_modules"):
        _model(qwen_pair, lora_target_modules=["no_such_proj"])
    tok, base = qwen_pair
    with pytest.raises(ValueError, match="hidden size is 32"):
        MultimodalLLM(copy.deepcopy(base), Projectors(MODS, E, llm_dim=64, num_tokens=K), tok)


def test_trainable_state_round_trip_is_strict(pair, tmp_path) -> None:
    tok, _ = pair
    trained = _model(pair, seed=0)
    with torch.no_grad():  # give LoRA B a non-zero value so the adapter matters
        for name, param in trained.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    path = tmp_path / "trainable.pt"
    torch.save(trained.trainable_state_dict(), path)
    fresh = _model(pair, seed=1)
    fresh.load_trainable_state_dict(torch.load(path, weights_only=True))
    batch = _batch(tok)
    with torch.no_grad():
        inputs = {**batch.model_inputs(), "labels": None}
        a = trained.eval()(**inputs).logits
        b = fresh.eval()(**inputs).logits
    assert torch.equal(a, b)
    state = trained.trainable_state_dict()
    extra = {**state, "llm.base_model.model.lm_head.weight": torch.zeros(1)}
    with pytest.raises(KeyError, match="1 unexpected"):
        fresh.load_trainable_state_dict(extra)
    missing = dict(list(state.items())[1:])
    with pytest.raises(KeyError, match="1 missing"):
        fresh.load_trainable_state_dict(missing)
    key = next(iter(state))
    with pytest.raises(ValueError, match="shape"):
        fresh.load_trainable_state_dict({**state, key: torch.zeros(1, 1)})


def test_gradient_checkpointing_keeps_lora_and_projector_grads(qwen_pair) -> None:
    tok, _ = qwen_pair
    batch = _batch(tok)
    plain = _model(qwen_pair).train()
    ckpt = _model(qwen_pair, gradient_checkpointing=True).train()
    assert ckpt.llm.get_base_model().is_activation_checkpointing
    loss_plain = plain(**batch.model_inputs()).loss
    loss_ckpt = ckpt(**batch.model_inputs()).loss
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-6)
    loss_ckpt.backward()
    loss_plain.backward()
    grads = {n: p.grad for n, p in ckpt.named_parameters() if p.requires_grad}
    for name, grad in grads.items():
        if "lora_B" in name or name.startswith("projectors."):
            # lora_A's grad is zero at init (B == 0), B's and the projectors' are not.
            assert grad is not None and grad.abs().sum() > 0, name
    reference = dict(plain.named_parameters())
    for name, grad in grads.items():
        assert torch.allclose(grad, reference[name].grad, atol=1e-6), name
    # With no soft tokens nothing entering the checkpointed layers requires grad: the case
    # where reentrant checkpointing silently drops every LoRA gradient.
    ckpt.zero_grad()
    inputs = {**batch.model_inputs(), "features": {}, "present": {}, "placeholder_positions": {}}
    ckpt(**inputs).loss.backward()
    for name, param in ckpt.named_parameters():
        if "lora_B" in name:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


# ----------------------------------------------------------------------------- generation


def test_batched_left_padded_generation_equals_one_by_one(pair) -> None:
    tok, _ = pair
    model = _model(pair).eval()
    batch = _batch(tok, padding_side="left", prompts_only=True)
    together = model.generate_ids(max_new_tokens=6, stop_ids={-1}, **batch.model_inputs())
    assert together.shape == (2, 6)
    for row in range(2):
        n = int(batch.attention_mask[row].sum())
        single = {
            "input_ids": batch.input_ids[row : row + 1, -n:],
            "attention_mask": batch.attention_mask[row : row + 1, -n:],
            "features": {m: f[row : row + 1] for m, f in batch.features.items()},
            "present": {m: p[row : row + 1] for m, p in batch.present.items()},
            "placeholder_positions": {
                m: (pos[row : row + 1] - (batch.input_ids.shape[1] - n)).clamp(min=0)
                for m, pos in batch.placeholder_positions.items()
            },
        }
        alone = model.generate_ids(max_new_tokens=6, stop_ids={-1}, **single)
        assert torch.equal(alone[0], together[row])


def test_cached_generation_equals_full_recomputation(qwen_pair) -> None:
    tok, _ = qwen_pair
    model = _model(qwen_pair).eval()
    batch = _batch(tok, padding_side="left", prompts_only=True)
    cached = model.generate_ids(max_new_tokens=5, stop_ids={-1}, **batch.model_inputs())
    # Greedy by hand: re-run the whole (growing) sequence at every step, no cache.
    ids, mask = batch.input_ids, batch.attention_mask
    inputs = batch.model_inputs()
    for step in range(5):
        inputs.update(input_ids=ids, attention_mask=mask, labels=None)
        with torch.no_grad():
            token = model(**inputs).logits[:, -1].argmax(-1)
        assert torch.equal(token, cached[:, step]), step
        ids = torch.cat([ids, token[:, None]], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)


def test_generation_stops_at_the_end_token(qwen_pair) -> None:
    tok, _ = qwen_pair
    model = _model(qwen_pair).eval()
    batch = _batch(tok, padding_side="left", prompts_only=True)
    first = model.generate_ids(max_new_tokens=1, stop_ids={-1}, **batch.model_inputs())[:, 0]
    # Make row 0's first token a stop token: row 0 ends at once, row 1 keeps going.
    ids = model.generate_ids(max_new_tokens=4, stop_ids={int(first[0]), -1}, **batch.model_inputs())
    assert (ids[0] == first[0]).all()  # padded with the stop token after it
    texts = model.generate(max_new_tokens=4, **batch.model_inputs())
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate_ids(**_batch(tok, padding_side="right", prompts_only=True).model_inputs())


# ----------------------------------------------------------------------------- loading


def test_missing_llm_folder_says_how_to_get_it(tmp_path) -> None:
    folder = tmp_path / "models" / "Qwen2.5-0.5B-Instruct"
    with pytest.raises(FileNotFoundError) as err:
        load_llm(str(folder))
    message = str(err.value)
    assert "\n" not in message
    assert "huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct" in message
    assert str(folder) in message and "config/demo.yaml" in message
    with pytest.raises(ValueError, match="unknown embedded model"):
        load_llm("embedded:gpt-17")


def test_local_folder_loads_with_its_chat_template(qwen_pair, tmp_path) -> None:
    tok, base = qwen_pair
    base.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, loaded_tok = load_llm(str(tmp_path))
    assert type(model).__name__ == "Qwen2ForCausalLM" and not model.training
    assert loaded_tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    ).endswith("<|im_start|>assistant\n")
    assert torch.equal(model.lm_head.weight, base.lm_head.weight)


@pytest.mark.integration
def test_embedded_smollm2_loads_renders_and_generates() -> None:
    llm, tok = load_llm("embedded:smollm2-135m-instruct")
    assert type(llm).__name__ == "LlamaForCausalLM" and llm.config.hidden_size == 576
    prompt = encode_prompt(tok, ["image", "audio"], "How does this cat feel?", num_tokens=4)
    text = tok.decode(prompt.input_ids)
    # An empty system turn: SmolLM2's template inserts its default one only without it.
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nImage: ")
    assert text.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>"
    # The cached copy is a plain dense folder (no GGUF quantizer left in its config).
    from purrsight.models.llm import embedded_llm_folder

    config = json.loads((embedded_llm_folder("smollm2-135m-instruct") / "config.json").read_text())
    assert "quantization_config" not in config
    model = build_multimodal_llm(llm, tok, in_dim=E, num_tokens=4, lora_r=4)
    feats = {"image": torch.randn(E), "audio": torch.randn(E)}
    batch = collate([make_item(prompt, feats)], tok.pad_token_id, padding_side="left")
    ids = model.generate_ids(max_new_tokens=5, **batch.model_inputs())
    assert 1 <= ids.shape[1] <= 5
    texts = model.generate(max_new_tokens=5, **batch.model_inputs())
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_checkpointing_replays_the_shared_lora_dropout_masks(qwen_pair) -> None:
    """Dropout on (q/k/v adapters share one mask per layer): the recomputation under
    gradient checkpointing must draw exactly the masks of the forward, or every LoRA
    gradient is computed against a different network."""
    tok, _ = qwen_pair
    batch = _batch(tok)
    plain = _model(qwen_pair, lora_dropout=0.5).train()
    ckpt = _model(qwen_pair, lora_dropout=0.5, gradient_checkpointing=True).train()
    with torch.no_grad():  # B == 0 at init would hide the masks from the loss
        for model in (plain, ckpt):
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.linspace(-0.5, 0.5, param.numel()).view_as(param))
    losses = []
    for model in (plain, ckpt):
        torch.manual_seed(7)
        loss = model(**batch.model_inputs()).loss
        loss.backward()
        losses.append(loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    torch.manual_seed(8)
    with torch.no_grad():
        assert not torch.allclose(plain(**batch.model_inputs()).loss, losses[0], atol=1e-4)
    reference = dict(plain.named_parameters())
    for name, param in ckpt.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param.grad, reference[name].grad, atol=1e-5), name
