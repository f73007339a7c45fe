"""Training runs: the trainer, its metrics, and data parallelism over MPI.

    from convnet.training import Trainer, TrainConfig
"""

from convnet.training.trainer import LocalGroup, TrainConfig, Trainer, TrainingError

__all__ = ["LocalGroup", "TrainConfig", "Trainer", "TrainingError"]
