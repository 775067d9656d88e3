"""QM9 with DFT (B3LYP/6-31G(2df,p)) geometries, featurized with the OGB vocabulary."""
from __future__ import annotations

import ast
import glob
import os
import os.path as osp
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch_geometric.data import Data, download_url, extract_zip
from tqdm import tqdm

from pyg_molblend.data.featurize import from_mol
from pyg_molblend.datasets.utils import CachedDataset, warn_user

__all__ = ["HARTREE_TO_EV", "QM9"]

#: Electronvolts per Hartree (CODATA 2018), the factor PyG's QM9 uses.
HARTREE_TO_EV = 27.211386246

#: Raw formats :class:`QM9` reads, with the reason recorded for a molecule that is skipped.
QM9_SOURCES = {
    "sdf": "RDKit cannot sanitize the SDF record",
    "qm9pack": "bond perception from the coordinates failed",
}


class _Target(NamedTuple):
    name: str
    unit: str
    sdf_column: str
    qm9pack_column: str
    hartree: bool  # stored in Hartree in the raw files, converted to eV


_TARGETS = (
    _Target("mu", "D", "mu", "Dipole_debye", False),
    _Target("alpha", "bohr^3", "alpha", "Polarizability_bohr3", False),
    _Target("homo", "eV", "homo", "HOMO_au", True),
    _Target("lumo", "eV", "lumo", "LUMO_au", True),
    _Target("gap", "eV", "gap", "HOMO_LUMO_gap_au", True),
    _Target("r2", "bohr^2", "r2", "R2_bohr2", False),
    _Target("zpve", "eV", "zpve", "ZPVE_au", True),
    _Target("u0", "eV", "u0", "InternalEnergy_0K_au", True),
    _Target("u298", "eV", "u298", "InternalEnergy_298K_au", True),
    _Target("h298", "eV", "h298", "Enthalphy_298K_au", True),
    _Target("g298", "eV", "g298", "GibbsFreeEnergy_298K_au", True),
    _Target("cv", "cal/(mol K)", "cv", "Heatcapacity_Cv_cal_mol_K", False),
    _Target("A", "GHz", "A", "RotA_GHz", False),
    _Target("B", "GHz", "B", "RotB_GHz", False),
    _Target("C", "GHz", "C", "RotC_GHz", False),
)

#: Factor from the raw files' units to the stored ones, per target.
_TARGET_SCALE = torch.tensor(
    [HARTREE_TO_EV if target.hartree else 1.0 for target in _TARGETS], dtype=torch.float64
)

