#!/usr/bin/env python3
r"""Slurm job runner with Kaldi's interface (like Kaldi's slurm.pl).

  utils/parallel/slurm.py [--config conf/slurm.conf] [--mem 4G] [--num-threads N] \
      [--gpu N] [--time H:M:S] [--max-jobs-run K] [--nodes N] [JOB=1:N] log/name.JOB.log command args...

Submits ONE `sbatch --array=1-N[%K]` whose tasks run the N jobs (JOB replaced
by the task number in the log path and the command), waits for it (watching
squeue every poll_seconds and the tasks' status files, requeued attempts
included), and exits 1 naming the failed logs with their last lines when any
task failed or was killed (75 when they stopped for pre-emption instead).
Options map to sbatch: --mem -> --mem, --num-threads -> --cpus-per-task (and
OMP_NUM_THREADS), --gpu N -> --gres from gpu_gres (N=0: no GPU visible),
--time -> --time, --max-jobs-run K -> %K, --nodes N -> --nodes N
--ntasks-per-node 1 with the command run on every node by srun (--gpu,
--num-threads and --mem per node). Partition, account, qos, GPU gres, GPUs per
node, CPUs/memory/time of GPU jobs, requeue attempts and the pre-emption
warning (--signal=B:USR1@T, --requeue), the network interface of multi-node
jobs and extra sbatch flags come from the config file (see conf/slurm.conf).
A job that exits 75 (stopped for pre-emption, checkpoint written), or fails
after the SIGUSR1 warning, is requeued while attempts remain; each attempt
appends to the job's log. A job that Slurm leaves pending for a reason that
cannot change (more nodes than the partition has, ...) is cancelled, saying so.
The batch script, Slurm's own output and the status files are in the log
folder's q/ subfolder. Standard library only: works without the venv.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))
from pyxv.parallel.slurm import main_slurm  # noqa: E402

if __name__ == "__main__":
    sys.exit(main_slurm(doc=__doc__))
