"""Featurization, dense batching and splits."""
from pyg_molblend.data.dense import DenseMolBatch, to_dense
from pyg_molblend.data.featurize import from_mol, from_smiles
from pyg_molblend.data.split import index_split, random_split, scaffold_split

__all__ = [
    "DenseMolBatch",
    "from_mol",
    "from_smiles",
    "index_split",
    "random_split",
    "scaffold_split",
    "to_dense",
]
