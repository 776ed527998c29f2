"""Parts of the `train` stage: checkpoints, curves, LoRA, process launch."""
