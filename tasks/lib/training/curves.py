"""Training curves with DVCLive: loss, learning rate and validation metrics per optimizer step.

The folder holds one TSV per curve (`plots/metrics/<group>/<name>.tsv`, which
dvc.yaml's `plots` draws for `dvc plots show`) and `report.html`, rewritten
at every log so it can be opened while training runs. The report is one file
that renders offline: the Vega scripts DVCLive names on a CDN are inlined
(tasks.lib.reporting.offline_html).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tasks.lib.reporting.offline_html import inline_scripts
from tasks.lib.reporting.web_assets import installed

# Trainer log key -> DVCLive metric name.
CURVES = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "eval_loss": "eval/loss",
    "eval_accuracy": "eval/accuracy",
}


class LiveCurves(TrainerCallback):
    """Logs the Trainer's logs to DVCLive on the main process, keyed by optimizer step."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.live: Any = None
        self.web_assets = installed()  # before training: missing files fail the run now, not at the first log

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        from dvclive import Live

        # resume=False starts the files afresh; a run resumed from a checkpoint
        # replays the history restored with it, so steps after the checkpoint
        # that the killed run had logged are not drawn twice.
        self.live = Live(str(self.folder), report="html", save_dvc_exp=False, dvcyaml=False)
        for entry in state.log_history:
            self._log(entry, entry.get("step", 0))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.live is not None and logs:
            self._log(logs, state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.live is not None:
            self.live.end()  # writes the report once more
            self._make_report_offline()
            self.live = None

    def _log(self, entry: dict[str, Any], step: int) -> None:
        values = {name: float(entry[key]) for key, name in CURVES.items() if key in entry}
        if not values:
            return
        self.live.step = step
        for name, value in values.items():
            self.live.log_metric(name, value)
        self.live.make_summary()
        self.live.make_report()
        self._make_report_offline()

    def _make_report_offline(self) -> None:
        report = Path(self.live.report_file)
        if report.exists():
            inline_scripts(report, self.web_assets)
