"""Slurm runner (utils/parallel/slurm.py) against a REAL one-node Slurm.

The fixture (tests/slurm_cluster.py) brings up munge (if not already running),
slurmctld and slurmd from the Debian slurm-wlm package in a temporary folder
with its own ports, waits until `sinfo` shows the node idle, and stops the
daemons by pid at the end (even when a test fails). It skips, saying why, where
Slurm is absent and cannot be installed with apt-get.
"""
from __future__ import annotations

import socket
import re
import subprocess
import time
from pathlib import Path

import pytest

from pyxv.parallel.request import UsageError, parse_args
from pyxv.parallel.slurm import SLURM_DEFAULTS, batch_script, read_slurm_config, sbatch_options
from slurm_cluster import slurm_cluster as one_slurm_cluster

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "utils" / "parallel" / "slurm.py"
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def slurm_cluster():
    with one_slurm_cluster(nodes=1) as c:
        yield c


def slurm_run(cluster, args, cwd, conf_extra=""):
    conf = Path(cwd) / "slurm.conf"
    conf.write_text("partition = debug\npoll_seconds = 0.5\nstatus_grace_seconds = 2\n" + conf_extra)
    return subprocess.run([str(SLURM), "--config", str(conf), *map(str, args)], cwd=cwd, env=cluster["env"],
                          capture_output=True, text=True, timeout=120)


def test_array_of_four_jobs(slurm_cluster, tmp_path):
    p = slurm_run(slurm_cluster, ["--num-threads", 1, "--mem", "300M", "--time", "0:10:00", "--gpu", 0, "JOB=1:4",
                                  "exp/log/a.JOB.log", "echo", "task", "JOB", "cpus=$SLURM_CPUS_PER_TASK",
                                  "array=$SLURM_ARRAY_TASK_ID", "omp=$OMP_NUM_THREADS",
                                  "cuda=[${CUDA_VISIBLE_DEVICES-unset}]", r"|", "tr", "a-z", "A-Z"], tmp_path)
    assert p.returncode == 0, p.stderr
    for j in range(1, 5):
        lines = (tmp_path / f"exp/log/a.{j}.log").read_text().splitlines()
        assert lines[0] == (f"# echo task {j} cpus=$SLURM_CPUS_PER_TASK array=$SLURM_ARRAY_TASK_ID "
                            "omp=$OMP_NUM_THREADS cuda=[${CUDA_VISIBLE_DEVICES-unset}] | tr a-z A-Z")
        assert lines[1].startswith("# Started at ")
        assert f"TASK {j} CPUS=1 ARRAY={j} OMP=1 CUDA=[]" in lines
        assert lines[-2].startswith("# Accounting: time=") and f"host={socket.gethostname()}" in lines[-2]
        assert lines[-1].startswith("# Ended (code 0) at ")
    q = tmp_path / "exp/log/q"
    assert (q / "a.sh").is_file() and (q / "a.jobid").is_file()
    assert sorted(f.name for f in q.glob("a.*.status")) == [f"a.{j}.status" for j in range(1, 5)]


def test_one_failing_task_fails_the_call(slurm_cluster, tmp_path):
    p = slurm_run(slurm_cluster, ["--max-jobs-run", 2, "TASK=1:4", "log/f.TASK.log",
                                  "echo out TASK; echo trouble-TASK >&2; exit $((TASK == 3 ? 7 : 0))"], tmp_path)
    assert p.returncode == 1
    assert "1 of 4 jobs failed" in p.stderr
    assert "log/f.3.log (exit code 7)" in p.stderr and "trouble-3" in p.stderr
    assert "f.1.log" not in p.stderr
    assert (tmp_path / "log/f.3.log").read_text().splitlines()[-1].startswith("# Ended (code 7)")
    assert "# Ended (code 0)" in (tmp_path / "log/f.4.log").read_text()


