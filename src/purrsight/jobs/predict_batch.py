"""``purrsight predict --inputs DIR_OR_JSONL --out results.jsonl``: many inputs, one command.

    purrsight predict --model outputs/demo/bundle --inputs photos/ --out results.jsonl --mode labels
    purrsight predict --model B --inputs photos/ --out results.jsonl --mode labels --resume

The inputs (:mod:`purrsight.data.batch_inputs`: a folder paired by stem, or a JSONL
manifest) are predicted in order, a batch at a time, and each gets one JSON line in
``--out``, written and flushed as soon as its batch is done, so a run that is killed keeps
every line it finished; ``--resume`` reads them back (a half-written last line is cut
off), skips those inputs and appends the rest: no input twice, none missing. A line is

    {"id": "cats/tom", "files": {"image": "cats/tom.jpg", "audio": "cats/tom.wav"},
     "mode": "labels", "status": "labels", "report": {...}, "probabilities": {...}}

or, for an input that cannot be used (corrupt, empty, not media, a bad manifest line),

    {"id": "notes", "files": {"file": "notes.txt"}, "mode": "labels",
     "error": "notes.txt: not an image, sound or video file (…)", "error_kind": "unsupported_type"}

and the run goes on. A progress line (inputs/s, ETA) goes to the log every tenth of the
run or 30 s, also when the output is not a terminal. At the end: a summary (inputs,
answered, errors by kind, emotions, verdicts: sure / unsure / welfare alert, and the
accuracy where the manifest had labels) on stdout, and ``--out`` with ``.csv`` for
``.jsonl`` beside it (one row per line, for a spreadsheet). The exit code is 0 even when
some inputs failed, unless ``--strict`` (then 1 when any did).

Speed: decoding and the encoders of the next batch run in a second thread while the
label scoring (or generation) of the current one runs, each with half of torch's threads:
on 2 cores the two halves of the work overlap instead of taking turns
(``benchmarks/cold_start.py --batch`` measures it against one input at a time).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from purrsight.data.batch_inputs import BatchInput, InputsError, discover
from purrsight.data.media import MediaError
from purrsight.inference.errors import InputError
from purrsight.progress import Progress, format_duration

log = logging.getLogger(__name__)

CSV_COLUMNS = (
    "id",
    "image",
    "audio",
    "video",
    "label",
    "emotion",
    "confidence",
    "second",
    "second_p",
    "welfare_alert",
    "status",
    "error",
)


@dataclass
class BatchResult:
    """What a run did (the summary also counts the lines of earlier runs it resumed)."""

    total: int
    resumed: int
    written: int
    errors: int
    seconds: float
    summary: dict[str, Any]

    @property
    def per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


# ----------------------------------------------------------------------------- output


def csv_path(out: Path) -> Path:
    return out.with_suffix(".csv")


def read_done(out: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """({id: line} of the complete lines of an earlier run, the byte length they take).
    A last line without its newline (the run was killed while writing it) is not counted:
    the caller cuts the file there."""
    done: dict[str, dict[str, Any]] = {}
    keep = 0
    with out.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                break  # a torn write in the middle: keep what came before
            if isinstance(line, dict) and isinstance(line.get("id"), str):
                done[line["id"]] = line
            keep += len(raw)
    return done, keep


def open_output(out: Path, resume: bool, overwrite: bool, mode: str) -> tuple[Any, dict]:
    """The output file opened for appending, and the lines an earlier run finished.

    Raises:
        InputError: ``out`` exists and neither ``resume`` nor ``overwrite`` was asked, or
            the earlier run used another mode.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    done: dict[str, dict[str, Any]] = {}
    if out.exists() and resume:
        done, keep = read_done(out)
        modes = {line.get("mode") for line in done.values()} - {None}
        if modes and modes != {mode}:
            raise InputError(
                f"--resume: {out} was written with --mode {', '.join(sorted(modes))}, not "
                f"{mode}; resume with that mode or write to another --out"
            )
        with out.open("r+b") as handle:  # cut a half-written last line
            handle.truncate(keep)
    elif out.exists() and not overwrite:
        raise InputError(f"--out: {out} exists; add --resume to continue that run, or --overwrite")
    elif out.exists():
        out.unlink()
    return out.open("a", encoding="utf-8"), done


def error_line(item: BatchInput, message: str, kind: str, mode: str) -> dict[str, Any]:
    return {
        "id": item.id,
        "files": dict(item.shown),
        **({"label": item.label} if item.label is not None else {}),
        "mode": mode,
        "error": message,
        "error_kind": kind,
    }


def prediction_line(item: BatchInput, prediction: Any, mode: str) -> dict[str, Any]:
    line: dict[str, Any] = {
        "id": item.id,
        "files": dict(item.shown),
        **({"label": item.label} if item.label is not None else {}),
        "mode": mode,
        "status": prediction.status,
        "report": prediction.report.model_dump(mode="json"),
        "probabilities": {k: round(v, 6) for k, v in prediction.probabilities.items()},
    }
    if prediction.error:
        line["generation_error"] = prediction.error
    return line


