"""Find the report templates and render them (Jinja2, autoescape on, ``StrictUndefined``).

Templates only display: every number reaches them already formatted as a string. A wheel
ships the top-level ``templates/`` folder as ``auditor/_templates`` (hatchling
``force-include``); an editable / source checkout reads ``<repo>/templates`` directly.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from ..errors import AuditorError
from ..io import write_text

_MARKER = "report.html.j2"


def templates_dir() -> Path:
    """The folder holding ``report.html.j2``: ``auditor/_templates`` (wheel) or ``<repo>/templates``."""
    package = Path(__file__).resolve().parent.parent
    candidates = (package / "_templates", package.parent / "templates")
    for folder in candidates:
        if (folder / _MARKER).is_file():
            return folder
    raise AuditorError("The report templates are missing (looked in " + ", ".join(map(str, candidates))
                       + "): reinstall attention-auditor.")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def render_page(template: str, path: Path, **context: Any) -> Path:
    """Render ``template`` with ``context`` and write it to ``path`` atomically."""
    write_text(path, environment().get_template(template).render(**context))
    return path
