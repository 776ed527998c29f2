"""The one command line: what dvc.yaml calls for each stage, and the Prefect entry point.

    python -m tasks.cli stage <name>     run one stage (dvc.yaml does this)
    python -m tasks.cli run              run the whole DAG as a Prefect flow
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from tasks.config import ConfigError, Params, PipelineError, load_params

def _stay_offline(params: Params) -> None:
    """Keep the Hugging Face libraries off the network unless the config asks for the Hub."""
    local_model = params.train.base_model.startswith("pkg:") or (params.root / params.train.base_model).exists()
    if not params.data.source.startswith("hf:") and local_model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def run_stage(name: str, root: Path) -> None:
    """Import `tasks.<name>` and call its `run(params)`; stage names come from dvc.yaml."""
    params = load_params(root)
    _stay_offline(params)
    try:
        module = importlib.import_module(f"tasks.{name}")
    except ModuleNotFoundError:
        raise ConfigError(f"no stage module tasks/{name}.py for stage '{name}'") from None
    module.run(params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="textclf", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."), help="repo root (holds params.yaml, dvc.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    stage = sub.add_parser("stage", help="run one pipeline stage")
    stage.add_argument("name")
    sub.add_parser("run", help="run the whole DAG as a Prefect flow")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "stage":
            run_stage(args.name, root)
        else:
            from flows.pipeline import pipeline

            pipeline(root=str(root))
    except (PipelineError, FileNotFoundError) as exc:  # the message is the whole story: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
