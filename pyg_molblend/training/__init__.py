"""Training loops (fine-tuning, pretraining), metrics and checkpoints."""

from pyg_molblend.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_encoder,
    save_checkpoint,
)
from pyg_molblend.training.finetune import FinetuneConfig, FinetuneResult, finetune, predict
from pyg_molblend.training.metrics import compute_metrics
from pyg_molblend.training.pretrain import PretrainConfig, pretrain

__all__ = [
    "CheckpointError",
    "FinetuneConfig",
    "FinetuneResult",
    "PretrainConfig",
    "compute_metrics",
    "finetune",
    "load_checkpoint",
    "load_encoder",
    "predict",
    "pretrain",
    "save_checkpoint",
]
