"""Helpers shared by the dataset classes."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import marshal
import multiprocessing
import numbers
import os
import os.path as osp
import pickle
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch_geometric
from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from torch_geometric.data.data import BaseData
from tqdm import tqdm

import pyg_molblend
from pyg_molblend.constants import FEATURIZER
from pyg_molblend.data.featurize import from_smiles

__all__ = [
    "CachedDataset",
    "Rejections",
    "apply_transform",
    "cache_key",
    "check_num_workers",
    "featurize_rows",
    "file_content",
    "imap_in_pool",
    "merge_datasets",
    "num_without_pos",
    "rejection_message",
    "worker_pool",
]

Transform = Callable[[Data], Data]
Filter = Callable[[Data], bool]

#: Bumped whenever featurization or the stored fields change, so that caches written by
#: an older version of this package are not read as current ones.
CACHE_FORMAT = 2

_INTERNAL_DIRS = tuple(
    osp.dirname(module.__file__) + os.sep for module in (pyg_molblend, torch_geometric)
)


def warn_user(message: str) -> None:
    """A :class:`UserWarning` attributed to the first caller outside this package and
    PyG (the user's script), not to the dataset machinery that emits it."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


@functools.lru_cache(maxsize=256)
def _content_digest(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    """BLAKE2b of the file's bytes, read in 1 MiB blocks. Memoised per size, times and
    inode: any write, rename over, or time reset changes the inode change time."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(obj: Any) -> str | None:
    """A description of a transform or filter that changes when what it does changes:
    its :func:`repr` (the transforms of this package show every option), or for a plain
    function its name and a digest of its compiled code and defaults."""
    if obj is None:
        return None
    if isinstance(obj, types.FunctionType):
        code = hashlib.sha256(marshal.dumps(obj.__code__) + repr(obj.__defaults__).encode())
        return f"{obj.__module__}.{obj.__qualname__}:{code.hexdigest()[:16]}"
    return repr(obj)


def cache_key(inputs: Sequence[str | os.PathLike], options: Mapping[str, Any]) -> str:
    r"""The key of a processed dataset: it changes whenever an input file or an
    output-changing option does.

    Every dataset of this package names its processed files with this key, so that an
    edited input, another file of the same name, or other options never reuse a stale
    cache. It covers, for each input file, its absolute path, size and a BLAKE2b digest
    of its bytes (streamed; memoised within the process while size, times and inode stay
    the same), :obj:`options` (JSON-serialised; pass transforms and filters through
    :func:`describe`), and :data:`CACHE_FORMAT`. File times are not part of it: the same
    bytes copied again, restored from a backup or re-provisioned keep their cache (a
    corpus whose conformers took an hour to embed is not prepared a second time).

    Args:
        inputs (Sequence[str]): the files the processed data is read from.
        options (Mapping[str, Any]): every option that changes the processed data.

    Returns:
        16 hexadecimal digits.

    Raises:
        FileNotFoundError: naming an input that does not exist.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.csv"
        >>> _ = path.write_text("smiles\nCCO\n")
        >>> key = cache_key([path], {"skip_invalid": False})
        >>> key == cache_key([path], {"skip_invalid": True})  # another option, another cache
        False
    """
    files = []
    for path in inputs:
        path = osp.abspath(os.fspath(path))
        files.append([path, *file_content(path)])
    payload = {"format": CACHE_FORMAT, "inputs": files, "options": dict(options)}
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_content(path: str | os.PathLike) -> tuple[int, str]:
    r"""The size and BLAKE2b digest of a file's bytes, wherever it lies (the part of
    :func:`cache_key` that does not depend on the path; memoised the same way).

    Raises:
        FileNotFoundError: naming the path when it is not a file.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.csv").write_text("smiles\nCCO\n")
        >>> _ = (folder / "b.csv").write_text("smiles\nCCO\n")
        >>> file_content(folder / "a.csv") == file_content(folder / "b.csv")
        True
    """
    path = osp.abspath(os.fspath(path))
    if not osp.isfile(path):
        raise FileNotFoundError(f"Input file not found: {path!r}")
    stat = os.stat(path)
    digest = _content_digest(path, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    return stat.st_size, digest


def input_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The input files as strings (one path alone becomes a list of one), each checked to
    exist.

    Raises:
        ValueError: naming the first path that is not a file.

    Examples:
        >>> input_files([])
        []
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [os.fspath(p) for p in paths]
    for path in files:
        if not osp.isfile(path):
            raise ValueError(f"File not found: {path!r}")
    return files


def shorten(text: str, limit: int = 80) -> str:
    """:obj:`text` for a message, cut to :obj:`limit` characters with its length given."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class Rejections:
    r"""Molecules rejected for one reason while a dataset is read: the first raises a
    :class:`ValueError` (its message plus how to skip such molecules), or with
    :obj:`skip` each is recorded and :meth:`warn` gives their count in one warning.

    Args:
        what (str): the reason, for the warning (``"with an invalid SMILES"``).
        skip (bool): record instead of raising.
        source (str): the input, named in the warning.

    Examples:
        >>> import warnings
        >>> rejected = Rejections("with an invalid SMILES", skip=True, source="a.csv")
        >>> rejected.add(3, "C1CC", "line 5: invalid SMILES 'C1CC'")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     rejected.warn()
        >>> print(caught[0].message)
        Skipped 1 molecules of a.csv with an invalid SMILES (first: line 5: invalid SMILES 'C1CC')
        >>> try:
        ...     Rejections("with an invalid SMILES", skip=False, source="library.csv").add(
        ...         3, "C1CC", "library.csv, line 5: invalid SMILES 'C1CC'"
        ...     )
        ... except ValueError as error:
        ...     print(error)
        library.csv, line 5: invalid SMILES 'C1CC'; pass skip_invalid=True to skip such molecules
    """

    def __init__(self, what: str, skip: bool, source: str) -> None:
        self.what = what
        self.skip = skip
        self.source = source
        self.items: list[tuple[int, str]] = []
        self.first = ""

    def add(self, row: int, text: str, message: str) -> None:
        """Rejects data row :obj:`row` (0-based; :obj:`text` is recorded), described by
        :obj:`message`, which names the file and line."""
        if not self.skip:
            raise ValueError(f"{message}; pass skip_invalid=True to skip such molecules")
        if not self.items:
            self.first = message
        self.items.append((row, text))

    def warn(self) -> None:
        """One warning giving the count and the first case, if any was recorded."""
        if self.items:
            warn_user(
                f"Skipped {len(self.items)} molecules of {self.source} {self.what} "
                f"(first: {self.first})"
            )


class CachedDataset(InMemoryDataset):
    r"""Base class of the datasets of this package: an
    :class:`~torch_geometric.data.InMemoryDataset` whose processed files are named by
    :func:`cache_key` over :meth:`cache_inputs` and :meth:`cache_options` plus the
    descriptions (:func:`describe`) of ``pre_transform`` and ``pre_filter``, so that a
    changed input or option is processed again instead of read stale from the cache.

    Subclasses define :meth:`cache_inputs`, :meth:`cache_options` and ``process``, which
    ends with :meth:`finish`; metadata (lists of skipped molecules, target names) is saved
    as JSON next to the graphs and loaded into :attr:`meta`. PyG's own warning that a
    ``pre_transform`` differs from the cached one is silenced, since such a cache is
    never read.

    Examples:
        >>> import tempfile, pathlib
        >>> from pyg_molblend.datasets import SmilesDataset
        >>> from pyg_molblend.transforms import AddShortestPath
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "corpus.smi").write_text("CCO\n")
        >>> plain = SmilesDataset(str(folder / "root"), [folder / "corpus.smi"])
        >>> paths = SmilesDataset(
        ...     str(folder / "root"), [folder / "corpus.smi"], pre_transform=AddShortestPath()
        ... )
        >>> plain.processed_paths[0] != paths.processed_paths[0]  # another option, another cache
        True
        >>> _ = (folder / "corpus.smi").write_text("CCN\n")  # edited in place: processed again
        >>> SmilesDataset(str(folder / "root"), [folder / "corpus.smi"]).smiles
        ['CCN']
    """

    #: Prefix of the processed file names.
    prefix = "data"

    #: Names of the columns of ``y`` (none for unlabelled molecules).
    target_names: Sequence[str] = ()

    def __init__(
        self,
        root: str,
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        pre_filter: Filter | None = None,
        force_reload: bool = False,
        num_workers: int = 0,
    ) -> None:
        self.num_workers = num_workers
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"The `pre_(transform|filter)` argument")
            super().__init__(root, transform, pre_transform, pre_filter, force_reload=force_reload)
        self.load(self.processed_paths[0])
        with open(self.processed_paths[1]) as f:
            self.meta: dict[str, Any] = json.load(f)

    @property
    def num_tasks(self) -> int:
        """Number of targets (columns of ``y``)."""
        return len(self.target_names)

    @property
    def smiles(self) -> list[str]:
        """The SMILES of the graphs in this dataset (or subset), in order."""
        smiles = self._data.smiles
        smiles = [smiles] if isinstance(smiles, str) else smiles  # a dataset of one graph
        return [smiles[i] for i in self.indices()]

    def cache_inputs(self) -> list[str]:
        """The files the processed data is read from."""
        raise NotImplementedError

    def cache_options(self) -> dict[str, Any]:
        """Every option that changes the processed data (JSON-serialisable)."""
        raise NotImplementedError

    @property
    def processed_file_names(self) -> list[str]:
        options = {
            **self.cache_options(),
            "class": type(self).__name__,
            "pre_transform": describe(self.pre_transform),
            "pre_filter": describe(self.pre_filter),
        }
        key = cache_key(self.cache_inputs(), options)
        return [f"{self.prefix}_{key}.pt", f"{self.prefix}_{key}.json"]

    def finish(self, data_list: list[Data], meta: dict[str, Any], source: str) -> None:
        """The tail of ``process``: ``pre_filter``, then ``pre_transform`` (on
        :attr:`num_workers` processes), then the graphs and :obj:`meta` saved.

        Raises:
            ValueError: naming :obj:`source` if no graph is left.
        """
        if self.pre_filter is not None:
            data_list = [data for data in data_list if self.pre_filter(data)]
        if not data_list:
            raise ValueError(f"No molecule of {source} is left to save")
        if self.pre_transform is not None:
            data_list = apply_transform(
                data_list, self.pre_transform, self.num_workers, desc=f"Pre-transforming {source}"
            )
        self.save(data_list, self.processed_paths[0])
        with open(self.processed_paths[1], "w") as f:
            json.dump(meta, f)


