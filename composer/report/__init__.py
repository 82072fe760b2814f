"""Search reports: a self-contained HTML page and PNG figures for a run directory."""

from composer.report.html import build_report

__all__ = ["build_report"]
