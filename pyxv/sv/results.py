"""A scored table written out: eer_by_emotion.csv / .md, summary.json and the DET figure (stage 6's outputs).

The DET figure's curves (all trials, the same- and cross-emotion pools, each same-emotion cell) are
computed here and drawn by :func:`pyxv.report.plots.det_curves`, imported only when a figure is
drawn, so scoring alone does not need matplotlib.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..io import atomic_open
from .cells import CellTable, table_summary
from ..metrics.sv import det_curve_sorted

__all__ = ["write_results"]


def _fmt(x, nd=2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def write_results(out_dir: str | os.PathLike, table: CellTable, meta: dict, *, det: bool = True,
                  calibration: bool = False) -> dict:
    """eer_by_emotion.csv / .md, summary.json and det.png in out_dir; returns the summary dict.

    ``calibration``: the scores are LLRs; Cllr, min Cllr and actual DCF(0.01) are added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summ = table_summary(table, calibration=calibration)
    who = f"{meta.get('corpus', '?')}, x-vector {meta.get('model', '?')}, back-end {meta.get('backend', '?')}"
    with atomic_open(out / "eer_by_emotion.csv") as f:
        f.write(_csv(table.emotions, summ["cells"]))
    with atomic_open(out / "eer_by_emotion.md") as f:
        f.write("\n".join(_markdown(table, summ, meta, who, calibration)) + "\n")
    summary = _summary(table.emotions, summ, meta, calibration)
    with atomic_open(out / "summary.json") as f:
        json.dump(summary, f, indent=1)
    if det:
        from ..report.plots import det_curves

        det_curves(_det_curves(table), out / "det.png", title=who)
    return summary


def _det_curves(table: CellTable) -> list:
    """(label, false-alarm rates, miss rates, line options) of every curve that has points."""
    if "overall" in table.info:
        pools = [("all trials", table.info["overall"], dict(color="k", lw=2))]
    else:
        pools = [("all trials", table.pooled("all"), dict(color="k", lw=2)),
                 ("same emotion", table.pooled("same"), dict(color="tab:blue", lw=1.5)),
                 ("cross emotion", table.pooled("cross"), dict(color="tab:red", lw=1.5))]
    pools += [(f"{e}/{e}", table.cell(a, a), dict(lw=0.8, ls="--")) for a, e in enumerate(table.emotions)]
    curves = []
    for name, (tar, non), kw in pools:
        pfa, pmiss = det_curve_sorted(tar, non, max_points=1000)
        if pfa.size:
            curves.append((name, pfa, pmiss, kw))
    return curves


def _csv(emos: list[str], M: dict) -> str:
    """eer_by_emotion.csv: one line per (enrolment, test) cell."""
    lines = ["enroll,test,eer,min_dcf_0.01,min_dcf_0.001,n_target,n_nontarget\n"]
    for a, ea in enumerate(emos):
        for b, eb in enumerate(emos):
            m = M[(a, b)]
            lines.append(f"{ea},{eb},{_fmt(m.eer, 4)},{_fmt(m.min_dcf_0_01, 4)},"
                         f"{_fmt(m.min_dcf_0_001, 4)},{m.n_target},{m.n_nontarget}\n")
    return "".join(lines)