#: Chunks handed to each worker per pass over the data, so that slow molecules
#: (conformer embedding of a macrocycle, say) balance out between workers.
_CHUNKS_PER_WORKER = 4


def apply_transform(
    data_list: Sequence[Data],
    transform: Callable[[Data], Data],
    num_workers: int = 0,
    desc: str = "Transforming",
    chunksize: int | None = None,
) -> list[Data]:
    r"""Applies :obj:`transform` to every graph, optionally in a process pool, with a
    progress bar.

    The datasets of this package run their ``pre_transform`` through this function, so an
    expensive transform such as :class:`~pyg_molblend.transforms.AddConformer` runs once,
    in parallel, and its results are cached on disk by
    :class:`~torch_geometric.data.InMemoryDataset`. The output order is the input order,
    and the result does not depend on :obj:`num_workers` for a deterministic (seeded)
    transform.

    With :obj:`num_workers` > 0 the transform and the graphs are pickled to a
    :class:`multiprocessing.Pool` (``pool.imap``), so the transform must be picklable
    (the transforms of :mod:`pyg_molblend.transforms` are); counters a transform keeps on
    itself (``AddConformer.num_failures``) are then updated in the workers, not in the
    caller's object. On platforms that start workers with ``"spawn"`` (macOS, Windows),
    the calling script needs the usual ``if __name__ == "__main__":`` guard.

    Args:
        data_list (Sequence[Data]): the graphs.
        transform (Callable[[Data], Data]): the transform, applied to each graph.
        num_workers (int, optional): worker processes; :obj:`0` runs in this process.
            (default: :obj:`0`)
        desc (str, optional): progress-bar label. (default: :obj:`"Transforming"`)
        chunksize (int, optional): graphs sent to a worker at a time; by default
            ``len(data_list) // (4 * num_workers)`` (at least 1).

    Returns:
        The transformed graphs, in input order.

    Raises:
        ValueError: if :obj:`num_workers` is negative or not an integer.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.transforms import AddShortestPath
        >>> graphs = apply_transform([from_smiles("CCO")], AddShortestPath(), desc="paths")
        >>> graphs[0].spd.tolist()
        [0, 1, 2, 1, 0, 1, 2, 1, 0]
    """
    check_num_workers(num_workers)
    if num_workers == 0:
        return [transform(data) for data in tqdm(data_list, desc=desc)]
    with worker_pool(num_workers) as pool:
        results = imap_in_pool(pool, transform, data_list, num_workers, chunksize)
        return list(tqdm(results, total=len(data_list), desc=desc))


