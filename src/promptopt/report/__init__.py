"""HTML reports of run directories: one self-contained, offline ``report.html`` per run (inline SVG charts, no URL
to fetch when viewed). A layer above :mod:`promptopt.api` and :mod:`promptopt.compare`, below the command line:
:mod:`promptopt.report.svg` draws the charts, :mod:`promptopt.report.page` the HTML around them,
:mod:`promptopt.report.run_report` one run, :mod:`promptopt.report.compare_report` a ``promptopt compare`` directory
(all runs' curves on one plot).
"""

from __future__ import annotations

from promptopt.report.compare_report import write_compare_report
from promptopt.report.run_report import REPORT_FILE, read_run, render_run, write_run_report

__all__ = ["REPORT_FILE", "read_run", "render_run", "write_compare_report", "write_run_report"]
