"""Purr-Sight: read a cat's emotional state from images and sounds."""

__version__ = "0.1.0"
