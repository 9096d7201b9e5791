"""Read what the recipe's stages left in ``exp/`` and ``data/`` for the report.

Every reader tolerates a missing piece: it returns ``None`` (or an empty
container) and the report shows "—" with a note. A file that exists but cannot
be parsed is reported by name through :class:`Notes` and treated as missing,
so one broken result never hides the others.

File contracts (see the common brief):

* ``exp/emotion/<corpus>/<system>_<data>/<fold>/metrics.json`` and
  ``.../summary.json`` (emotion systems; ``<data>`` is ``clean`` or ``clean_aug``);
* ``exp/emotion/<corpus>/cross/<target>/<system>_<data>/metrics.json`` (a system's final
  model scored on another corpus);
* ``exp/sv/<corpus>/xvector_<model>/<backend>/{eer_by_emotion.csv,summary.json}``, or for a
  per-fold back-end the corpus cannot give, ``not_possible.txt`` (the reason, one line);
* ``exp/xvector_<model>/log/history.json`` (list of per-epoch dicts);
* ``exp/stage_times`` (``<stage> <seconds>`` lines, appended by run.sh).
"""
from __future__ import annotations

import csv
import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..emotion.spec import split_system_dir_name
from ..labels import emotion_sort_key, order_emotions

STAGE_NAMES = {
    "0": "data directories", "1": "augmentation", "2": "features", "3": "x-vector training",
    "4": "x-vector extraction", "5": "emotion recognition", "6": "speaker verification by emotion",
    "7": "report",
}


class Notes(list):
    """Problems met while reading (shown at the end of the report, and on stderr)."""

    def add(self, msg: str) -> None:
        import sys

        print(f"make_report: {msg}", file=sys.stderr)
        self.append(msg)


def _read_json(path: Path, notes: Notes):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        notes.add(f"{path}: cannot read JSON ({e}); treated as missing")
        return None


# ------------------------------------------------------------------ emotion
@dataclass
class EmotionResult:
    """One system x training-data cell of Table 2 for one corpus.

    ``folds`` maps fold name -> metrics dict (the metrics.json contract); means and
    stds are over folds with the population std (ddof=0), as summary.json has them.
    ``pooled`` is the summary's pooled metrics (all folds' predictions), if any.
    """

    corpus: str
    system: str
    train_data: str            # directory suffix: clean | clean_aug
    path: Path
    folds: dict = field(default_factory=dict)
    pooled: dict | None = None

    def _vals(self, key: str) -> np.ndarray:
        return np.array([float(m[key]) for m in self.folds.values()], dtype=float)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    def mean(self, key: str) -> float:
        return float(self._vals(key).mean())

    def std(self, key: str) -> float:
        return float(self._vals(key).std())

    def confusion(self) -> tuple[list[str], np.ndarray] | None:
        """Pooled confusion (labels, counts): the summary's, else the folds' summed
        over the union of their labels."""
        if self.pooled and "confusion" in self.pooled and "labels" in self.pooled:
            return list(self.pooled["labels"]), np.asarray(self.pooled["confusion"], dtype=np.int64)
        labels: list[str] = []
        for m in self.folds.values():
            for lab in m.get("labels", []):
                if lab not in labels:
                    labels.append(lab)
        if not labels:
            return None
        idx = {lab: i for i, lab in enumerate(labels)}
        cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for m in self.folds.values():
            labs = m.get("labels", [])
            c = np.asarray(m.get("confusion", []), dtype=np.int64)
            if c.shape != (len(labs), len(labs)):
                continue
            for i, a in enumerate(labs):
                for j, b in enumerate(labs):
                    cm[idx[a], idx[b]] += c[i, j]
        return labels, cm


_METRIC_KEYS = ("weighted_f1", "unweighted_accuracy")


def _valid_metrics(m, path: Path, notes: Notes) -> bool:
    if not isinstance(m, dict):
        notes.add(f"{path}: not a metrics object; ignored")
        return False
    for k in _METRIC_KEYS:
        v = m.get(k)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            notes.add(f"{path}: '{k}' missing or not a number; fold ignored")
            return False
    return True


