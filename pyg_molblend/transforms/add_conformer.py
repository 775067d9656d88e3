from __future__ import annotations

import warnings
from typing import Any

import torch
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

__all__ = ["AddConformer", "ConformerError"]

_ON_FAILURE = ("flag", "raise")


class ConformerError(ValueError):
    """Raised by :class:`AddConformer` with ``on_failure="raise"`` when no conformer
    can be embedded; the message names the SMILES."""


@functional_transform("add_conformer")
class AddConformer(BaseTransform):
    r"""Adds RDKit 3D coordinates (ETKDG v3, optionally MMFF94-optimised) in Angstrom
    (functional name: :obj:`add_conformer`).

    The molecule is rebuilt from ``data.smiles``, hydrogens are added for the embedding
    and dropped again unless the graph has them as nodes, so ``pos`` rows follow the atom
    order of :func:`~pyg_molblend.data.from_smiles`. Writes ``data.pos`` ``[N, 3]`` and
    ``data.has_pos`` ``[1]`` (bool).

    Failure is explicit, never zero coordinates: with ``on_failure="flag"`` a molecule
    that cannot be embedded gets ``has_pos = False`` and NaN coordinates (so a batch still
    collates and nothing can mistake them for a geometry), a warning naming the SMILES,
    and is counted in :attr:`num_failures`; with ``on_failure="raise"`` a
    :class:`ConformerError` is raised. A molecule that already has a real geometry
    (``has_pos`` True, from an SDF, say) is kept as it is unless :obj:`overwrite`.

    Args:
        seed (int, optional): RDKit random seed; same seed, same coordinates.
            (default: :obj:`0`)
        optimize (bool, optional): MMFF94 optimisation after embedding; molecules
            without MMFF parameters keep their ETKDG coordinates. (default: :obj:`False`)
        max_iters (int, optional): MMFF iterations. (default: :obj:`200`)
        on_failure (str, optional): :obj:`"flag"` or :obj:`"raise"`. (default: :obj:`"flag"`)
        timeout (int, optional): seconds RDKit may spend on one embedding attempt
            (0 = no limit). (default: :obj:`10`)
        overwrite (bool, optional): replace existing real coordinates.
            (default: :obj:`False`)
    """

    def __init__(
        self,
        seed: int = 0,
        optimize: bool = False,
        max_iters: int = 200,
        on_failure: str = "flag",
        timeout: int = 10,
        overwrite: bool = False,
    ) -> None:
        if on_failure not in _ON_FAILURE:
            raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {on_failure!r}")
        self.seed = seed
        self.optimize = optimize
        self.max_iters = max_iters
        self.on_failure = on_failure
        self.timeout = timeout
        self.overwrite = overwrite
        self.num_failures = 0

    def forward(self, data: Data) -> Data:
        has_pos = getattr(data, "has_pos", None)
        if not self.overwrite and has_pos is not None and bool(has_pos.all()):
            return data
        smiles = getattr(data, "smiles", None)
        if not isinstance(smiles, str):
            raise ValueError("AddConformer needs 'data.smiles' (use pyg_molblend.data.from_smiles)")
        pos = self.embed(smiles, data.num_nodes)
        if pos is None:
            self.num_failures += 1
            message = f"Conformer embedding failed for SMILES {smiles!r}"
            if self.on_failure == "raise":
                raise ConformerError(message)
            warnings.warn(f"{message}; has_pos=False ({self.num_failures} so far)", stacklevel=2)
            data.pos = torch.full((data.num_nodes, 3), float("nan"))
            data.has_pos = torch.tensor([False])
        else:
            data.pos = pos
            data.has_pos = torch.tensor([True])
        return data

    def embed(self, smiles: str, num_nodes: int) -> torch.Tensor | None:
        """Coordinates ``[num_nodes, 3]`` for :obj:`smiles`, or :obj:`None` on failure."""
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"Invalid SMILES string (RDKit cannot parse it): {smiles!r}")
        mol = Chem.RemoveHs(mol)
        heavy = mol.GetNumAtoms()
        mol = Chem.AddHs(mol)
        if num_nodes not in (heavy, mol.GetNumAtoms()):
            raise ValueError(
                f"Graph has {num_nodes} atoms but SMILES {smiles!r} has {heavy} heavy atoms "
                f"({mol.GetNumAtoms()} with hydrogens)"
            )
        if not self._embed(mol, AllChem, random_coords=False):
            if not self._embed(mol, AllChem, random_coords=True):
                return None
        if self.optimize and AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=self.max_iters)
        pos = torch.tensor(mol.GetConformer().GetPositions()[:num_nodes], dtype=torch.float)
        return pos if bool(torch.isfinite(pos).all()) else None

    def _embed(self, mol: Any, all_chem: Any, random_coords: bool) -> bool:
        params = all_chem.ETKDGv3()
        params.randomSeed = self.seed
        params.useRandomCoords = random_coords
        params.timeout = self.timeout
        return all_chem.EmbedMolecule(mol, params) == 0

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(seed={self.seed}, optimize={self.optimize}, "
            f"on_failure={self.on_failure!r})"
        )
