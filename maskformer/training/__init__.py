"""Training on PyTorch Lightning: run config and recipes, data module, LightningModule, runs."""

from .config import DataConfig, RunConfig, TrainConfig, recipe
from .run import train

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "recipe", "train"]
