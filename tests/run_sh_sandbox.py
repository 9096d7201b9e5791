"""run.sh in a folder of its own, for the tests that run it: the ``sandbox``
fixture (run.sh and the parts it sources or runs, RUN_SH_PARTS, copied into a temporary folder
whose path.sh/cmd.sh only leave a mark) and fake step scripts that record
their arguments. Import the fixture by name where it is used."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_SH = REPO / "run.sh"
# What run.sh sources or runs itself, beside the steps a test fakes.
RUN_SH_PARTS = ("utils/parse_options.sh", "utils/recipe_lib.sh", "steps/train_emotion_systems.sh",
                "steps/eval_emotion_systems.sh")


@pytest.fixture
def sandbox(tmp_path):
    shutil.copy2(RUN_SH, tmp_path / "run.sh")
    for f in RUN_SH_PARTS:
        (tmp_path / f).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / f, tmp_path / f)
    (tmp_path / "path.sh").write_text("touch SETUP_STARTED\n")
    (tmp_path / "cmd.sh").write_text("touch SETUP_STARTED\n")
    # Config files the real ones stand for (run.sh checks that they exist).
    text = RUN_SH.read_text()
    for conf in set(re.findall(r"conf/[\w.]+", text)):
        (tmp_path / conf).parent.mkdir(exist_ok=True)
        (tmp_path / conf).write_text("")
    return tmp_path


RECORD_ARGS = '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > calls/$(basename "$0").$$\n'


def fake_steps(sandbox: Path, *steps: str, script: str = RECORD_ARGS) -> None:
    """Make run.sh in ``sandbox`` call fake ``steps/<step>`` scripts (by default each
    records its arguments in ``calls/<step>.<pid>``), with a path.sh that does nothing
    and a cmd.sh naming the runners TRAIN_CMD and CUDA_CMD."""
    (sandbox / "path.sh").write_text("true\n")
    (sandbox / "cmd.sh").write_text("export train_cmd=TRAIN_CMD cuda_cmd=CUDA_CMD\n")
    (sandbox / "steps").mkdir(exist_ok=True)
    (sandbox / "calls").mkdir()
    for step in steps:
        f = sandbox / "steps" / step
        f.write_text(script)
        f.chmod(0o755)


def recorded_calls(sandbox: Path, step: str) -> list[list[str]]:
    """The argument lists of every call of a fake step (see :func:`fake_steps`)."""
    return [f.read_text().splitlines() for f in (sandbox / "calls").iterdir() if f.name.startswith(step + ".")]