def read_emotion_result(sys_dir: Path, corpus: str, system: str, train_data: str,
                        notes: Notes) -> EmotionResult | None:
    """One system dir: per-fold ``*/metrics.json`` (the source of the numbers),
    else the ``folds`` of ``summary.json``. None when neither exists."""
    if not sys_dir.is_dir():
        return None
    res = EmotionResult(corpus, system, train_data, sys_dir)
    for mpath in sorted(sys_dir.glob("*/metrics.json")):
        m = _read_json(mpath, notes)
        if m is not None and _valid_metrics(m, mpath, notes):
            res.folds[mpath.parent.name] = m
    summary = _read_json(sys_dir / "summary.json", notes)
    if isinstance(summary, dict):
        if not res.folds:
            for fold, m in (summary.get("folds") or {}).items():
                if _valid_metrics(m, sys_dir / "summary.json", notes):
                    res.folds[fold] = m
        elif set(summary.get("folds") or {}) - set(res.folds):
            notes.add(f"{sys_dir}: summary.json lists folds without metrics.json "
                      f"({', '.join(sorted(set(summary['folds']) - set(res.folds)))}); "
                      "the report uses the folds that have one")
        if isinstance(summary.get("pooled"), dict):
            res.pooled = summary["pooled"]
    if not res.folds:
        return None
    return res


def emotion_corpora(exp: Path) -> list[str]:
    d = exp / "emotion"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def read_emotion_results(exp: Path, corpus: str, notes: Notes) -> dict[tuple[str, str], EmotionResult]:
    """All ``(system, train_data)`` results of a corpus, the paper's six systems and
    any extra system dir found (named ``<system>_clean`` or ``<system>_clean_aug``)."""
    out: dict[tuple[str, str], EmotionResult] = {}
    base = exp / "emotion" / corpus
    if not base.is_dir():
        return out
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        parsed = split_system_dir_name(d.name)
        if parsed is None:
            continue
        system, data = parsed
        r = read_emotion_result(d, corpus, system, data, notes)
        if r is not None:
            out[(system, data)] = r
    return out


@dataclass
class CrossResult:
    """A system's final model of corpus ``source`` scored on corpus ``target``
    (``exp/emotion/<source>/cross/<target>/<system>_<data>/metrics.json``)."""

    source: str
    target: str
    system: str
    train_data: str            # clean | clean_aug
    path: Path
    metrics: dict = field(default_factory=dict)

    @property
    def standardised(self) -> dict | None:
        s = self.metrics.get("standardised")
        return s if isinstance(s, dict) else None


def read_cross_results(exp: Path, corpus: str, notes: Notes) -> list[CrossResult]:
    """Every cross-corpus evaluation of a source corpus's systems (steps/eval_emotion.sh)."""
    base = exp / "emotion" / corpus / "cross"
    out: list[CrossResult] = []
    if not base.is_dir():
        return out
    for mpath in sorted(base.glob("*/*/metrics.json")):
        parsed = split_system_dir_name(mpath.parent.name)
        if parsed is None:
            continue
        m = _read_json(mpath, notes)
        if m is None or not _valid_metrics(m, mpath, notes):
            continue
        out.append(CrossResult(corpus, mpath.parent.parent.name, *parsed, mpath.parent, m))
    return out


