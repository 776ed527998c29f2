"""LoRA through peft: adapters for training, merged into plain weights for export."""

from __future__ import annotations

from typing import Any

from tasks.lib.config import LoraConfig
from tasks.lib.errors import ConfigError


def add_lora(model: Any, config: LoraConfig) -> Any:
    """Wrap a sequence classifier so only the adapters and the classification head train."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import TaskType, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(config.target_modules) - names)
    if missing:
        linear = sorted(
            {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if type(module).__name__ == "Linear"}
        )
        raise ConfigError(
            f"train.lora.target_modules: {missing} are not modules of this model (its linear layers: {linear})"
        )
    return get_peft_model(
        model,
        PeftLoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=config.rank,
            lora_alpha=config.alpha,
            lora_dropout=config.dropout,
            target_modules=list(config.target_modules),
        ),
    )


def merge_lora(model: Any) -> Any:
    """The base model with the adapters added into its weights (no peft needed to load it)."""
    return model.merge_and_unload()


def parameter_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
