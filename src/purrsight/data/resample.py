"""Polyphase resampling in numpy: ``scipy.signal.resample_poly``'s result (its default
Kaiser-windowed FIR filter, zero padding) without importing ``scipy.signal``, which costs
about a second at every start of ``purrsight predict``.

Only the output samples are computed: each is the dot product of the input samples under
the filter taps of its phase (``up`` phases); the outputs of one phase are a correlation
of the input with that phase's taps (upsampling by an integer) or a strided window of it. ``tests/test_media.py`` compares it with scipy's for several rate pairs.
"""

from __future__ import annotations

import math

import numpy as np


def kaiser_lowpass(numtaps: int, cutoff: float, beta: float = 5.0) -> np.ndarray:
    """``scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta))``: a linear-phase
    low-pass filter, ``cutoff`` relative to Nyquist, scaled to unit gain at DC."""
    m = np.arange(numtaps) - 0.5 * (numtaps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(numtaps, beta)
    return h / h.sum()


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` for a 1-D signal, computed in the
    input's float dtype as scipy does (float64 for other inputs)."""
    if up < 1 or down < 1:
        raise ValueError("up and down must be >= 1")
    x = np.asarray(x)
    out_dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
    g = math.gcd(up, down)
    up, down = up // g, down // g
    if up == down == 1:
        return x.copy()
    n_in = x.shape[0]
    n_out = -(-n_in * up // down)
    max_rate = max(up, down)
    half_len = 10 * max_rate
    h = kaiser_lowpass(2 * half_len + 1, 1.0 / max_rate) * up
    n_pre_pad = down - half_len % down
    n_pre_remove = (half_len + n_pre_pad) // down
    h = np.concatenate([np.zeros(n_pre_pad), h])
    taps = -(-len(h) // up)  # taps per phase
    h = np.concatenate([h, np.zeros(taps * up - len(h))])
    # [up, taps]: phase p holds h[p], h[p + up], …, reversed to meet a window of the
    # signal in ascending order.
    phases = np.ascontiguousarray(h.reshape(taps, up).T[:, ::-1], dtype=out_dtype)
    # Output k sits at n = (k + n_pre_remove) * down in the upsampled signal; tap j of its
    # phase p = n % up meets input sample (n - p) / up - j: the window of ``taps`` samples
    # ending there starts at row (n - p) // up + 1 of the zero-padded signal. The outputs
    # of one phase are every ``up``-th, their rows every ``down``-th.
    last_row = ((n_out - 1 + n_pre_remove) * down) // up + 1
    tail = max(1, last_row + taps - (taps + n_in))
    signal = np.concatenate(
        [np.zeros(taps, out_dtype), x.astype(out_dtype), np.zeros(tail, out_dtype)]
    )
    y = np.empty(n_out, out_dtype)
    windows = np.lib.stride_tricks.sliding_window_view(signal, taps) if down > 1 else None
    for k0 in range(min(up, n_out)):
        n0 = (k0 + n_pre_remove) * down
        p, row = n0 % up, (n0 - n0 % up) // up + 1
        count = len(range(k0, n_out, up))
        if windows is None:  # down == 1: consecutive rows, a plain correlation
            y[k0::up] = np.correlate(signal[row : row + count + taps - 1], phases[p], "valid")
        else:
            y[k0::up] = windows[row : row + (count - 1) * down + 1 : down] @ phases[p]
    return y
