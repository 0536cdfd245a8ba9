"""Errors the toolkit raises for bad input: one line, naming the file or value and what was expected."""

from __future__ import annotations

__all__ = ["NeuralImagingError", "InputError"]


class NeuralImagingError(Exception):
    """Base class of every error the toolkit reports to its users.

    The CLI prints ``str(error)`` as a single line and exits with a non-zero code.
    """


class InputError(NeuralImagingError, ValueError):
    """A file or value that is not what was expected (wrong format, range, shape, ...)."""
