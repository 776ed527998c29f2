"""The labelling loop, measured: the review queue's choice of texts against a random choice, labelled in
a real Label Studio by a simulated annotator (SST-2's gold labels), pulled, and trained on.

Per seed:

1. a base model is fine-tuned from train.base_model on --base SST-2 training rows (the train stage's
   code, tasks/lib/training), exported to ONNX and registered as production;
2. it answers --pool other training rows, logged as `textclf serve` logs them (monitor.log_text on);
3. per arm, --labels texts are pushed to a Label Studio project of their own:
   - queue: `label push`, i.e. the review queue (the least confident answers first);
   - random: as many logged texts drawn at random, pushed as the same tasks;
4. a simulated annotator labels every task through Label Studio's API with the text's gold label;
5. `label pull` writes the labels into the landing folder; the base rows plus the pulled ones train a
   model from train.base_model again.

Every model is scored on SST-2's dev split, which nothing trains or chooses a checkpoint on. Label Studio
runs from .venv-label-studio (`make label-studio`), on loopback, in a temporary folder.

    python benchmarks/labelling_loop.py [--seeds 3] [--base 200] [--pool 3000] [--labels 200] [--epochs 3]

Prints per seed and arm: dev accuracy, the gain over that seed's base model, and the share of pulled
labels that corrected the model; then the mean gain per arm and queue minus random, each with a paired
bootstrap 95% interval over dev rows (the seeds averaged in each resample).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from label_studio_server import LabelStudioServer
from sst2_rows import LABELS, sst2
from tqdm import tqdm

from tasks.lib.config import Params, load_params
from tasks.lib.evaluation.metrics import bootstrap_samples, interval
from tasks.lib.export.onnx_export import export_onnx
from tasks.lib.inference.onnx_classifier import ClassifierInfo
from tasks.lib.inference.production_model import predict
from tasks.lib.labelling.label_studio import LabelStudio
from tasks.lib.labelling.project_config import choice_result
from tasks.lib.labelling.sync import project_of, pull, push, task_of
from tasks.lib.monitoring.prediction_log import PREDICTIONS, Answer, PredictionLog, log_location, read_log
from tasks.lib.storage.registry import Registry
from tasks.lib.training.logits import torch_logits
from tasks.lib.training.models import resolve_base_model
from tasks.lib.training.trainer import train

ARMS = ("queue", "random")


def workspace(folder: Path, seed: int, repo: Path) -> Params:
    """A workspace of its own per seed: params.yaml with the texts logged, its registry and landing."""
    folder.mkdir(parents=True)
    values = yaml.safe_load((repo / "params.yaml").read_text())
    values["monitor"].update(log_text=True, review_drifted_share=0.0)
    (folder / "params.yaml").write_text(yaml.safe_dump(values))
    return load_params(folder)


def fine_tuned(params: Params, rows: pd.DataFrame, val: pd.DataFrame, epochs: int, out: Path) -> Path:
    config = params.train.model_copy(update={"epochs": epochs, "eval_steps": None})
    base = resolve_base_model(params.train.base_model, params.root)
    train(rows, val, LABELS, config, base, out, out.with_name(out.name + "-run"))
    return out


def register(params: Params, model: Path) -> None:
    """The model exported as the export stage leaves it, registered as production."""
    folder = model.with_name(model.name + "-onnx")
    folder.mkdir()
    export_onnx(model, folder / "model.onnx", params.export.opset, "sequence_classification")
    shutil.copy(model / "tokenizer.json", folder)
    ClassifierInfo(LABELS, params.train.max_length).save(folder)
    registry = Registry(params.path("registry"))
    registry.set_production(registry.register(folder, {"model_md5": model.name}), "benchmark")


def serve_pool(params: Params, texts: list[str]) -> None:
    """The production model answers `texts` in requests of 32, logged as the service logs them."""
    registry = params.path("registry")
    log = PredictionLog(log_location(params.monitor, registry, PREDICTIONS), params.monitor)
    version = Registry(registry).production_version()
    for start in tqdm(range(0, len(texts), 32), desc="serving the pool", unit="request", leave=False):
        batch = texts[start : start + 32]
        log.record(Answer(uuid.uuid4().hex, time.time(), str(version), None, batch, predict(batch, registry)))
    log.close()


def random_tasks(params: Params, count: int, seed: int) -> list[dict[str, Any]]:
    """`count` logged texts drawn at random, as the tasks `label push` makes of the review queue."""
    logged = read_log(log_location(params.monitor, params.path("registry"), PREDICTIONS)).drop_duplicates("text_hash")
    drawn = logged.sample(n=count, random_state=seed).assign(reason="random choice")
    return [task_of(params, row) for row in drawn.assign(predicted=drawn["label"]).to_dict("records")]


def labelled_by_annotator(params: Params, studio: LabelStudio, gold: dict[str, str]) -> None:
    """Every task of the project labelled with its text's gold label, as a person would in the page."""
    project = int(project_of(params, studio, create=False)["id"])
    for task in tqdm(list(studio.tasks(project)), desc="annotating", unit="task", leave=False):
        prediction = task["predictions"][0]
        studio.annotate(task["id"], choice_result(gold[task["data"]["text"]]), parent_prediction=prediction["id"])


