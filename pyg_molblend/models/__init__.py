"""Models: the MoleBLEND encoder and its fine-tuning wrapper."""

from pyg_molblend.models.moleblend import DEFAULT_LOSS_WEIGHTS, PRESETS, EncoderOutput, MoleBlend
from pyg_molblend.models.predictor import (
    TASK_TYPES,
    MoleBlendPredictor,
    masked_bce_loss,
    masked_mse_loss,
)

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "PRESETS",
    "TASK_TYPES",
    "EncoderOutput",
    "MoleBlend",
    "MoleBlendPredictor",
    "masked_bce_loss",
    "masked_mse_loss",
]