def check_num_workers(num_workers: Any) -> None:
    """Refuse a worker count that is not a non-negative integer, naming it.

    Examples:
        >>> try:
        ...     check_num_workers(-1)
        ... except ValueError as error:
        ...     print(error)
        num_workers must be a non-negative integer, got -1
    """
    integral = isinstance(num_workers, numbers.Integral) and not isinstance(num_workers, bool)
    if not integral or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")


def imap_in_pool(
    pool: Any,
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    num_workers: int,
    chunksize: int | None = None,
) -> Iterator[Any]:
    """``fn(item)`` for every item, computed in the :func:`worker_pool` :obj:`pool` of
    :obj:`num_workers` processes and yielded in input order (``pool.imap``).

    Items and results travel as pickle bytes (:func:`_dumps`; see :class:`_Pickled`),
    so :obj:`fn` must be picklable and tensors hold no file descriptors on the way.
    :obj:`chunksize` (items sent to a worker at a time) defaults to
    ``len(items) // (4 * num_workers)``, at least 1.

    Examples:
        >>> with worker_pool(2) as pool:
        ...     list(imap_in_pool(pool, abs, [-3, 1, -2], num_workers=2))
        [3, 1, 2]
    """
    if chunksize is None:
        chunksize = max(1, len(items) // (_CHUNKS_PER_WORKER * num_workers))
    results = pool.imap(_Pickled(fn), (_dumps(item) for item in items), chunksize=chunksize)
    return (_loads(result) for result in results)


#: Outcomes of :func:`featurize_rows`.
FEATURIZED, INVALID_SMILES, TOO_MANY_ATOMS = "ok", "invalid_smiles", "too_many_atoms"


class _RowFeaturizer:
    """:func:`featurize_rows`'s work for one SMILES (picklable, for worker processes)."""

    def __init__(self, max_atoms: int | None, transform: Transform | None) -> None:
        self.max_atoms = max_atoms
        self.transform = transform

    def __call__(self, text: str) -> tuple[str, Any]:
        try:
            data = from_smiles(text)
        except ValueError as error:
            return INVALID_SMILES, str(error)
        if self.max_atoms is not None and data.num_nodes > self.max_atoms:
            return TOO_MANY_ATOMS, data.num_nodes
        if self.transform is not None:
            with warnings.catch_warnings():  # a transform's warnings are the caller's to count
                warnings.simplefilter("ignore")
                data = self.transform(data)
        return FEATURIZED, data


def featurize_rows(
    smiles: Sequence[str],
    max_atoms: int | None = None,
    transform: Transform | None = None,
    pool: Any = None,
    num_workers: int = 0,
) -> Iterator[tuple[str, Any]]:
    """For each SMILES, in order, its graph (:func:`~pyg_molblend.data.from_smiles`, then
    :obj:`transform`, whose warnings are silenced) or why it has none:
    ``(FEATURIZED, graph)``, ``(INVALID_SMILES, RDKit's message)`` or
    ``(TOO_MANY_ATOMS, heavy atoms)`` above :obj:`max_atoms`. The one loop of the
    datasets, ``predict`` and ``embed``; callers word the messages. With a
    :func:`worker_pool` :obj:`pool` of :obj:`num_workers` processes the work runs there
    (the same results, :func:`imap_in_pool`), in this process otherwise.

    Examples:
        >>> results = list(featurize_rows(["CCO", "CCCC", "C1CC"], max_atoms=3))
        >>> [outcome for outcome, _ in results], results[0][1].num_nodes, results[1][1]
        (['ok', 'too_many_atoms', 'invalid_smiles'], 3, 4)
        >>> results[2][1]
        "Invalid SMILES string (RDKit cannot parse it: SMILES syntax error): 'C1CC'"
    """
    featurize = _RowFeaturizer(max_atoms, transform)
    if pool is None:
        return map(featurize, smiles)
    # Every result is taken before the caller may stop at a bad row: a pool torn down
    # (Pool.__exit__ terminates) with tasks still in flight can hang in joining its
    # task thread, as the suite once did under pytest-xdist.
    return iter(list(imap_in_pool(pool, featurize, smiles, num_workers)))


def reject_row(
    outcome: str,
    value: Any,
    row: int,
    text: str,
    where: str,
    rejections: tuple[Rejections, Rejections],
    max_atoms: int | None,
) -> bool:
    """Records a row that :func:`featurize_rows` gave no graph in the invalid or the too
    large :class:`Rejections` of :obj:`rejections` (which raise unless they skip), its
    message naming :obj:`where` (file and line); :obj:`False` for a row with a graph."""
    if outcome == FEATURIZED:
        return False
    invalid, large = rejections
    rejected = invalid if outcome == INVALID_SMILES else large
    rejected.add(row, text, rejection_message(outcome, value, text, where, max_atoms))
    return True


def rejection_message(
    outcome: str, value: Any, text: str, where: str, max_atoms: int | None
) -> str:
    """Why :func:`featurize_rows` gave the SMILES :obj:`text` no graph (its
    :obj:`outcome` and :obj:`value`), naming :obj:`where` (file and line).

    Examples:
        >>> rejection_message(TOO_MANY_ATOMS, 4, "CCCC", "a.csv, line 3", max_atoms=3)
        "a.csv, line 3: molecule 'CCCC' has 4 atoms, above max_atoms=3"
    """
    if outcome == INVALID_SMILES:
        return f"{where}: {value}"
    return f"{where}: molecule {shorten(text)!r} has {value} atoms, above max_atoms={max_atoms}"


def worker_pool(num_workers: int) -> Any:
    """A :class:`multiprocessing.Pool` whose workers run torch on one thread each, as
    :class:`~torch.utils.data.DataLoader` workers do; for no workers, a context that
    gives :obj:`None` (work in this process).

    A worker forked from a process whose OpenMP thread pool has run (any multi-threaded
    torch operation: a matrix product, say) hangs at its own first multi-threaded
    operation, spinning for threads it does not have (``AddShortestPath`` in 2 workers
    after the parent had used 2 threads: stuck in its first product for minutes instead
    of 0.4 s). One thread per worker avoids that and the oversubscription of the cores
    by workers times threads.

    Examples:
        >>> with worker_pool(1) as pool:
        ...     pool.apply(torch.get_num_threads)
        1
    """
    if num_workers == 0:
        return contextlib.nullcontext()
    return multiprocessing.Pool(num_workers, initializer=torch.set_num_threads, initargs=(1,))


class _Pickled:
    """Runs a function in a worker on an item (a graph, say) passed, and returned, as
    pickle bytes.

    A tensor sent through a :class:`multiprocessing.Pool` as it is goes through torch's
    shared-memory reduction, which holds a file descriptor per tensor until the other
    side takes it: tens of thousands of graphs exhaust the descriptor limit ("Too many
    open files"). Bytes hold none.
    """

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, item: bytes) -> bytes:
        return _dumps(self.fn(_loads(item)))


