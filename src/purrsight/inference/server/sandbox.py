"""Decode uploads first in a separate process, with a time limit and a memory cap.

A thread cannot be stopped inside a C decoder, so before the predictor (in the server
process) decodes an upload, a child process decodes the same bytes with the same limits
(:mod:`purrsight.data.media`) under ``RLIMIT_AS``. If it takes longer than ``seconds`` the
child is killed and a new one started; the request gets a :class:`MediaError` (422). A
decoder that crashes or runs out of memory takes down only the child. Only files that
decoded cleanly there reach the predictor.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
from typing import Any

from purrsight.data.media import MediaError, MediaTooLarge
from purrsight.vocabulary import MEDIA_FIELDS

MB = 1024 * 1024
STARTUP_SECONDS = 120.0


def _child(conn, memory_bytes: int) -> None:
    """The decoding loop of the child: (modality, bytes, limits) in, ("ok"|error) out."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    from PIL import Image

    from purrsight.data.media import load_audio, load_image, load_video

    conn.send(("ready",))
    while True:
        try:
            modality, data, limits = conn.recv()
        except EOFError:
            return
        try:
            Image.MAX_IMAGE_PIXELS = limits["pixels"]
            if modality == "image":
                load_image(data, limits["pixels"], limits["bytes"], name="image upload")
            elif modality == "audio":
                load_audio(
                    data, None, limits["audio_seconds"], limits["bytes"], name="audio upload"
                )
            else:
                load_video(
                    data,
                    None,  # frames only: the predictor decodes the sound track itself
                    num_frames=1,
                    max_seconds=limits["video_seconds"],
                    max_bytes=limits["bytes"],
                    max_pixels=limits["pixels"],
                    name="video upload",
                )
            conn.send(("ok",))
        except MediaError as err:
            conn.send(("error", isinstance(err, MediaTooLarge), err.path, err.reason, err.kind))
        except MemoryError:
            conn.send(
                ("error", True, f"{modality} upload", "decoding needs too much memory", "too_large")
            )
        except Exception as err:  # noqa: BLE001 - reported to the parent, never a crash here
            conn.send(
                (
                    "error",
                    False,
                    f"{modality} upload",
                    f"not decodable ({err})",
                    "undecodable_media",
                )
            )


class DecodeSandbox:
    """One child process that decodes uploads; :meth:`check` raises like the decoders."""

    def __init__(self, limits: dict[str, Any], seconds: float, memory_mb: int) -> None:
        self.limits = limits
        self.seconds = seconds
        self.memory_bytes = memory_mb * MB
        self.restarts = 0
        self._ctx = mp.get_context("spawn")  # never fork a process holding torch threads
        self._start()

    def _start(self) -> None:
        self._conn, child_conn = self._ctx.Pipe()
        self._process = self._ctx.Process(
            target=_child,
            args=(child_conn, self.memory_bytes),
            daemon=True,
            name="purrsight-decode",
        )
        self._process.start()
        child_conn.close()
        # Imports take a second or more on a busy machine: not part of any request's limit.
        if not self._conn.poll(STARTUP_SECONDS) or self._conn.recv() != ("ready",):
            self._process.kill()
            raise RuntimeError(f"the decoding process did not start in {STARTUP_SECONDS} s")

    def _restart(self) -> None:
        self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()
        self.restarts += 1
        self._start()

    def check(self, request: dict[str, Any]) -> None:
        """Decode each of the request's ``image`` / ``audio`` / ``video`` bytes in the child;
        raises :class:`MediaError` (:class:`MediaTooLarge` for a limit)."""
        for modality in MEDIA_FIELDS:
            data = request.get(modality)
            if data is None:
                continue
            if not self._process.is_alive():
                self._restart()
            try:
                self._conn.send((modality, data, self.limits))
                ready = self._conn.poll(self.seconds)
                answer = self._conn.recv() if ready else None
            except (EOFError, OSError, BrokenPipeError):
                self._restart()
                raise MediaError(f"{modality} upload", "the decoder crashed on this file") from None
            if answer is None:
                self._restart()
                raise MediaError(
                    f"{modality} upload",
                    f"decoding took longer than the limit of {self.seconds} s",
                    "undecodable_media",
                )
            if answer[0] == "error":
                _, too_large, path, reason, kind = answer
                raise (MediaTooLarge if too_large else MediaError)(path, reason, kind)

    def close(self) -> None:
        self._process.kill()
        self._process.join(timeout=5)
        self._conn.close()
