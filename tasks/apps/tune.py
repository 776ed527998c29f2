"""`textclf tune`: hyperparameter search over `tune.space` with Optuna, proposed as a recipe.

Each trial trains with the same code as stage `train` (tasks/lib/training), with the trial's
values of `tune.space` over params.yaml's `train`, on a seeded sample of `tune.train_rows`
augmented training rows, and is scored on the val split: the best validation accuracy (a
tagger's: entity F1). Optuna's TPE sampler (seeded) proposes the values; its median pruner
stops a trial whose validation at some evaluation is below the median of earlier trials' at the
same evaluation (a Trainer callback reports each one). The first trial of a study is the
shipped params, so the table shows what the search gains over them.

Why an Optuna storage rather than DVC experiments: a trial is one training run on data the
pipeline already made, where `dvc exp run` would run a whole pipeline per trial, and pruning
needs the intermediate validations, which Optuna stores per trial. The study lives in
`paths.cache/tune/study.db` (SQLite), named by a digest of the data, the train settings outside
the space, the space and the seed: a second `textclf tune` goes on with it, and other inputs
start another. Outputs: `reports/tune/trials.csv`, `reports/tune/index.html` (each trial's score
and the best so far; renders offline) and `recipes/tuned.yaml`, the best trial's values as a
params overlay to review (`git diff`) and apply (`textclf recipe tuned`). params.yaml is never
changed by a search.
"""

from __future__ import annotations

import hashlib
import html
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from tasks.lib.config import Params, SearchDimension, TrainConfig
from tasks.lib.errors import PipelineError
from tasks.lib.io import file_md5, read_table, write_text
from tasks.lib.recipes import RECIPES
from tasks.lib.reporting.offline_html import VEGA_SCRIPTS, inline_scripts
from tasks.lib.reporting.web_assets import installed
from tasks.lib.training.models import resolve_base_model

RECIPE = "tuned"
REPORT_DIR = "tune"


class TuneError(PipelineError, RuntimeError):
    """The search cannot run; the message says what is missing."""


def study_name(params: Params, train_file: Path, val_file: Path) -> str:
    """What decides a study's meaning: the data, the fixed train settings, the space, the sample and seed."""
    fixed = params.train.model_dump(exclude=set(params.tune.space))
    tune = params.tune.model_dump(include={"space", "train_rows", "seed"})
    key = json.dumps([file_md5(train_file), file_md5(val_file), fixed, tune, params.task], sort_keys=True)
    return "textclf-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def suggest(trial: Any, space: dict[str, SearchDimension], config: TrainConfig) -> dict[str, Any]:
    """The trial's value of each dimension (a whole-number setting of `config` is drawn as an integer)."""
    chosen: dict[str, Any] = {}
    for name, dimension in space.items():
        if dimension.choices is not None:
            chosen[name] = trial.suggest_categorical(name, dimension.choices)
        elif isinstance(getattr(config, name), int):
            chosen[name] = trial.suggest_int(name, int(dimension.low or 0), int(dimension.high or 0), log=dimension.log)
        else:
            chosen[name] = trial.suggest_float(
                name, float(dimension.low or 0), float(dimension.high or 0), log=dimension.log
            )
    return chosen


def shipped_values(config: TrainConfig, space: dict[str, SearchDimension]) -> dict[str, Any] | None:
    """params.yaml's values of the space's settings, if each lies in its dimension (else None)."""
    values = {name: getattr(config, name) for name in space}
    for name, dimension in space.items():
        value = values[name]
        inside = (
            value in dimension.choices
            if dimension.choices is not None
            else float(dimension.low or 0) <= float(value) <= float(dimension.high or 0)
        )
        if not inside:
            return None
    return values


def pruning_callback(trial: Any, metric: str) -> Any:
    """A Trainer callback: report each validation's `metric` to the trial; stop it when Optuna prunes."""
    import optuna
    from transformers import TrainerCallback

    class ReportValidations(TrainerCallback):
        def __init__(self) -> None:
            self.evaluations = 0

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            value = (metrics or {}).get(f"eval_{metric}")
            if value is None:
                return
            trial.report(float(value), self.evaluations)
            self.evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"validation {metric} {value:.4f} at evaluation {self.evaluations}")

    return ReportValidations()


