"""The MoleculeNet benchmark datasets, featurized with :func:`~pyg_molblend.data.from_smiles`."""
from __future__ import annotations

import os
import os.path as osp
import shutil
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

from torch_geometric.data import download_url, extract_gz

from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.datasets.csv_dataset import (
    Filter,
    SmilesTableDataset,
    Transform,
    read_csv_table,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MoleculeNet", "default_dataset"]

#: MoleculeNet datasets with real-valued targets; all others are binary classification.
_REGRESSION = frozenset({"esol", "freesolv", "lipo"})


class MoleculeNet(SmilesTableDataset):
    r"""The `MoleculeNet <https://moleculenet.org/datasets-1>`_ benchmark datasets
    (`Wu et al., 2018 <https://arxiv.org/abs/1703.00564>`_) with the OGB atom and bond
    vocabulary of :func:`~pyg_molblend.data.from_smiles`.

    Raw files, download URLs, column choices and the order of the arguments are those of
    :class:`torch_geometric.datasets.MoleculeNet` (the options of this package are
    keyword-only): the file ``<root>/<name>/raw/<file>`` (for example
    ``<root>/esol/raw/delaney-processed.csv``) is used if present, and otherwise
    downloaded from the DeepChem bucket (gzipped files are unpacked), except BBBP, which
    ships with the package and is copied from it, so it works offline. Unlike
    PyG, the CSV is parsed with pandas, so quoted fields that contain commas are read
    correctly, and graphs carry ``y`` ``[1, num_tasks]`` (float, NaN for a missing label)
    next to ``x`` ``[N, 9]``, ``edge_attr`` ``[E, 3]`` and ``smiles``.

    Invalid SMILES raise a :class:`ValueError` naming the file, line and string unless
    :obj:`skip_invalid` is set (BBBP has 11, Tox21 8 and HIV 7 under current RDKit); so
    do molecules above :obj:`max_atoms`; rows without any label are always skipped with
    a warning; every graph has ``source_row`` (see
    :class:`~pyg_molblend.datasets.csv_dataset.SmilesTableDataset`). The processed file
    name is a :func:`~pyg_molblend.datasets.utils.cache_key` of the raw file's content and
    of every option.

    Args:
        root (str): root directory; the dataset lives in ``<root>/<name>/``.
        name (str): one of :obj:`"bace"`, :obj:`"bbbp"`, :obj:`"clintox"`,
            :obj:`"esol"`, :obj:`"freesolv"`, :obj:`"hiv"`, :obj:`"lipo"`, :obj:`"muv"`,
            :obj:`"pcba"`, :obj:`"sider"`, :obj:`"tox21"`, :obj:`"toxcast"`
            (case-insensitive).
        transform (callable, optional): applied to each graph on access. (default: :obj:`None`)
        pre_transform (callable, optional): applied once before saving, for example
            :class:`~pyg_molblend.transforms.AddConformer`. (default: :obj:`None`)
        pre_filter (callable, optional): keeps the graphs for which it returns
            :obj:`True`. (default: :obj:`None`)
        force_reload (bool, optional): process again even if a cache exists.
            (default: :obj:`False`)
        skip_invalid (bool, optional, keyword-only): skip (and count) rows with an invalid
            SMILES or too many atoms instead of raising. (default: :obj:`False`)
        max_atoms (int, optional, keyword-only): largest molecule accepted, in heavy
            atoms; :obj:`None` for no limit.
            (default: :data:`~pyg_molblend.constants.DEFAULT_MAX_ATOMS`)
        num_workers (int, optional, keyword-only): processes that run
            :obj:`pre_transform`. (default: :obj:`0`)

    Raises:
        ValueError: for an unknown name, a malformed target, or an invalid or too large
            molecule when :obj:`skip_invalid` is :obj:`False`.

    Examples:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> raw = root / "esol" / "raw"  # where PyG's MoleculeNet keeps its files
        >>> raw.mkdir(parents=True)
        >>> _ = (raw / "delaney-processed.csv").write_text(
        ...     "Compound ID,ESOL predicted log solubility in mols per litre,"
        ...     "Minimum Degree,Molecular Weight,Number of H-Bond Donors,Number of Rings,"
        ...     "Number of Rotatable Bonds,Polar Surface Area,"
        ...     "measured log solubility in mols per litre,smiles\n"
        ...     "Ethanol,0.02,1,46.07,1,0,0,20.23,1.10,CCO\n"
        ...     "Benzene,-1.94,2,78.11,0,1,0,0.0,-1.64,c1ccccc1\n"
        ... )
        >>> dataset = MoleculeNet(str(root), "esol")  # no download: the raw file is there
        >>> len(dataset), dataset.num_tasks, dataset[1].y.tolist()
        (2, 1, [[-1.6399999856948853]])
    """

    url = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/{}"

    #: ``name: (display name, download file, raw file stem, SMILES column, target columns)``,
    #: as in :class:`torch_geometric.datasets.MoleculeNet`; columns are positions in the
    #: CSV header.
    names: ClassVar[dict[str, tuple[str, str, str, int, int | slice]]] = {
        "esol": ("ESOL", "delaney-processed.csv", "delaney-processed", -1, -2),
        "freesolv": ("FreeSolv", "SAMPL.csv", "SAMPL", 1, 2),
        "lipo": ("Lipophilicity", "Lipophilicity.csv", "Lipophilicity", 2, 1),
        "pcba": ("PCBA", "pcba.csv.gz", "pcba", -1, slice(0, 128)),
        "muv": ("MUV", "muv.csv.gz", "muv", -1, slice(0, 17)),
        "hiv": ("HIV", "HIV.csv", "HIV", 0, -1),
        "bace": ("BACE", "bace.csv", "bace", 0, 2),
        "bbbp": ("BBBP", "BBBP.csv", "BBBP", -1, -2),
        "tox21": ("Tox21", "tox21.csv.gz", "tox21", -1, slice(0, 12)),
        "toxcast": ("ToxCast", "toxcast_data.csv.gz", "toxcast_data", 0, slice(1, 618)),
        "sider": ("SIDER", "sider.csv.gz", "sider", 0, slice(1, 28)),
        "clintox": ("ClinTox", "clintox.csv.gz", "clintox", 0, slice(1, 3)),
    }

    def __init__(
        self,
        root: str,
        name: str,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        force_reload: bool = False,
        *,
        skip_invalid: bool = False,
        max_atoms: int | None = DEFAULT_MAX_ATOMS,
        num_workers: int = 0,
    ) -> None:
        key = name.lower() if isinstance(name, str) else name
        if key not in self.names:
            raise ValueError(
                f"Unknown MoleculeNet dataset {name!r}; available: {sorted(self.names)}"
            )
        self.name = key
        super().__init__(
            root,
            "regression" if key in _REGRESSION else "classification",
            transform,
            pre_transform,
            pre_filter,
            force_reload,
            skip_invalid=skip_invalid,
            max_atoms=max_atoms,
            num_workers=num_workers,
        )

    @property
    def display_name(self) -> str:
        return self.names[self.name][0]

    @property
    def raw_dir(self) -> str:
        return osp.join(self.root, self.name, "raw")

    @property
    def processed_dir(self) -> str:
        return osp.join(self.root, self.name, "processed")

    @property
    def raw_file_names(self) -> str:
        return f"{self.names[self.name][2]}.csv"

    @property
    def source(self) -> str:
        return self.raw_paths[0]

    def table_options(self) -> dict[str, Any]:
        return {"name": self.name}

    def download(self) -> None:
        if self.name == "bbbp":
            _copy_shipped_bbbp(self.raw_paths[0])
            return
        path = download_url(self.url.format(self.names[self.name][1]), self.raw_dir)
        if path.endswith(".gz"):
            extract_gz(path, self.raw_dir)
            os.unlink(path)

    def read_table(self) -> tuple[pd.DataFrame, str, list[str]]:
        _, _, _, smiles_index, target_index = self.names[self.name]
        table = read_csv_table(self.raw_paths[0])
        columns = list(table.columns)
        targets = columns[target_index]
        return table, columns[smiles_index], targets if isinstance(targets, list) else [targets]


def default_dataset(root: str, **kwargs: Any) -> MoleculeNet:
    r"""The small dataset shipped with the package: MoleculeNet BBBP (2,050 molecules,
    blood-brain barrier penetration, one binary task), for demos and smoke tests.

    The packaged ``BBBP.csv`` (byte-identical to the DeepChem file) is copied to
    ``<root>/bbbp/raw/`` unless a file is already there, so no download is needed (as for
    ``MoleculeNet(root, "bbbp")``). BBBP holds 11 SMILES that RDKit rejects, so
    :obj:`skip_invalid` defaults to :obj:`True` here and the dataset has 2,039 graphs.

    Args:
        root (str): root directory.
        **kwargs: further arguments of :class:`MoleculeNet` (``transform``,
            ``pre_transform``, ``skip_invalid``, ...).

    Returns:
        The BBBP :class:`MoleculeNet` dataset.

    Examples:
        >>> import tempfile, warnings
        >>> with warnings.catch_warnings():  # the 11 invalid SMILES are counted in one warning
        ...     warnings.simplefilter("ignore")
        ...     dataset = default_dataset(tempfile.mkdtemp())
        >>> len(dataset), dataset.target_names
        (2039, ['p_np'])
    """
    kwargs.setdefault("skip_invalid", True)
    return MoleculeNet(root, "bbbp", **kwargs)


def _copy_shipped_bbbp(target: str) -> None:
    """Copies the packaged ``BBBP.csv`` to :obj:`target`."""
    os.makedirs(osp.dirname(target), exist_ok=True)
    source = resources.files("pyg_molblend") / "resources" / "BBBP.csv"
    with resources.as_file(source) as path:
        shutil.copyfile(path, target)
