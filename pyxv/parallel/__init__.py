"""Job runners with Kaldi's interface (``run.pl``/``slurm.pl``), shared pieces.

    runner [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] [--max-jobs-run K]
           [--nodes N] [JOB=1:N] log/name.JOB.log command args...

``JOB`` (any variable name: ``TASK=1:4`` works too) is replaced by the job
number in the log path and in the command. The command words are joined the way
Kaldi's ``run.pl`` joins them (a word without whitespace goes in as it is, so a
lone ``\\|`` or ``\\>`` is a pipe or a redirection; a word with whitespace is
quoted) and run with ``bash -c``. Each log starts with ``# <command>`` and
``# Started at <date>`` and ends with ``# Accounting: time=<s> threads=<n>
host=<host>`` and ``# Ended (code <rc>) at <date>, elapsed time <s> seconds``.

``--nodes N`` (an extension) runs the command once on each of N nodes, all
started together (Slurm: ``srun --ntasks-per-node 1`` inside one N-node job);
``--gpu`` and ``--num-threads`` are then per node. Exit status 75 of a job
means "stopped for pre-emption, checkpoint written, run again to resume"
(:data:`~.preemption.PREEMPTED`): the runners report it as such, not as a
failure of the program, and the Slurm runner requeues such a job
(``max_attempts``).

Modules: :mod:`.request` (the options and ``JOB`` range of a call),
:mod:`.joblog` (log header and footer, the summary of failed jobs),
:mod:`.local` (the local runner and its GPU pool), :mod:`.slurm` (the Slurm
runner) and :mod:`.preemption` (the exit status and signals of a stop for
pre-emption, shared with the launcher and the trainers).

This package uses the standard library only: the runners are called by path
from ``cmd.sh`` and must work without the virtual environment.
"""
