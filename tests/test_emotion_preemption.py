"""Stage 5 under pre-emption: steps/train_emotion.sh follows the x-vector trainer's
contract. A fine-tuning job that gets SIGUSR1 (Slurm's warning) while its network
trains stops at the next log point with a step checkpoint and exits 75; the local
runner reports it and the step exits 75, counting no fold as failed. Run again,
the step keeps the folds finished before the stop, resumes the network from its
checkpoint and ends with the posteriors of an uninterrupted run, bit for bit.

The signal is real, sent by the training process to itself at a fixed step (a
sitecustomize.py on PYTHONPATH wraps the trainer's step when PYXV_TEST_SIGNAL_IN
names the fold), so where it lands does not depend on the machine's speed."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ravdess_emotion import write_emotion_yaml
from ravdess_emotion import corpus  # noqa: F401  (the fixture: RAVDESS clips in 6 folds, MFCC + VAD)

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Imported by every Python the step starts (PYTHONPATH): SIGUSR1 to itself after
# step 3 of epoch 1 of the network trained in the fold folder named by the variable.
SITECUSTOMIZE = """
import os
if os.environ.get("PYXV_TEST_SIGNAL_IN"):
    import signal
    from pyxv.train import trainer

    _step = trainer._Run._step

    def _step_then_signal(self, x, y):
        out = _step(self, x, y)
        if (self.out_dir.name == os.environ["PYXV_TEST_SIGNAL_IN"] and self.state.epoch == 1
                and self.state.step == 2):      # state.step is the steps done before this one
            os.kill(os.getpid(), signal.SIGUSR1)
        return out

    trainer._Run._step = _step_then_signal
"""


def _setup(corpus, tmp_path):
    root, emo = corpus
    emo2 = tmp_path / "data" / "ravd"          # two folds are enough: one finishes, one is stopped
    for d in ("all", "fold1", "fold2"):
        shutil.copytree(emo / d, emo2 / d)
    # 2 epochs of 12 steps; the trainer's log points (where a stop is agreed) every 10 steps
    conf = write_emotion_yaml(tmp_path, root, steps_per_epoch=12)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return emo2, conf, site


def _step(emo, conf, site, out, **env):
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(site))
    e.pop("PYXV_TEST_SIGNAL_IN", None)
    e.update(env)
    return subprocess.run(["steps/train_emotion.sh", "--config", str(conf), "--system", "randinit_mfcc", "--nj", "1",
                           "--final", "false", str(emo), str(out)], cwd=REPO, env=e, capture_output=True, text=True,
                          timeout=600)


def test_stopped_fine_tuning_exits_75_and_the_rerun_resumes_to_the_same_posteriors(corpus, tmp_path):
    emo, conf, site = _setup(corpus, tmp_path)
    out = tmp_path / "exp"
    sysdir = out / "randinit_mfcc_clean"
    # One job runs fold 1 (finishes) then fold 2, whose network gets SIGUSR1 after step 3.
    p = _step(emo, conf, site, out, PYXV_TEST_SIGNAL_IN="fold2")
    job_log = (sysdir / "log" / "train.1.log").read_text()
    assert p.returncode == 75, p.stderr[-3000:] + job_log[-3000:]
    assert "the folds stopped for pre-emption; finished folds and the networks' checkpoints are kept" in p.stderr
    assert "a fold failed" not in p.stderr
    assert "run.py: " in p.stderr and "stopped for pre-emption (exit 75: checkpoint written)" in p.stderr
    assert ("train_emotion: randinit_mfcc (clean): stopped for pre-emption in fold 2; exit 75: run again to resume"
            in job_log)
    fold2_log = (sysdir / "fold2" / "log" / "train.log").read_text()
    assert "stopping for pre-emption (SIGUSR1 here) in epoch 1 after step 10 of 12" in fold2_log, fold2_log[-2000:]
    assert (sysdir / "fold1" / "metrics.json").is_file()
    assert not (sysdir / "fold2" / "metrics.json").exists() and not (sysdir / "summary.json").exists()
    assert (sysdir / "fold2" / "checkpoints" / "epoch_1_step_10.pt").is_file()
    fold1_done = (sysdir / "fold1" / "metrics.json").stat().st_mtime_ns

    # Run again (no signal): fold 1 is kept, fold 2 resumes from its step checkpoint.
    p = _step(emo, conf, site, out)
    assert p.returncode == 0, p.stderr[-3000:]
    job_log = (sysdir / "log" / "train.1.log").read_text()
    assert "fold 1 of randinit_mfcc (clean) was finished by an earlier attempt of this run" in job_log
    assert (sysdir / "fold1" / "metrics.json").stat().st_mtime_ns == fold1_done
    fold2_log = (sysdir / "fold2" / "log" / "train.log").read_text()
    assert f"resuming from {sysdir / 'fold2' / 'checkpoints' / 'epoch_1_step_10.pt'}" in fold2_log
    assert (sysdir / "summary.json").is_file() and not (sysdir / "log" / "folds.preempted").exists()

    # The same step never interrupted: the same posteriors, bit for bit.
    ref = tmp_path / "ref"
    p = _step(emo, conf, site, ref)
    assert p.returncode == 0, p.stderr[-3000:]
    for fold in ("fold1", "fold2"):
        assert (sysdir / fold / "posteriors").read_bytes() == \
            (ref / "randinit_mfcc_clean" / fold / "posteriors").read_bytes(), fold
