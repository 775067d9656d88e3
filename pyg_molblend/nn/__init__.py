"""Neural network building blocks of MoleBLEND."""
from pyg_molblend.nn.blend import DIST, EDGE, MODES, SPD, BlendResult, ModalityBlend
from pyg_molblend.nn.encoders import (
    AtomEncoder,
    DegreeEncoder,
    EdgePathBias,
    GaussianDistanceBias,
    SPDBias,
)
from pyg_molblend.nn.heads import DenoiseHead, PairHead
from pyg_molblend.nn.layer import BlendedGraphTransformer, DropPath

__all__ = [
    "AtomEncoder",
    "DegreeEncoder",
    "SPDBias",
    "EdgePathBias",
    "GaussianDistanceBias",
    "ModalityBlend",
    "BlendResult",
    "MODES",
    "SPD",
    "EDGE",
    "DIST",
    "BlendedGraphTransformer",
    "DropPath",
    "PairHead",
    "DenoiseHead",
]
