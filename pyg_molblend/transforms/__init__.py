"""PyG transforms that add MoleBLEND's pair relations to molecular graphs."""

from pyg_molblend.transforms.add_conformer import AddConformer, ConformerError, SampleConformer
from pyg_molblend.transforms.add_descriptors import AddDescriptors, read_descriptors
from pyg_molblend.transforms.add_pairwise_distance import AddPairwiseDistance
from pyg_molblend.transforms.add_shortest_path import AddShortestPath

__all__ = [
    "AddConformer",
    "AddDescriptors",
    "AddPairwiseDistance",
    "AddShortestPath",
    "ConformerError",
    "SampleConformer",
    "read_descriptors",
]
