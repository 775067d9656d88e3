"""Featurization, dense batching and splits."""
from pyg_molblend.data.dense import DenseMolBatch, to_dense
from pyg_molblend.data.featurize import from_mol, from_smiles
from pyg_molblend.data.sampler import SizeBucketBatchSampler, num_nodes_of
from pyg_molblend.data.split import index_split, random_split, scaffold_split

__all__ = [
    "DenseMolBatch",
    "SizeBucketBatchSampler",
    "from_mol",
    "from_smiles",
    "index_split",
    "num_nodes_of",
    "random_split",
    "scaffold_split",
    "to_dense",
]