# ----------------------------------------------------------------------- SV
@dataclass
class SVResult:
    """EER (%) by enrolment x test emotion for one corpus, model and back-end."""

    corpus: str
    model: str
    backend: str
    path: Path
    emotions: list[str]
    eer: np.ndarray                 # (E, E) percent, NaN where no trials; rows enrolment
    min_dcf: np.ndarray             # (E, E) min_dcf_0.01, NaN where absent
    n_target: np.ndarray            # (E, E)
    n_nontarget: np.ndarray
    summary: dict | None = None

    def _mask(self, same: bool) -> np.ndarray:
        eye = np.eye(len(self.emotions), dtype=bool)
        return (eye if same else ~eye) & np.isfinite(self.eer)

    def same_mean(self) -> float:
        m = self._mask(True)
        return float(self.eer[m].mean()) if m.any() else float("nan")

    def cross_mean(self) -> float:
        m = self._mask(False)
        return float(self.eer[m].mean()) if m.any() else float("nan")

    def extreme(self, same: bool | None = None, worst: bool = True):
        """(enrol, test, eer) of the worst (highest EER) or best cell, among
        same-emotion cells (``same=True``), cross-emotion (``False``) or all."""
        m = np.isfinite(self.eer) if same is None else self._mask(same)
        if not m.any():
            return None
        vals = np.where(m, self.eer, -np.inf if worst else np.inf)
        i, j = np.unravel_index(np.argmax(vals) if worst else np.argmin(vals), vals.shape)
        return self.emotions[i], self.emotions[j], float(self.eer[i, j])


def read_sv_result(d: Path, corpus: str, model: str, backend: str, notes: Notes) -> SVResult | None:
    path = d / "eer_by_emotion.csv"
    if not path.is_file():
        return None
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.DictReader(f), 2):
                try:
                    enr, tst = row["enroll"].strip(), row["test"].strip()
                    eer = float(row["eer"]) if row.get("eer") not in (None, "", "nan") else float("nan")
                except (KeyError, ValueError, AttributeError) as e:
                    notes.add(f"{path}:{lineno}: cannot parse ({e}); line skipped")
                    continue

                def num(k):
                    v = row.get(k)
                    try:
                        return float(v)
                    except (TypeError, ValueError):
                        return float("nan")

                rows.append((enr, tst, eer, num("min_dcf_0.01"), num("n_target"), num("n_nontarget")))
    except OSError as e:
        notes.add(f"{path}: cannot read ({e}); treated as missing")
        return None
    summary = _read_json(d / "summary.json", notes)
    # Rows naming a pooled cell ("all", "*") are not emotions.
    pooled = {"all", "*", "any", "pooled", "overall"}
    emos = {e for r in rows for e in r[:2] if e.lower() not in pooled}
    if isinstance(summary, dict) and isinstance(summary.get("emotions"), list):
        emos |= {str(e) for e in summary["emotions"]}
    emotions = order_emotions(emos)
    if not emotions:
        notes.add(f"{path}: no emotion rows; treated as missing")
        return None
    idx = {e: i for i, e in enumerate(emotions)}
    E = len(emotions)
    eer, dcf, nt, nn = (np.full((E, E), np.nan) for _ in range(4))
    for enr, tst, e, c, a, b in rows:
        if enr in idx and tst in idx:
            i, j = idx[enr], idx[tst]
            eer[i, j], dcf[i, j], nt[i, j], nn[i, j] = e, c, a, b
    return SVResult(corpus, model, backend, d, emotions, eer, dcf, nt, nn,
                    summary if isinstance(summary, dict) else None)


def _model_key(name: str):
    order = ("clean", "aug")
    return (order.index(name) if name in order else len(order), name)


def _backend_key(name: str):
    order = ("cosine", "plda", "cosine_folds", "compensated_folds")
    return (order.index(name) if name in order else len(order), name)


def sv_corpora(exp: Path) -> list[str]:
    d = exp / "sv"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []


def _sv_dirs(exp: Path, corpus: str):
    """(model, back-end dir) under ``exp/sv/<corpus>/xvector_<model>/``, models clean, aug first, back-ends
    cosine, plda first."""
    base = exp / "sv" / corpus
    if not base.is_dir():
        return
    models = [p for p in base.iterdir() if p.is_dir() and p.name.startswith("xvector_")]
    for md in sorted(models, key=lambda p: _model_key(p.name[len("xvector_"):])):
        for bd in sorted((p for p in md.iterdir() if p.is_dir()), key=lambda p: _backend_key(p.name)):
            yield md.name[len("xvector_"):], bd


