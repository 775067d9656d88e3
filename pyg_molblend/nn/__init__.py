"""Neural network building blocks of MoleBLEND."""

from pyg_molblend.nn.blend import DIST, EDGE, MODES, SPD, BlendResult, ModalityBlend
from pyg_molblend.nn.dropout import Dropout
from pyg_molblend.nn.encoders import (
    AtomEncoder,
    DegreeEncoder,
    EdgePathBias,
    GaussianDistanceBias,
    SPDBias,
)
from pyg_molblend.nn.heads import DenoiseHead, PairHead
from pyg_molblend.nn.layer import BlendedGraphTransformer, DropPath, key_padding_bias

__all__ = [
    "DIST",
    "EDGE",
    "MODES",
    "SPD",
    "AtomEncoder",
    "BlendResult",
    "BlendedGraphTransformer",
    "DegreeEncoder",
    "DenoiseHead",
    "DropPath",
    "Dropout",
    "EdgePathBias",
    "GaussianDistanceBias",
    "ModalityBlend",
    "PairHead",
    "SPDBias",
    "key_padding_bias",
]
