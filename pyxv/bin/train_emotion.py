"""Train and test one emotion system on one fold (or a job's share of the folds),
or summarise a system's folds.

    python -m pyxv.bin.train_emotion --config conf/emotion.yaml --system frozen_lr_clean \\
        --train-data clean --fold 1 data/demo exp/emotion/demo
    python -m pyxv.bin.train_emotion ... --fold 2 --nj 3 data/ravdess exp/emotion/ravdess  # folds 2 and 5 of 6
    python -m pyxv.bin.train_emotion ... --use-gpu yes --fold 1 data/demo exp/emotion/demo    # networks on a GPU
    python -m pyxv.bin.train_emotion --summarize --system ... --train-data ... data/demo exp/emotion/demo
    python -m pyxv.bin.train_emotion --final --system ... --train-data ... data/demo exp/emotion/demo  # final/
    python -m pyxv.bin.train_emotion --num-folds data/demo     # prints the number of folds
    python -m pyxv.bin.train_emotion --list-systems [--paper-only] [--method randinit,finetune]
        # the systems' table (pyxv.emotion.spec) for the shell: name TAB label, one system a line

Pre-emption (SIGTERM, or Slurm's SIGUSR1 warning): a network that is training
stops at its next log point with a step checkpoint; anywhere else the job stops
at once (temporary files removed). Either way it exits 75 ("run again to
resume"), as the x-vector trainer does, and the runner requeues or reports it.
Run again, a network resumes from its checkpoint; with ``--keep-finished-since
STAMP`` (steps/train_emotion.sh passes it) the folds finished after STAMP was
touched are kept, not trained again.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from pyxv.emotion.spec import METHODS, REFERENCE_SYSTEMS, SYSTEM_NAMES, TRAIN_DATA, list_systems   # standard library only: no torch
from pyxv.parallel.preemption import PREEMPTED as PREEMPTED_EXIT, STOP_SIGNALS   # standard library only: no torch


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="emotion YAML (conf/emotion.yaml)")
    ap.add_argument("--profile", default=None, help="profile of the config to apply [the corpus name]")
    ap.add_argument("--system", default=None, help="|".join(SYSTEM_NAMES) + " (see --list-systems)")
    ap.add_argument("--train-data", default="clean", choices=list(TRAIN_DATA))
    ap.add_argument("--fold", type=int, default=None, help="1-based fold number (protocol order)")
    ap.add_argument("--nj", type=int, default=0,
                    help="the folds are shared out among NJ jobs and --fold is the job: it runs folds "
                         "FOLD, FOLD+NJ, ... in turn in this process (0: just fold FOLD)")
    ap.add_argument("--use-gpu", choices=["yes", "no"], default="no",
                    help="train and score the network systems on a GPU (the LR systems stay on the CPU) [no]")
    ap.add_argument("--summarize", action="store_true", help="pool finished folds into summary.json")
    ap.add_argument("--final", action="store_true",
                    help="train the system once on all labelled data into <system>_<data>/final/ "
                         "(networks: after the folds, whose kept epochs set its epoch count)")
    ap.add_argument("--num-folds", action="store_true", help="print the number of folds of <emo-dir> and exit")
    ap.add_argument("--list-systems", action="store_true",
                    help="print '<name>\\t<label>' per emotion system (the paper's in its Table 2 order, then "
                         "the references) and exit")
    ap.add_argument("--paper-only", action="store_true", help="with --list-systems: only the paper's systems")
    ap.add_argument("--method", default=None, metavar="M[,M]",
                    help="with --list-systems: only the systems of these methods (" + "|".join(METHODS) + "), "
                         "e.g. randinit,finetune: those that train a network")
    ap.add_argument("--keep-finished-since", default=None, metavar="STAMP",
                    help="skip the folds whose metrics.json is newer than file STAMP (finished by an earlier "
                         "attempt of this run, before a pre-emption)")
    ap.add_argument("--list-inputs", action="store_true",
                    help="print the files the system reads (one per line); exit 1 naming a missing one")
    ap.add_argument("--corpus", default=None, help="corpus name for summary.json [basename of emo-dir]")
    ap.add_argument("--architecture", default=None,
                    help="x-vector YAML of the random-init networks (overrides nnet.architecture)")
    ap.add_argument("emo_dir", nargs="?")
    ap.add_argument("out_root", nargs="?")
    return ap


def main(argv=None) -> int:
    ap = make_parser()
    a = ap.parse_args(argv)
    if a.list_systems:
        methods = a.method.split(",") if a.method else None
        if methods and set(methods) - set(METHODS):
            ap.error(f"--method {a.method}: each method must be one of {', '.join(METHODS)}")
        print("\n".join(list_systems(paper_only=a.paper_only, methods=methods)))
        return 0
    if not a.emo_dir:
        ap.error("<emo-dir> is needed")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)

    from pathlib import Path

    from pyxv.emotion.data import discover_protocol

    if a.num_folds:
        print(len(discover_protocol(a.emo_dir)))
        return 0
    from pyxv.emotion import systems
    from pyxv.emotion.config import load_emotion_config

    corpus = a.corpus or Path(a.emo_dir).name
    over = {"nnet": {"architecture": a.architecture}} if a.architecture else None
    if a.list_inputs:
        return _list_inputs(a, load_emotion_config(a.config, profile=a.profile or corpus, overrides=over))
    if not a.system or not a.out_root:
        ap.error("--system and <out-root> are needed")
    if a.summarize:
        s = systems.summarize(a.system, a.train_data, a.emo_dir, a.out_root, corpus=corpus)
        print(f"{a.system} {a.train_data} {corpus}: mean weighted F1 {100 * s['mean_weighted_f1']:.2f} "
              f"(+-{100 * s['std_weighted_f1']:.2f}) over {len(s['folds'])} fold(s), pooled "
              f"{100 * s['pooled']['weighted_f1']:.2f}; UA {100 * s['mean_unweighted_accuracy']:.2f}")
        return 0
    if a.fold is None and not a.final:
        ap.error("--fold N (or --summarize or --final) is needed")
    if a.final and (a.fold is not None or a.nj):
        ap.error("--final trains the one final model: it takes no --fold or --nj")
    if a.nj < 0 or (a.nj and not 1 <= a.fold <= a.nj):
        ap.error(f"--fold {a.fold} --nj {a.nj}: with --nj the job number must be in 1..{a.nj}")
    cfg = load_emotion_config(a.config, profile=a.profile or corpus, overrides=over)
    if cfg.get("profile"):
        logging.info("config %s, profile '%s'", a.config, cfg["profile"])
    if a.use_gpu == "yes":
        from pyxv.device import no_gpu_reason

        no_gpu = no_gpu_reason()
        if no_gpu:   # one line now, not a CUDA traceback from the trainer
            print(f"train_emotion: --use-gpu yes but {no_gpu}", file=sys.stderr)
            return 1
    if a.system not in REFERENCE_SYSTEMS:  # the references need no torch (2 s to import)
        import torch

        torch.set_num_threads(int(cfg["nnet"]["num_threads"]))
    from pyxv.features.archive import exit_cleanly_on_signals

    exit_cleanly_on_signals()  # SIGHUP leaves no temporary file
    # SIGTERM/SIGUSR1 (pre-emption) outside a network's training: stop now, exit 75
    # (inside it the trainer takes them over: checkpoint at the next log point, then 75).
    old = {sig: signal.signal(sig, _preempted) for sig in STOP_SIGNALS}
    try:
        return _train_final(a, cfg) if a.final else _train_folds(a, cfg)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _list_inputs(a, cfg: dict) -> int:
    """Print the files the system reads; 1 when one is missing (each named on stderr with its stage)."""
    from pyxv.emotion import systems

    missing = 0
    for path, stage in systems.system_inputs(a.system, a.train_data, a.emo_dir, cfg):
        if not path.exists():
            print(f"{path} does not exist (run {stage})", file=sys.stderr)
            missing += 1
        print(path)
    return 1 if missing else 0


def _train_final(a, cfg: dict) -> int:
    from pyxv.emotion import systems
    from pyxv.io import OutputError

    try:
        systems.run_final(a.system, a.train_data, a.emo_dir, a.out_root, cfg, use_gpu=a.use_gpu == "yes")
    except SystemExit as e:
        _say_if_preempted(e, a, "the final model")
        raise
    except (OutputError, FileNotFoundError, ValueError) as e:
        print(f"train_emotion: FATAL: final model of {a.system} ({a.train_data}): {e}", file=sys.stderr)
        return 1
    return 0


def _train_folds(a, cfg: dict) -> int:
    """Fold ``a.fold``, or with ``--nj`` the job's share of the folds, one after the other."""
    from pyxv.emotion import systems
    from pyxv.emotion.data import discover_protocol
    from pyxv.io import OutputError

    folds = [a.fold] if not a.nj else list(range(a.fold, len(discover_protocol(a.emo_dir)) + 1, a.nj))
    failed = []
    for fold in folds:
        done = _finished_since(a, fold)
        if done:
            logging.info("fold %d of %s (%s) was finished by an earlier attempt of this run: %s kept",
                         fold, a.system, a.train_data, done)
            continue
        try:
            systems.run_fold(a.system, a.train_data, a.emo_dir, fold, a.out_root, cfg, use_gpu=a.use_gpu == "yes")
        except SystemExit as e:
            _say_if_preempted(e, a, f"fold {fold}", failed)
            raise
        except OutputError as e:
            print(f"train_emotion: FATAL: fold {fold}: {e}", file=sys.stderr)
            failed.append(fold)
        except Exception:
            if len(folds) == 1:
                raise
            # One fold's failure does not cost the job's other folds.
            logging.exception("fold %d of %s (%s) failed", fold, a.system, a.train_data)
            failed.append(fold)
    if failed:
        print(f"train_emotion: FATAL: {a.system} ({a.train_data}): fold(s) {' '.join(map(str, failed))} "
              f"of {' '.join(map(str, folds))} failed (see above)", file=sys.stderr)
        return 1
    return 0




