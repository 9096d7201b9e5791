"""Markdown tables of the report: Table 2 (emotion), Tables 3-5 (EER by emotion).

Numbers are percentages with two decimals, as the paper prints them. A cell
without a result is "—". Each builder returns markdown lines and the rows it
adds to ``results.csv`` (dicts over :data:`CSV_FIELDS`).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from ..emotion.spec import (PAPER_CITATION, PAPER_CORPORA, PAPER_SYSTEMS, PAPER_TABLE2, REFERENCE_SYSTEMS,
                            SYSTEM_NAMES, TRAIN_DATA, TRAIN_DATA_TAGS, is_system, system_spec)
from .collect import EmotionResult, SVResult

DASH = "—"
CSV_FIELDS = ("table", "corpus", "system", "train_data", "model", "backend", "enroll", "test", "fold", "stage",
              "metric", "value")


def pct(x: float | None, nd: int = 2) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return DASH
    return f"{100 * x:.{nd}f}"


def num(x: float | None, nd: int = 2) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(x):
        return DASH
    return f"{x:.{nd}f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> list[str]:
    """Markdown table lines; ``align`` one char per column ('l' or 'r')."""
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else ":---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out


def system_order(results: Mapping[tuple[str, str], EmotionResult]) -> list[str]:
    """The paper's six systems, then any extra system found, sorted, then the two references."""
    extra = sorted({s for s, _ in results} - set(SYSTEM_NAMES))
    return list(PAPER_SYSTEMS) + extra + list(REFERENCE_SYSTEMS)


def reference_comparison(corpus: str, results: Mapping[tuple[str, str], EmotionResult]) -> str | None:
    """One sentence: per training data, how many non-reference systems beat the better
    reference on mean weighted F1, and by how much the best system is above (or below)
    it. None when the corpus has no reference or no other result."""
    refs = set(REFERENCE_SYSTEMS)
    parts = []
    for d, dlabel in TRAIN_DATA_TAGS:
        ref = [(r.mean("weighted_f1"), s) for (s, dd), r in results.items() if dd == d and s in refs]
        own = [(r.mean("weighted_f1"), s) for (s, dd), r in results.items() if dd == d and s not in refs]
        if not ref or not own:
            continue
        rv, rs = max(ref)
        bv, bs = max(own)
        n = sum(v > rv for v, _ in own)
        ref_name = f"{system_spec(rs).label}, {pct(rv)}"
        if n:
            parts.append(f"on {dlabel} data {n} of {len(own)} systems beat the better reference ({ref_name}), "
                         f"the best (`{bs}`, {pct(bv)}) by {100 * (bv - rv):.2f} points")
        else:
            parts.append(f"on {dlabel} data none of {len(own)} systems beats the better reference ({ref_name}): "
                         f"the best (`{bs}`, {pct(bv)}) is {100 * (rv - bv):.2f} points below it")
    if not parts:
        return None
    return f"**Against the references** (`{corpus}`, mean weighted F1 %): " + "; ".join(parts) + "."


def cell_f1(r: EmotionResult | None) -> str:
    """``mean ± std`` of weighted F1 over folds (just the value for one fold)."""
    if r is None:
        return DASH
    m = pct(r.mean("weighted_f1"))
    return f"{m} ± {pct(r.std('weighted_f1'))}" if r.n_folds > 1 else m


def cell_ua(r: EmotionResult | None) -> str:
    if r is None:
        return DASH
    m = pct(r.mean("unweighted_accuracy"))
    return f"{m} ± {pct(r.std('unweighted_accuracy'))}" if r.n_folds > 1 else m


