"""Build ``exp/RESULTS.md``, ``exp/results.csv`` and the pictures under ``exp/report/``.

    build_report("exp", "exp/RESULTS.md", corpus="demo")

Reads only the files the stages wrote (see :mod:`pyxv.report.collect`); a
missing result becomes "—" with a note, never an error.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import time
from pathlib import Path
import numpy as np

from ..emotion.spec import TRAIN_DATA_TAGS
from ..io import atomic_open
from . import collect as C
from . import tables as T

REPORT_DIR = "report"


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()


def _img(lines: list[str], path: Path | None, md_dir: Path, alt: str):
    if path is not None and Path(path).is_file():
        lines += [f"![{alt}]({_rel(path, md_dir)})", ""]


def _fmt_secs(s: float) -> str:
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s:.0f} s ({s / 60:.1f} min)"


class ReportBuilder:
    """Gathers results and writes the report. ``plots=False`` skips the pictures
    (for quick checks); ``projection`` is ``pca`` or ``tsne``."""

    def __init__(self, exp: str | os.PathLike, out_md: str | os.PathLike, corpus: str | None = None,
                 data: str | os.PathLike | None = None, plots: bool = True, projection: str = "pca",
                 max_points: int = 3000, repo: str | os.PathLike | None = None):
        self.exp = Path(exp)
        self.out_md = Path(out_md)
        self.md_dir = self.out_md.parent
        self.fig_dir = self.md_dir / REPORT_DIR
        self.data = Path(data) if data is not None else self.exp.resolve().parent / "data"
        self.repo = Path(repo) if repo is not None else self.exp.resolve().parent
        self.plots = plots
        self.projection_method = projection
        self.max_points = max_points
        self.notes = C.Notes()
        found = C.emotion_corpora(self.exp) + C.sv_corpora(self.exp)
        self.corpora: list[str] = [corpus] if corpus else []
        for c in sorted(set(found)):
            if c not in self.corpora:
                self.corpora.append(c)
        self.csv_rows: list[dict] = []
        self.figures: list[Path] = []

    # ---------------------------------------------------------------- helpers
    def _figure(self, fn, *args, name: str, **kw) -> Path | None:
        if not self.plots:
            return None
        path = self.fig_dir / name
        try:
            fn(*args, path, **kw)
        except Exception as e:  # a picture never stops the report
            self.notes.add(f"picture {name} failed: {type(e).__name__}: {e}")
            return None
        self.figures.append(path)
        return path

    # -------------------------------------------------------------- sections
    def section_run(self, emo: dict) -> list[str]:
        L = ["## What was run", ""]
        L.append(f"- Git revision: `{C.git_revision(self.repo)}`")
        L.append(f"- Report written: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}")
        synthetic_any = False
        for c in self.corpora:
            info = C.data_info(self.data / c / "all")
            synthetic = c == "demo" or C.is_synthetic_demo(info)
            synthetic_any |= synthetic
            what = " — **synthetic demo voices (espeak-ng)**, not real emotional speech" if synthetic else ""
            if info is None:
                L.append(f"- Emotion corpus `{c}`{what}: data dir {self.data / c / 'all'} not found")
            else:
                hours = f", {info.hours:.2f} h" if info.hours is not None else ""
                emos = ", ".join(f"{e} {n}" for e, n in info.emotions.items()) or "no utt2emo"
                L.append(f"- Emotion corpus `{c}`{what}: {info.n_utts} utterances, {info.n_spk} speakers"
                         f"{hours}; classes: {emos}")
            prot = C.protocol_info(self.data / c)
            if prot:
                kind = "fixed train/dev/test split" if prot[0][0] == "split" else \
                    f"{len(prot)} speaker-independent folds"
                L.append(f"  - Protocol: {kind}")
                rows = []
                for fold, subsets in prot:
                    test = subsets.get("test")
                    spk = sorted(C.read_kv(test.path / "utt2spk").values()) if test else []
                    spk = sorted(set(spk))
                    rows.append([fold] + [str(subsets[s].n_utts) if subsets.get(s) else T.DASH
                                          for s in ("train", "dev", "test")]
                                 + [", ".join(spk[:8]) + (" …" if len(spk) > 8 else "")])
                L += [""] + ["  " + x for x in T.md_table(["fold", "train", "dev", "test", "test speakers"],
                                                          rows, "lrrrl")] + [""]
            elif info is not None:
                L.append("  - Protocol: no fold*/ or train/test subsets found")
        pre = C.data_info(self.data / "pretrain" / "train")
        if pre is None:
            L.append(f"- Pre-training data: {self.data / 'pretrain' / 'train'} not found")
        else:
            synth = C.is_synthetic_demo(pre) or (synthetic_any and "demo" in self.corpora
                                                 and self.corpora[0] == "demo")
            what = "**synthetic demo voices (espeak-ng)**" if synth else "real speech"
            hours = f", {pre.hours:.2f} h" if pre.hours is not None else ""
            L.append(f"- Pre-training data (`data/pretrain/train`): {what}; {pre.n_spk} speakers, "
                     f"{pre.n_utts} utterances{hours}")
            aug = C.data_info(self.data / "pretrain" / "train_aug")
            if aug is not None:
                L.append(f"  - augmented copies (`train_aug`, for ResNet-aug): {aug.n_utts} utterances")
        infos = {m: C.xvector_model_info(self.exp / f"xvector_{m}", self.notes) for m in ("clean", "aug")}
        for m, text in infos.items():
            if text:
                L.append(f"- x-vector model {m} (`exp/xvector_{m}`, the ResNet-{m} rows): {text}")
        if any(t and "imported" in t for t in infos.values()):
            L.append("  - With an imported speaker encoder the paper's rows map as: ResNet-clean = the encoder as "
                     "published; ResNet-aug = the encoder adapted on the clean+augmented pre-training data. "
                     "Random-init rows keep the ResNet architecture.")
        if synthetic_any:
            L.append("- **Note:** on the synthetic demo corpus the numbers show that every stage runs end "
                     "to end; they say nothing about the paper's findings.")
        cfgs = C.find_configs(self.exp)
        if cfgs:
            L.append("- Configs kept with the results: " + ", ".join(
                f"[{_rel(p, self.exp)}]({_rel(p, self.md_dir)})" for p in cfgs))
        else:
            L.append("- Configs kept with the results: none found under exp/")
        conf = self.repo / "conf"
        if conf.is_dir():
            files = sorted(p for p in conf.iterdir() if p.is_file() and p.suffix in (".conf", ".yaml", ".yml"))
            if files:
                L.append("- Recipe configs (conf/): " + ", ".join(
                    f"[{p.name}]({_rel(p, self.md_dir)})" for p in files))
        L.append("")
        L += self.section_times()
        return L

    def section_times(self) -> list[str]:
        times = C.read_stage_times(self.exp, self.notes)
        L = ["### Wall time per stage", ""]
        if not times:
            return L + ["No `exp/stage_times` (run.sh writes it as stages finish).", ""]
        by_stage: dict[str, list[float]] = {}
        for s, t in times:
            by_stage.setdefault(s, []).append(t)
        rows = []
        for s in sorted(by_stage, key=lambda s: (int(s) if s.isdigit() else 99, s)):
            ts = by_stage[s]
            rows.append([s, C.STAGE_NAMES.get(s, ""), _fmt_secs(ts[-1]),
                         ", ".join(f"{t:.0f}" for t in ts)])
            self.csv_rows.append(dict(table="stage_time", stage=s, metric="seconds_last", value=f"{ts[-1]:.0f}"))
        first_total = sum(v[0] for v in by_stage.values())
        L += T.md_table(["stage", "what", "last run", "every run (s, in order)"], rows, "llrl")
        L += ["", f"Sum of the first run of each stage: {_fmt_secs(first_total)}; "
                  f"of the last run of each: {_fmt_secs(sum(v[-1] for v in by_stage.values()))} "
                  "(the report stage records its own time after this file is written).", ""]
        return L

    def section_emotion(self, emo: dict) -> list[str]:
        L = ["## Emotion recognition (Table 2 analogue)", "",
             "Weighted F1 (%, the paper's metric) and unweighted accuracy (UA, mean per-class recall, %), "
             "mean ± std over folds (population std) where the protocol has folds; "
             "`clean+aug` trains on the clean utterances plus their augmented copies. "
             "The two *Reference* rows (eGeMAPS functionals + LR, MFCC mean/std over voiced frames + LR) "
             "ran in the same run on the same folds with the frozen systems' LR.", ""]
        corpora = [c for c in self.corpora if emo.get(c)] or self.corpora[:1]
        lines, missing, rows = T.table2(corpora, emo)
        self.csv_rows += rows
        L += lines + [""]
        for c in corpora:
            sentence = T.reference_comparison(c, emo.get(c, {}))
            if sentence:
                L += [sentence, ""]
        if missing:
            cells = f"{len(missing)} cell" + ("s" if len(missing) > 1 else "")
            L.append(f"— : not run or no results found ({cells}): " + "; ".join(
                f"`exp/emotion/{c}/{s}_{d.replace('+', '_')}`" for c, s, d in missing) + ".")
            L.append("")
        for c in corpora:
            res = emo.get(c, {})
            if not res:
                continue
            pf, rows = T.per_fold_table(c, res)
            self.csv_rows += rows
            if pf and any(r.n_folds > 1 for r in res.values()):
                L += [f"### Weighted F1 (%) per fold, {c}", ""] + pf + [""]
            panels = []
            for s in T.system_order(res):
                for d, dlabel in TRAIN_DATA_TAGS:
                    r = res.get((s, d))
                    cm = r.confusion() if r else None
                    if cm is not None:
                        panels.append((f"{s}\n{dlabel} (wF1 {T.pct(r.mean('weighted_f1'), 1)})", cm[0], cm[1]))
            if panels:
                p = self._figure(_plots().confusion_grid, panels, name=f"confusion_{c}.png",
                                 suptitle=f"{c}: confusion (row %, all folds pooled)")
                if p is not None:
                    L += [f"### Confusion matrices, {c} (recall %, rows true class, all folds pooled)", ""]
                    _img(L, p, self.md_dir, f"confusion matrices {c}")
        for c in corpora:
            lines, rows = T.cross_corpus_table(C.read_cross_results(self.exp, c, self.notes), emo.get(c, {}))
            if lines:
                self.csv_rows += rows
                L += [f"### Cross-corpus: trained on {c}, tested on another corpus", "",
                      "Each system's final model (trained once on all labelled data of the source corpus) "
                      "scored on a target corpus (steps/eval_emotion.sh, run.sh --cross-corpus), beside the "
                      "within-corpus figure of the folds above. *Standardised*: the target's back-end inputs "
                      "(x-vectors, reference vectors) standardised on the target's own mean and std (no labels) "
                      "and put on the training inputs' scale; LR systems only (— for the networks). Decisions "
                      "are among the classes the target has.", ""] + lines + [""]
        L += ["### The paper's Table 2, for reference", ""] + T.paper_table2() + [""]
        return L

    def section_sv(self, sv: dict) -> list[str]:
        L = ["## Speaker verification by emotion (Tables 3-5 analogue)", "",
             "Every utterance against every other of the same gender; EER (%) by enrolment emotion (rows) "
             "and test emotion (columns). Same-emotion mean = mean of the diagonal, cross-emotion mean = "
             "mean of the off-diagonal cells. Back-ends named `*_folds` follow the per-fold protocol: each "
             "fold's back-end (and, for `compensated_folds`, its emotion projection, per-emotion S-norm "
             "cohorts and calibration; conf/sv_emotion.yaml) is learned from the fold's training speakers "
             "only, trials are all same-gender pairs of its test speakers, and the folds are pooled; "
             "cross / same is the ratio of the pooled cross- and same-emotion trials' EERs.", ""]
        any_sv = False
        for c in self.corpora:
            res = sv.get(c, [])
            skipped = C.read_sv_not_possible(self.exp, c, self.notes)
            if not res:
                L += [f"### {c}", "", f"— : no speaker-verification results under exp/sv/{c}/"
                      + (" (stage 6 not run)." if not skipped else "."), ""]
                if skipped:
                    L += T.sv_protocol_lines(res, skipped) + [""]
                continue
            any_sv = True
            L += [f"### {c}", ""]
            lines, rows = T.sv_summary_table(res)
            self.csv_rows += rows
            L += lines + [""]
            cal = T.sv_calibration_lines(res)
            if cal:
                L += cal + [""]
            prot = T.sv_protocol_lines(res, skipped)
            if prot:
                L += prot + [""]
            for r in res:
                lines, rows = T.eer_table(r)
                self.csv_rows += rows
                L += [f"#### {c}: ResNet-{r.model}, {r.backend} back-end (EER %)", ""] + lines + [""]
            dets = [(r, r.path / "det.png") for r in res if (r.path / "det.png").is_file()]
            if dets:
                L += ["DET curves (stage 6): " + ", ".join(
                    f"[ResNet-{r.model} {r.backend}]({_rel(p, self.md_dir)})" for r, p in dets) + ".", ""]
            panels = [(f"ResNet-{r.model}, {r.backend}", r.emotions, r.eer) for r in res]
            p = self._figure(_plots().eer_heatmaps, panels, name=f"eer_{c}.png",
                             suptitle=f"{c}: EER (%) by enrolment x test emotion")
            _img(L, p, self.md_dir, f"EER heat maps {c}")
        if not any_sv:
            L.append("")
        return L

    def section_pictures(self) -> list[str]:
        L = ["## Data and models", ""]
        series = []
        for c in self.corpora:
            d = C.read_utt2dur(self.data / c / "all" / "utt2dur", self.notes)
            if d is not None and len(d):
                series.append((f"{c} (all)", d))
        d = C.read_utt2dur(self.data / "pretrain" / "train" / "utt2dur", self.notes)
        if d is not None and len(d):
            series.append(("pre-training (pretrain/train)", d))
        L += ["### Utterance durations (the paper's Fig. 1)", ""]
        if series:
            p = self._figure(_plots().duration_histograms, series, name="durations.png")
            _img(L, p, self.md_dir, "utterance duration histograms")
            L += T.md_table(["data", "utterances", "median s", "mean s", "min s", "max s"],
                            [[t, str(len(x)), T.num(float(np.median(x))), T.num(float(x.mean())),
                              T.num(float(x.min())), T.num(float(x.max()))] for t, x in series]) + [""]
        else:
            L += ["— : no utt2dur files found.", ""]
        hist = C.read_histories(self.exp, self.notes)
        L += ["### x-vector training curves", ""]
        if hist:
            p = self._figure(_plots().training_curves, hist, name="training_curves.png")
            _img(L, p, self.md_dir, "x-vector training curves")
            rows = []
            for m, h in hist.items():
                last = h[-1]
                rows.append([f"ResNet-{m}", str(len(h))] + [
                    T.num(last.get(k), 3) if "loss" in k else T.pct(last.get(k), 1)
                    for k in ("train_loss", "train_acc", "valid_loss", "valid_acc")])
            L += T.md_table(["model", "epochs", "train loss", "train acc %", "valid loss", "valid acc %"],
                            rows) + [""]
        else:
            L += ["— : no exp/xvector_*/log/history.json found.", ""]
        L += ["### x-vectors in 2-D", ""]
        n = 0
        for c in self.corpora:
            for scp in sorted(self.exp.glob(f"xvector_*/xvectors_{c}/all/xvector.scp"),
                              key=lambda p: C._model_key(p.parts[-4][8:])):
                model = scp.parts[-4][len("xvector_"):]
                p = self._projection(c, model, scp)
                if p is not None:
                    n += 1
                    L.append(f"ResNet-{model} x-vectors of `{c}` (all utterances"
                             f"{', up to ' + str(self.max_points) if self.max_points else ''}):")
                    L.append("")
                    _img(L, p, self.md_dir, f"x-vector projection {c} {model}")
        if n == 0:
            L += ["— : no x-vectors found (exp/xvector_*/xvectors_<corpus>/all/xvector.scp).", ""]
        return L

    def _projection(self, corpus: str, model: str, scp: Path) -> Path | None:
        if not self.plots:
            return None
        import kaldiio

        u2e = C.read_kv(self.data / corpus / "all" / "utt2emo")
        u2s = C.read_kv(self.data / corpus / "all" / "utt2spk")
        try:
            table = kaldiio.load_scp(str(scp))
            utts = [u for u in table.keys() if u in u2e and u in u2s]
            if len(utts) < 3:
                self.notes.add(f"{scp}: fewer than 3 x-vectors with emotion and speaker labels; no projection")
                return None
            if self.max_points and len(utts) > self.max_points:
                rng = np.random.default_rng(0)
                utts = sorted(rng.choice(utts, self.max_points, replace=False).tolist())
            X = np.stack([np.asarray(table[u], dtype=np.float64).reshape(-1) for u in utts])
        except Exception as e:
            self.notes.add(f"{scp}: cannot read x-vectors ({type(e).__name__}: {e}); no projection")
            return None
        P = _plots()
        try:
            Y = P.project_2d(X, self.projection_method)
        except Exception as e:
            self.notes.add(f"{scp}: projection failed ({e})")
            return None
        return self._figure(P.projection, Y, [u2e[u] for u in utts], [u2s[u] for u in utts],
                            name=f"xvectors_{corpus}_{model}.png", title=f"{corpus}, ResNet-{model}",
                            method=self.projection_method)

    # ------------------------------------------------------------------ main
    def build(self) -> Path:
        t0 = time.time()
        emo = {c: C.read_emotion_results(self.exp, c, self.notes) for c in self.corpora}
        sv = {c: C.read_sv_results(self.exp, c, self.notes) for c in self.corpora}
        if self.plots:
            self.fig_dir.mkdir(parents=True, exist_ok=True)
        title = ", ".join(self.corpora) if self.corpora else "no corpus"
        L = [f"# pyxv results: {title}", "",
             "X-vectors reused for speech emotion recognition, and speaker verification by emotion "
             "(a re-implementation of Pappagari et al., ICASSP 2020). Written by `local/make_report.py` "
             "from the files under `exp/`; the same numbers are in [results.csv](results.csv).", ""]
        body = self.section_emotion(emo) + self.section_sv(sv) + self.section_run(emo) + self.section_pictures()
        L += body
        if self.notes:
            L += ["## Notes from the report builder", ""] + [f"- {n}" for n in self.notes] + [""]
        L.append(f"_Report built in {time.time() - t0:.1f} s._")
        self._write_csv(self.md_dir / "results.csv")
        with atomic_open(self.out_md, "w", encoding="utf-8") as f:
            f.write("\n".join(L) + "\n")
        _readable(self.out_md)
        return self.out_md

    def _write_csv(self, path: Path) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=T.CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for r in self.csv_rows:
            w.writerow({k: r.get(k, "") for k in T.CSV_FIELDS})
        with atomic_open(path, "w", encoding="utf-8") as f:
            f.write(buf.getvalue())
        _readable(path)


def _readable(path: Path) -> None:
    """Temporary files are created 0600; a report is for everyone to read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _plots():
    # matplotlib is imported only when a picture is drawn.
    from . import plots

    return plots


def build_report(exp: str | os.PathLike, out_md: str | os.PathLike, corpus: str | None = None,
                 **kw) -> Path:
    """Write the markdown report, results.csv beside it and PNGs under report/."""
    return ReportBuilder(exp, out_md, corpus=corpus, **kw).build()
