"""HTML audit reports and two-model comparisons, rendered from saved results (never a model).

>>> from auditor.report import render_report
>>> render_report("audit/results.json")            # -> audit/report.html
>>> from auditor.report import compare_results
>>> compare_results("a/results.json", "b/results.json", out="cmp/", max_drop=["gradcam.pointing_game=0.05"])
"""

from .build import PAGE_SIZE, render_report
from .compare import compare_models, compare_results
from .templating import templates_dir

__all__ = ["PAGE_SIZE", "compare_models", "compare_results", "render_report", "templates_dir"]
