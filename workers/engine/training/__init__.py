"""Distillation training shared by techniques: `recover` fine-tunes a student against a teacher."""

from workers.engine.training.loop import RecoveryStats, recover
from workers.engine.training.settings import RecoverySettings, TrainingParams

__all__ = ["RecoverySettings", "RecoveryStats", "TrainingParams", "recover"]