def read_sv_results(exp: Path, corpus: str, notes: Notes) -> list[SVResult]:
    """Every ``exp/sv/<corpus>/xvector_<model>/<backend>/`` with an eer_by_emotion.csv,
    models clean, aug first, back-ends cosine, plda first."""
    out: list[SVResult] = []
    for model, bd in _sv_dirs(exp, corpus):
        r = read_sv_result(bd, corpus, model, bd.name, notes)
        if r is not None:
            out.append(r)
    return out


@dataclass
class SVNotPossible:
    """A per-fold back-end stage 6 could not fit on this corpus (``not_possible.txt``), and why."""

    corpus: str
    model: str
    backend: str
    reason: str


def read_sv_not_possible(exp: Path, corpus: str, notes: Notes) -> list[SVNotPossible]:
    """Every ``exp/sv/<corpus>/xvector_<model>/<backend>/not_possible.txt``, in the results' order."""
    out: list[SVNotPossible] = []
    for model, bd in _sv_dirs(exp, corpus):
        f = bd / "not_possible.txt"
        if not f.is_file():
            continue
        try:
            reason = " ".join(f.read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError) as e:
            notes.add(f"{f}: cannot read ({e}); ignored")
            continue
        if (bd / "eer_by_emotion.csv").is_file():
            notes.add(f"{bd}: has results and not_possible.txt; the results are shown (rerun stage 6)")
            continue
        out.append(SVNotPossible(corpus, model, bd.name, reason or "no reason given"))
    return out


# ---------------------------------------------------------- the rest of exp
def read_histories(exp: Path, notes: Notes) -> dict[str, list[dict]]:
    """``{model: [epoch dicts]}`` from ``exp/xvector_*/log/history.json``."""
    out = {}
    for p in sorted(exp.glob("xvector_*/log/history.json"), key=lambda p: _model_key(p.parts[-3][8:])):
        h = _read_json(p, notes)
        if isinstance(h, dict) and isinstance(h.get("epochs"), list):
            h = h["epochs"]
        if isinstance(h, list) and h and all(isinstance(e, dict) for e in h):
            out[p.parts[-3][len("xvector_"):]] = h
        elif h is not None:
            notes.add(f"{p}: not a list of per-epoch objects; no training curve")
    return out


def read_stage_times(exp: Path, notes: Notes) -> list[tuple[str, float]]:
    """``[(stage, seconds), ...]`` in file order (every run appends its stages)."""
    path = exp / "stage_times"
    out = []
    if not path.is_file():
        return out
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                out.append((parts[0], float(parts[1])))
            except (IndexError, ValueError):
                notes.add(f"{path}:{lineno}: expected '<stage> <seconds>', got '{line.strip()}'")
    return out


def xvector_model_info(model_dir: Path, notes: Notes) -> str | None:
    """One line on an x-vector model: its encoder type, and for an imported or
    adapted encoder where the weights came from (``final.pt``'s ``extra``)."""
    p = Path(model_dir) / "final.pt"
    if not p.is_file():
        return None
    try:
        from ..train.checkpoint import load as load_checkpoint

        ck = load_checkpoint(p)   # weights only; an older pyxv's file only with PYXV_TRUST_PICKLE=1
    except Exception as e:  # a broken model file is a note, not a failed report
        notes.add(f"{p}: cannot read ({e})")
        return None
    extra = ck.get("extra") or {}
    mtype = (ck.get("config") or {}).get("model", {}).get("type", "resnet")
    if extra.get("imported_from"):
        return (f"`{mtype}` imported, not adapted: {extra.get('source', '')}, licence "
                f"{extra.get('license', '?')}; weights: {extra['imported_from']}")
    if extra.get("adapted_from_imported"):
        return (f"`{mtype}` imported and adapted here with the speaker loss on this run's pre-training data "
                f"(from {extra.get('init_from')}; weights originally {extra['adapted_from_imported']})")
    return f"`{mtype}` trained from random initialisation on this run's pre-training data"