def _finished_since(a, fold: int):
    """The fold's metrics.json when it is newer than ``--keep-finished-since``'s file, else None."""
    if not a.keep_finished_since:
        return None
    from pathlib import Path

    from pyxv.emotion.data import discover_protocol
    from pyxv.emotion.systems import system_dir

    stamp = Path(a.keep_finished_since)
    done = system_dir(a.out_root, a.system, a.train_data) / discover_protocol(a.emo_dir)[fold - 1].name / "metrics.json"
    if stamp.is_file() and done.is_file() and done.stat().st_mtime_ns > stamp.stat().st_mtime_ns:
        return done
    return None


def _preempted(signum, frame):
    raise SystemExit(PREEMPTED_EXIT)


def _say_if_preempted(e: SystemExit, a, where: str, failed=()) -> None:
    """One line for a stop for pre-emption (exit 75: the runner requeues or reports it)."""
    if e.code != PREEMPTED_EXIT:
        return
    before = f"; fold(s) {' '.join(map(str, failed))} failed before it (see above)" if failed else ""
    print(f"train_emotion: {a.system} ({a.train_data}): stopped for pre-emption in {where}; exit {PREEMPTED_EXIT}: "
          f"run again to resume (finished folds are kept, a network resumes from its newest checkpoint){before}",
          file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