def write_csv(out: Path) -> Path:
    """``out`` as CSV beside it (every complete line, in file order)."""
    done, _ = read_done(out)
    target = csv_path(out)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        for line in done.values():
            writer.writerow(csv_row(line))
    os.replace(tmp, target)
    return target


def csv_row(line: dict[str, Any]) -> dict[str, Any]:
    files = line.get("files", {})
    report = line.get("report") or {}
    alternatives = report.get("alternatives") or []
    return {
        "id": line["id"],
        "image": files.get("image", files.get("file", "")),
        "audio": files.get("audio", ""),
        "video": files.get("video", ""),
        "label": line.get("label", ""),
        "emotion": report.get("emotion", ""),
        "confidence": report.get("confidence", ""),
        "second": alternatives[0]["emotion"] if alternatives else "",
        "second_p": alternatives[0]["p"] if alternatives else "",
        "welfare_alert": report.get("welfare_alert", ""),
        "status": line.get("status", "error"),
        "error": line.get("error", ""),
    }


def summarize(lines: Sequence[dict[str, Any]], unsure_label: str = "unsure") -> dict[str, Any]:
    """Counts over result lines: answered, errors (by kind), emotions, verdicts, and the
    accuracy on the lines that carry a label."""
    answered = [line for line in lines if "report" in line]
    errors = [line for line in lines if "error" in line]
    emotions = Counter(line["report"]["emotion"] for line in answered)
    verdicts = Counter()
    for line in answered:
        report = line["report"]
        verdicts["unsure" if report["emotion"] == unsure_label else "sure"] += 1
        if report.get("welfare_alert"):
            verdicts["welfare_alert"] += 1
    summary: dict[str, Any] = {
        "inputs": len(lines),
        "answered": len(answered),
        "errors": len(errors),
        "error_kinds": dict(Counter(line.get("error_kind", "?") for line in errors)),
        "emotions": dict(emotions.most_common()),
        "verdicts": {k: verdicts[k] for k in ("sure", "unsure", "welfare_alert")},
    }
    labelled = [line for line in answered if line.get("label")]
    if labelled:
        correct = sum(_top_label(line) == line["label"] for line in labelled)
        summary["labelled"] = len(labelled)
        summary["accuracy"] = round(correct / len(labelled), 4)
    return summary


def _top_label(line: dict[str, Any]) -> str:
    probabilities = line.get("probabilities") or {}
    return max(probabilities, key=probabilities.get) if probabilities else ""


