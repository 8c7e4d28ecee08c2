"""The Predictor: media in, a validated cat-emotion report out. Used by ``purrsight predict``,
``purrsight evaluate``, the benchmarks and the HTTP server.

API (what a caller needs)::

    from purrsight.inference.predictor import Predictor

    predictor = Predictor.from_bundle("outputs/demo/bundle", device="cpu")
    prediction = predictor.predict(image="cat.jpg", audio=wav_bytes, mode="report")
    prediction.report             # purrsight.report.Report, always schema-valid
    prediction.probabilities      # {label: p} from label scoring, sums to 1
    prediction.status             # "valid" | "repaired" | "invalid" | "labels"
    prediction.to_dict()          # JSON-ready: report + probabilities + status + timings
    predictor.predict_batch([{"image": b"..."}, {"audio": "a.wav"}], mode="labels")

    # A server batching requests: decode each on its own (errors stay per request), then
    # run the model once for all that prepared cleanly.
    prepared = predictor.prepare(image=upload_bytes, text="he hides all day")
    predictions = predictor.predict_prepared([prepared, ...], mode="report")

A Predictor is not thread-safe: run one call at a time (queue or gather requests).
``predictor.media`` holds the bundle's limits (``max_file_bytes`` …), ``predictor.labels``
the label set.

Inputs: ``image`` / ``audio`` / ``video`` are each a file path or the raw bytes of a file
(an upload); ``text`` is what the owner says, added to the question in the prompt. Any
non-empty combination of image, audio and video works (a video gives its sampled frames
as the image and its sound track as the audio, so it cannot be combined with either).
Media limits (bytes, pixels, seconds) come from the bundle and are enforced by
:mod:`purrsight.data.media`; a bad input raises :class:`~purrsight.data.media.MediaError`
(:class:`~purrsight.data.media.MediaTooLarge` for a limit, an HTTP 413) or
:class:`InputError` (an impossible request, an HTTP 422).

Modes:

* ``"labels"``: one forward pass over the prompt and every label's tokens under a tree
  attention mask (:mod:`purrsight.inference.scoring`): no generation. An answer starts
  with its emotion (:data:`purrsight.report.ANSWER_FIELDS`), so these are the model's own
  first words. The report's emotion, confidence and alternatives come from the scores;
  its arousal and evidence are empty (nothing was generated) and summary/advice are
  templated from the label.
* ``"report"``: label scoring as above, then greedy KV-cached generation that continues
  the answer from the scored emotion (arousal, evidence, summary, advice), parsed and
  validated (repairs recorded). The emotion is the scored one by construction, its
  confidence the model's probability for it; cues of an input not given (a vocalization
  for a photo alone) are dropped. A generation that does not parse gives
  ``status="invalid"`` with the reason and a report from label scoring alone, never the
  broken text passed on as valid.

In both modes the emotion is ``unsure`` when the top label's probability is below the
bundle's ``inference.unsure_threshold``, and a welfare label (``in_pain``) as the answer,
or welfare labels together at least ``inference.welfare_threshold`` likely, set
``welfare_alert`` and put the vet advice first.

Shapes: e = aligned feature size.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from purrsight.data.instruction import PLACEHOLDERS
from purrsight.data.media import MediaSource, load_audio, load_image, load_video
from purrsight.features import FeatureSource
from purrsight.features.aligned import apply_head
from purrsight.inference.bundle import LoadedBundle, load_bundle
from purrsight.inference.errors import BundleError, InputError
from purrsight.inference.generate import build_items, generate_texts
from purrsight.inference.grammar import bundle_grammar
from purrsight.inference.reading import (
    CUE_MODALITY,
    ReadOut,
    Verdict,
    absent_cue_words,
    cat_probability,
    load_reading,
    reading_prefix,
)
from purrsight.inference.report_parse import parse_report
from purrsight.inference.scoring import score_options
from purrsight.precision import cpu_features_summary, inference_dtype
from purrsight.progress import Progress
from purrsight.report import Alternative, Evidence, Report, compose_summary, writes_reading
from purrsight.vocabulary import INPUTS, UNSURE, VET_ADVICE, label_advice

log = logging.getLogger(__name__)

Mode = Literal["report", "labels"]
Status = Literal["valid", "repaired", "invalid", "labels"]
# An answer opens with its emotion (purrsight.report.ANSWER_FIELDS), so label scoring reads
# it straight after the prompt: every label once, as a tree after the prompt. Each option is
# closed with the text that follows it in an answer, so it ends where the model would end
# it ("fear" cannot win by being a prefix of "fearful"). Arousal is not scored (it cost
# 60 % of the tokens of a label-scoring pass); generation writes it.
ANSWER_START = '{"emotion":"'
SCORE_BATCH = 8  # prompts scored together (rows of prompt + L labels)
GENERATE_BATCH = 8
MAX_ALTERNATIVES = 3


class StageClock:
    """Seconds spent per named stage, summed over the stage's uses."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - started
            self.seconds[name] = self.seconds.get(name, 0.0) + spent


