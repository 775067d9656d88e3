"""SMILES and RDKit molecules to PyG graphs with the OGB vocabulary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch_geometric.data import Data

from pyg_molblend.constants import FEATURIZER, NUM_ATOM_FEATURES, NUM_BOND_FEATURES

__all__ = ["from_mol", "from_smiles"]


@contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's logger (parse errors are reported by our own exceptions)."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def from_smiles(smiles: str, with_hydrogen: bool = False) -> Data:
    r"""Featurize a SMILES string with the OGB atom and bond vocabulary.

    The result equals :func:`ogb.utils.smiles2graph` (same feature values, same atom and
    edge order) as a :class:`~torch_geometric.data.Data` object, with the SMILES kept in
    ``data.smiles`` so that later transforms (:class:`~pyg_molblend.transforms.AddConformer`)
    can rebuild the molecule, and the vocabulary's name
    (:data:`~pyg_molblend.constants.FEATURIZER`, ``"ogb"``) in ``data.featurizer``, which
    :func:`~pyg_molblend.data.to_dense` checks.

    A SMILES holding whitespace is refused rather than cut: RDKit reads text after a
    space as the molecule's name, so ``"C C"`` would silently be methane.

    Args:
        smiles (str): the SMILES string.
        with_hydrogen (bool, optional): add explicit hydrogen atoms as graph nodes.
            (default: :obj:`False`, heavy atoms only, as in the reference)

    Returns:
        Data with ``x`` ``[N, 9]`` (long), ``edge_index`` ``[2, E]`` (both directions of
        every bond), ``edge_attr`` ``[E, 3]`` (long), ``smiles`` and ``featurizer``.

    Raises:
        ValueError: naming the string if it is empty, holds whitespace, or RDKit cannot
            parse it; the message gives RDKit's reason where it has one (for example
            ``Explicit valence for atom # 1 N, 4, is greater than permitted``).

    Examples:
        >>> data = from_smiles("CCO")
        >>> data.x.shape, data.edge_index.shape, data.edge_attr.shape  # 3 atoms, 2 bonds both ways
        (torch.Size([3, 9]), torch.Size([2, 4]), torch.Size([4, 3]))
    """
    from rdkit import Chem

    if not isinstance(smiles, str):
        raise TypeError(f"SMILES must be a string, got {type(smiles).__name__}: {smiles!r}")
    if not smiles.strip():
        raise ValueError(f"Empty SMILES string: {smiles!r}")
    if any(char.isspace() for char in smiles):
        raise ValueError(
            f"SMILES string holds whitespace: {smiles!r} (RDKit would read the text after "
            "a space as a name and drop it); remove the whitespace"
        )
    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"Invalid SMILES string ({_parse_failure(smiles)}): {smiles!r}")
    if mol.GetNumAtoms() == 0:
        raise ValueError(f"SMILES string has no atoms: {smiles!r}")
    if with_hydrogen:
        with quiet_rdkit():
            mol = Chem.AddHs(mol)
    return _to_graph(mol, smiles)


def _parse_failure(smiles: str) -> str:
    """RDKit's reason for refusing :obj:`smiles`: a syntax error, or the sanitization
    problem (valence, aromaticity) of the parsed molecule."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    if mol is None:
        return "RDKit cannot parse it: SMILES syntax error"
    try:
        Chem.SanitizeMol(mol)
    except Exception as error:  # RDKit raises several sanitization exception types
        return f"RDKit cannot sanitize it: {error}"
    return "RDKit cannot parse it"


def from_mol(
    mol: Any,
    smiles: str | None = None,
    with_hydrogen: bool = False,
    keep_conformer: bool = True,
) -> Data:
    r"""Featurize an RDKit molecule with the OGB atom and bond vocabulary.

    Args:
        mol (rdkit.Chem.Mol): the molecule.
        smiles (str, optional): SMILES stored in ``data.smiles``; by default RDKit's
            canonical SMILES of the featurized molecule (hydrogens removed unless
            :obj:`with_hydrogen`).
        with_hydrogen (bool, optional): keep (or add) explicit hydrogens as nodes;
            otherwise every hydrogen atom is removed (also those RDKit's ``RemoveHs``
            keeps for double-bond stereo). (default: :obj:`False`)
        keep_conformer (bool, optional): if :obj:`mol` carries a 3D conformer (an SDF
            with DFT geometry, say), store its coordinates in ``pos`` (Angstrom) with
            ``has_pos = True``. (default: :obj:`True`)

    Returns:
        Data as :func:`from_smiles` (with ``featurizer``), plus ``pos`` and ``has_pos``
        when the conformer is kept.

    Raises:
        ValueError: if the molecule has no atoms.

    Examples:
        >>> from rdkit import Chem
        >>> data = from_mol(Chem.MolFromSmiles("c1ccccc1O"))
        >>> data.num_nodes, data.smiles
        (7, 'Oc1ccccc1')
    """
    from rdkit import Chem

    if mol is None:
        raise ValueError("Molecule is None (an unparsable SMILES or SDF record?)")
    with quiet_rdkit():
        mol = Chem.AddHs(mol, addCoords=True) if with_hydrogen else Chem.RemoveAllHs(mol)
    if smiles is None:  # of the graph's atoms: no explicit hydrogens unless they are nodes
        smiles = Chem.MolToSmiles(mol)
    data = _to_graph(mol, smiles)
    if keep_conformer and mol.GetNumConformers() > 0 and mol.GetConformer().Is3D():
        data.pos = torch.tensor(mol.GetConformer().GetPositions(), dtype=torch.float)
        data.has_pos = torch.tensor([True])
    return data


def _to_graph(mol: Any, smiles: str) -> Data:
    """The OGB featurization of ``ogb.utils.smiles2graph``, atom and bond order kept."""
    from ogb.utils.features import atom_to_feature_vector, bond_to_feature_vector

    if mol.GetNumAtoms() == 0:
        raise ValueError(f"Molecule has no atoms: {smiles!r}")
    x = torch.tensor(
        [atom_to_feature_vector(atom) for atom in mol.GetAtoms()], dtype=torch.long
    ).view(-1, NUM_ATOM_FEATURES)
    rows: list[int] = []
    feats: list[list[int]] = []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feat = bond_to_feature_vector(bond)
        rows += [i, j, j, i]
        feats += [feat, feat]
    edge_index = torch.tensor(rows, dtype=torch.long).view(-1, 2).t().contiguous()
    edge_attr = torch.tensor(feats, dtype=torch.long).view(-1, NUM_BOND_FEATURES)
    return Data(
        x=x, edge_index=edge_index, edge_attr=edge_attr, smiles=smiles, featurizer=FEATURIZER
    )