def table2(corpora: Sequence[str], results: Mapping[str, Mapping[tuple[str, str], EmotionResult]]):
    """The Table 2 analogue: rows systems, per corpus and training data a weighted
    F1 column (mean ± std over folds) and an unweighted accuracy column.

    Returns (markdown lines, missing cells as (corpus, system, data) list, csv rows).
    """
    systems = []
    for c in corpora:
        for s in system_order(results.get(c, {})):
            if s not in systems:
                systems.append(s)
    header = ["system"]
    for c in corpora:
        for _, dlabel in TRAIN_DATA_TAGS:
            header += [f"{c} {dlabel}: wF1 %", "UA %"]
    rows, missing, csv_rows = [], [], []
    for s in systems:
        row = [(system_spec(s).report_label if is_system(s) else s) + f" (`{s}`)"]
        for c in corpora:
            for d, dlabel in TRAIN_DATA_TAGS:
                r = results.get(c, {}).get((s, d))
                row += [cell_f1(r), cell_ua(r)]
                if r is None:
                    missing.append((c, s, dlabel))
                    continue
                for key in ("weighted_f1", "unweighted_accuracy"):
                    for stat, v in (("mean", r.mean(key)), ("std", r.std(key))):
                        csv_rows.append(dict(table="table2", corpus=c, system=s, train_data=dlabel,
                                             metric=f"{stat}_{key}", value=f"{v:.6f}"))
                csv_rows.append(dict(table="table2", corpus=c, system=s, train_data=dlabel,
                                     metric="n_folds", value=str(r.n_folds)))
        rows.append(row)
    return md_table(header, rows), missing, csv_rows


def cross_corpus_table(cross: Sequence, within: Mapping[tuple[str, str], EmotionResult]):
    """Trained on A, tested on B: per system and training data the within-corpus
    weighted F1 (A's folds, mean) beside the final model's on B, plain and with
    B's back-end inputs standardised on B's own statistics (LR systems).

    Returns (markdown lines, csv rows)."""
    rows, csv_rows = [], []
    dlabels = dict(TRAIN_DATA_TAGS)
    order = {s: i for i, s in enumerate(system_order(within))}
    for r in sorted(cross, key=lambda r: (r.target, order.get(r.system, len(order)), r.system, r.train_data)):
        w = within.get((r.system, r.train_data))
        m, st = r.metrics, r.standardised
        rows.append([f"`{r.system}`", dlabels.get(r.train_data, r.train_data), f"{r.source} → {r.target}",
                     cell_f1(w), pct(m["weighted_f1"]), pct(st["weighted_f1"]) if st else DASH,
                     pct(m["unweighted_accuracy"]), pct(st["unweighted_accuracy"]) if st else DASH,
                     str(m.get("n_test", ""))])
        for key, v in (("weighted_f1", m["weighted_f1"]), ("unweighted_accuracy", m["unweighted_accuracy"]),
                       ("accuracy", m.get("accuracy"))) + (
                ((("standardised_weighted_f1", st["weighted_f1"]),
                  ("standardised_unweighted_accuracy", st["unweighted_accuracy"])) if st else ())):
            if isinstance(v, (int, float)):
                csv_rows.append(dict(table="cross_corpus", corpus=f"{r.source}->{r.target}", system=r.system,
                                     train_data=dlabels.get(r.train_data, r.train_data), metric=key,
                                     value=f"{v:.6f}"))
    if not rows:
        return [], csv_rows
    return md_table(["system", "train data", "trained on → tested on", "within wF1 %", "cross wF1 %",
                     "standardised wF1 %", "cross UA %", "standardised UA %", "test utts"], rows,
                    "lllrrrrrr"), csv_rows


