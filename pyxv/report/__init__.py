"""The recipe's report: Table 2 and Tables 3-5 analogues, what was run, pictures.

    from pyxv.report import build_report
    build_report("exp", "exp/RESULTS.md", corpus="demo")
"""
from .builder import ReportBuilder, build_report

__all__ = ["ReportBuilder", "build_report"]
