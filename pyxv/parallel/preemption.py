"""The pre-emption contract, one place for the runners, the launcher and the trainers."""
import signal

PREEMPTED = 75   # a job's exit status (EX_TEMPFAIL): stopped for pre-emption, checkpoint written, run again to resume
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)   # what a batch system sends before a time limit or pre-emption
PREEMPTED_MARK_ENV = "PYXV_PREEMPTED_MARK"   # set by pyxv.launch: a file each trainer touches after such a stop
