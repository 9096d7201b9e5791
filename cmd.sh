# Which job runner each kind of job uses. Every runner takes Kaldi's interface:
#   $train_cmd [--mem 4G] [--num-threads N] [--gpu N] [--time H:M:S] [--max-jobs-run K] \
#              [JOB=1:N] log/name.JOB.log command args...
#
# Local machine (default): jobs run here, at most --max-jobs-run at a time.
export train_cmd="utils/parallel/run.py"
export cuda_cmd="utils/parallel/run.py"
#
# Slurm: replace the two lines above with these (partition, GPU gres and extra
# sbatch flags live in conf/slurm.conf):
# export train_cmd="utils/parallel/slurm.py --config conf/slurm.conf"
# export cuda_cmd="utils/parallel/slurm.py --config conf/slurm.conf"