@dataclass
class Prepared:
    """One request after decoding and encoding: what the prompt is built from."""

    features: dict[str, torch.Tensor]
    """{modality: [e]} aligned features for the model's prompt slots (image, audio)."""
    modalities: list[str]
    """What the report lists: the inputs the caller gave (image, audio, video, text)."""
    instruction: str
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    """Seconds per stage of preparing it: ``decode``, ``encoders``, ``aligner``."""
    raw: dict[str, torch.Tensor] = field(default_factory=dict)
    """{modality: [d_m]} the encoders' features, which the reading heads read."""
    cat_probability: tuple[float, float] | None = None
    """(domestic cat, big cat) probability of the photo by the image encoder's own
    ImageNet classifier, where it has one (the subject check)."""
    label_scores: torch.Tensor | None = None
    """[L] the LLM's label scores once computed: a second pass over the same request
    (``evaluate`` asks for labels, then the report) does not score it again."""


@dataclass
class Prediction:
    """A report plus how it was made."""

    report: Report
    probabilities: dict[str, float]
    """Label scoring's distribution over the bundle's labels (sums to 1)."""
    status: Status
    """``labels``: label-scoring mode; else the generated text's parse status."""
    error: str | None = None
    """Why the generated text was invalid (status ``invalid``)."""
    raw_text: str | None = None
    """The generated text (report mode)."""
    repairs: tuple[str, ...] = ()
    cue_confidence: dict[str, float] = field(default_factory=dict)
    """The reading heads' probability of each reported cue (empty without heads)."""
    llm_probabilities: dict[str, float] | None = None
    """Label mode: the LLM's own label distribution (uncalibrated, no reading head), which
    ``evaluate`` scores beside the answer's."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``prepare`` (decode + encode), ``model`` (scoring + generation, shared
    by a batch), ``total``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the report and everything about how it was made."""
        return {
            "report": self.report.model_dump(mode="json"),
            "probabilities": {k: round(v, 6) for k, v in self.probabilities.items()},
            "status": self.status,
            "error": self.error,
            "raw_text": self.raw_text,
            "repairs": list(self.repairs),
            "cue_confidence": self.cue_confidence,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class Predictor:
    """A loaded bundle + its frozen encoders (built on first use of each modality).

    Not thread-safe: one predictor runs one call at a time (a server queues requests or
    gathers them into :meth:`predict_batch`).
    """

    def __init__(
        self,
        bundle: LoadedBundle,
        *,
        unsure_threshold: float | None = None,
        max_new_tokens: int | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.bundle = bundle
        self.compute_dtype = compute_dtype
        """What the frozen encoders compute in (the LLM's dtype is the bundle's)."""
        manifest = bundle.manifest
        self.settings = manifest.inference.model_copy()
        """The bundle's inference settings (a copy: changing one changes this predictor)."""
        if unsure_threshold is not None:
            if not 0.0 <= unsure_threshold < 1.0:
                raise ValueError(f"unsure_threshold must be in [0, 1), got {unsure_threshold}")
            self.settings.unsure_threshold = unsure_threshold
        self.media = manifest.media.model_copy()
        self.max_new_tokens = int(max_new_tokens or manifest.generation.max_new_tokens)
        self.system_prompt = manifest.prompt.system_prompt
        self.answer_fields = tuple(manifest.prompt.answer_fields)
        """What the model writes; the rest of a report is composed (see _generated_prediction)."""
        self._features: FeatureSource | None = None  # built on first use: _feature_source()
        self.reading = load_reading(bundle.path, manifest.reading)
        """Reading heads + emotion blend (None: an older bundle; the LLM alone reads)."""
        self.grammar = bundle_grammar(self.labels, self.answer_fields, self.reading)
        """What the LLM may write (generation is constrained to it: valid by construction)."""

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        *,
        unsure_threshold: float | None = None,
        max_new_tokens: int | None = None,
        precision: str = "auto",
    ) -> Predictor:
        """Load the bundle folder ``path`` (see :mod:`purrsight.inference.bundle`).
        ``precision``: ``auto`` computes in bf16 where the device does it natively
        (:func:`purrsight.precision.inference_dtype`), ``32`` in fp32; int8 bundles
        keep their own (dynamic int8 with fp32 activations)."""
        dtype = inference_dtype(precision, torch.device(device).type)
        bundle = load_bundle(path, device, dtype=dtype)  # a ready LLM maps its dtype's file
        if bundle.manifest.llm.kind != "int8" and dtype != torch.float32:
            log.debug("the LLM computes in %s (%s)", dtype, cpu_features_summary())
        return cls(
            bundle,
            unsure_threshold=unsure_threshold,
            max_new_tokens=max_new_tokens,
            compute_dtype=dtype,
        )

    # ------------------------------------------------------------------ properties

    @property
    def labels(self) -> list[str]:
        return self.bundle.labels

    @property
    def modalities(self) -> list[str]:
        """The prompt modalities the model was trained with (``image``, ``audio``)."""
        return self.bundle.modalities

    @property
    def unsure_threshold(self) -> float:
        return self.settings.unsure_threshold

    @property
    def welfare_threshold(self) -> float:
        return self.settings.welfare_threshold

    # ------------------------------------------------------------------ public API

    def predict(
        self,
        image: MediaSource | None = None,
        audio: MediaSource | None = None,
        video: MediaSource | None = None,
        text: str | None = None,
        *,
        mode: Mode = "report",
    ) -> Prediction:
        """One report for one cat; see the module docstring for inputs and modes."""
        request = {"image": image, "audio": audio, "video": video, "text": text}
        return self.predict_batch([request], mode=mode)[0]

    def predict_batch(
        self, requests: Sequence[dict[str, Any]], *, mode: Mode = "report"
    ) -> list[Prediction]:
        """One prediction per request dict (keys ``image``, ``audio``, ``video``, ``text``,
        each optional), in order. Label scoring and generation run batched (4 and 8 prompts
        at a time); each request's media is decoded and encoded on its own.

        Raises on the first bad request (MediaError / InputError), before any model work.
        """
        if mode not in ("report", "labels"):
            raise ValueError(f"mode must be 'report' or 'labels', got {mode!r}")
        prepared = [self.prepare(**_request_kwargs(r)) for r in requests]
        return self.predict_prepared(prepared, mode=mode)

    def prepare(
        self,
        image: MediaSource | None = None,
        audio: MediaSource | None = None,
        video: MediaSource | None = None,
        text: str | None = None,
    ) -> Prepared:
        """Decode and encode one request: aligned features for the prompt."""
        started = time.perf_counter()
        clock = StageClock()
        if video is not None and (image is not None or audio is not None):
            raise InputError("give a video, or an image and/or audio, not both")
        if image is None and audio is None and video is None:
            raise InputError(
                "nothing to look at: give an image, an audio clip or a video "
                "(text is read only as a note alongside them)"
            )
        instruction = self._instruction(text)  # cheap checks before any decoding
        modalities: list[str] = []
        features: dict[str, torch.Tensor] = {}
        raw: dict[str, torch.Tensor] = {}
        media = self.media
        if video is not None:
            self._encoder("image", "video")  # a bundle without an image encoder says so now
            with clock.stage("decode"):
                clip = load_video(
                    video,
                    self._audio_rate() if "audio" in self.modalities else 16000,
                    num_frames=self.settings.video_frames,
                    max_seconds=media.max_video_seconds,
                    max_bytes=media.max_file_bytes,
                    max_pixels=media.max_image_pixels,
                )
            frames, frames_raw = self._encode_align("image", clip.frames, clock)  # [f, e]
            # The mean direction of the frames' unit vectors, back on the unit sphere
            # (the projector was trained on unit vectors).
            features["image"] = F.normalize(frames.mean(dim=0), dim=-1)
            raw["image"] = frames_raw.mean(dim=0)
            if clip.audio is not None and "audio" in self.modalities:
                aligned, raw_audio = self._encode_align("audio", [clip.audio], clock)
                features["audio"], raw["audio"] = aligned[0], raw_audio[0]
            modalities.append("video")
        if image is not None:
            with clock.stage("decode"):
                picture = load_image(image, media.max_image_pixels, media.max_file_bytes)
            aligned, raw_image = self._encode_align("image", [picture], clock)
            features["image"], raw["image"] = aligned[0], raw_image[0]
            modalities.append("image")
        if audio is not None:
            rate = self._encoder("audio").sample_rate
            with clock.stage("decode"):
                wave = load_audio(audio, rate, media.max_audio_seconds, media.max_file_bytes)
            aligned, raw_audio = self._encode_align("audio", [wave], clock)
            features["audio"], raw["audio"] = aligned[0], raw_audio[0]
            modalities.append("audio")
        if text and text.strip():
            modalities.append("text")
        seconds = time.perf_counter() - started
        prepared = Prepared(features, modalities, instruction, seconds, clock.seconds, raw)
        if "image" in raw and self.reading is not None:
            prepared.cat_probability = self._cat_probability(raw["image"])
        return prepared

    def _cat_probability(self, raw_image: torch.Tensor) -> tuple[float, float] | None:
        """(domestic cat, big cat) probability from the image encoder's ImageNet head (None
        for an encoder without one)."""
        encoder = self._encoder("image")
        if not hasattr(encoder, "class_logits"):
            return None
        return cat_probability(encoder.class_logits(raw_image[None])[0])

    def _encode_align(
        self, modality: str, inputs: list, clock: StageClock
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([n, e] aligned, [n, d_m] raw) features of ``inputs`` (decoded media), timed."""
        encoder = self._encoder(modality)  # loaded once, on first use: not a stage
        with clock.stage("encoders"):
            raw = encoder(inputs).float().cpu()
        with clock.stage("aligner"):
            return apply_head(self.bundle.aligner.heads[modality], raw), raw

    def predict_prepared(
        self, prepared: Sequence[Prepared], *, mode: Mode = "report", progress: str | None = None
    ) -> list[Prediction]:
        """Predictions for already prepared requests (see :meth:`prepare`). ``progress``:
        the name of progress lines logged as batches finish (None: quiet, as a server
        wants; a long batch job like ``evaluate`` names one)."""
        if not prepared:
            return []
        started = time.perf_counter()
        clock = StageClock()
        if mode == "labels":
            with clock.stage("label_scoring"):
                probs, llm = self.label_distributions(prepared, progress=progress)
            out = [self._labels_prediction(p, probs[i], "labels") for i, p in enumerate(prepared)]
            for prediction, own in zip(out, llm, strict=True):
                prediction.llm_probabilities = self._as_dict(own)
        else:
            out = self._report_predictions(prepared, progress, clock)
        model_seconds = time.perf_counter() - started
        for p, prediction in zip(prepared, out, strict=True):
            prediction.timings = {
                **p.stages,
                **clock.seconds,  # the whole batch's (per request when it was one)
                "prepare": p.seconds,
                "model": model_seconds,
                "total": p.seconds + model_seconds,
            }
        return out

    def label_probabilities(
        self, prepared: Sequence[Prepared], progress: str | None = None
    ) -> torch.Tensor:
        """Label scoring without generation: [b, L] label probabilities. The LLM's label
        scores (:meth:`label_scores`), blended with the emotion reading head's where the
        bundle has one (weights fitted on val at export: calibrated); else their softmax.
        ``progress``: as in :meth:`predict_prepared`."""
        return self.label_distributions(prepared, progress)[0]

    def label_distributions(
        self, prepared: Sequence[Prepared], progress: str | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([b, L] the answer's label probabilities (:meth:`label_probabilities`), [b, L]
        the LLM's own: the softmax of its label scores, uncalibrated)."""
        scores = self.label_scores(prepared, progress)
        llm = scores.softmax(dim=-1)
        if self.reading is None:
            return llm, llm
        raw, present = self.reading.batch(prepared)
        head = self.reading.heads.logits("emotion", raw, present)
        return self.reading.blend(scores, head), llm

    def label_scores(
        self, prepared: Sequence[Prepared], progress: str | None = None
    ) -> torch.Tensor:
        """[b, L] the LLM's log-likelihood of each label where an answer starts (its
        emotion), every label in one pass under a tree mask."""
        options = label_options(self.labels, self.answer_fields)
        todo = [p for p in prepared if p.label_scores is None]
        items = self._items(todo)
        # Batches of similar prompt lengths: rows are padded to their batch's longest, and
        # the demo's prompts run 28-42 tokens (each row is scored on its own, so the
        # order changes no score).
        order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
        shown = Progress(progress, len(items), log, unit="sample") if progress and todo else None
        for start in range(0, len(items), SCORE_BATCH):
            rows = order[start : start + SCORE_BATCH]
            chunk = [items[i] for i in rows]
            prefixes = [ANSWER_START] * len(chunk)
            scores = score_options(
                self.bundle.model, self.bundle.tokenizer, chunk, prefixes, options
            )
            for i, row in zip(rows, scores.float(), strict=True):
                todo[i].label_scores = row
            if shown is not None:
                shown.update(start + len(chunk))
        return torch.stack([p.label_scores for p in prepared])

    # ------------------------------------------------------------------ internals

    def _items(self, prepared: Sequence[Prepared]) -> list[dict[str, Any]]:
        try:
            return build_items(
                self.bundle.tokenizer,
                [p.features for p in prepared],
                [p.instruction for p in prepared],
                self.bundle.manifest.num_soft_tokens,
                self.system_prompt,
            )
        except ValueError as err:  # a reserved marker in the user's text
            raise InputError(str(err)) from None

    def _report_predictions(
        self, prepared: Sequence[Prepared], progress: str | None, clock: StageClock
    ) -> list[Prediction]:
        """Label scoring first; then each answer is generated on from the scored label and
        its arousal, so the report's emotion is the scored one by construction and its
        text (evidence, summary, advice) is written for that emotion."""
        if self.reading is not None:
            return self._read_predictions(prepared, progress, clock)
        if not writes_reading(self.answer_fields):
            raise BundleError(
                f"{self.bundle.path}: its LLM was trained to write only "
                f"{list(self.answer_fields)} (answer_fields), so a report needs the bundle's "
                "reading heads, and it has none: export it again with its training data "
                "(purrsight export --data DIR, without --no-reading-heads), or ask for labels "
                "(--mode labels)"
            )
        bundle = self.bundle
        with clock.stage("label_scoring"):
            probs = self.label_probabilities(prepared, progress=progress)
        starts = [answer_start(self.labels[int(p.argmax())]) for p in probs]
        with clock.stage("generation"):
            texts, _ = generate_texts(
                bundle.model,
                bundle.tokenizer,
                [p.features for p in prepared],
                [p.instruction for p in prepared],
                bundle.manifest.num_soft_tokens,
                max_new_tokens=self.max_new_tokens,
                batch_size=GENERATE_BATCH,
                system_prompt=self.system_prompt,
                progress=progress,
                prefixes=starts,
                grammar=self.grammar,
            )
        out = []
        for i, (p, text) in enumerate(zip(prepared, texts, strict=True)):
            result = parse_report(text, self.labels, modalities=p.modalities)
            if result.report is not None:
                out.append(self._generated_prediction(p, result, probs[i]))
                continue
            prediction = self._labels_prediction(p, probs[i], "invalid")
            prediction.error, prediction.raw_text = result.error, result.raw
            out.append(prediction)
        return out

    def _read_predictions(
        self, prepared: Sequence[Prepared], progress: str | None, clock: StageClock
    ) -> list[Prediction]:
        """Reports whose emotion is the blended label score and whose arousal and evidence
        are the reading heads' (absent inputs' cues null), fixed before the LLM writes:
        it writes on only the fields after them (summary, advice), if the bundle's
        ``answer_fields`` have any; else they are composed from the evidence."""
        with clock.stage("label_scoring"):
            probs = self.label_probabilities(prepared, progress=progress)
        with clock.stage("reading"):
            reads = self.reading.read(prepared)
            checks = self.reading.verdicts(prepared)
        verdicts = [self._verdict(p, check) for p, check in zip(probs, checks, strict=True)]
        texts = self._written_on(prepared, probs, reads, progress, clock)
        out = []
        for i, p in enumerate(prepared):
            emotion, confidence, alternatives = verdicts[i]
            seen = _seen_evidence(reads[i].evidence, checks[i])
            read = ReadOut(seen, reads[i].arousal, reads[i].cue_confidence)
            summary, advice, status, error = self._read_texts(
                emotion, probs[i], read, texts[i], p.modalities
            )
            if checks[i] is not None and emotion == UNSURE:
                summary, advice = _checked_texts(checks[i], summary, advice)
            report = self._finish(
                check=checks[i],
                evidence=seen,
                arousal=reads[i].arousal,
                verdict=(emotion, confidence, alternatives),
                summary=summary,
                advice=advice,
                request=p,
                probabilities=self._as_dict(probs[i]),
            )
            prediction = Prediction(report, self._as_dict(probs[i]), status, error, texts[i])
            # Only the cues the report shows: one the subject / range check left out has
            # no confidence to give.
            shown = report.evidence.model_dump(exclude_none=True)
            prediction.cue_confidence = {
                cue: sure for cue, sure in reads[i].cue_confidence.items() if cue in shown
            }
            out.append(prediction)
        return out

    def _written_on(
        self,
        prepared: Sequence[Prepared],
        probs: torch.Tensor,
        reads: list[ReadOut],
        progress: str | None,
        clock: StageClock,
    ) -> list[str | None]:
        """The LLM's answers generated on from the fixed reading (None each where the
        bundle's answer is the reading alone)."""
        rest = [f for f in self.answer_fields if f not in ("emotion", "arousal", "evidence")]
        if not rest:
            return [None] * len(prepared)
        prefixes = [
            reading_prefix(self.labels[int(p.argmax())], read, rest[0])
            for p, read in zip(probs, reads, strict=True)
        ]
        with clock.stage("generation"):
            texts, _ = generate_texts(
                self.bundle.model,
                self.bundle.tokenizer,
                [p.features for p in prepared],
                [p.instruction for p in prepared],
                self.bundle.manifest.num_soft_tokens,
                max_new_tokens=self.max_new_tokens,
                batch_size=GENERATE_BATCH,
                system_prompt=self.system_prompt,
                progress=progress,
                prefixes=prefixes,
                grammar=self.grammar,
            )
        return list(texts)

    def _read_texts(
        self,
        emotion: str,
        probs: torch.Tensor,
        read: ReadOut,
        text: str | None,
        given: Sequence[str] = (),
    ) -> tuple[str, str, Status, str | None]:
        """(summary, advice, status, error): the generated ones where they parse, else
        composed from the evidence (status ``repaired``, the parse error kept)."""
        composed = compose_summary(emotion, read.evidence), label_advice(emotion)
        if emotion == UNSURE:
            return (*self._templated(emotion, probs), "valid", None)
        if text is None:
            return (*composed, "valid", None)
        result = parse_report(text, self.labels)
        if result.report is None:
            return (*composed, "repaired", result.error)
        summary, advice = result.report.summary, result.report.advice
        unseen = absent_cue_words(f"{summary} {advice}", given)
        if unseen:  # the text describes an input not given: the evidence's words instead
            return (*composed, "repaired", f"named {', '.join(unseen)} without its input")
        return summary, advice, result.status, None

    def _generated_prediction(self, p: Prepared, result, probs: torch.Tensor) -> Prediction:
        """The generated report with emotion, confidence and alternatives from ``probs``."""
        generated = result.report
        probabilities = self._as_dict(probs)
        emotion, confidence, alternatives = self._verdict(probs)
        repairs = list(result.repairs)
        evidence, dropped = _observable(generated.evidence, p.features)
        summary, advice = generated.summary, generated.advice
        if emotion != generated.emotion:
            # Unsure: the text was written on from the top label, which is not likely
            # enough to be the answer; the summary says so instead.
            summary, advice = self._templated(emotion, probs)
        elif "summary" not in self.answer_fields:  # composed from what the model read
            summary, advice = compose_summary(emotion, evidence), label_advice(emotion)
        repairs += [f"dropped {cue} (no {CUE_MODALITY[cue]} given)" for cue in dropped]
        report = self._finish(
            evidence=evidence,
            arousal=generated.arousal,
            verdict=(emotion, confidence, alternatives),
            summary=summary,
            advice=advice,
            request=p,
            probabilities=probabilities,
        )
        status: Status = "repaired" if repairs else result.status
        return Prediction(report, probabilities, status, None, result.raw, tuple(repairs))

    def _labels_prediction(self, p: Prepared, probs: torch.Tensor, status: Status) -> Prediction:
        probabilities = self._as_dict(probs)
        check = self.reading.verdicts([p])[0] if self.reading is not None else None
        emotion, confidence, alternatives = self._verdict(probs, check)
        summary, advice = self._templated(emotion, probs)
        if check is not None and emotion == UNSURE:
            summary, advice = _checked_texts(check, summary, advice)
        report = self._finish(
            check=check,
            evidence=Evidence(),
            arousal=None,  # not read: label scoring stops at the emotion
            verdict=(emotion, confidence, alternatives),
            summary=summary,
            advice=advice,
            request=p,
            probabilities=probabilities,
        )
        return Prediction(report, probabilities, status)

    def _as_dict(self, probs: torch.Tensor) -> dict[str, float]:
        return {label: float(v) for label, v in zip(self.labels, probs.tolist(), strict=True)}

    def _verdict(
        self, probs: torch.Tensor, check: Verdict | None = None
    ) -> tuple[str, float, list[Alternative]]:
        """(emotion or ``unsure``, its probability, the next labels by probability). With a
        subject / range check that is not a cat in range, the emotion is ``unsure``: the
        probabilities are kept as they are, shown as the candidates."""
        order = probs.argsort(descending=True).tolist()
        top = order[0]
        confidence = float(probs[top])
        unsure = confidence < self.unsure_threshold or not _is_cat_in_range(check)
        # Unsure: the alternatives are the candidates, the top label first.
        rest = order if unsure else order[1:]
        alternatives = [
            Alternative(emotion=self.labels[j], p=round(float(probs[j]), 4))
            for j in rest[:MAX_ALTERNATIVES]
            if float(probs[j]) >= 0.01
        ]
        return (UNSURE if unsure else self.labels[top]), round(confidence, 4), alternatives

    def _templated(self, emotion: str, probs: torch.Tensor) -> tuple[str, str]:
        """Summary and advice written from the label alone (nothing was generated)."""
        if emotion == UNSURE:
            top = [self.labels[j] for j in probs.argsort(descending=True)[:2].tolist()]
            names = " or ".join(t.replace("_", " ") for t in top)
            return (
                f"Not sure how this cat feels: perhaps {names}.",
                "Watch the cat for a while and look again; a clearer photo or sound helps.",
            )
        return f"The cat seems {emotion.replace('_', ' ')}.", label_advice(emotion)

    def _finish(
        self,
        *,
        verdict: tuple[str, float, list[Alternative]],
        request: Prepared,
        probabilities: dict[str, float],
        advice: str,
        check: Verdict | None = None,
        **fields: Any,
    ) -> Report:
        """The report with the welfare rule applied: the answer is a welfare label, or the
        welfare labels together are at least ``welfare_threshold`` likely. Where the check
        says no cat, or inputs out of range, no alarm is raised or hidden: the advice says
        it cannot tell."""
        emotion, confidence, alternatives = verdict
        fields.update(
            emotion=emotion,
            confidence=confidence,
            alternatives=alternatives,
            modalities=request.modalities,
        )
        welfare = self.bundle.manifest.welfare_labels
        risk = sum(probabilities.get(label, 0.0) for label in welfare)
        alert = fields["emotion"] in welfare or risk >= self.welfare_threshold
        if not _is_cat_in_range(check):
            alert = False
            if risk >= self.welfare_threshold and CANNOT_TELL not in advice:
                advice = f"{CANNOT_TELL} {advice}"
        elif alert and "vet" not in advice.lower():
            advice = f"{VET_ADVICE} {advice}"
        if check is not None:
            fields.update(
                subject=check.subject, subject_reason=check.reason, in_range=check.in_range
            )
        return Report(advice=advice, welfare_alert=alert, **fields)

    def _instruction(self, text: str | None) -> str:
        question = self.settings.instruction
        if not text:
            return question
        text = text.strip()
        limit = self.settings.max_text_chars
        if len(text) > limit:
            raise InputError(f"text is {len(text)} characters, over the limit of {limit}")
        reserved = self._reserved_markers()
        found = next((m for m in reserved if m in text), None)
        if found is not None:
            # A special token in user text would be read as one (a new turn, an end token):
            # refused rather than silently altered.
            raise InputError(f"text contains the reserved marker {found!r}")
        return f"{question}\nOwner's note: {text}" if text else question

    def _reserved_markers(self) -> list[str]:
        """The soft-token placeholders and every special/added token of the tokenizer."""
        tokenizer = self.bundle.tokenizer
        added = [t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values()]
        specials = list(getattr(tokenizer, "all_special_tokens", []))
        return sorted({*PLACEHOLDERS.values(), *added, *specials} - {""}, key=len, reverse=True)

    def _encoder(self, modality: str, requested_as: str | None = None):
        """The frozen encoder for ``modality``, built once and checked against the identity
        the aligner was trained with."""
        if modality not in self.modalities:
            raise InputError(
                f"this model reads {' and '.join(self.modalities)} only; it cannot use "
                f"{requested_as or modality}"
            )
        source = self._feature_source()
        trained_on = self.bundle.manifest.encoders[modality].identity
        if trained_on and source.identity(modality) != trained_on:
            raise BundleError(
                f"{self.bundle.path}: encoders.{modality} is {source.identity(modality)}, but "
                f"the bundle's aligner was trained on {trained_on}"
            )
        return source.encoder(modality)

    def _feature_source(self) -> FeatureSource:
        """The bundle's encoders (each built on first use, on the model's device) and media
        limits; no feature cache (a request's media are new)."""
        if self._features is None:
            encoders = self.bundle.manifest.encoders
            configs = {m: encoders[m].config for m in self.modalities}
            device = next(self.bundle.model.parameters()).device
            self._features = FeatureSource(
                configs, self.media, device=device, compute_dtype=self.compute_dtype
            )
        return self._features

    def _audio_rate(self) -> int:
        return int(self._encoder("audio").sample_rate)


def _observable(
    evidence: Evidence, features: dict[str, torch.Tensor]
) -> tuple[Evidence, list[str]]:
    """``evidence`` with cues of absent inputs set to null (the model sometimes writes a
    vocalization for a silent photo), and the names of the cues dropped."""
    values = evidence.model_dump()
    dropped = [c for c, m in CUE_MODALITY.items() if m not in features and values[c] is not None]
    for cue in dropped:
        values[cue] = None
    return Evidence(**values), dropped


CANNOT_TELL = "Cannot tell; if you are worried, see a vet."


def _seen_evidence(evidence: Evidence, check: Verdict | None) -> Evidence:
    """``evidence`` without the cues of an input unlike the training data (the heads'
    reading of it is a guess), and none at all where there is no cat."""
    if check is None:
        return evidence
    if check.subject == "no_cat":
        return Evidence()
    far = {m for m, ratio in check.typicality.items() if ratio > 1.0}
    values = {c: (None if CUE_MODALITY[c] in far else v) for c, v in evidence.model_dump().items()}
    return Evidence(**values)


def _is_cat_in_range(check: Verdict | None) -> bool:
    return check is None or (check.subject == "cat" and check.in_range)


def _checked_texts(check: Verdict, summary: str, advice: str) -> tuple[str, str]:
    """Summary and advice of an answer the subject / range check made unsure: what the
    check found, in plain words, before the reading."""
    if check.subject == "no_cat":
        return f"No cat found: {check.reason}.", "Give a photo or a sound of a cat."
    if not check.in_range or check.subject == "unsure":
        return (
            f"Not sure this is a cat Purr-Sight can read: {check.reason}. {summary}",
            advice,
        )
    return summary, advice


def _request_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(request) - set(INPUTS))
    if unknown:
        raise InputError(f"unknown request fields {unknown}; use {', '.join(INPUTS)}")
    return {k: request.get(k) for k in INPUTS}


def label_options(labels: Sequence[str], answer_fields: Sequence[str]) -> list[str]:
    """Each label closed with the text that follows the emotion in the answers the model
    was trained on: ``","`` before the next field, ``"}`` where the emotion is the whole
    answer (``answer_fields: [emotion]``). Scoring ``","`` after a model that only ever
    wrote ``"}`` there would charge every label for a token it never learned."""
    after = '","' if writes_reading(answer_fields) else '"}'
    return [f"{label}{after}" for label in labels]


def answer_start(emotion: str) -> str:
    """An answer's first field as training wrote it (``answer_json``): generation continues
    from here (arousal, evidence, …)."""
    return f'{ANSWER_START}{emotion}","'
