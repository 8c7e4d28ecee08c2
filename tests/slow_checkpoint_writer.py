"""Runs the ``purrsight`` CLI with checkpoint writes slowed down, for the kill -9 test.

    python tests/slow_checkpoint_writer.py N train phase2 --config x.yaml

The N-th write of ``last.ckpt`` puts half of its bytes into the temp file, prints
``HALF-WRITTEN`` and sleeps: the test SIGKILLs the process there, in the middle of a real
checkpoint write. Every other write is the real ``torch.save``.
"""

import io
import sys
import time

import torch

from purrsight.cli import main

_real_save = torch.save
_writes = {"last": 0}


def _slow_save(obj, f, *args, **kwargs):
    if ".last.ckpt." in str(getattr(f, "name", "")):
        _writes["last"] += 1
        if _writes["last"] == int(sys.argv[1]):
            buffer = io.BytesIO()
            _real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            print("HALF-WRITTEN", flush=True)
            time.sleep(600)
    return _real_save(obj, f, *args, **kwargs)


torch.save = _slow_save

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
