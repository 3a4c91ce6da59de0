"""The trainer every model in the course shares, and how it spreads over several processes."""
from unclip_lite.train.distributed import Parallel, distributed_setup
from unclip_lite.train.trainer import EMA, LivePlot, NonFiniteLossError, Trainer, TrainConfig, lr_factor

__all__ = ["EMA", "LivePlot", "NonFiniteLossError", "Parallel", "Trainer", "TrainConfig", "distributed_setup",
           "lr_factor"]