#: Tensor dtypes that travel between processes as numpy arrays (:class:`_PackedGraph`).
_NUMPY_DTYPES = frozenset(
    (
        *(torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64),
        *(torch.float16, torch.float32, torch.float64),
    )
)


class _PackedGraph:
    """A :class:`~torch_geometric.data.Data` graph with its tensors as numpy arrays, for
    the trip between processes: pickling and unpickling them (and making the graph
    again) took 0.13 against 0.37 ms a molecule for ZINC graphs with their shortest
    paths, as much as featurizing them. A numpy array pickles just its own elements, so
    a view of a dataset-wide storage does not carry the whole storage along; a tensor of
    another dtype (bfloat16, say) travels as a tensor, copied first if it is such a
    view."""

    def __init__(self, data: Data) -> None:
        self.fields: dict[str, Any] = {}
        self.arrays: list[str] = []
        for key, value in data.items():
            if isinstance(value, Tensor) and value.dtype in _NUMPY_DTYPES:
                self.fields[key] = value.detach().cpu().numpy()
                self.arrays.append(key)
            elif isinstance(value, Tensor) and _is_partial_view(value):
                self.fields[key] = value.clone()
            else:
                self.fields[key] = value

    def unpack(self) -> Data:
        data = Data()  # fields set in their order (Data(**fields) puts x, edge_*, y first)
        arrays = set(self.arrays)
        for key, value in self.fields.items():
            data[key] = torch.from_numpy(value) if key in arrays else value
        return data


