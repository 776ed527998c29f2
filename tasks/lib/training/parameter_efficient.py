"""Parameter-efficient fine-tuning (`train.peft`): what trains, and a plain model to save.

    full    every weight
    lora    low-rank updates of `train.lora.target_modules` (peft)
    ia3     learned scaling vectors of the attention keys and values and of the feed-forward
            output (`train.ia3`; peft's IA3)
    bitfit  the bias terms only (Ben Zaken et al., 2022): no library, a requires_grad mask

The task head (`classifier`) always trains: it starts random. LoRA and IA3 are merged into
the base weights before saving, so evaluation, export and serving see a plain transformers
model whatever the method.
"""

from __future__ import annotations

from typing import Any

from tasks.lib.config import TrainConfig
from tasks.lib.errors import ConfigError

HEADS = ("classifier", "score")  # the task head's module names in transformers' classifiers


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
    from peft import IA3Config, LoraConfig, TaskType, get_peft_model

    method = config.peft
    if method == "full":
        return model
    if method == "bitfit":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.endswith(".bias") or name.split(".", 1)[0] in HEADS
        return model
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


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
