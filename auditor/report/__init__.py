"""HTML audit reports and two-model comparisons, rendered from saved results (never a model).

>>> from auditor.report import render_report
>>> render_report("audit/results.json")            # -> audit/report.html

Comparisons are computed (and gated) by :mod:`auditor.compare`; :func:`render_comparison` draws them.
"""

from .build import PAGE_SIZE, render_report
from .compare import render_comparison
from .templating import templates_dir

__all__ = ["PAGE_SIZE", "render_comparison", "render_report", "templates_dir"]