def _pack(obj: Any) -> Any:
    if type(obj) is Data:  # a subclass may differ in its increments: pickled as it is
        return _PackedGraph(obj)
    if type(obj) is tuple:
        return tuple(_pack(item) for item in obj)
    return obj


def _unpack(obj: Any) -> Any:
    if isinstance(obj, _PackedGraph):
        return obj.unpack()
    if type(obj) is tuple:
        return tuple(_unpack(item) for item in obj)
    return obj


def _dumps(data: Any) -> bytes:
    """The object as pickle bytes for another process (read back by :func:`_loads`): a
    graph, alone or in a tuple, as a :class:`_PackedGraph`, so each of its tensors holds
    just its own elements.

    Pickling a tensor writes its whole storage, so a graph whose ``y`` is a row of a
    dataset-wide target table (or any graph taken from a collated
    :class:`~torch_geometric.data.InMemoryDataset`, whose fields are slices of shared
    storages) would carry the whole table with it, once per graph: gigabytes for
    ToxCast. Other graphs (subclasses, :class:`~torch_geometric.data.HeteroData`) have
    such views copied first; a tensor that owns its storage is not.

    Examples:
        >>> table = torch.arange(12).view(6, 2)
        >>> graph = _loads(_dumps(("ok", Data(y=table[2:3], name="a"))))[1]
        >>> graph.y.tolist(), graph.name, graph.y.untyped_storage().nbytes()
        ([[4, 5]], 'a', 16)
    """
    packed = _pack(data)
    if isinstance(packed, BaseData) and not isinstance(packed, _PackedGraph):
        packed = copy.copy(packed)
        for store in packed.stores:
            for key, value in store.items():
                if isinstance(value, Tensor) and _is_partial_view(value):
                    store[key] = value.clone()
    return pickle.dumps(packed, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(payload: bytes) -> Any:
    """The object :func:`_dumps` made :obj:`payload` of."""
    return _unpack(pickle.loads(payload))


def _is_partial_view(tensor: Tensor) -> bool:
    """Whether the tensor's storage holds more bytes than its own elements."""
    return tensor.untyped_storage().nbytes() > tensor.numel() * tensor.element_size()


class _MergedDataset(InMemoryDataset):
    def __init__(self, data_list: list[Data]) -> None:
        super().__init__()
        self.data, self.slices = self.collate(data_list)


def merge_datasets(datasets: Sequence[Sequence[Data]], keys: Sequence[str]) -> InMemoryDataset:
    r"""One in-memory dataset holding every graph of :obj:`datasets`, in order, with the
    fields :obj:`keys` only (a dataset's own fields, QM9's targets say, would not collate
    with another's), plus the vocabulary tag ``featurizer`` where the graphs have it.

    Raises:
        ValueError: naming the dataset, graph and field if a graph lacks one of :obj:`keys`.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> parts = [[from_smiles("CCO")], [from_smiles("CN")]]
        >>> merged = merge_datasets(parts, ["x", "edge_index"])
        >>> len(merged), merged[1].num_nodes
        (2, 2)
    """
    data_list = []
    for number, dataset in enumerate(datasets):
        for index in range(len(dataset)):
            data = dataset[index]
            missing = [key for key in keys if key not in data]
            if missing:
                raise ValueError(
                    f"Graph {index} of dataset {number} ({type(dataset).__name__}) lacks "
                    f"{missing}; every merged graph needs {list(keys)}"
                )
            fields = {key: data[key] for key in keys}
            if getattr(data, "featurizer", None) == FEATURIZER:
                fields["featurizer"] = FEATURIZER
            data_list.append(Data(**fields))
    if not data_list:
        raise ValueError("merge_datasets got no graphs")
    return _MergedDataset(data_list)


def num_without_pos(dataset: InMemoryDataset) -> int:
    """Molecules of :obj:`dataset` (or of the subset it is) stored with ``has_pos`` False:
    those for which no 3D conformer was found; 0 for a dataset without ``has_pos``.

    Examples:
        >>> from torch_geometric.data import Data, InMemoryDataset
        >>> graphs = [Data(num_nodes=1, has_pos=torch.tensor([flag])) for flag in (True, False)]
        >>> dataset = InMemoryDataset()
        >>> dataset.data, dataset.slices = InMemoryDataset.collate(graphs)
        >>> num_without_pos(dataset)
        1
    """
    flags = getattr(dataset, "has_pos_per_graph", None)
    if isinstance(flags, Tensor):  # an on-disk store keeps them in its index
        return int((~flags).sum()) if bool(flags.any()) else 0
    if "has_pos" not in dataset._data:
        return 0
    has_pos = dataset._data.has_pos.view(-1)
    return int((~has_pos[list(dataset.indices())]).sum())