Transform = Callable[[Data], Data]
Filter = Callable[[Data], bool]


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Silences the C-level standard error (RDKit's extended-Hueckel code prints a
    warning per short O-H distance there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mol_from_xyz(elements: list[str], xyz: list[list[float]]) -> Any:
    """An RDKit molecule (hydrogens as atoms, 3D conformer, stereo from 3D) whose atoms
    follow the order of :obj:`elements`, with bonds perceived from the coordinates.

    Bond orders come from :func:`rdkit.Chem.rdDetermineBonds.DetermineBonds` for a
    neutral molecule; if that fails (strained bicyclic rings, where the covalent-radius
    connectivity adds a bond), it is retried with extended-Hueckel connectivity.

    Returns:
        The molecule, or :obj:`None` if bond perception fails both ways.
    """
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    lines = [f"{len(elements)}", ""]
    lines += [f"{e} {x:.10f} {y:.10f} {z:.10f}" for e, (x, y, z) in zip(elements, xyz, strict=True)]
    block = "\n".join(lines)
    for use_hueckel in (False, True):
        mol = Chem.MolFromXYZBlock(block)
        if mol is None:
            return None
        try:
            with _stderr_silenced():
                rdDetermineBonds.DetermineBonds(mol, charge=0, useHueckel=use_hueckel)
        except ValueError:  # includes RDKit's sanitization errors
            continue
        Chem.AssignStereochemistryFrom3D(mol)
        return mol
    return None


def _read_excluded(path: str) -> set[int]:
    """QM9 indices listed in ``uncharacterized.txt``: the first number of every line
    that starts with one."""
    excluded = set()
    with open(path) as f:
        for line in f:
            tokens = line.split()
            if tokens and tokens[0].isdigit():
                excluded.add(int(tokens[0]))
    return excluded


class QM9(CachedDataset):
    r"""QM9 (`Ramakrishnan et al., 2014 <https://doi.org/10.1038/sdata.2014.22>`_):
    small organic molecules (up to 9 heavy atoms C, N, O, F) with DFT equilibrium
    geometries and properties, as 3D graphs with the OGB vocabulary.

    Each graph has ``x`` ``[N, 9]`` and ``edge_attr`` ``[E, 3]`` (long, as
    :func:`~pyg_molblend.data.from_mol`), ``pos`` ``[N, 3]`` (DFT coordinates in
    Angstrom), ``has_pos = [True]``, ``y`` ``[1, 15]`` (float, see :attr:`target_names`
    and :attr:`target_units`; energies in eV, converted with :data:`HARTREE_TO_EV`),
    ``idx`` ``[1]`` (the QM9 index, as in ``dsgdb9nsd_NNNNNN.xyz``) and ``smiles``
    (RDKit's canonical SMILES of the molecule perceived from the geometry; its atom order
    is not the node order, which is QM9's, and
    :class:`~pyg_molblend.transforms.AddConformer` leaves these graphs alone because
    ``has_pos`` is set). Nodes are the heavy atoms unless :obj:`with_hydrogen`.

    Two raw formats (:obj:`source`) are read from ``<root>/raw/``:

    * :obj:`"sdf"`: ``gdb9.sdf`` with its property table ``gdb9.sdf.csv``, the DeepChem
      files that :class:`torch_geometric.datasets.QM9` downloads (and that are downloaded
      here too if absent). An optional ``uncharacterized.txt`` lists QM9 indices to skip
      (the first number on each line). Molecules RDKit cannot sanitize are skipped with
      one warning giving their count.
    * :obj:`"qm9pack"`: the tables of the ``qm9pack`` package, every ``qm9_*.csv`` or
      ``qm9_*.csv.gz`` file in name order, with columns ``Index``, ``Elements``,
      ``XYZ_Ang`` (Python list literals) and the properties in atomic units. Bonds are
      perceived from the coordinates (:func:`mol_from_xyz`), so that atoms keep QM9's
      order and match the coordinates; molecules whose bonds cannot be perceived are
      skipped with one warning giving their count. These files are not downloaded.

    Molecules that were skipped are listed in :attr:`skipped` as ``(QM9 index,
    reason)``. The processed file name is a
    :func:`~pyg_molblend.datasets.utils.cache_key` of the raw files' contents,
    :obj:`source`, :obj:`with_hydrogen`, :obj:`max_molecules`, ``pre_transform`` and
    ``pre_filter``. Arguments follow PyG's order with :obj:`source` in the place of a
    dataset name; the options of this package are keyword-only.

    Args:
        root (str): root directory (``raw/`` and ``processed/`` below it).
        source (str, optional): :obj:`"qm9pack"` or :obj:`"sdf"`. (default: :obj:`"qm9pack"`)
        transform (callable, optional): applied to each graph on access. (default: :obj:`None`)
        pre_transform (callable, optional): applied once before saving.
            (default: :obj:`None`)
        pre_filter (callable, optional): keeps the graphs for which it returns
            :obj:`True`. (default: :obj:`None`)
        force_reload (bool, optional): process again even if a cache exists.
            (default: :obj:`False`)
        with_hydrogen (bool, optional, keyword-only): keep hydrogens as nodes.
            (default: :obj:`False`)
        max_molecules (int, optional, keyword-only): read only the first this many
            molecules of the raw files (skipped ones included), for quick experiments.
            (default: all)
        num_workers (int, optional, keyword-only): processes that run
            :obj:`pre_transform`. (default: :obj:`0`)

    Raises:
        ValueError: for an unknown :obj:`source` or a non-positive :obj:`max_molecules`.
        FileNotFoundError: for :obj:`"qm9pack"` without raw files.

    Examples:
        >>> QM9.target_names[:5]
        ('mu', 'alpha', 'homo', 'lumo', 'gap')
        >>> dataset = QM9("data/QM9", source="sdf")  # doctest: +SKIP
        >>> dataset[0].pos.shape, dataset[0].y.shape  # methane: one heavy atom  # doctest: +SKIP
        (torch.Size([1, 3]), torch.Size([1, 15]))
    """

    raw_url = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/molnet_publish/qm9.zip"
    uncharacterized_url = "https://ndownloader.figshare.com/files/3195404"

    #: Names of the columns of ``y``.
    target_names: tuple[str, ...] = tuple(target.name for target in _TARGETS)
    #: Units of the columns of ``y``.
    target_units: tuple[str, ...] = tuple(target.unit for target in _TARGETS)
    task_type = "regression"

    def __init__(
        self,
        root: str,
        source: str = "qm9pack",
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        force_reload: bool = False,
        *,
        with_hydrogen: bool = False,
        max_molecules: int | None = None,
        num_workers: int = 0,
    ) -> None:
        if source not in QM9_SOURCES:
            raise ValueError(f"source must be one of {tuple(QM9_SOURCES)}, got {source!r}")
        if max_molecules is not None and max_molecules < 1:
            raise ValueError(f"max_molecules must be positive, got {max_molecules!r}")
        self.source = source
        self.with_hydrogen = with_hydrogen
        self.max_molecules = max_molecules
        super().__init__(root, transform, pre_transform, pre_filter, force_reload, num_workers)
        self.skipped = [(int(index), str(reason)) for index, reason in self.meta["skipped"]]

    @property
    def raw_file_names(self) -> list[str]:
        if self.source == "sdf":
            return ["gdb9.sdf", "gdb9.sdf.csv"]
        pattern = osp.join(glob.escape(self.raw_dir), "qm9_*.csv*")
        return sorted(osp.basename(path) for path in glob.glob(pattern))

    def cache_inputs(self) -> list[str]:
        excluded = osp.join(self.raw_dir, "uncharacterized.txt")
        extra = [excluded] if self.source == "sdf" and osp.isfile(excluded) else []
        return [*self.raw_paths, *extra]

    def cache_options(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "with_hydrogen": self.with_hydrogen,
            "max_molecules": self.max_molecules,
        }

    def download(self) -> None:
        if self.source == "qm9pack":
            raise FileNotFoundError(
                f"No qm9pack tables (qm9_*.csv or qm9_*.csv.gz) in {self.raw_dir!r}; copy "
                f"them there (they come with the 'qm9pack' package), or use source='sdf'"
            )
        path = download_url(self.raw_url, self.raw_dir)
        extract_zip(path, self.raw_dir)
        os.unlink(path)
        path = download_url(self.uncharacterized_url, self.raw_dir)
        os.rename(path, osp.join(self.raw_dir, "uncharacterized.txt"))

    def process(self) -> None:
        records = self._sdf_records() if self.source == "sdf" else self._qm9pack_records()
        data_list: list[Data] = []
        skipped: list[tuple[int, str]] = []
        for index, mol, targets in tqdm(records, desc=f"Reading QM9 ({self.source})"):
            if mol is None:
                skipped.append((index, QM9_SOURCES[self.source]))
                continue
            data = self._featurize(mol)
            y = torch.tensor(targets, dtype=torch.float64) * _TARGET_SCALE
            data.y = y.to(torch.float).view(1, -1)
            data.idx = torch.tensor([index])
            data_list.append(data)
        if skipped:
            warn_user(
                f"Skipped {len(skipped)} QM9 molecules of {self.raw_dir} (first: index "
                f"{skipped[0][0]}, {skipped[0][1]}; see .skipped)"
            )
        self.finish(data_list, {"skipped": skipped}, source=f"QM9 ({self.raw_dir})")

    def _featurize(self, mol: Any) -> Data:
        from rdkit import Chem

        # RemoveAllHs: plain RemoveHs keeps hydrogens that define double-bond stereo.
        heavy = Chem.RemoveAllHs(mol)
        smiles = Chem.MolToSmiles(heavy)
        if self.with_hydrogen:
            return from_mol(mol, smiles=smiles, with_hydrogen=True)
        return from_mol(heavy, smiles=smiles)

    def _sdf_records(self) -> Iterator[tuple[int, Any, list[float]]]:
        """``(QM9 index, molecule or None, raw targets)`` per SDF record."""
        import pandas as pd
        from rdkit import Chem, RDLogger

        table = pd.read_csv(self.raw_paths[1], nrows=self.max_molecules)
        targets = table[[target.sdf_column for target in _TARGETS]].to_numpy(dtype=float)
        names = table["mol_id"].tolist()
        excluded_path = osp.join(self.raw_dir, "uncharacterized.txt")
        excluded = _read_excluded(excluded_path) if osp.exists(excluded_path) else set()
        supplier = Chem.SDMolSupplier(self.raw_paths[0], removeHs=False, sanitize=True)
        RDLogger.DisableLog("rdApp.*")
        try:
            for row, name in enumerate(names):
                index = int(str(name).rsplit("_", 1)[-1])
                if index not in excluded:
                    yield index, supplier[row], targets[row].tolist()
        finally:
            RDLogger.EnableLog("rdApp.*")

    def _qm9pack_records(self) -> Iterator[tuple[int, Any, list[float]]]:
        """``(QM9 index, molecule or None, raw targets)`` per table row."""
        import pandas as pd
        from rdkit import RDLogger

        remaining = self.max_molecules
        RDLogger.DisableLog("rdApp.*")
        try:
            for path in self.raw_paths:
                if remaining == 0:
                    return
                table = pd.read_csv(path, nrows=remaining)
                if remaining is not None:
                    remaining -= len(table)
                columns = [target.qm9pack_column for target in _TARGETS]
                targets = table[columns].to_numpy(dtype=float)
                for row, (index, elements, xyz) in enumerate(
                    zip(table["Index"], table["Elements"], table["XYZ_Ang"], strict=True)
                ):
                    mol = mol_from_xyz(ast.literal_eval(elements), ast.literal_eval(xyz))
                    yield int(index), mol, targets[row].tolist()
        finally:
            RDLogger.EnableLog("rdApp.*")