def trial_table(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, score, seconds, and its values."""
    rows = []
    for trial in study.trials:
        rows.append(
            {
                "trial": trial.number,
                "state": trial.state.name.lower(),
                "value": trial.value,
                "seconds": trial.user_attrs.get("seconds"),
                "shipped": bool(trial.user_attrs.get("shipped", False)),
                **trial.params,
            }
        )
    return pd.DataFrame(rows)


def _chart(table: pd.DataFrame, metric: str) -> dict[str, Any]:
    scored = table.dropna(subset=["value"]).sort_values("trial")
    best = scored.assign(best=scored["value"].cummax())
    rows = [
        {"trial": int(r.trial), "value": float(r.value), "best": float(r.best), "state": str(r.state)}
        for r in best.itertuples()
    ]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"Validation {metric} per trial (line: best so far)",
        "width": 520,
        "height": 260,
        "data": {"values": rows},
        "layer": [
            {
                "mark": {"type": "point", "filled": True, "size": 70},
                "encoding": {
                    "x": {"field": "trial", "type": "quantitative"},
                    "y": {"field": "value", "type": "quantitative", "scale": {"zero": False}, "title": metric},
                    "color": {"field": "state", "type": "nominal"},
                    "tooltip": [{"field": "trial"}, {"field": "value"}, {"field": "state"}],
                },
            },
            {
                "mark": {"type": "line", "interpolate": "step-after", "color": "#444"},
                "encoding": {
                    "x": {"field": "trial", "type": "quantitative"},
                    "y": {"field": "best", "type": "quantitative"},
                },
            },
        ],
    }


def write_report(folder: Path, table: pd.DataFrame, metric: str, summary: str) -> Path:
    """trials.csv and index.html (the table and the chart, Vega inlined) in `folder`; returns the page."""
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "trials.csv", index=False)
    shown = table.sort_values("value", ascending=False, na_position="last")
    page = folder / "index.html"
    write_text(
        page,
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Hyperparameter search</title>"
        "<style>body{font-family:system-ui,sans-serif;margin:2rem}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
        f"table{{border-collapse:collapse}}</style>{VEGA_SCRIPTS}</head><body><h1>Hyperparameter search</h1>"
        f"<p>{html.escape(summary)}</p><div id='chart'></div>{shown.to_html(index=False, na_rep='')}"
        f"<script>vegaEmbed('#chart', {json.dumps(_chart(table, metric))}, {{actions: false, renderer: 'svg'}});"
        "</script></body></html>",
    )
    inline_scripts(page, installed())
    return page


def write_recipe(root: Path, values: dict[str, Any], note: str) -> Path:
    """The best trial's values as `recipes/tuned.yaml` (a params overlay under `train`)."""
    path = root / RECIPES / f"{RECIPE}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump({"train": values}, sort_keys=False)
    write_text(path, f"# Written by `textclf tune`: {note}\n# Review, then apply: textclf recipe {RECIPE}\n{body}")
    return path


def tune(params: Params, trials: int | None = None, minutes: float | None = None) -> tuple[pd.DataFrame, Path | None]:
    """Run the search until the study holds `trials` (default tune.trials) finished trials, or
    `minutes` (default tune.minutes) pass; write its report and, once a trial completed, the recipe.

    Returns:
        The trial table and the recipe written (None if no trial completed).
    Raises:
        TuneError: the augmented and val splits are not there yet.
    """
    import optuna

    from tasks.lib.training.trainer import train

    config = params.tune
    train_file, val_file = params.path("augmented"), params.path("val_split")
    missing = [str(path) for path in (train_file, val_file) if not path.is_file()]
    if missing:
        raise TuneError(f"{missing} not found: a search trains on the pipeline's splits; run `dvc repro augment` first")
    train_rows, val_rows = read_table(train_file), read_table(val_file)
    if config.train_rows is not None and len(train_rows) > config.train_rows:
        train_rows = train_rows.sample(n=config.train_rows, random_state=config.seed).reset_index(drop=True)
    metric = "f1" if params.task == "token_classification" else "accuracy"
    base_model = resolve_base_model(params.train.base_model, params.root)
    storage_dir = params.path("cache") / "tune"
    storage_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=study_name(params, train_file, val_file),
        storage=f"sqlite:///{storage_dir / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=config.pruning.startup_trials, n_warmup_steps=config.pruning.warmup_evaluations
        ),
    )
    shipped = shipped_values(params.train, config.space)
    if not study.trials and shipped is not None:
        study.enqueue_trial(shipped, user_attrs={"shipped": True})

    def objective(trial: Any) -> float:
        values = suggest(trial, config.space, params.train)
        trial_config = TrainConfig.model_validate({**params.train.model_dump(), **values})
        started = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="trial-", dir=storage_dir) as folder:
                found = train(
                    train_rows,
                    val_rows,
                    list(params.data.labels),
                    trial_config,
                    base_model,
                    Path(folder) / "model",
                    Path(folder) / "run",
                    callbacks=[pruning_callback(trial, metric)],
                    task=params.task,
                )
        finally:
            trial.set_user_attr("seconds", round(time.perf_counter() - started, 1))
        return float(found[f"best_val_{metric}"])

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    remaining = (trials or config.trials) - len(study.get_trials(states=finished))
    if remaining > 0:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective, n_trials=remaining, timeout=(minutes or config.minutes) * 60, catch=())
    table = trial_table(study)
    done = table[table["state"] == "complete"]
    recipe = None
    summary = f"{len(table)} trials ({len(done)} complete, {int((table['state'] == 'pruned').sum())} pruned)"
    if not done.empty:
        best = study.best_trial
        baseline = table[table["shipped"] & (table["state"] == "complete")]
        gain = f"; shipped params {float(baseline['value'].iloc[0]):.4f}" if not baseline.empty else ""
        summary += f"; best trial {best.number}: validation {metric} {best.value:.4f}{gain}"
        recipe = write_recipe(
            params.root,
            {name: best.params[name] for name in config.space},
            f"trial {best.number} of {len(table)}, validation {metric} {best.value:.4f}{gain}",
        )
    write_report(params.path("reports") / REPORT_DIR, table, metric, summary)
    print(f"tune: {summary}")
    return table, recipe
