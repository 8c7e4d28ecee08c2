"""The subject check's speech clips: libespeak-ng from the espeakng-loader package, through
ctypes (benchmarks/speech.py), and the check's note when that package is missing."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import speech  # noqa: E402
import subject_check  # noqa: E402

needs_espeak = pytest.mark.skipif(
    importlib.util.find_spec("espeakng_loader") is None,
    reason="espeakng-loader (requirements/dev.txt) is not installed: no libespeak-ng to speak with",
)


@needs_espeak
def test_speaks_a_sentence_in_each_voice():
    engine = speech.Espeak.get()
    assert engine.rate == 22050
    lengths = []
    for voice, wpm, pitch in speech.VOICES:
        wave = engine.say("Hello, how are you today?", voice, wpm, pitch)
        assert wave.dtype == np.float32
        assert 0.8 < wave.size / engine.rate < 3.0  # about a second and a half of speech
        assert float(np.sqrt(np.mean(wave**2))) > 0.02 and float(np.abs(wave).max()) <= 1.0
        lengths.append(wave.size)
    assert len(set(lengths)) > 1  # the voices and speeds differ


@needs_espeak
def test_unknown_voice_is_refused():
    with pytest.raises(ValueError, match="no voice"):
        speech.Espeak.get().say("hello", voice="no-such-voice")


def test_fit_cuts_or_pads_to_the_length():
    assert speech.fit(np.ones(10, np.float32), 4, 2.0).tolist() == [1.0] * 8
    assert speech.fit(np.ones(3, np.float32), 4, 1.0).tolist() == [1.0, 1.0, 1.0, 0.0]


def test_missing_package_is_said_not_skipped(monkeypatch, tmp_path):
    def unavailable(seconds):
        raise speech.SpeechUnavailable("espeakng-loader is not installed")

    monkeypatch.setattr(speech, "clips", unavailable)
    monkeypatch.setattr(subject_check, "NOTES", [])
    assert subject_check.speech_clips(tmp_path) == []
    assert subject_check.NOTES == ["NO SPEECH SAMPLES: espeakng-loader is not installed"]
