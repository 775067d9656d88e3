"""MoleBLEND (Yu et al., ICLR 2024) for PyTorch Geometric."""
from pyg_molblend import constants, data, functional, transforms

__version__ = "0.1.0"

__all__ = ["constants", "data", "functional", "transforms", "__version__"]
