"""Data-parallel training: the stage re-launches itself under torchrun."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from tasks.lib.errors import ConfigError, PipelineError

log = logging.getLogger(__name__)


class TrainingFailed(PipelineError, RuntimeError):
    """The distributed workers did not finish."""


def is_worker() -> bool:
    """True inside a process that torchrun started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_main_worker() -> bool:
    return os.environ.get("RANK", "0") == "0"


def check_devices(processes: int) -> None:
    """More GPU workers than GPUs would share a GPU: say which setting is wrong."""
    import torch

    if torch.cuda.is_available() and processes > torch.cuda.device_count():
        raise ConfigError(
            f"train.distributed.processes is {processes} but this machine has {torch.cuda.device_count()} GPUs"
        )


def launch(processes: int, root: Path) -> None:
    """Run the train stage in `processes` torchrun workers and wait for them.

    torchrun stops every worker when one fails, so a crashed worker cannot
    leave the others waiting on a collective.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "tasks.stages.train",
    ]
    log.info(f"train: {processes} data-parallel workers: {' '.join(command[2:])}")
    code = subprocess.run(command, cwd=root, check=False).returncode
    if code != 0:
        raise TrainingFailed(
            f"train: the {processes} torchrun workers failed (exit {code}); "
            "their output is above. train.distributed.processes: 1 trains in one process"
        )
