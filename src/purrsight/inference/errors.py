"""Errors of the inference package, importable without torch (the CLI catches them)."""

from __future__ import annotations


class BundleError(ValueError):
    """A bundle that cannot be used, and why (one line naming the file or key)."""


class InputError(ValueError):
    """A request the model cannot answer (no media, a modality it was not trained on,
    text over the limit): the caller's to fix, an HTTP 422."""
