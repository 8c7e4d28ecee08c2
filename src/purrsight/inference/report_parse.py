"""Turn a model's generated text into a validated :class:`~purrsight.report.Report`, or say why not.

Generation is untrusted text. :func:`parse_report` finds the first JSON object in it (after
code fences and chatter), parses it, applies a few bounded repairs when it does not parse
as is, and validates it against the report schema and the label set. The outcome is one of

* ``"valid"``: the object parsed unchanged and the schema accepted it;
* ``"repaired"``: the schema accepted it after a recorded repair (truncated output closed,
  trailing commas or single quotes fixed, a label's spelling canonicalised, alternatives
  outside the label set dropped);
* ``"invalid"``: no report; ``error`` says why. Nothing invalid is ever passed on as a report.

:func:`extract_emotion` reads just the ``"emotion"`` field from text that may be broken
everywhere else, so metrics can still count what an invalid report meant (separately).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from purrsight.report import Report

ParseStatus = Literal["valid", "repaired", "invalid"]

# A fenced block: ```json ... ``` (the closing fence may be missing in truncated output).
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
# The emotion field, double- or single-quoted, as written by a model that may break later.
_EMOTION_RE = re.compile(r"""["']emotion["']\s*:\s*(?:"([^"\\\n]*)"|'([^'\\\n]*)')""")
_HEX = frozenset("0123456789abcdefABCDEF")
_LITERAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")


@dataclass(frozen=True)
class ParseResult:
    """What :func:`parse_report` made of one generated text."""

    report: Report | None
    """The validated report; ``None`` exactly when ``status == "invalid"``."""
    status: ParseStatus
    error: str | None
    """Why the text is invalid; ``None`` otherwise."""
    raw: str
    """The text as generated."""
    repairs: tuple[str, ...] = field(default=())
    """What was changed to make it parse (empty unless ``status == "repaired"``)."""

    @property
    def ok(self) -> bool:
        """A report came out (valid or repaired)."""
        return self.report is not None


# ----------------------------------------------------------------------------- labels


def _label_key(label: str) -> str:
    """Case, space, hyphen and underscore insensitive form of a label."""
    return re.sub(r"[\s_-]+", "_", label.strip().lower()).strip("_")


def canonical_label(value: str, labels: Sequence[str]) -> str | None:
    """``value`` as it is spelled in ``labels`` (``"In Pain"`` → ``"in_pain"``), or None."""
    if value in labels:
        return value
    by_key = {_label_key(label): label for label in labels}
    return by_key.get(_label_key(value))


def extract_emotion(text: str, labels: Sequence[str]) -> str | None:
    """Best-effort label from the first ``"emotion": "…"`` field of ``text``, however
    broken the rest is; None when there is none or it names no label in ``labels``."""
    match = _EMOTION_RE.search(text)
    if match is None:
        return None
    value = match.group(1) if match.group(1) is not None else match.group(2)
    return canonical_label(value, labels)


# ----------------------------------------------------------------------------- extraction


def strip_wrapping(text: str) -> str:
    """The inside of the first code fence that holds a ``{``, else ``text`` unchanged.

    Leading chatter needs no stripping of its own: the object search starts at the first
    ``{`` anyway."""
    for match in _FENCE_RE.finditer(text):
        if "{" in match.group(1):
            return match.group(1)
    return text


def first_json_object(text: str) -> tuple[str, bool] | None:
    """``(object text, complete)`` from the first ``{`` to its balancing ``}``, braces in
    double-quoted strings ignored; ``complete`` is False when the text ends first (the
    rest of the text is then returned). None when there is no ``{``."""
    start = text.find("{")
    if start < 0:
        return None
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start : i + 1], True
    return text[start:], False


# ----------------------------------------------------------------------------- repair


@dataclass
class _Frame:
    """One open container while re-scanning JSON: its closer and what comes next."""

    closer: str
    expect: str  # "key" | "colon" | "value" | "comma" (arrays never expect key/colon)


class _Unrepairable(Exception):
    """The text breaks JSON in a way the bounded repairs do not cover."""


class _Repairer:
    """One pass over the text from its first ``{`` that re-emits it as JSON.

    Fixes, each recorded: single-quoted strings → double-quoted; commas before ``}``/``]``
    dropped; text that ends early (max_new_tokens reached) is closed, keeping a string
    value cut mid-way but cutting back to the last complete member otherwise (a dangling
    key, a half-written number or literal), then closing every open container. Nothing
    else is guessed: whatever still does not parse stays invalid.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.out: list[str] = []
        self.stack: list[_Frame] = []
        self.repairs: list[str] = []
        # Output length and open containers at the last point where cutting the output
        # and closing those containers gives valid JSON: after an opener or a value.
        self.safe: tuple[int, list[_Frame]] = (0, [])

    # -- bookkeeping

    def _note(self, what: str) -> None:
        if what not in self.repairs:
            self.repairs.append(what)

    def _expect(self, *states: str) -> _Frame:
        """The innermost open container, which must be in one of ``states``."""
        if not self.stack or self.stack[-1].expect not in states:
            raise _Unrepairable
        return self.stack[-1]

    def _mark_safe(self) -> None:
        self.safe = (len(self.out), [_Frame(f.closer, f.expect) for f in self.stack])

    def _value_done(self) -> None:
        """A value just ended: its container now wants a comma (or its closer)."""
        if self.stack:
            self.stack[-1].expect = "comma"
            self._mark_safe()

    # -- the scan

    def run(self) -> str:
        """The repaired JSON text (raises :class:`_Unrepairable`)."""
        text = self.text
        i = text.find("{")
        if i < 0:
            raise _Unrepairable
        while i < len(text):
            ch = text[i]
            if ch.isspace():
                self.out.append(ch)
                i += 1
            elif ch in "{[":
                if self.stack:
                    self._expect("value")
                self.out.append(ch)
                self.stack.append(_Frame("}", "key") if ch == "{" else _Frame("]", "value"))
                self._mark_safe()
                i += 1
            elif ch in "}]":
                if self._close(ch):
                    return "".join(self.out)
                i += 1
            elif ch in "\"'":
                i = self._string(i)
                if i < 0:
                    return self._close_truncated()
            elif ch == ":":
                self._expect("colon").expect = "value"
                self.out.append(ch)
                i += 1
            elif ch == ",":
                frame = self._expect("comma")
                frame.expect = "key" if frame.closer == "}" else "value"
                self.out.append(ch)
                i += 1
            elif ch in _LITERAL_CHARS:
                j = i
                while j < len(text) and text[j] in _LITERAL_CHARS:
                    j += 1
                if j == len(text):  # a number or literal cut off: its value is unknown
                    break
                self._expect("value")
                self.out.append(text[i:j])
                self._value_done()
                i = j
            else:
                raise _Unrepairable
        return self._close_truncated()

    def _close(self, closer: str) -> bool:
        """Emit ``closer``; True when it closes the outermost object."""
        if not self.stack or self.stack[-1].closer != closer:
            raise _Unrepairable
        frame = self.stack[-1]
        if frame.expect == "colon" or (frame.expect == "value" and closer == "}"):
            raise _Unrepairable  # `{"a"}` or `{"a":}`: no value to close with
        if frame.expect in ("key", "value") and self._drop_trailing_comma():
            self._note("removed trailing commas")
        self.out.append(closer)
        self.stack.pop()
        if not self.stack:
            return True
        self._value_done()
        return False

    def _drop_trailing_comma(self) -> bool:
        """Remove a comma (and the whitespace after it) emitted just before a closer."""
        j = len(self.out) - 1
        while j >= 0 and self.out[j].isspace():
            j -= 1
        if j >= 0 and self.out[j] == ",":
            del self.out[j:]
            return True
        return False

    def _string(self, i: int) -> int:
        """Emit the string starting at ``i`` double-quoted; the index after it, or -1
        when the text ends inside it (a cut-off value is then emitted closed; a cut-off
        key is not, and the truncation cut removes it)."""
        text, quote = self.text, self.text[i]
        frame = self._expect("key", "value")
        if quote == "'":
            self._note("converted single quotes")
        chars: list[str] = []
        j = i + 1
        while j < len(text):
            ch = text[j]
            if ch == "\\":
                if j + 1 == len(text):  # a lone backslash at the very end: drop it
                    break
                nxt = text[j + 1]
                # \' is no JSON escape; in a double-quoted string it is a plain '.
                chars.append("'" if nxt == "'" else ch + nxt)
                j += 2
            elif ch == quote:
                self.out.append('"' + "".join(chars) + '"')
                if frame.expect == "key":
                    frame.expect = "colon"
                else:
                    self._value_done()
                return j + 1
            else:
                chars.append('\\"' if ch == '"' else ch)  # only reachable when quote is '
                j += 1
        if frame.expect == "value":
            self.out.append('"' + "".join(_drop_partial_unicode(chars)) + '"')
            self._value_done()
        return -1

    def _close_truncated(self) -> str:
        """The text ended with containers open: cut back to the last safe point and
        close what was open there."""
        self._note("closed truncated output")
        size, stack = self.safe
        if not stack:
            raise _Unrepairable
        del self.out[size:]
        return "".join(self.out).rstrip() + "".join(f.closer for f in reversed(stack))


def _drop_partial_unicode(chars: list[str]) -> list[str]:
    """String pieces (an escape is one piece, e.g. ``\\u``) without a ``\\uXXXX``
    escape cut off at the end, which would make the closed string invalid JSON."""
    for back in range(1, 5):  # "\\u" plus at most three hex digits
        if len(chars) >= back and chars[-back] == "\\u":
            if all(c in _HEX for c in chars[len(chars) - back + 1 :]):
                return chars[:-back]
            break
    return chars


def repair_json(text: str) -> tuple[str, list[str]] | None:
    """Bounded repairs of the JSON object starting at ``text``'s first ``{``: closes
    truncated output, drops trailing commas, converts single-quoted strings. Returns the
    repaired text and what was done, or None when those repairs cannot make it JSON."""
    repairer = _Repairer(text)
    try:
        return repairer.run(), repairer.repairs
    except _Unrepairable:
        return None


# ----------------------------------------------------------------------------- parse


def _load_object(text: str) -> tuple[dict[str, Any] | None, list[str], str | None]:
    """``(object, repairs, error)`` from generated text: parsed as is when it can be,
    else through :func:`repair_json`."""
    body = strip_wrapping(text)
    found = first_json_object(body)
    if found is None:
        return None, [], "no JSON object in the output"
    candidate, complete = found
    first_error: str | None = None
    if complete:
        try:
            data = json.loads(candidate, strict=False)
        except json.JSONDecodeError as err:
            first_error = f"not valid JSON: {err}"
        else:
            return data, [], None
    # The repair pass re-scans from the same `{` with both quote styles, so a brace inside
    # a single-quoted string cannot cut the object short as it can in the search above.
    repaired = repair_json(body)
    if repaired is None:
        return None, [], first_error or "truncated JSON that cannot be closed"
    fixed, repairs = repaired
    try:
        data = json.loads(fixed, strict=False)
    except json.JSONDecodeError as err:
        return None, [], first_error or f"not valid JSON after repair: {err}"
    return data, repairs, None


def _canonicalise_labels(
    data: dict[str, Any], labels: Sequence[str]
) -> tuple[list[str], str | None]:
    """Spell ``emotion`` and the alternatives' emotions as in ``labels`` (in place).

    Returns the repairs made and an error when the main emotion is no label at all.
    Alternatives naming no label are dropped (they are secondary, and a report without
    them is still true); a main emotion outside the label set makes the report invalid."""
    repairs: list[str] = []
    emotion = data.get("emotion")
    if isinstance(emotion, str):
        label = canonical_label(emotion, labels)
        if label is None:
            return repairs, f"emotion {emotion!r} is not one of the labels {list(labels)}"
        if label != emotion:
            data["emotion"] = label
            repairs.append(f"emotion {emotion!r} read as {label!r}")
    alternatives = data.get("alternatives")
    if isinstance(alternatives, list):
        kept = []
        for alt in alternatives:
            name = alt.get("emotion") if isinstance(alt, dict) else None
            label = canonical_label(name, labels) if isinstance(name, str) else None
            if isinstance(name, str) and label is None:
                repairs.append(f"dropped alternative {name!r} (not a label)")
                continue
            if label is not None and label != name:
                alt = {**alt, "emotion": label}
                repairs.append(f"alternative {name!r} read as {label!r}")
            kept.append(alt)
        data["alternatives"] = kept
    return repairs, None


def _validation_message(err: ValidationError) -> str:
    """Pydantic's errors on one line: ``field: message; …``."""
    parts = []
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "report"
        parts.append(f"{where}: {item['msg']}")
    return "report schema: " + "; ".join(parts)


def parse_report(
    text: str, labels: Sequence[str], modalities: list[str] | None = None
) -> ParseResult:
    """Parse and validate one generated report.

    Args:
        text: the generated text (special tokens already removed).
        labels: the label set; ``emotion`` must name one of them (spelling differences of
            case, spaces, hyphens and underscores are repaired to the canonical label).
        modalities: the modalities the model was actually given; when set they replace
            whatever the text claims (the model cannot know better).
    Returns:
        a :class:`ParseResult`; ``report`` is set only when the schema accepted it.
        Validation is strict: a string where a number belongs, or a confidence outside
        [0, 1], makes the report invalid rather than being coerced or clamped.
    """
    data, repairs, error = _load_object(text)
    if error is not None or data is None:
        return ParseResult(None, "invalid", error, text)
    if not isinstance(data, dict):
        return ParseResult(None, "invalid", "the JSON is not an object", text)
    label_repairs, error = _canonicalise_labels(data, labels)
    if error is not None:
        return ParseResult(None, "invalid", error, text)
    repairs = [*repairs, *label_repairs]
    if modalities is not None:
        data["modalities"] = list(modalities)
    try:
        # strict: JSON types must already be right; "0.8" or "true" are not coerced.
        report = Report.model_validate(data, strict=True)
    except ValidationError as err:
        return ParseResult(None, "invalid", _validation_message(err), text)
    status: ParseStatus = "repaired" if repairs else "valid"
    return ParseResult(report, status, None, text, tuple(repairs))
