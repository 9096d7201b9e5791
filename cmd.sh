# Which job runner each kind of job uses. Every runner takes Kaldi's interface:
#   $train_cmd [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] [--max-jobs-run K] [--nodes N] \
#              [JOB=1:N] log/name.JOB.log command args...
# (--nodes N: one job over N nodes, the command started once on each; Slurm only.)
#
# Local machine (default): jobs run here, at most --max-jobs-run at a time.
export train_cmd="utils/parallel/run.py"
export cuda_cmd="utils/parallel/run.py"
#
# Slurm: replace the two lines above with these. Options written here are the
# defaults of that class of jobs (a step's own options win: e.g. the CPUs of a
# training job, train.num_workers + 1 per GPU). What the cluster needs per class
# is in conf/slurm.conf: partition and GPU gres, GPUs per node, CPUs and memory
# per GPU, time limits, how often a pre-empted job is requeued and the warning
# signal before its time limit, the network interface of multi-node training.
# export train_cmd="utils/parallel/slurm.py --config conf/slurm.conf --mem 4G --time 4:00:00"
# export cuda_cmd="utils/parallel/slurm.py --config conf/slurm.conf"