def per_fold_table(corpus: str, results: Mapping[tuple[str, str], EmotionResult]):
    """Weighted F1 (%) of every fold, one row per system x training data."""
    folds: list[str] = []
    for r in results.values():
        for f in r.folds:
            if f not in folds:
                folds.append(f)

    def nat(f):
        digits = "".join(ch for ch in f if ch.isdigit())
        return (int(digits) if digits else 0, f)

    folds.sort(key=nat)
    rows, csv_rows = [], []
    for s in system_order(results):
        for d, dlabel in TRAIN_DATA_TAGS:
            r = results.get((s, d))
            if r is None:
                continue
            row = [f"`{s}`", dlabel]
            for f in folds:
                m = r.folds.get(f)
                row.append(pct(m["weighted_f1"]) if m else DASH)
                if m:
                    for key in ("weighted_f1", "unweighted_accuracy", "accuracy"):
                        if isinstance(m.get(key), (int, float)):
                            csv_rows.append(dict(table="fold", corpus=corpus, system=s, train_data=dlabel,
                                                 fold=f, metric=key, value=f"{m[key]:.6f}"))
            row.append(str(sum(int(m.get("n_test", 0)) for m in r.folds.values())))
            rows.append(row)
    if not rows:
        return [], csv_rows
    return md_table(["system", "train data"] + folds + ["test utts"], rows, "ll" + "r" * (len(folds) + 1)), csv_rows


def paper_table2() -> list[str]:
    header = ["system"] + [f"{name} {d}" for _, name in PAPER_CORPORA for d in TRAIN_DATA]
    rows = []
    for s in PAPER_SYSTEMS:
        row = [system_spec(s).label]
        for c, _ in PAPER_CORPORA:
            row += [f"{v:.2f}" for v in PAPER_TABLE2[s][c]]
        rows.append(row)
    return md_table(header, rows) + ["", f"Weighted F1 (%), from {PAPER_CITATION}."]


def eer_table(r: SVResult) -> tuple[list[str], list[dict]]:
    """One Tables 3-5 analogue: EER (%) rows enrolment, columns test emotion, then
    the same-emotion and cross-emotion means and the worst pair."""
    rows = []
    csv_rows = []
    for i, e in enumerate(r.emotions):
        rows.append([f"**{e}**"] + [num(r.eer[i, j]) for j in range(len(r.emotions))])
        for j, t in enumerate(r.emotions):
            if np.isfinite(r.eer[i, j]):
                csv_rows.append(dict(table="eer_by_emotion", corpus=r.corpus, model=r.model, backend=r.backend,
                                     enroll=e, test=t, metric="eer", value=f"{r.eer[i, j]:.4f}"))
                if np.isfinite(r.min_dcf[i, j]):
                    csv_rows.append(dict(table="eer_by_emotion", corpus=r.corpus, model=r.model,
                                         backend=r.backend, enroll=e, test=t, metric="min_dcf_0.01",
                                         value=f"{r.min_dcf[i, j]:.4f}"))
    lines = md_table(["enrolment \\ test"] + list(r.emotions), rows)
    worst = r.extreme(None, worst=True)
    worst_x = r.extreme(False, worst=True)
    best_s = r.extreme(True, worst=False)
    desc = [f"same-emotion mean EER {num(r.same_mean())} %, cross-emotion mean EER {num(r.cross_mean())} %"]
    if worst:
        desc.append(f"worst pair: {worst[0]} vs {worst[1]} ({num(worst[2])} %)")
    if worst_x and worst_x != worst:
        desc.append(f"worst cross-emotion pair: {worst_x[0]} vs {worst_x[1]} ({num(worst_x[2])} %)")
    if best_s:
        desc.append(f"best same-emotion pair: {best_s[0]} vs {best_s[1]} ({num(best_s[2])} %)")
    lines += ["", "; ".join(desc) + "."]
    for metric, v in (("same_emotion_mean_eer", r.same_mean()), ("cross_emotion_mean_eer", r.cross_mean())):
        if math.isfinite(v):
            csv_rows.append(dict(table="sv_summary", corpus=r.corpus, model=r.model, backend=r.backend,
                                 metric=metric, value=f"{v:.4f}"))
    return lines, csv_rows


