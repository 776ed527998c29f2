"""How a stage module runs as a script: `python -m tasks.stages.<name>` is what dvc.yaml calls.

A stage is a leaf: running it imports the stage module, this module and the
library, never the CLI or another stage, so dvc.yaml's `deps` can name all
the code a stage runs (tests/unit/test_floor_plan.py keeps them complete).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tasks.lib.config import Params, load_params
from tasks.lib.errors import PipelineError
from tasks.lib.logs import FORMAT_VARIABLE, LogSettingError, configure_logging

ERROR_PREFIX = "error: "  # the flow shows what follows it as the stage's failure message


def stay_offline(params: Params) -> None:
    """Keep the Hugging Face libraries off the network unless the config asks for the Hub."""
    local_model = params.train.base_model.startswith("pkg:") or (params.root / params.train.base_model).exists()
    if not params.data.source.startswith("hf:") and local_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def report_failure(exc: BaseException) -> int:
    """Say an error a person can act on (no traceback): `error: ...` on stderr, an ERROR record in JSON
    lines; the exit code is 1."""
    if os.environ.get(FORMAT_VARIABLE) == "json":
        logging.getLogger("textclf").error(str(exc))
    else:
        print(f"{ERROR_PREFIX}{exc}", file=sys.stderr)
    return 1


def run_stage(run: Callable[[Params], None], root: Path) -> int:
    """Load params.yaml from `root` and run the stage; 1 with the message on a PipelineError."""
    try:
        params = load_params(root)
        stay_offline(params)
        run(params)
    except (PipelineError, FileNotFoundError) as exc:
        return report_failure(exc)
    return 0


def run_as_script(run: Callable[[Params], None]) -> None:
    """A stage module's `__main__`: params from the current folder (the repo root, where DVC runs it), the
    log set up as TEXTCLF_LOG_FORMAT and TEXTCLF_LOG_LEVEL say (`relay` when a flow runs it)."""
    try:
        configure_logging()
    except LogSettingError as exc:
        sys.exit(report_failure(exc))
    sys.exit(run_stage(run, Path.cwd()))
