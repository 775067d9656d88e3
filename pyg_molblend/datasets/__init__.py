"""Molecular datasets: MoleculeNet, generic SMILES CSVs, OGB, QM9 (3D), unlabelled SMILES
and SDF files, in memory or (for large pretraining corpora) on disk."""

from pyg_molblend.datasets.csv_dataset import TASK_TYPES, CSVDataset
from pyg_molblend.datasets.molecule_net import MoleculeNet, default_dataset
from pyg_molblend.datasets.ogb_dataset import evaluate_ogb, load_ogb
from pyg_molblend.datasets.on_disk import OnDiskMoleculeDataset
from pyg_molblend.datasets.qm9 import HARTREE_TO_EV, QM9
from pyg_molblend.datasets.smiles import (
    SDFDataset,
    SmilesDataset,
    featurize_smiles,
    read_smiles_file,
)
from pyg_molblend.datasets.utils import apply_transform, merge_datasets

__all__ = [
    "HARTREE_TO_EV",
    "QM9",
    "TASK_TYPES",
    "CSVDataset",
    "MoleculeNet",
    "OnDiskMoleculeDataset",
    "SDFDataset",
    "SmilesDataset",
    "apply_transform",
    "default_dataset",
    "evaluate_ogb",
    "featurize_smiles",
    "load_ogb",
    "merge_datasets",
    "read_smiles_file",
]
