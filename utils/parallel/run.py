#!/usr/bin/env python3
r"""Local job runner with Kaldi's run.pl interface.

  utils/parallel/run.py [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] \
      [--max-jobs-run K] [--nodes 1] [JOB=1:N] log/name.JOB.log command args...

Runs the N jobs on this machine, at most K at a time (default: the number of
CPUs), substituting JOB in the log path and the command. --mem, --time and
--config are accepted for compatibility with the Slurm runner and not used here;
--num-threads sets OMP_NUM_THREADS for the job; --gpu 0 hides the GPUs
(CUDA_VISIBLE_DEVICES=""); --gpu G gives each job G GPUs of its own (its
CUDA_VISIBLE_DEVICES) from those visible here (CUDA_VISIBLE_DEVICES if set,
else nvidia-smi -L), so at most GPUs/G jobs run at once; GPUs held by another
runner's jobs (lock files in $PYXV_GPU_LOCK_DIR, default
$TMPDIR/pyxv-gpu-locks-<uid>) are waited for; more GPUs than the machine has
fail at once. --nodes 1 is accepted (more nodes need the Slurm runner). Words
are joined as run.pl joins them (quote a pipe as \| to make it one); a single
command word is a whole shell command line ('cmd JOB | other'). Exits 1 naming
the failed logs when any job fails, 75 when those that did not succeed stopped
for pre-emption (exit 75: checkpoint written, run again to resume), 2 on bad
arguments. SIGINT/SIGTERM: the running jobs get SIGTERM and up to
$PYXV_STOP_GRACE seconds (120) to end (a training job writes its checkpoint);
a second signal kills them. Standard library only: works without the venv.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
from pyxv.parallel.local import main_local  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_local(doc=__doc__))
