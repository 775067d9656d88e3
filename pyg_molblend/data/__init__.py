"""Featurization, dense batching and splits."""
from pyg_molblend.data.dense import DenseMolBatch, to_dense
from pyg_molblend.data.featurize import from_mol, from_smiles

__all__ = ["from_smiles", "from_mol", "to_dense", "DenseMolBatch"]