def sv_summary_table(results: Sequence[SVResult]) -> tuple[list[str], list[dict]]:
    """One line per model x back-end: pooled EER/minDCF (summary.json), same- and
    cross-emotion means, the penalty (cross - same), the cross/same ratio of the
    pooled trials, Cllr of calibrated back-ends and the worst pair."""
    rows, csv_rows = [], []
    for r in results:
        s = r.summary or {}
        worst = r.extreme(None, worst=True)
        gap = r.cross_mean() - r.same_mean()
        ps, pc = s.get("same_emotion_pooled_eer"), s.get("cross_emotion_pooled_eer")
        ratio = pc / ps if isinstance(ps, (int, float)) and isinstance(pc, (int, float)) and ps > 0 else None
        rows.append([f"ResNet-{r.model}", r.backend, num(s.get("eer")), num(s.get("min_dcf_0.01"), 3),
                     num(s.get("min_dcf_0.001"), 3), num(r.same_mean()), num(r.cross_mean()), num(gap),
                     num(ratio) if ratio is not None else DASH,
                     num(s.get("cllr"), 3) if isinstance(s.get("cllr"), (int, float)) else DASH,
                     f"{worst[0]} vs {worst[1]} ({num(worst[2])})" if worst else DASH,
                     str(int(s["n_target"])) if isinstance(s.get("n_target"), (int, float)) else DASH,
                     str(int(s["n_nontarget"])) if isinstance(s.get("n_nontarget"), (int, float)) else DASH])
        for key in ("eer", "min_dcf_0.01", "min_dcf_0.001", "n_target", "n_nontarget", "same_emotion_pooled_eer",
                    "cross_emotion_pooled_eer", "cllr", "min_cllr", "act_dcf_0.01"):
            if isinstance(s.get(key), (int, float)):
                csv_rows.append(dict(table="sv_summary", corpus=r.corpus, model=r.model, backend=r.backend,
                                     metric=key, value=f"{s[key]:.6g}"))
    header = ["x-vector", "back-end", "EER %", "minDCF 0.01", "minDCF 0.001", "same-emo EER %",
              "cross-emo EER %", "cross − same", "cross / same (pooled)", "Cllr", "worst pair (EER %)",
              "target trials", "non-target trials"]
    return (md_table(header, rows, "ll" + "r" * 8 + "lrr") if rows else []), csv_rows


def sv_calibration_lines(results: Sequence[SVResult]) -> list[str]:
    """A sentence per calibrated back-end: Cllr, min Cllr, actual vs minimum DCF (summary.json)."""
    out = []
    for r in results:
        s = r.summary or {}
        if not all(isinstance(s.get(k), (int, float)) for k in ("cllr", "min_cllr", "act_dcf_0.01")):
            continue
        out.append(f"- ResNet-{r.model}, {r.backend}: Cllr {s['cllr']:.3f} bits (min Cllr {s['min_cllr']:.3f}; "
                   f"the difference is the calibration loss), actual DCF(0.01) {s['act_dcf_0.01']:.3f} against "
                   f"minDCF {num(s.get('min_dcf_0.01'), 3)}.")
    if out:
        out = ["Calibration (scores as log-likelihood ratios, calibrated on held-out training speakers):", ""] + out
    return out


def sv_protocol_lines(results: Sequence[SVResult], not_possible: Sequence = ()) -> list[str]:
    """What the per-fold protocol did beyond its rule: merged SV folds (summary.json ``protocol_notes``, each
    note once with the results it applies to), and per-fold back-ends a corpus could not give
    (``not_possible``: objects with model, backend, reason)."""
    seen: dict[str, list[str]] = {}
    for r in results:
        notes = (r.summary or {}).get("protocol_notes")
        for n in notes if isinstance(notes, list) else []:
            seen.setdefault(str(n).rstrip("."), []).append(f"ResNet-{r.model} {r.backend}")
    out = [f"- {n} ({', '.join(who)})." for n, who in seen.items()]
    for x in not_possible:
        out.append(f"- ResNet-{x.model}, {x.backend}: per-fold back-ends not possible: {x.reason.rstrip('.')}; "
                   "only the plain back-ends were scored.")
    if out:
        out = ["Per-fold protocol (stage 6):", ""] + out
    return out