def git_revision(repo: Path) -> str:
    """``<short hash>`` plus ``(dirty)`` when tracked files have changes; 'unknown'
    outside a git work tree."""
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=30)
        if rev.returncode != 0:
            return "unknown (not a git work tree)"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=60)
        flag = " (dirty: uncommitted changes to tracked files)" if dirty.stdout.strip() else ""
        return rev.stdout.strip() + flag
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"


def read_utt2dur(path: Path, notes: Notes) -> np.ndarray | None:
    if not path.is_file():
        return None
    vals = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                vals.append(float(parts[1]))
            except (IndexError, ValueError):
                notes.add(f"{path}:{lineno}: expected 'utt seconds'; line skipped")
    return np.asarray(vals, dtype=float)


def read_kv(path: Path) -> dict[str, str]:
    """A two-column Kaldi table (utt2spk, utt2emo); empty when absent."""
    out = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split(None, 1)
                if len(parts) == 2:
                    out[parts[0]] = parts[1].strip()
    return out


@dataclass
class DataInfo:
    path: Path
    n_utts: int
    n_spk: int
    hours: float | None
    emotions: dict[str, int]
    wav_sample: list[str]


def data_info(d: Path) -> DataInfo | None:
    if not (d / "utt2spk").is_file():
        return None
    u2s = read_kv(d / "utt2spk")
    u2e = read_kv(d / "utt2emo")
    emos: dict[str, int] = {}
    for e in u2e.values():
        emos[e] = emos.get(e, 0) + 1
    hours = None
    if (d / "utt2dur").is_file():
        dur = read_utt2dur(d / "utt2dur", Notes())
        hours = float(dur.sum() / 3600) if dur is not None else None
    sample = []
    if (d / "wav.scp").is_file():
        with open(d / "wav.scp", encoding="utf-8") as f:
            for _, line in zip(range(50), f):
                sample.append(line.rstrip("\n"))
    return DataInfo(d, len(u2s), len(set(u2s.values())), hours,
                    dict(sorted(emos.items(), key=lambda kv: emotion_sort_key(kv[0]))), sample)


def is_synthetic_demo(info: DataInfo | None, demo_markers=("demo",)) -> bool:
    """Whether a data dir's audio comes from the synthetic demo corpus (its
    wav.scp points into the demo corpus tree, or the dir says so in a
    ``source`` file)."""
    if info is None:
        return False
    src = info.path / "source"
    if src.is_file() and "demo" in src.read_text(errors="replace").lower():
        return True
    return any(m in line for line in info.wav_sample for m in demo_markers)


def protocol_info(emo_dir: Path) -> list[tuple[str, dict[str, DataInfo | None]]]:
    """``[(fold, {subset: DataInfo})]``: folds ``fold*/`` in natural order, else the
    fixed split (fold name ``split``); empty when the corpus dir is absent."""
    def nat(p: Path):
        digits = "".join(c for c in p.name if c.isdigit())
        return (int(digits) if digits else 0, p.name)

    folds = sorted((p for p in emo_dir.glob("fold*") if p.is_dir()), key=nat)
    if folds:
        return [(f.name, {s: data_info(f / s) for s in ("train", "dev", "test")}) for f in folds]
    if (emo_dir / "train").is_dir() or (emo_dir / "test").is_dir():
        return [("split", {s: data_info(emo_dir / s) for s in ("train", "dev", "test")})]
    return []


def find_configs(exp: Path) -> list[Path]:
    """Config copies the stages kept in their exp dirs (yaml and Kaldi .conf)."""
    pats = ("xvector_*/config.yaml", "xvector_*/*.conf", "emotion/*/*/emotion.yaml", "emotion/*/*/config.yaml",
            "sv/*/*/*/config.yaml", "sv/*/config.yaml")
    seen: list[Path] = []
    for pat in pats:
        for p in sorted(exp.glob(pat)):
            if p.is_file() and p not in seen:
                seen.append(p)
    return seen
