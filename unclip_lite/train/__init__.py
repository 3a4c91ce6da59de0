"""The trainer every model in the course shares."""
from unclip_lite.train.trainer import EMA, LivePlot, NonFiniteLossError, Trainer, TrainConfig, lr_factor

__all__ = ["EMA", "LivePlot", "NonFiniteLossError", "Trainer", "TrainConfig", "lr_factor"]
