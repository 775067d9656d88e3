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
    "predict",
    "transforms",
]


def __getattr__(name: str):
    # ``pyg_molblend.predict`` is :func:`pyg_molblend.training.inference.predict_smiles`,
    # imported on first use (the training modules import this package's version).
    if name == "predict":
        from pyg_molblend.training.inference import predict_smiles

        return predict_smiles
    raise AttributeError(f"module 'pyg_molblend' has no attribute {name!r}")
