"""MoleBLEND (Yu et al., ICLR 2024) for PyTorch Geometric."""

from pyg_molblend import constants, data, functional, transforms
from pyg_molblend.models import MoleBlend
from pyg_molblend.nn import BlendedGraphTransformer

__version__ = "0.1.0"

__all__ = [
    "BlendedGraphTransformer",
    "MoleBlend",
    "__version__",
    "constants",
    "data",
    "functional",
    "transforms",
]
