"""attention-auditor: audit where vision models look."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "visualize"]


def __getattr__(name: str):  # lazy: `import auditor` stays cheap (no torch) for the CLI's --help
    if name == "visualize":
        from .visualize import visualize

        return visualize
    raise AttributeError(f"module 'auditor' has no attribute {name!r}")