def test_killed_task_without_status_fails(slurm_cluster, tmp_path):
    # The task's wrapper dies before writing its status (as when Slurm kills it).
    p = slurm_run(slurm_cluster, ["log/k.log", "kill -9 $PPID"], tmp_path)
    assert p.returncode == 1
    assert "no exit status" in p.stderr


def test_sbatch_options_mapping():
    conf = dict(SLURM_DEFAULTS, partition="cpu", gpu_partition="gpu", gpu_gres="gpu:a100:{n}",
                mem_per_cpu="2G", account="proj", extra="--nice=5 --exclude=n1")
    req = parse_args(["--gpu", "2", "--num-threads", "4", "--time", "2:00:00", "--max-jobs-run", "3",
                               "JOB=1:8", "log/t.JOB.log", "true"], "slurm.py")
    o = sbatch_options(req, conf, "pyxv-t", "q/t.%a.out")
    assert "--array=1-8%3" in o and "--partition=gpu" in o and "--gres=gpu:a100:2" in o
    assert "--cpus-per-task=4" in o and "--time=2:00:00" in o and "--mem-per-cpu=2G" in o
    assert "--account=proj" in o and o[-2:] == ["--nice=5", "--exclude=n1"]
    req = parse_args(["--mem", "1.5G", "--gpu", "0", "log/t.log", "true"], "slurm.py")
    o = sbatch_options(req, conf, "pyxv-t", "q/t.%a.out")
    assert "--array=1-1" in o and "--partition=cpu" in o and "--mem=1536M" in o
    assert not any(x.startswith("--gres") or x.startswith("--mem-per-cpu") for x in o)


