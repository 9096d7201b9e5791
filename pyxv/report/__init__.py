"""The recipe's report: Table 2 and Tables 3-5 analogues, what was run, pictures.

    from pyxv.report import build_report
    build_report("exp", "exp/RESULTS.md", corpus="demo")

The builder is imported on first use, so drawing with :mod:`pyxv.report.plots`
(stage 6's DET figure) does not load the report's readers of every stage.
"""
__all__ = ["ReportBuilder", "build_report"]


def __getattr__(name: str):
    if name in __all__:
        from . import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'pyxv.report' has no attribute '{name}'")
