"""Log-mel front end of the aiSFX audio encoder, re-implemented in numpy + torch.

aiSFX (Ma et al., ISMIR 2022; model CC BY 4.0) computes its input with librosa 0.9.2 or
Essentia. librosa is not in our stack (it pins an old numpy), so this module reproduces
the librosa path with the settings aiSFX uses:

* 44.1 kHz mono, peak-normalised to max |y| = 1;
* STFT n_fft = win = 2048, hop 1024, periodic Hann window, centred frames with zero
  padding (librosa 0.9.2 ``pad_mode="constant"``), power 2;
* 96 triangular mel filters on the HTK mel scale, 0 Hz to 22050 Hz, each normalised to
  unit L1 norm (librosa ``htk=True, norm=1.0``; Essentia ``unit_sum``);
* ``log10(mel * 10000 + 1)``, then min-max scaling with aiSFX's "original" bounds
  (0, 9.4578), laid out as ``(time, 96)`` as the CNN expects;
* 100-frame blocks (about 2.3 s) with a hop of 50 frames; the last partial block is
  dropped as aiSFX does, and a clip shorter than one block is zero-padded (zero is the
  value silence has after the log and the scaling).
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 44100
N_FFT = 2048
HOP_LENGTH = 1024
N_MELS = 96
F_MIN = 0.0
F_MAX = 22050.0
# aiSFX "original" normalisation: min/max over all its training spectrograms.
NORM_MIN = 0.0
NORM_MAX = 9.457798957824707
BLOCK_FRAMES = 100
BLOCK_HOP = 50


def hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_htk`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def htk_mel_filterbank(
    sr: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = F_MIN,
    fmax: float = F_MAX,
) -> np.ndarray:
    """Triangular mel filters, as librosa 0.9.2 ``filters.mel(htk=True, norm=1.0)`` builds them.

    Returns:
        float32 array ``[n_mels, n_fft // 2 + 1]``; row ``i`` weights the power spectrum bins
        of band ``i`` and sums to 1 (a filter that covers no bin stays all zero, as in
        librosa, rather than dividing by zero).
    """
    fft_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    # n_mels + 2 edges equally spaced in mel: band i rises from edge i to i + 1, falls to i + 2.
    edges_hz = mel_to_hz_htk(np.linspace(hz_to_mel_htk(fmin), hz_to_mel_htk(fmax), n_mels + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs[None, :]  # [n_mels + 2, n_bins]
    weights = np.zeros((n_mels, fft_freqs.size), dtype=np.float64)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    sums = weights.sum(axis=1, keepdims=True)
    # librosa's normalize() leaves rows whose norm is ~0 untouched instead of dividing by 0.
    weights = np.divide(weights, sums, out=weights, where=sums > np.finfo(np.float32).tiny)
    return weights.astype(np.float32)


class AisfxFrontEnd:
    """Waveform → normalised log-mel blocks for the aiSFX CNN (CPU, no gradients).

    Holds the window and the filterbank so they are built once per encoder.
    """

    def __init__(self) -> None:
        self.window = torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)
        self.mel_basis = torch.from_numpy(htk_mel_filterbank())  # [96, 1025]

    def log_mel(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One mono clip ``[n_samples]`` at 44.1 kHz → normalised log-mel ``[time, 96]``.

        ``time = 1 + n_samples // 1024`` (centred frames).
        """
        y = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if y.ndim != 1:
            raise ValueError(f"aisfx expects mono audio as a 1-D array, got shape {tuple(y.shape)}")
        if y.numel() == 0:
            raise ValueError("aisfx got an empty audio clip")
        if not torch.isfinite(y).all():
            raise ValueError("aisfx got audio with NaN or infinite samples")
        peak = y.abs().max()
        # aiSFX normalises every clip to peak 1 (silence stays silence).
        y = y / peak if peak > 0 else y
        spec = torch.stft(
            y,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=N_FFT,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # [1025, time]
        power = spec.real.square() + spec.imag.square()
        mel = self.mel_basis @ power  # [96, time]
        log_mel = torch.log10(mel * 10000.0 + 1.0)
        return ((log_mel - NORM_MIN) / (NORM_MAX - NORM_MIN)).T.contiguous()

    def __call__(self, clips: list) -> dict[str, torch.Tensor]:
        """Clips → all their blocks stacked, and how many blocks each clip has.

        Returns:
            ``{"blocks": [n_blocks, 100, 96] float32, "blocks_per_clip": [b] int64}``.
        """
        blocks = [frames_to_blocks(self.log_mel(clip)) for clip in clips]
        if not blocks:
            return {
                "blocks": torch.zeros(0, BLOCK_FRAMES, N_MELS),
                "blocks_per_clip": torch.zeros(0, dtype=torch.long),
            }
        return {
            "blocks": torch.cat(blocks),
            "blocks_per_clip": torch.tensor([len(b) for b in blocks], dtype=torch.long),
        }


def frames_to_blocks(
    spec: torch.Tensor, block: int = BLOCK_FRAMES, hop: int = BLOCK_HOP
) -> torch.Tensor:
    """Cut a spectrogram ``[time, n_mels]`` into ``[n_blocks, block, n_mels]``.

    As aiSFX's ``blocking(drop_partial_block=True)``: ``n_blocks = (time - block) // hop + 1``
    full blocks (the tail after the last full block is dropped), and at least one block: a
    spectrogram shorter than ``block`` frames is zero-padded at the end.
    """
    time, n_mels = spec.shape
    if time < block:
        padded = spec.new_zeros(block, n_mels)
        padded[:time] = spec
        return padded.unsqueeze(0)
    return spec.unfold(0, block, hop).transpose(1, 2).contiguous()