def test_config_errors(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("partition = x\nnodes = 3\n")
    p = subprocess.run([str(SLURM), "--config", str(bad), "log/x.log", "true"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 2 and "bad.conf:2: unknown setting 'nodes'" in p.stderr
    p = subprocess.run([str(SLURM), "--config", str(REPO / "conf/slurm.conf"), "JOB=1:2", "log/x.log", "true"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 2 and "put JOB in the log path" in p.stderr
    assert read_slurm_config(REPO / "conf/slurm.conf")["gpu_gres"] == "gpu:{n}"


def test_task_cancelled_mid_array_fails_naming_it(slurm_cluster, tmp_path):
    """Task 2 of 3 is cancelled (scancel) while it runs, the others finish: the
    call fails naming that task's Slurm id and its log, and only that one."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("partition = debug\npoll_seconds = 0.5\nstatus_grace_seconds = 2\n")
    p = subprocess.Popen([str(SLURM), "--config", str(conf), "JOB=1:3", "log/c.JOB.log",
                          "if [ JOB = 2 ]; then sleep 60; fi; echo done JOB"], cwd=tmp_path,
                         env=slurm_cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jobid_file = tmp_path / "log/q/c.jobid"
    t0 = time.time()
    while time.time() - t0 < 60:
        if jobid_file.exists() and "Started" in (tmp_path / "log/c.2.log").read_text(errors="replace") \
                if (tmp_path / "log/c.2.log").exists() else False:
            break
        time.sleep(0.2)
    job = jobid_file.read_text().strip()
    subprocess.run(["scancel", f"{job}_2"], env=slurm_cluster["env"], check=True)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, out + err
    assert "1 of 3 jobs failed" in err and f"Slurm job {job}_2 was killed" in err and "log/c.2.log" in err, err
    assert "c.1.log" not in err and "c.3.log" not in err
    assert "done 3" in (tmp_path / "log/c.3.log").read_text()


# ------------------------------------------------------------ pre-emption
# A job that, on SIGUSR1, exits 75 ("stopped for pre-emption, checkpoint written")
# in its first attempts and succeeds in the attempt given by LAST (Slurm's restart
# count, 0-based, is the attempt number less one).
PREEMPTIBLE = ("trap 'echo got USR1 in attempt $((${SLURM_RESTART_COUNT:-0} + 1)); exit 75' USR1; "
               "if [ ${SLURM_RESTART_COUNT:-0} -ge LAST ]; then echo done; exit 0; fi; "
               "echo waiting; for i in $(seq 600); do sleep 0.1; done")


def _start(cluster, tmp_path, conf_extra, command, log="log/p.log"):
    conf = tmp_path / "slurm.conf"
    conf.write_text("partition = debug\npoll_seconds = 0.5\nstatus_grace_seconds = 2\n" + conf_extra)
    return subprocess.Popen([str(SLURM), "--config", str(conf), log, command], cwd=tmp_path, env=cluster["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_when_waiting(cluster, tmp_path, p, times=1, log="log/p.log"):
    """scancel --signal=USR1 --batch (as Slurm's --signal=B:USR1@T) each time an attempt is waiting."""
    jobid = tmp_path / "log/q/p.jobid"
    for n in range(1, times + 1):
        t0 = time.time()
        while time.time() - t0 < 60:
            text = (tmp_path / log).read_text() if (tmp_path / log).exists() else ""
            if jobid.exists() and text.splitlines().count("waiting") >= n:   # the output, not the header
                break
            assert p.poll() is None, p.communicate()
            time.sleep(0.1)
        subprocess.run(["scancel", "--signal=USR1", "--batch", jobid.read_text().strip()], env=cluster["env"],
                       check=True)
    return jobid.read_text().strip()


def test_preempted_job_is_requeued_and_its_log_appended(slurm_cluster, tmp_path):
    p = _start(slurm_cluster, tmp_path, "max_attempts = 3\n", PREEMPTIBLE.replace("LAST", "1"))
    job = _signal_when_waiting(slurm_cluster, tmp_path, p)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert f"Slurm job {job}_1 was requeued; waiting for attempt 2" in err
    text = (tmp_path / "log/p.log").read_text()
    lines = text.splitlines()
    # attempt 1 then attempt 2, one after the other in the same log
    assert re.match(rf"# Started at .* \(attempt 1 of at most 3, Slurm job {job} on ", lines[1]), lines[1]
    assert "got USR1 in attempt 1" in text
    assert re.search(r"# Ended \(code 75\) at .*; stopped for pre-emption: requeued as attempt 2", text)
    assert re.search(rf"# Started at .* \(attempt 2 of at most 3, Slurm job {job} on ", text)
    assert text.index("got USR1 in attempt 1") < text.index("(attempt 2 of") < text.index("\ndone\n")
    assert lines[-1].startswith("# Ended (code 0)") and text.count("# Started at") == 2
    assert (tmp_path / "log/q/p.1.status").read_text().split() == ["0", "2"]
    # Slurm's own output of both attempts, appended too
    assert (tmp_path / "log/q/p.1.out").exists()


def test_preempted_job_stops_after_max_attempts(slurm_cluster, tmp_path):
    p = _start(slurm_cluster, tmp_path, "max_attempts = 2\n", PREEMPTIBLE.replace("LAST", "5"))
    job = _signal_when_waiting(slurm_cluster, tmp_path, p, times=2)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 75, err
    assert err.strip().splitlines() == [
        f"slurm.py: Slurm job {job}_1 was requeued; waiting for attempt 2",
        "slurm.py: log/p.log: stopped for pre-emption (exit 75: checkpoint written); run the same command again to "
        "resume (after 2 attempts)"]
    text = (tmp_path / "log/p.log").read_text()
    assert text.count("# Started at") == 2 and "requeued as attempt 3" not in text
    assert text.splitlines()[-1].startswith("# Ended (code 75)")


def test_without_attempts_left_a_preempted_job_is_reported_as_such(slurm_cluster, tmp_path):
    # max_attempts 1 (the default for CPU jobs): no requeue, no --signal; 75 still reads as pre-emption
    p = _start(slurm_cluster, tmp_path, "", "echo stopping; exit 75")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 75 and "log/p.log: stopped for pre-emption (exit 75" in err, err
    assert "attempt" not in (tmp_path / "log/p.log").read_text()


def test_cancelled_job_is_not_requeued_and_slurm_says_why(slurm_cluster, tmp_path):
    """scancel (SIGTERM to the batch script and the job): no requeue, no status; the
    runner names the Slurm job and the state Slurm gives it."""
    p = _start(slurm_cluster, tmp_path, "max_attempts = 3\n", "echo waiting; sleep 60")
    jobid = tmp_path / "log/q/p.jobid"
    t0 = time.time()
    while not (jobid.exists() and "waiting" in (tmp_path / "log/p.log").read_text(errors="replace").splitlines()
               if (tmp_path / "log/p.log").exists() else False) and time.time() - t0 < 60:
        time.sleep(0.1)
    subprocess.run(["scancel", jobid.read_text().strip()], env=slurm_cluster["env"], check=True)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    assert re.search(rf"no exit status: Slurm job {jobid.read_text().strip()}_1 was killed or never ran "
                     r"\(Slurm: CANCELLED", err), err
    assert "requeued" not in (tmp_path / "log/p.log").read_text()


def test_multinode_and_requeue_options():
    conf = dict(SLURM_DEFAULTS, gpu_gres="gpu:a100:{n}", cpus_per_gpu="6", mem_per_gpu="60G",
                gpu_time="2-00:00:00", time="4:00:00", signal="USR1@600")
    req = parse_args(["--nodes", "2", "--gpu", "4", "--num-threads", "8", "log/t.log", "true"], "slurm.py")
    o = sbatch_options(req, conf, "pyxv-t", "q/t.%a.out")
    assert "--nodes=2" in o and "--ntasks-per-node=1" in o and "--gres=gpu:a100:4" in o
    assert "--cpus-per-task=24" in o and "--mem-per-gpu=60G" in o and "--time=2-00:00:00" in o
    assert "--requeue" in o and "--signal=B:USR1@600" in o and "--open-mode=append" in o
    # a CPU job: its class's max_attempts (1): neither requeue nor signal; the CPU time
    req = parse_args(["--num-threads", "2", "log/t.log", "true"], "slurm.py")
    o = sbatch_options(req, conf, "pyxv-t", "q/t.%a.out")
    assert "--requeue" not in o and not any(x.startswith(("--signal", "--nodes")) for x in o)
    assert "--time=4:00:00" in o and "--cpus-per-task=2" in o
    script = batch_script(parse_args(["--nodes", "3", "--num-threads", "4", "log/t.log", "x"],
                                                       "slurm.py"), Path("/tmp/q"), "t", dict(conf, net_interface="ib0"))
    assert "srun --nodes=3 --ntasks=3 --ntasks-per-node=1 --cpus-per-task=4 --kill-on-bad-exit=1" in script
    assert "export PYXV_NET_IFNAME=ib0" in script and "max_attempts=1" in script


def test_new_config_settings_are_checked(tmp_path):
    for line, msg in (("signal = USR1", "signal must be SIGNAL@SECONDS"), ("max_attempts = 0", "max_attempts must"),
                      ("net_interface = eth0; rm", "net_interface must"), ("gpus_per_node = x", "gpus_per_node must")):
        bad = tmp_path / "bad.conf"
        bad.write_text(line + "\n")
        with pytest.raises(UsageError, match=msg):
            read_slurm_config(bad)
    conf = read_slurm_config(REPO / "conf/slurm.conf")
    assert conf["gpu_max_attempts"] == "3" and conf["max_attempts"] == "1" and conf["signal"] == "USR1@300"


def test_more_gpus_than_a_node_has_is_refused_before_slurm(tmp_path):
    conf = tmp_path / "s.conf"
    conf.write_text("gpus_per_node = 4\n")
    p = subprocess.run([str(SLURM), "--config", str(conf), "--gpu", "8", "log/t.log", "true"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert p.stderr.strip() == ("slurm.py: log/t.log: the job asks for 8 GPUs on each of 1 node(s) but the nodes "
                                "have 4 (gpus_per_node in the Slurm config): ask for 2 nodes of at most 4 "
                                "(steps/train_xvector.sh --nodes 2 --gpus-per-node 4)")
    assert not (tmp_path / "log").exists()
