"""The train stage on a tiny random BERT: resume after SIGKILL, determinism, LoRA, IA3 and BitFit,
two gloo processes, early stopping, out-of-memory back-off, DVCLive curves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from transformers import TrainerCallback

from tasks.lib.config import load_params
from tasks.lib.training import checkpoints, trainer
from tasks.lib.training.parameter_efficient import add_peft, load_trained, plain_model
from tasks.stages import augment, ingest, split, train, validate
from tests.support.repo import deep_merge, repo_params, tiny_overrides


def learnable(model_dir: Path) -> dict[str, Any]:
    """800 demo rows that the tiny model learns in a few epochs (val accuracy well above chance)."""
    return deep_merge(
        tiny_overrides(model_dir),
        {
            "data": {"demo": {"rows": 800}},
            "augment": {"synonym": {"ratio": 0.0}, "backtranslation": {"ratio": 0.0}},
            "train": {"learning_rate": 2e-3, "epochs": 3, "batch_size": 16},
        },
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model_dir) -> Path:
    """A workspace whose splits and augmented rows exist (the stages before train)."""
    root = tmp_path_factory.mktemp("prepared")
    (root / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), learnable(tiny_model_dir))))
    params = load_params(root)
    for stage in (ingest, validate, split, augment):
        stage.run(params)
    return root


def workspace(prepared: Path, target: Path, tiny_model_dir: Path, train_overrides: dict[str, Any]) -> Any:
    """A copy of the prepared workspace with `train` overrides; returns its params."""
    shutil.copytree(prepared / "data", target / "data")
    overrides = deep_merge(learnable(tiny_model_dir), {"train": train_overrides})
    (target / "params.yaml").write_text(yaml.safe_dump(deep_merge(repo_params(), overrides)))
    return load_params(target)


# What dvc.yaml runs, in the workspace.
STAGE_COMMAND = [sys.executable, "-m", "tasks.stages.train"]


def run_stage(root: Path) -> str:
    done = subprocess.run(STAGE_COMMAND, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr  # the stage's log lines are on stderr


def metrics_of(params: Any) -> dict[str, Any]:
    return json.loads((params.path("metrics") / "train.json").read_text())


def curve(params: Any, name: str) -> pd.DataFrame:
    return pd.read_csv(params.path("reports") / "train" / "plots" / "metrics" / f"{name}.tsv", sep="\t")


def model_weights(params: Any) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(params.path("model") / "model.safetensors")


# Validation and a checkpoint every 10 steps, and no early stop: 6 epochs of 38 steps.
RESUMABLE = {"eval_steps": 10, "epochs": 6, "early_stopping_patience": 50}


def test_a_run_killed_with_sigkill_resumes_and_ends_as_an_uninterrupted_one(prepared, tiny_model_dir, tmp_path):
    whole = workspace(prepared, tmp_path / "whole", tiny_model_dir, RESUMABLE)
    run_stage(whole.root)

    killed = workspace(prepared, tmp_path / "killed", tiny_model_dir, RESUMABLE)
    process = subprocess.Popen(STAGE_COMMAND, cwd=killed.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        found = [
            c
            for c in (killed.path("cache") / "checkpoints").glob("*/*/checkpoint-*")
            # Complete, as resuming judges it: trainer_state.json may exist half written.
            if int(c.name.split("-")[1]) >= 40 and checkpoints.complete(c)
        ]
        if found:
            break
        time.sleep(0.01)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not killed.path("model").exists() and not (killed.path("metrics") / "train.json").exists()

    output = run_stage(killed.root)
    resumed = metrics_of(killed)
    assert "train: resuming from" in output and resumed["resumed_from_step"] >= 40
    # The order of batches and the RNG states are restored: the same result as the whole run.
    reference = metrics_of(whole)
    assert resumed["steps"] == reference["steps"] == 228
    assert resumed["best_val_accuracy"] == reference["best_val_accuracy"]
    pd.testing.assert_frame_equal(curve(killed, "eval/accuracy"), curve(whole, "eval/accuracy"))
    # The finished run's checkpoints are gone: the model is what remains.
    assert not list((killed.path("cache") / "checkpoints").glob("*/*/checkpoint-*"))


def test_checkpoints_of_other_inputs_are_removed_not_resumed(prepared, tiny_model_dir, tmp_path):
    params = workspace(prepared, tmp_path, tiny_model_dir, {"epochs": 1})
    cache = params.path("cache") / "checkpoints"
    stale = cache / "0123456789abcdef" / "b16-a1" / "checkpoint-20"
    stale.mkdir(parents=True)
    (stale / "trainer_state.json").write_text("{}")
    output = run_stage(params.root)
    assert "removed checkpoints of other inputs" in output and not stale.exists()
    assert metrics_of(params)["resumed_from_step"] is None


def test_latest_checkpoint_skips_and_deletes_cut_off_ones(tmp_path):
    run = tmp_path / "run"
    for layout, step, state in (("b32-a1", 10, "{}"), ("b16-a2", 30, "{}"), ("b16-a2", 40, '{"global_st')):
        (run / layout / f"checkpoint-{step}").mkdir(parents=True)
        (run / layout / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    resume = checkpoints.latest(run)
    # The back-off layout (smaller batch) wins; its cut-off checkpoint-40 is deleted.
    assert (resume.step, resume.batch_size, resume.accumulation) == (30, 16, 2)
    assert not (run / "b16-a2" / "checkpoint-40").exists()
    assert checkpoints.latest(tmp_path / "none") is None


def test_two_runs_with_the_same_seed_give_identical_models(prepared, tiny_model_dir, tmp_path):
    first = workspace(prepared, tmp_path / "a", tiny_model_dir, {})
    second = workspace(prepared, tmp_path / "b", tiny_model_dir, {})
    train.run(first)
    train.run(second)
    a, b = metrics_of(first), metrics_of(second)
    assert a["best_val_accuracy"] == b["best_val_accuracy"] > 0.6
    weights_a, weights_b = model_weights(first), model_weights(second)
    assert all(torch.equal(weights_a[name], weights_b[name]) for name in weights_a)
    third = workspace(prepared, tmp_path / "c", tiny_model_dir, {"seed": 7})
    train.run(third)
    assert not torch.equal(model_weights(third)["classifier.weight"], weights_a["classifier.weight"])


def test_curves_are_written_with_dvclive(prepared, tiny_model_dir, tmp_path):
    params = workspace(prepared, tmp_path, tiny_model_dir, {"eval_steps": 20})
    train.run(params)
    loss, accuracy, rate = (
        curve(params, "train/loss"),
        curve(params, "eval/accuracy"),
        curve(params, "train/learning_rate"),
    )
    steps = metrics_of(params)["steps"]
    assert list(accuracy["step"]) == [*range(20, steps, 20), steps][: len(accuracy)] and len(accuracy) >= 5
    assert loss["step"].is_monotonic_increasing and loss["loss"].iloc[-1] < loss["loss"].iloc[0]
    # Linear warmup over 10% of the steps, then decay towards 0.
    assert rate["learning_rate"].idxmax() < len(rate) // 2 and rate["learning_rate"].iloc[-1] < 2e-4
    assert (params.path("reports") / "train" / "report.html").stat().st_size > 1000
    # The best checkpoint, not the last, is the model: re-validated, it scores the curve's best.
    assert metrics_of(params)["best_val_accuracy"] == pytest.approx(accuracy["accuracy"].max(), abs=1e-6)


def test_early_stopping_fires_after_patience_validations_without_gain(prepared, tiny_model_dir, tmp_path):
    # A learning rate too small to move the tiny model: val accuracy never improves on the first validation.
    params = workspace(
        prepared,
        tmp_path,
        tiny_model_dir,
        {"learning_rate": 1e-7, "epochs": 30, "eval_steps": 10, "early_stopping_patience": 2},
    )
    train.run(params)
    metrics = metrics_of(params)
    assert metrics["steps"] == 30 and metrics["epochs_run"] < 1  # validations at 10, 20, 30: stop


LORA = {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["query", "value"]}


@pytest.mark.parametrize(
    ("method", "trains"),
    [
        ("lora", lambda name: "lora_" in name or name.startswith("classifier")),
        ("ia3", lambda name: "ia3_" in name or name.startswith("classifier")),
        ("bitfit", lambda name: name.endswith(".bias") or name.startswith("classifier")),
    ],
)
def test_each_peft_method_trains_its_share_only_and_saves_a_plain_model(
    prepared, tiny_model_dir, tmp_path, method, trains
):
    from transformers import AutoModelForSequenceClassification

    from tasks.lib.training.trainer import load_model

    # The mechanics only: a random tiny encoder has no features for a share of its weights to adapt
    # (what each method buys on MiniLM is benchmarks/' business).
    params = workspace(prepared, tmp_path, tiny_model_dir, {"peft": method, "lora": LORA})
    model = load_model(str(tiny_model_dir), ["negative", "positive"], params.train)
    trainable = {name.removeprefix("base_model.model.") for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(trains(name) for name in trainable), sorted(trainable)
    assert any(name.startswith("classifier") for name in trainable)  # the head always trains
    train.run(params)
    metrics = metrics_of(params)
    assert metrics["peft"] == method and 0 < metrics["trainable_share"] < 0.2
    saved = AutoModelForSequenceClassification.from_pretrained(params.path("model"))
    assert type(saved).__name__ == "BertForSequenceClassification"
    assert not any("lora_" in name or "ia3_" in name for name, _ in saved.named_parameters())


@pytest.mark.parametrize(("method", "added"), [("lora", "lora_B"), ("ia3", "ia3_l")])
def test_a_merged_adapter_model_gives_the_adapter_models_logits(tiny_model_dir, make_params, method, added):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = make_params({"train": {"peft": method, "lora": LORA}}).train
    torch.manual_seed(0)
    adapted = add_peft(AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2), config)
    with torch.no_grad():  # lora_B starts at zero, IA3's vectors at one: give the adapters something to merge
        for name, weight in adapted.named_parameters():
            if added in name:
                weight.normal_(1.0 if method == "ia3" else 0.0, 0.5)
    adapted.eval()
    inputs = AutoTokenizer.from_pretrained(tiny_model_dir)(
        ["a fine film", "not good at all , sadly"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        before = adapted(**inputs).logits
        with adapted.disable_adapter():
            plain = adapted(**inputs).logits
        merged = plain_model(adapted, config)
        after = merged(**inputs).logits
    assert not torch.allclose(before, plain, atol=1e-4)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert not any(added.split("_")[0] + "_" in name for name, _ in merged.named_parameters())


def test_unknown_adapter_modules_are_named(tiny_model_dir, make_params):
    from transformers import AutoModelForSequenceClassification

    from tasks.lib.errors import ConfigError

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=2)
    config = make_params({"train": {"peft": "lora", "lora": {"target_modules": ["q_proj"]}}}).train
    with pytest.raises(ConfigError, match=r"train\.lora\.target_modules: \['q_proj'\].*query"):
        add_peft(model, config)
    config = make_params({"train": {"peft": "ia3", "ia3": {"feedforward_modules": ["intermediate.dense"]}}}).train
    with pytest.raises(ConfigError, match=r"train\.ia3\.feedforward_modules: \['intermediate.dense'\] must be among"):
        add_peft(model, config)


def test_bottleneck_adapters_train_alone_stay_in_the_saved_model_and_its_onnx_export(
    prepared, tiny_model_dir, tmp_path
):
    import numpy as np
    import onnxruntime as ort
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.lib.errors import PipelineError
    from tasks.lib.export.onnx_export import export_onnx
    from tasks.lib.training.bottleneck import AdaptedLinear
    from tasks.lib.training.trainer import load_model

    params = workspace(prepared, tmp_path, tiny_model_dir, {"peft": "adapter", "adapter": {"size": 8}})
    model = load_model(str(tiny_model_dir), ["negative", "positive"], params.train)
    adapted = [name for name, module in model.named_modules() if isinstance(module, AdaptedLinear)]
    # After each feed-forward block only: BERT's attention output (attention.output.dense) keeps none.
    assert adapted == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(".adapter_" in n or "LayerNorm" in n or n.startswith("classifier") for n in trainable)
    assert any(".adapter_up" in name for name in trainable)
    train.run(params)
    assert metrics_of(params)["peft"] == "adapter" and 0 < metrics_of(params)["trainable_share"] < 0.5

    saved = params.path("model")
    restored = load_trained(AutoModelForSequenceClassification, saved)
    dropped = AutoModelForSequenceClassification.from_pretrained(saved).eval()  # what plain loading would serve
    assert sum(isinstance(m, AdaptedLinear) for m in restored.modules()) == 2
    inputs = AutoTokenizer.from_pretrained(saved)(
        ["a fine film", "not good at all , sadly"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        logits = restored(**inputs).logits.numpy()
        assert not np.allclose(logits, dropped(**inputs).logits.numpy(), atol=1e-4)  # the adapters trained
    export_onnx(saved, tmp_path / "model.onnx", 17, "sequence_classification")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(["logits"], feed)[0], logits, atol=1e-4)

    weights = saved / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if "adapter_up" not in k}, weights, {"format": "pt"})
    with pytest.raises(
        PipelineError, match=r"config\.json names bottleneck adapters, but the weights hold 4 of their 8"
    ):
        load_trained(AutoModelForSequenceClassification, saved)


def test_a_prefix_trains_alone_and_its_onnx_export_computes_it(prepared, tiny_model_dir, tmp_path):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.lib.export.onnx_export import export_onnx
    from tasks.lib.training.trainer import load_model

    params = workspace(prepared, tmp_path, tiny_model_dir, {"peft": "prefix", "prefix": {"virtual_tokens": 5}})
    model = load_model(str(tiny_model_dir), ["negative", "positive"], params.train)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any("prompt_encoder" in name for name in trainable)
    assert all("prompt_encoder" in name or ".classifier." in name for name in trainable), sorted(trainable)
    train.run(params)
    assert metrics_of(params)["peft"] == "prefix" and 0 < metrics_of(params)["trainable_share"] < 0.2

    saved = params.path("model")
    assert (saved / "model.safetensors").is_file() and (saved / "prefix" / "adapter_model.safetensors").is_file()
    restored = load_trained(AutoModelForSequenceClassification, saved)
    base = AutoModelForSequenceClassification.from_pretrained(saved).eval()  # the trained head, no prefix
    tokenizer = AutoTokenizer.from_pretrained(saved)
    # Another batch size and length than the export's sample: the prefix follows both.
    inputs = tokenizer(["a fine film", "not good at all , sadly", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = restored(**inputs).logits.numpy()
        assert not np.allclose(logits, base(**inputs).logits.numpy(), atol=1e-4)
        torch.testing.assert_close(base.classifier.weight, restored.base_model.classifier.weight)
    export_onnx(saved, tmp_path / "model.onnx", 17, "sequence_classification")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(["logits"], feed)[0], logits, atol=1e-4)


def test_prefix_tuning_an_encoder_without_past_key_values_is_refused_by_name(make_params):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    from tasks.lib.errors import ConfigError

    tiny = MPNetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=99)
    config = make_params({"train": {"peft": "prefix"}}).train
    with pytest.raises(ConfigError, match=r"prefix needs an encoder .* MPNetForSequenceClassification does not"):
        add_peft(MPNetForSequenceClassification(tiny), config)


def test_two_gloo_processes_train_like_one(prepared, tiny_model_dir, tmp_path):
    one = workspace(prepared, tmp_path / "one", tiny_model_dir, {"batch_size": 16})
    two = workspace(prepared, tmp_path / "two", tiny_model_dir, {"batch_size": 8, "distributed": {"processes": 2}})
    train.run(one)
    output = run_stage(two.root)
    assert "2 data-parallel workers" in output
    single, parallel = metrics_of(one), metrics_of(two)
    assert parallel["processes"] == 2 and parallel["rows_per_step"] == single["rows_per_step"] == 16
    assert parallel["steps"] == single["steps"]
    # Not the same numbers (each process draws its own dropout), the same kind of model.
    assert parallel["best_val_accuracy"] > 0.7 and single["best_val_accuracy"] > 0.7
    assert abs(parallel["best_val_accuracy"] - single["best_val_accuracy"]) < 0.1
    # Validation losses are per-row means in both (not scaled by the number of processes).
    assert abs(curve(two, "eval/loss")["loss"].iloc[0] - curve(one, "eval/loss")["loss"].iloc[0]) < 0.1


class OutOfMemoryAbove(TrainerCallback):
    """Raises the CUDA out-of-memory error whenever the per-device batch is above `limit`."""

    def __init__(self, limit: int):
        self.limit = limit

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.per_device_train_batch_size > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _train_with(params: Any, callback: TrainerCallback) -> dict[str, Any]:
    from tasks.lib.io import read_table

    return trainer.train(
        read_table(params.path("augmented")),
        read_table(params.path("val_split")),
        list(params.data.labels),
        params.train,
        str(params.train.base_model),
        params.path("model"),
        params.path("cache") / "run",
        callbacks=[callback],
    )


def test_out_of_memory_halves_the_batch_and_keeps_the_rows_per_step(prepared, tiny_model_dir, tmp_path):
    params = workspace(prepared, tmp_path, tiny_model_dir, {"epochs": 1})
    metrics = _train_with(params, OutOfMemoryAbove(4))
    assert (metrics["batch_size"], metrics["gradient_accumulation_steps"], metrics["oom_backoffs"]) == (4, 4, 2)
    assert metrics["rows_per_step"] == 16 and (params.path("model") / "model.safetensors").exists()


def test_out_of_memory_without_back_off_says_what_to_lower(prepared, tiny_model_dir, tmp_path):
    params = workspace(prepared, tmp_path, tiny_model_dir, {"epochs": 1, "oom_backoff": False})
    with pytest.raises(
        trainer.OutOfMemory,
        match=r"train\.batch_size 16 .*train\.max_length 128.*"
        r"gradient_accumulation_steps",
    ):
        _train_with(params, OutOfMemoryAbove(4))
    assert not params.path("model").exists()


@pytest.mark.gpu
def test_gpu_uses_mixed_precision_and_tf32(make_params):
    precision = trainer.choose_precision(make_params().train)
    assert precision.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert precision.tf32 is (True if torch.cuda.get_device_capability()[0] >= 8 else None)


def test_tune_searches_prunes_resumes_and_proposes_a_recipe_that_applies(prepared, tiny_model_dir, tmp_path):
    from tasks.apps.tune import tune
    from tasks.lib.recipes import apply_recipe
    from tasks.lib.reporting.offline_html import remote_loads

    params = workspace(prepared, tmp_path, tiny_model_dir, {})
    search = {
        "trials": 2,
        "train_rows": None,  # all 599: fewer leave the tiny model at chance
        "pruning": {"startup_trials": 1, "warmup_evaluations": 0},
        "space": {"learning_rate": {"low": 1e-5, "high": 5e-3, "log": True}, "batch_size": {"choices": [8, 16]}},
    }
    settings = yaml.safe_load((tmp_path / "params.yaml").read_text())
    settings["tune"] = {**settings["tune"], **search}  # this space only, not merged into the shipped one
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(settings))
    params = load_params(tmp_path)
    table, recipe = tune(params)
    # Trial 1 draws a learning rate 13x lower: below trial 0's first validation, it is stopped there.
    assert table["state"].tolist() == ["complete", "pruned"]
    first = table.iloc[0]  # the shipped settings come first, so the gain over them shows
    assert first["shipped"] and first["learning_rate"] == 2e-3 and first["batch_size"] == 16
    assert table["value"].dropna().between(0, 1).all()
    page = (tmp_path / "reports" / "tune" / "index.html").read_text()
    assert remote_loads(page) == [] and "vegaEmbed" in page
    proposed = yaml.safe_load(recipe.read_text())["train"]
    best = table.loc[table["value"].idxmax()]
    assert proposed == {"learning_rate": best["learning_rate"], "batch_size": int(best["batch_size"])}
    before = (tmp_path / "params.yaml").read_text()
    apply_recipe(tmp_path, "tuned")  # a valid overlay: params.yaml takes it (no change if shipped was best)
    applied = load_params(tmp_path).train
    assert (applied.learning_rate, applied.batch_size) == (best["learning_rate"], best["batch_size"])

    # The study is kept: asking for one trial more runs one trial, not three.
    (tmp_path / "params.yaml").write_text(before)
    again, _ = tune(load_params(tmp_path), trials=3)
    assert len(again) == 3 and again.iloc[:2]["trial"].tolist() == table["trial"].tolist()
