"""Models: the MoleBLEND encoder, its fine-tuning wrapper and their losses."""

from pyg_molblend.models.losses import (
    EDGE_TARGETS,
    NUM_EDGE_CLASSES,
    NUM_SPD_CLASSES,
    PretrainLoss,
    denoise_loss,
    direction_loss,
    edge_classes,
    edge_labels,
    edge_loss,
    masked_bce_loss,
    masked_cross_entropy_loss,
    masked_mse_loss,
    spd_labels,
    spd_loss,
)
from pyg_molblend.models.moleblend import DEFAULT_LOSS_WEIGHTS, PRESETS, EncoderOutput, MoleBlend
from pyg_molblend.models.predictor import TASK_TYPES, MoleBlendPredictor, output_names

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "EDGE_TARGETS",
    "NUM_EDGE_CLASSES",
    "NUM_SPD_CLASSES",
    "PRESETS",
    "TASK_TYPES",
    "EncoderOutput",
    "MoleBlend",
    "MoleBlendPredictor",
    "PretrainLoss",
    "denoise_loss",
    "direction_loss",
    "edge_classes",
    "edge_labels",
    "edge_loss",
    "masked_bce_loss",
    "masked_cross_entropy_loss",
    "masked_mse_loss",
    "output_names",
    "spd_labels",
    "spd_loss",
]