def dev_correct(model: Path, dev: pd.DataFrame, params: Params) -> np.ndarray:
    logits = torch_logits(model, list(dev["text"]), 64, params.train.max_length)
    return np.array([LABELS[i] for i in logits.argmax(axis=1)]) == dev["label"].to_numpy()


def run_seed(args: argparse.Namespace, seed: int, studio: LabelStudio, work: Path, repo: Path) -> dict[str, Any]:
    params = workspace(work / f"seed-{seed}", seed, repo)
    shuffled = sst2(params, "train.tsv").sample(frac=1.0, random_state=seed).reset_index(drop=True)
    base_rows, val_rows = shuffled.iloc[: args.base], shuffled.iloc[args.base : args.base + args.val]
    pool = shuffled.iloc[args.base + args.val : args.base + args.val + args.pool].drop_duplicates("text")
    gold = dict(zip(pool["text"], pool["label"], strict=True))
    dev = sst2(params, "dev.tsv")
    base = fine_tuned(params, base_rows, val_rows, args.epochs, params.root / "base")
    register(params, base)
    serve_pool(params, list(pool["text"]))
    found: dict[str, Any] = {"base": dev_correct(base, dev, params)}
    for arm in ARMS:
        arm_params = params.model_copy(
            update={"labelling": params.labelling.model_copy(update={"project": f"loop seed {seed} {arm}"})}
        )
        if arm == "queue":
            push(arm_params, studio, n=args.labels)
        else:
            studio.import_tasks(
                int(project_of(arm_params, studio, create=True)["id"]), random_tasks(params, args.labels, seed)
            )
        labelled_by_annotator(arm_params, studio, gold)
        report = pull(arm_params, studio)
        assert report.file is not None, report.summary()
        pulled = pd.read_csv(params.root / report.file)
        (params.root / report.file).unlink()  # the next arm's pull writes its own
        rows = pd.concat([base_rows, pulled[["text", "label"]]], ignore_index=True)
        model = fine_tuned(params, rows, val_rows, args.epochs, params.root / arm)
        found[arm] = dev_correct(model, dev, params)
        found[f"{arm}_pulled"] = len(pulled)
        found[f"{arm}_corrected"] = report.edited
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--base", type=int, default=200, help="training rows of the base model")
    parser.add_argument("--val", type=int, default=200, help="rows the best epoch is chosen on")
    parser.add_argument("--pool", type=int, default=3000, help="served texts the labels are chosen from")
    parser.add_argument("--labels", type=int, default=200, help="texts labelled per arm")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repo = args.root.resolve()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="labelling-loop-") as folder:
        server = LabelStudioServer(Path(folder) / "label-studio")
        try:
            with LabelStudio(server.start()) as studio:
                seeds = [
                    run_seed(args, seed, studio, Path(folder), repo) for seed in tqdm(range(args.seeds), desc="seeds")
                ]
        finally:
            server.stop()
    print(
        f"\n{args.seeds} seeds; base model: {args.base} SST-2 training rows; {args.labels} labels per arm chosen "
        f"from {args.pool} served texts; {args.epochs} epochs; dev {len(seeds[0]['base'])} rows; "
        f"{(time.perf_counter() - started) / 60:.1f} min"
    )
    print(
        f"{'seed':>4} {'base acc':>9} " + " ".join(f"{arm + ' acc':>11} {'gain':>7} {'corrected':>9}" for arm in ARMS)
    )
    for seed, found in enumerate(seeds):
        cells = [
            f"{found[arm].mean():>11.4f} {found[arm].mean() - found['base'].mean():>+7.4f} "
            f"{found[f'{arm}_corrected'] / found[f'{arm}_pulled']:>9.1%}"
            for arm in ARMS
        ]
        print(f"{seed:>4} {found['base'].mean():>9.4f} " + " ".join(cells))
    draws = bootstrap_samples(len(seeds[0]["base"]), args.resamples, seed=0)

    def mean_gain(arm: str, against: str) -> tuple[float, tuple[float | None, float | None]]:
        differences = np.stack([found[arm].astype(float) - found[against] for found in seeds])  # seeds x rows
        point = float(differences.mean())
        resampled = differences[:, draws].mean(axis=(0, 2))
        return point, interval(resampled, 0.95)

    print("\nmean over seeds, paired bootstrap 95% interval over dev rows:")
    for arm, against in (("queue", "base"), ("random", "base"), ("queue", "random")):
        point, (low, high) = mean_gain(arm, against)
        print(f"  {arm} - {against}: {point:+.4f} ({low:+.4f} to {high:+.4f}) accuracy")


if __name__ == "__main__":
    main()
