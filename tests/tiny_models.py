"""Tiny random Hugging Face models saved as local folders, for fast tests.

Each builder writes a complete folder (config, weights, processor / tokenizer files) that
``build_encoder(modality, EncoderConfig(type="hf", path=...))`` loads like a real model.
Weights are random but seeded, so the same seed gives the same files (and identity).
"""

from __future__ import annotations

from pathlib import Path

import torch

# A word-level vocabulary large enough for the sentences tests use; anything else is [UNK].
# fmt: off
_WORDS = [
    "a", "an", "the", "cat", "cats", "kitten", "purr", "purrs", "purring", "hiss", "hisses",
    "hissing", "meow", "meows", "happy", "angry", "calm", "scared", "content", "contented",
    "playful", "is", "are", "and", "of", "to", "in", "on", "with", "at", "it", "this", "that",
    "sound", "picture", "photo", "image", "stock", "market", "fell", "rose", "dog", "loud",
    "soft", "quiet", "very", "not", ".", ",", "!", "?",
]
# fmt: on
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_WORDS]


def make_tiny_vit(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer ViT (hidden 32, 32×32 input, 8×8 patches) + its image processor."""
    from transformers import ViTConfig, ViTModel

    try:  # the PIL processor: torchvision is not in our stack (the default one warns)
        from transformers import ViTImageProcessorPil as ViTImageProcessor
    except ImportError:
        from transformers import ViTImageProcessor

    folder = Path(folder)
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    ViTModel(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_tiny_bert(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer BERT (hidden 32, 128 positions so the default max_length fits) + a
    word-level WordPiece vocab."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    # from_pretrained on the folder, not BertTokenizerFast(vocab_file=...): transformers 5
    # silently ignores ``vocab_file`` and builds an empty vocabulary (every word -> [UNK]).
    tokenizer = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    if len(tokenizer) != len(VOCAB):
        raise RuntimeError(f"tiny BERT vocab not loaded: {len(tokenizer)} != {len(VOCAB)} tokens")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def make_tiny_wav2vec2(folder: str | Path, seed: int = 0) -> Path:
    """A 2-layer Wav2Vec2 (hidden 32, 16 kHz, 2 conv layers: 80× downsampling) + extractor.

    Layer-norm feature extractor and ``return_attention_mask=True``, like the "large"
    checkpoints that take a padding mask.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(10, 8),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        vocab_size=8,
    )
    Wav2Vec2Model(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    ).save_pretrained(folder)
    return folder
