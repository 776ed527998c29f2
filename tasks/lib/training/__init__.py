"""Fine-tuning: the Trainer set up from `train` params, resumable checkpoints, curves, LoRA, torchrun launch."""
