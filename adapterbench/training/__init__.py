"""The compact QLoRA trainer: examples and batches, checkpoints, and the loop."""

from adapterbench.training.loop import train

__all__ = ["train"]