def _markdown(table: CellTable, summ: dict, meta: dict, who: str, calibration: bool) -> list[str]:
    """eer_by_emotion.md's lines: the grids laid out like the paper's Tables 3-5, the overall figures, notes."""
    M, ov = summ["cells"], summ["overall"]
    emos = table.emotions
    E = len(emos)
    undefined = [(emos[a], emos[b]) for a in range(E) for b in range(E) if math.isnan(M[(a, b)].eer)]
    cap = [e.capitalize() for e in emos]

    def grid(title, fn):
        lines = [f"**{title}**", "", "| Enroll \\ Test | " + " | ".join(cap) + " |",
                 "|---|" + "---:|" * E]
        for a in range(E):
            lines.append(f"| {cap[a]} | " + " | ".join(fn(M[(a, b)]) for b in range(E)) + " |")
        return lines + [""]

    md = [f"# Speaker verification by emotion ({who})", ""]
    md += grid("EER (%)", lambda m: _fmt(m.eer))
    md += grid("minDCF (p_target = 0.01)", lambda m: _fmt(m.min_dcf_0_01, 3))
    md += grid("minDCF (p_target = 0.001)", lambda m: _fmt(m.min_dcf_0_001, 3))
    md += grid("Trials (target / nontarget)", lambda m: f"{m.n_target} / {m.n_nontarget}")
    md += ["| | EER (%) | minDCF 0.01 | minDCF 0.001 | target trials | nontarget trials |",
           "|---|---:|---:|---:|---:|---:|",
           f"| all trials | {_fmt(ov.eer)} | {_fmt(ov.min_dcf_0_01, 3)} | {_fmt(ov.min_dcf_0_001, 3)} "
           f"| {ov.n_target} | {ov.n_nontarget} |", "",
           f"Mean EER of same-emotion cells: {_fmt(summ['same_emotion_mean_eer'])} %; "
           f"of cross-emotion cells: {_fmt(summ['cross_emotion_mean_eer'])} %."
           + (f" EER of the pooled same-emotion trials: {_fmt(summ['same_emotion_pooled_eer'])} %; "
              f"of the pooled cross-emotion trials: {_fmt(summ['cross_emotion_pooled_eer'])} %."
              if table.symmetric else ""), ""]
    if calibration:
        c = summ["calibration"]
        md += ["Calibration (scores are log-likelihood ratios; all trials): "
               f"Cllr {_fmt(c.cllr, 3)} bits, min Cllr {_fmt(c.min_cllr, 3)} bits, "
               f"actual DCF(0.01) {_fmt(c.act_dcf_0_01, 3)} (minDCF {_fmt(c.min_dcf_0_01, 3)}).", ""]
    md.append("Rows are the enrolment emotion, columns the test emotion. "
              + ("Trials are unordered same-gender pairs, so a pair with emotions (a, b) counts in both "
                 "cell (a, b) and cell (b, a) and the table is symmetric. " if table.symmetric else
                 "Trials come from a trials file. ")
              + "Empty cells have no target or no nontarget trials: EER is undefined there.")
    if undefined:
        md.append("")
        md.append("Undefined cells: " + ", ".join(f"{a}/{b}" for a, b in undefined) + ".")
    if meta.get("notes"):
        md += ["", "Notes:", ""] + [f"- {line}" for line in meta["notes"]]
    return md


def _summary(emos: list[str], summ: dict, meta: dict, calibration: bool) -> dict:
    """summary.json: the overall figures, the per-cell ones under "table", and the run's plain metadata."""
    M, ov = summ["cells"], summ["overall"]
    cal = summ["calibration"] if calibration else None
    return {**ov.as_dict(), "emotions": list(emos), "backend": meta.get("backend"), "model": meta.get("model"),
            "corpus": meta.get("corpus"), "same_emotion_mean_eer": json_number(summ["same_emotion_mean_eer"]),
            "cross_emotion_mean_eer": json_number(summ["cross_emotion_mean_eer"]),
            "same_emotion_pooled_eer": json_number(summ["same_emotion_pooled_eer"]),
            "cross_emotion_pooled_eer": json_number(summ["cross_emotion_pooled_eer"]),
            **({"cllr": json_number(cal.cllr), "min_cllr": json_number(cal.min_cllr),
                "act_dcf_0.01": json_number(cal.act_dcf_0_01)} if cal is not None else {}),
            "eer_threshold": json_number(ov.eer_threshold),
            "table": {f"{ea}/{eb}": M[(a, b)].as_dict() for a, ea in enumerate(emos) for b, eb in enumerate(emos)},
            **{k: v for k, v in meta.items() if k not in ("notes",) and _jsonable(v)}}


def json_number(x):
    """A figure for JSON: None for a missing or NaN one, else a plain float."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
