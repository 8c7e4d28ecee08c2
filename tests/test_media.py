"""Media decoding: every supported format decodes; bad files give '<path>: <reason>'."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from purrsight.data.media import MediaError, load_audio, load_image, resample


def _tone(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "bmp"])
def test_images_decode_to_rgb(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"x.{ext}"
    Image.new("L", (40, 30), 128).save(path)
    img = load_image(path)
    assert img.mode == "RGB" and img.size == (40, 30)


@pytest.mark.parametrize(
    ("ext", "subtype"), [("wav", "PCM_16"), ("flac", None), ("ogg", None), ("mp3", None)]
)
def test_audio_decodes_to_mono_at_the_requested_rate(tmp_path: Path, ext: str, subtype) -> None:
    path = tmp_path / f"x.{ext}"
    stereo = np.stack([_tone(22050, 1.0), _tone(22050, 1.0)], axis=1)
    sf.write(path, stereo, 22050, subtype=subtype)
    audio = load_audio(path, sample_rate=16000)
    assert audio.ndim == 1 and audio.dtype == np.float32
    assert abs(len(audio) - 16000) < 1200  # mp3 adds encoder padding
    assert 0.2 < np.abs(audio).max() < 0.8


def test_resample_keeps_the_pitch() -> None:
    out = resample(_tone(44100, 1.0, hz=1000.0), 44100, 16000)
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16000 / len(out) - 1000.0) < 5


@pytest.mark.parametrize(
    ("writer", "reason"),
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png"), "corrupt image"),
        (lambda p: p.write_bytes(b"hello, not an image at all"), "not a decodable image"),
    ],
)
def test_bad_images_name_the_file_and_reason(tmp_path: Path, writer, reason: str) -> None:
    path = tmp_path / "cat.png"
    writer(path)
    with pytest.raises(MediaError) as err:
        load_image(path)
    assert str(err.value).startswith(str(path)) and reason in str(err.value)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(MediaError, match=r"cut\.jpg: "):
        load_image(path)


def test_image_pixel_cap_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(path)
    with pytest.raises(MediaError, match="300x300 pixels, over the limit of 10000"):
        load_image(path, max_pixels=10_000)


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "cat.gif"
    path.write_bytes(b"GIF89a")
    with pytest.raises(MediaError, match="not a supported image type"):
        load_image(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "file is empty"), (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "not decodable audio")],
)
def test_bad_audio_names_the_file_and_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "meow.wav"
    path.write_bytes(content)
    with pytest.raises(MediaError) as err:
        load_audio(path, 16000)
    assert str(err.value).startswith(str(path)) and reason in str(err.value)


@pytest.mark.parametrize("ext", ["wav", "ogg"])
def test_audio_duration_cap(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"long.{ext}"
    sf.write(path, _tone(8000, 3.0), 8000)
    with pytest.raises(MediaError, match="over the limit of 2.0 s|longer than the limit of 2.0 s"):
        load_audio(path, 8000, max_seconds=2.0)


def test_file_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    sf.write(path, _tone(8000, 1.0), 8000)
    with pytest.raises(MediaError, match="over the limit of 100"):
        load_audio(path, 8000, max_bytes=100)


# ----------------------------------------------------------------------------- bytes, video


def test_bytes_decode_like_files_and_errors_use_the_given_name(tmp_path: Path) -> None:
    from purrsight.data.media import MediaTooLarge

    path = tmp_path / "x.png"
    Image.new("RGB", (20, 10), (200, 0, 0)).save(path)
    assert load_image(path.read_bytes()).tobytes() == load_image(path).tobytes()
    with pytest.raises(MediaError, match=r"^upload\.png: not a decodable image"):
        load_image(b"definitely not a picture", name="upload.png")
    with pytest.raises(MediaTooLarge, match="over the limit of 10"):
        load_image(path.read_bytes(), max_bytes=10)
    wav = tmp_path / "x.wav"
    sf.write(wav, _tone(16000, 0.5), 16000)
    np.testing.assert_array_equal(load_audio(wav.read_bytes(), 16000), load_audio(wav, 16000))


def test_video_gives_frames_and_its_sound_track(tmp_path: Path) -> None:
    from purrsight.data.media import load_video
    from video_fixture import write_test_video

    path = write_test_video(tmp_path / "clip.mp4", seconds=3.0, tone_hz=440.0)
    clip = load_video(path.read_bytes(), sample_rate=16000, num_frames=5)
    assert len(clip.frames) == 5 and clip.frames[0].size == (64, 64)
    assert clip.seconds == pytest.approx(3.0, abs=0.2)
    assert clip.audio is not None and abs(len(clip.audio) / 16000 - 3.0) < 0.2
    spectrum = np.abs(np.fft.rfft(clip.audio))
    assert abs(np.argmax(spectrum) * 16000 / len(clip.audio) - 440.0) < 5
    # The square moves: the first and last sampled frames differ.
    assert np.abs(np.asarray(clip.frames[0], float) - np.asarray(clip.frames[-1], float)).max() > 50


def test_video_limits_and_bad_videos(tmp_path: Path) -> None:
    from purrsight.data.media import MediaTooLarge, load_video
    from video_fixture import write_test_video

    silent = write_test_video(tmp_path / "silent.mp4", seconds=1.0, with_audio=False)
    assert load_video(silent, 16000).audio is None
    with pytest.raises(MediaTooLarge, match="over the limit of 0.5 s"):
        load_video(silent, 16000, max_seconds=0.5)
    with pytest.raises(MediaTooLarge, match="64x64 pixels, over the limit of 100"):
        load_video(silent, 16000, max_pixels=100)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 10)
    with pytest.raises(MediaError, match=r"junk\.mp4: not a decodable video"):
        load_video(junk, 16000)
