"""Parameter-efficient fine-tuning (`train.peft`): what trains, and a plain model to save.

    full    every weight
    lora    low-rank updates of `train.lora.target_modules` (peft)
    ia3     learned scaling vectors of the attention keys and values and of the feed-forward
            output (`train.ia3`; peft's IA3)
    bitfit  the bias terms only (Ben Zaken et al., 2022): no library, a requires_grad mask
    adapter bottleneck adapters after `train.adapter.modules`, with the layer norms
            (Houlsby et al., 2019): tasks/lib/training/bottleneck.py
    prefix  `train.prefix.virtual_tokens` learned keys and values before every layer's
            attention (Li and Liang, 2021; peft's PrefixTuning); needs an encoder that takes
            past key values (BERT does, MPNet does not)

The task head (`classifier`) always trains: it starts random. LoRA and IA3 are merged into
the base weights before saving, so evaluation, export and serving see a plain transformers
model. Adapters and prefixes cannot be merged: `save_trained` keeps them beside the base
weights and `load_trained` puts them back, so the ONNX export (and every serving variant)
computes them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from tasks.lib.config import TrainConfig
from tasks.lib.errors import ConfigError

HEADS = ("classifier", "score")  # the task head's module names in transformers' classifiers
# peft's files for a prefix, in a folder of their own: transformers' from_pretrained would take
# an adapter_config.json beside the weights for an adapter it can load itself, and fail.
PREFIX_FOLDER = "prefix"


def _check_modules(model: Any, setting: str, wanted: list[str]) -> None:
    """Every name in `wanted` must end the name of one of the model's modules (peft's matching)."""
    names = [name for name, _ in model.named_modules()]
    missing = sorted(w for w in wanted if not any(n == w or n.endswith(f".{w}") for n in names))
    if missing:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if type(module).__name__ == "Linear"}
        )
        raise ConfigError(f"{setting}: {missing} are not modules of this model (its linear layers: {linear})")


def add_peft(model: Any, config: TrainConfig) -> Any:
    """The model as `config.peft` trains it (unchanged for `full`)."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    method = config.peft
    if method == "full":
        return model
    if method == "bitfit":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.endswith(".bias") or name.split(".", 1)[0] in HEADS
        return model
    if method == "adapter":
        from tasks.lib.training.bottleneck import PREFIX, add_adapters

        add_adapters(model, config.adapter.size, config.adapter.modules)
        for name, parameter in model.named_parameters():
            parameter.requires_grad = f".{PREFIX}" in name or "LayerNorm" in name or name.split(".", 1)[0] in HEADS
        return model
    if method == "prefix":
        # peft checks this only at the first forward pass, with a less helpful message.
        takes = (inspect.signature(m.forward).parameters for m in (model, model.base_model))
        if not any("past_key_values" in parameters for parameters in takes):
            raise ConfigError(
                f"train.peft: prefix needs an encoder whose attention takes past key values, and "
                f"{type(model).__name__} does not (lora, ia3, bitfit and adapter work with it)"
            )
        tagger = type(model).__name__.endswith("ForTokenClassification")
        return get_peft_model(
            model,
            PrefixTuningConfig(
                task_type=TaskType.TOKEN_CLS if tagger else TaskType.SEQ_CLS,
                num_virtual_tokens=config.prefix.virtual_tokens,
            ),
        )
    # modules_to_save: the head trains in full and is saved with the merged weights.
    if method == "lora":
        _check_modules(model, "train.lora.target_modules", config.lora.target_modules)
        adapter: Any = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=config.lora.rank,
            lora_alpha=config.lora.alpha,
            lora_dropout=config.lora.dropout,
            target_modules=list(config.lora.target_modules),
        )
    else:
        ia3 = config.ia3
        _check_modules(model, "train.ia3.target_modules", ia3.target_modules)
        outside = sorted(set(ia3.feedforward_modules) - set(ia3.target_modules))
        if outside:
            raise ConfigError(f"train.ia3.feedforward_modules: {outside} must be among train.ia3.target_modules")
        adapter = IA3Config(
            task_type=TaskType.SEQ_CLS,
            target_modules=list(ia3.target_modules),
            feedforward_modules=list(ia3.feedforward_modules),
        )
    return get_peft_model(model, adapter)


def plain_model(model: Any, config: TrainConfig) -> Any:
    """What to save: LoRA's and IA3's adapters added into the base weights (no peft needed to load it)."""
    return model.merge_and_unload() if config.peft in ("lora", "ia3") else model


def save_trained(model: Any, config: TrainConfig, folder: Path) -> None:
    """Write the trained model as `load_trained` reads it: a plain transformers model (LoRA and IA3
    merged; adapters inside it), and for prefix tuning the base model with the trained head, and
    peft's files for the prefix in `PREFIX_FOLDER`."""
    if config.peft != "prefix":
        plain_model(model, config).save_pretrained(str(folder))
        return
    base = model.get_base_model()
    # peft wraps the head: keep its trained copy under the head's own name, drop the original.
    wrapped = ".modules_to_save.default."
    state = {
        name.replace(wrapped, "."): tensor
        for name, tensor in base.state_dict().items()
        if ".original_module." not in name
    }
    base.save_pretrained(str(folder), state_dict=state)
    model.save_pretrained(str(folder / PREFIX_FOLDER))
    (folder / PREFIX_FOLDER / "README.md").unlink(missing_ok=True)  # peft's model-card template


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def load_trained(auto: Any, model_dir: Path, **kwargs: Any) -> Any:
    """A model the train stage saved, with `auto` (e.g. AutoModelForSequenceClassification), in eval mode:
    a plain transformers model, or one with its bottleneck adapters or its prefix put back."""
    from tasks.lib.training.bottleneck import restore_adapters

    model = restore_adapters(auto.from_pretrained(model_dir, use_safetensors=True, **kwargs), model_dir)
    if (model_dir / PREFIX_FOLDER).is_dir():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_dir / PREFIX_FOLDER)
    return model.eval()
