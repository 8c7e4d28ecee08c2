"""Media decoding: every supported format decodes; bad files give '<path>: <reason>'."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bad_data import write_video
from purrsight.data.media import (
    MediaError,
    decode_media,
    load_audio,
    load_image,
    load_video,
    resample,
)


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


# ----------------------------------------------------------------------------- video


def test_video_decodes_every_frame_and_keeps_evenly_spaced_ones(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_video(path, frames=20, size=(32, 24), fps=10)
    frames = load_video(path, num_frames=4).frames
    assert len(frames) == 4 and all(f.mode == "RGB" and f.size == (32, 24) for f in frames)
    # Frame i is grey 255 * i / 19: kept frames are spread over the clip, in order.
    greys = [int(np.asarray(f).mean()) for f in frames]
    assert greys == sorted(greys) and greys[-1] - greys[0] > 150


def test_a_one_frame_video_gives_its_frame(tmp_path: Path) -> None:
    path = tmp_path / "still.mp4"
    write_video(path, frames=1)
    assert len(load_video(path).frames) == 1


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_seconds": 1.5}, "video is 3.0 s long, over the limit of 1.5 s"),
        ({"max_pixels": 100}, "video is 32x24 pixels, over the limit of 100"),
        ({"max_bytes": 100}, "over the limit of 100"),
    ],
)
def test_video_limits(tmp_path: Path, limits: dict, reason: str) -> None:
    path = tmp_path / "long.mp4"
    write_video(path, frames=30, fps=10)
    with pytest.raises(MediaError, match=reason) as err:
        load_video(path, **limits)
    assert err.value.kind in ("too_long", "too_large")


def test_corrupt_videos_name_the_file_and_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.mp4"
    write_video(good, frames=10)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(bytes(range(256)) * 8)
    sound = tmp_path / "sound.mp4"  # a container with audio and no video stream
    import av

    with av.open(str(sound), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), "fltp", "mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    for path in (cut, noise, sound):
        with pytest.raises(MediaError) as err:
            load_video(path)
        assert str(err.value).startswith(f"{path}: ") and err.value.kind == "undecodable_media"
    assert "no video stream" in str(pytest.raises(MediaError, load_video, sound).value)


def test_decode_media_uses_each_modalitys_limit(tmp_path: Path) -> None:
    from purrsight.config import MediaConfig

    clip, tone = tmp_path / "c.mp4", tmp_path / "t.wav"
    write_video(clip, frames=30, fps=10)
    sf.write(tone, _tone(8000, 3.0), 8000)
    limits = MediaConfig(max_audio_seconds=5.0, max_video_seconds=2.0)
    assert len(decode_media("audio", tone, limits)) == 24000  # native rate kept
    with pytest.raises(MediaError, match="over the limit of 2.0 s"):
        decode_media("video", clip, limits)
    with pytest.raises(MediaError, match="over the limit of 2.0 s"):
        decode_media("audio", tone, MediaConfig(max_audio_seconds=2.0, max_video_seconds=9.0))


def test_media_error_survives_pickling() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(MediaError("a.png", "file is empty", "empty_media")))
    assert (str(err), err.kind) == ("a.png: file is empty", "empty_media")


def test_an_audio_header_claiming_an_implausible_rate_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fast.wav"
    sf.write(path, np.zeros(100, np.float32), 1_000_000)  # a rate no microphone records at
    with pytest.raises(MediaError, match=r"implausible sample rate \(1000000 Hz\)"):
        load_audio(path, None)


def test_a_script_renamed_to_mp4_is_not_followed(tmp_path: Path) -> None:
    """FFmpeg guesses the demuxer from the bytes: an ffconcat script named .mp4 would be
    followed to the file it names (measured: 3 frames decoded from inner.mp4). The demuxer
    is fixed by the extension, so the script is refused as not an MP4."""
    write_video(tmp_path / "inner.mp4", frames=3)
    script = tmp_path / "clip.mp4"
    script.write_text("ffconcat version 1.0\nfile inner.mp4\n")
    with pytest.raises(MediaError, match="not decodable video") as err:
        load_video(script)
    assert err.value.kind == "undecodable_media"


def test_only_the_four_image_decoders_are_used(tmp_path: Path) -> None:
    """A GIF (any other format alike) named .png is refused, not decoded; a JPEG named
    .png is fine (mislabelled files are common)."""
    gif, jpeg = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    Image.new("RGB", (8, 8)).save(jpeg, format="JPEG")
    with pytest.raises(MediaError, match="not a decodable image"):
        load_image(gif)
    assert load_image(jpeg).size == (8, 8)


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
    with pytest.raises(MediaError, match=r"junk\.mp4: not decodable video"):
        load_video(junk, 16000)
