"""English speech from libespeak-ng, with no system install: the ``espeakng-loader`` package
(requirements/dev.txt) ships ``libespeak-ng.so`` and its ``espeak-ng-data``, and this module
drives the library through ctypes (synchronous output, a synth callback collecting the int16
samples). Used by ``subject_check.py`` as non-cat sounds.

    python benchmarks/speech.py OUT_FOLDER     # writes the clips as WAV files
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

SENTENCES = {
    "hello": "Hello, how are you today?",
    "dog": "The dog is barking at the mailman again.",
    "numbers": "One, two, three, four, five, six, seven.",
    "weather": "It will rain this afternoon, so take an umbrella.",
}
"""Short English sentences, each about 2 s when spoken."""

VOICES = (
    ("en-us", 175, 50),  # voice name, words per minute, pitch 0-100
    ("en-us+f3", 160, 70),
    ("en+m3", 200, 35),
)
"""Voices (with an espeak variant after ``+``) and speeds/pitches the clips are spoken with."""

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE, _ESPEAK_PITCH = 1, 3
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class SpeechUnavailable(RuntimeError):
    """The ``espeakng-loader`` package (libespeak-ng and its data) is not installed."""


class Espeak:
    """One libespeak-ng per process (the library keeps global state)."""

    _instance: Espeak | None = None

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise SpeechUnavailable(
                "espeakng-loader is not installed (pip install -r requirements/dev.txt)"
            ) from error
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synchronize.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate <= 0:
            raise SpeechUnavailable(f"espeak_Initialize failed ({rate}) with data at {data!r}")
        self.rate = rate
        self._lib = lib
        self._chunks: list[np.ndarray] = []

        def collect(samples, count, _events) -> int:
            if count > 0:
                self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
            return 0  # 0: go on synthesising

        self._callback = _CALLBACK(collect)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def say(self, text: str, voice: str = "en-us", wpm: int = 175, pitch: int = 50) -> np.ndarray:
        """``text`` spoken, as float32 samples in [-1, 1] at ``self.rate``."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        lib.espeak_SetParameter(_ESPEAK_RATE, wpm, 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, pitch, 0)
        self._chunks = []
        raw = text.encode() + b"\0"
        err = lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed ({err})")
        lib.espeak_Synchronize()
        if not self._chunks:
            return np.zeros(0, np.float32)
        return (np.concatenate(self._chunks).astype(np.float32) / 32768.0).astype(np.float32)


def fit(wave: np.ndarray, rate: int, seconds: float) -> np.ndarray:
    """Cut or zero-pad to ``seconds`` (speech shorter than that ends in silence)."""
    n = int(rate * seconds)
    return np.pad(wave[:n], (0, max(0, n - wave.size)))


def clips(seconds: float = 2.0) -> tuple[int, dict[str, np.ndarray]]:
    """(sample rate, {name: float32 clip}) for every sentence in every voice.

    Raises ``SpeechUnavailable`` when the ``espeakng-loader`` package is missing.
    """
    engine = Espeak.get()
    out = {}
    for key, text in SENTENCES.items():
        for voice, wpm, pitch in VOICES:
            out[f"speech {key} {voice}"] = fit(
                engine.say(text, voice, wpm, pitch), engine.rate, seconds
            )
    return engine.rate, out


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    folder = Path((argv or sys.argv[1:] or ["speech"])[0])
    folder.mkdir(parents=True, exist_ok=True)
    rate, made = clips()
    for name, wave in made.items():
        path = folder / f"{name.replace(' ', '_').replace('+', '_')}.wav"
        sf.write(path, wave, rate)
        print(f"{path}  {np.sqrt(np.mean(wave**2)):.3f} rms  {rate} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
