"""One exception base for every expected failure.

The CLI turns an :class:`AuditorError` into a one-paragraph message on stderr and the
error's ``exit_code``; anything else is a bug and keeps its traceback (exit 3).

Exit codes (pinned by tests): 0 pass, 1 thresholds failed, 2 usage / input error,
3 internal error.
"""

from __future__ import annotations

EXIT_PASS = 0
EXIT_THRESHOLDS_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class AuditorError(Exception):
    """An expected failure with a message that names the input and the fix."""

    exit_code: int = EXIT_USAGE


class UsageError(AuditorError):
    """Bad options or an impossible combination of them."""


class ModelNotFoundError(AuditorError):
    """An architecture name or factory that cannot be resolved."""


class CheckpointError(AuditorError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


class ImageError(AuditorError):
    """An image file that is missing, corrupt or unsupported."""


class AnnotationError(AuditorError):
    """Boxes, fixations, gaze maps or labels that are invalid for their image."""


class DataError(AuditorError):
    """A data set (manifest, folder, COCO file) that cannot be read."""


class NotApplicableError(AuditorError):
    """A method that does not apply to this model (the message says why)."""