def format_summary(result: BatchResult, out: Path, wrote_csv: Path | None) -> str:
    s = result.summary
    rate = f"{result.per_second:.1f} inputs/s" if result.written else "nothing new"
    lines = [
        f"predicted {result.written} inputs in {format_duration(result.seconds)} ({rate})"
        + (f"; {result.resumed} done by an earlier run" if result.resumed else ""),
        f"inputs {s['inputs']}: answered {s['answered']}, errors {s['errors']}"
        + (
            " (" + ", ".join(f"{k} {v}" for k, v in sorted(s["error_kinds"].items())) + ")"
            if s["errors"]
            else ""
        ),
        "emotions: " + (", ".join(f"{k} {v}" for k, v in s["emotions"].items()) or "-"),
        "verdicts: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in s["verdicts"].items()),
    ]
    if "accuracy" in s:
        lines.append(f"accuracy against the labels: {s['accuracy']:.3f} ({s['labelled']} inputs)")
    lines.append(f"results: {out}" + (f", {wrote_csv}" if wrote_csv else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the run


@dataclass
class _Chunk:
    items: list[BatchInput]
    prepared: list[Any]
    """Per item: its Prepared, or the line of its error."""


def _prepare_chunks(
    predictor: Any, items: Sequence[BatchInput], batch_size: int, mode: str
) -> Iterator[_Chunk]:
    """Decode and encode ``items`` a batch at a time (each item's error kept as its line)."""
    import torch

    for start in range(0, len(items), batch_size):
        chunk = list(items[start : start + batch_size])
        prepared: list[Any] = []
        for item in chunk:
            if item.error is not None:
                prepared.append(error_line(item, item.error, item.error_kind or "input", mode))
                continue
            try:
                with torch.inference_mode():
                    prepared.append(predictor.prepare(**item.request()))
            except MediaError as err:
                prepared.append(error_line(item, str(err), err.kind, mode))
            except InputError as err:
                prepared.append(error_line(item, f"{item.id}: {err}", "input", mode))
            except Exception as err:  # noqa: BLE001 - one bad input must not end the run
                message = f"{item.id}: {type(err).__name__}: {err}"
                prepared.append(error_line(item, message, "failed", mode))
        yield _Chunk(chunk, prepared)


def _in_background(chunks: Iterator[_Chunk], depth: int = 1) -> Iterator[_Chunk]:
    """``chunks`` computed by a second thread, ``depth`` ahead of the consumer."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    end = object()

    def produce() -> None:
        try:
            for chunk in chunks:
                slots.put(chunk)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            slots.put(err)
        slots.put(end)

    thread = threading.Thread(target=produce, name="purrsight-prepare", daemon=True)
    thread.start()
    while True:
        got = slots.get()
        if got is end:
            return
        if isinstance(got, BaseException):
            raise got
        yield got


def _predict_chunk(predictor: Any, chunk: _Chunk, mode: str) -> list[dict[str, Any]]:
    """The chunk's lines, in order: its prepared inputs predicted together (one at a time
    if the batch fails, so that one bad input does not take the others with it)."""
    import torch

    ready = [(i, p) for i, p in enumerate(chunk.prepared) if not isinstance(p, dict)]
    lines: list[Any] = list(chunk.prepared)
    if not ready:
        return lines
    try:
        with torch.inference_mode():
            predictions = predictor.predict_prepared([p for _, p in ready], mode=mode)
        pairs = list(zip([i for i, _ in ready], predictions, strict=True))
    except Exception:  # noqa: BLE001 - isolate the input that fails
        pairs = []
        for i, prepared in ready:
            try:
                with torch.inference_mode():
                    pairs.append((i, predictor.predict_prepared([prepared], mode=mode)[0]))
            except Exception as err:  # noqa: BLE001
                item = chunk.items[i]
                message = f"{item.id}: {type(err).__name__}: {err}"
                lines[i] = error_line(item, message, "failed", mode)
    for i, prediction in pairs:
        lines[i] = prediction_line(chunk.items[i], prediction, mode)
    return lines


def split_threads(total: int) -> int:
    """torch threads per stage when preparing and predicting overlap: half each."""
    return max(1, total // 2)


def predict_batch(
    predictor: Any,
    items: Sequence[BatchInput],
    out: Path,
    *,
    mode: str = "labels",
    resume: bool = False,
    overwrite: bool = False,
    batch_size: int = 8,
    overlap: bool | None = None,
) -> BatchResult:
    """Predict ``items`` into ``out`` (see the module docstring); returns what it did.
    ``overlap``: prepare the next batch in a second thread (None: when torch has two or
    more threads to share between the stages)."""
    import torch

    started = time.perf_counter()
    handle, done = open_output(out, resume, overwrite, mode)
    todo = [item for item in items if item.id not in done]
    threads = torch.get_num_threads()
    if overlap is None:
        overlap = threads >= 2
    if overlap:
        torch.set_num_threads(split_threads(threads))
    progress = Progress("predict", len(items), log, unit="input", done=len(items) - len(todo))
    written = errors = 0
    try:
        if resume and done:
            log.info("resuming: %d of %d inputs were done by an earlier run", len(done), len(items))
        chunks = _prepare_chunks(predictor, todo, batch_size, mode)
        if overlap:
            chunks = _in_background(chunks)
        for chunk in chunks:
            for line in _predict_chunk(predictor, chunk, mode):
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
                errors += "error" in line
            handle.flush()
            os.fsync(handle.fileno())
            written += len(chunk.items)
            elapsed = time.perf_counter() - started
            progress.update(len(items) - len(todo) + written, **{"inputs/s": written / elapsed})
    finally:
        handle.close()
        if overlap:
            torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    all_lines, _ = read_done(out)
    summary = summarize(list(all_lines.values()), predictor.bundle.manifest.unsure_label)
    return BatchResult(len(items), len(done), written, errors, seconds, summary)


def run_predict_batch(
    model: str,
    inputs: str,
    out: str,
    *,
    mode: str,
    threshold: float | None,
    resume: bool,
    overwrite: bool,
    strict: bool,
    batch_size: int,
    write_table: bool = True,
) -> int:
    """The body of ``purrsight predict --inputs``; returns the exit code."""
    from purrsight.inference.predictor import Predictor
    from purrsight.threads import configure

    out_path = Path(out)
    if out_path.suffix.lower() != ".jsonl":
        raise InputError(f"--out: {out} must end in .jsonl (a CSV is written beside it)")
    try:
        items = discover(inputs, exclude=[out_path, csv_path(out_path)])
    except InputsError as err:
        raise InputError(str(err)) from None
    predictor = Predictor.from_bundle(model, unsure_threshold=threshold)
    configure()  # torch's threads from the cores idle while the bundle loaded
    log.info("%d inputs from %s, batches of %d, mode %s", len(items), inputs, batch_size, mode)
    table = None
    try:
        result = predict_batch(
            predictor,
            items,
            out_path,
            mode=mode,
            resume=resume,
            overwrite=overwrite,
            batch_size=batch_size,
        )
    except KeyboardInterrupt:
        if write_table and out_path.exists():
            write_csv(out_path)
        done, _ = read_done(out_path)
        print(
            f"interrupted: {len(done)} of {len(items)} inputs are in {out_path}; the same "
            "command with --resume finishes the rest"
        )
        raise
    if write_table:
        table = write_csv(out_path)
    print(format_summary(result, out_path, table))
    failed = result.summary["errors"]
    return 1 if strict and failed else 0
