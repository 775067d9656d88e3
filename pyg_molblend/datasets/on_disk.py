"""A streaming pretraining corpus: molecules on disk in shards, read one record at a time."""

from __future__ import annotations

import collections
import hashlib
import json
import os
import os.path as osp
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, Dataset
from tqdm import tqdm

from pyg_molblend.constants import DEFAULT_MAX_ATOMS, FEATURIZER
from pyg_molblend.data.featurize import from_mol, from_smiles, quiet_rdkit
from pyg_molblend.datasets.csv_dataset import open_input
from pyg_molblend.datasets.smiles import iter_smiles_table
from pyg_molblend.datasets.utils import (
    Rejections,
    _dumps,
    _loads,
    cache_key,
    describe,
    file_content,
    input_files,
    shorten,
    worker_pool,
)

__all__ = ["OnDiskMoleculeDataset"]

Transform = Callable[[Data], Data]

#: Version of the shard layout; bumped when it changes, so old stores are rebuilt.
STORE_FORMAT = 2

#: Per-molecule index columns of a shard (kept in memory: 29 bytes per molecule, plus 4 for
#: its shard number).
_INDEX = (
    ("offset", np.int64),  # byte offset of the record in the shard's data file
    ("row", np.int64),  # row of the molecule in its source (files counted in order)
    ("num_nodes", np.int32),
    ("num_edges", np.int32),
    ("smiles_bytes", np.int32),
    ("has_pos", np.bool_),
)


def _record_size(num_nodes: int, num_edges: int, smiles_bytes: int, has_pos: bool) -> int:
    """Bytes of one record: pos float32 [N, 3] (only when ``has_pos``), edge_index int16
    [2, E], x uint8 [N, 9], edge_attr uint8 [E, 3], the SMILES in UTF-8, padded to 4
    bytes (so every record's coordinates are aligned)."""
    size = 4 * num_edges + 9 * num_nodes + 3 * num_edges + smiles_bytes
    size += 12 * num_nodes if has_pos else 0
    return (size + 3) // 4 * 4


def _encode(data: Data) -> tuple[bytes, tuple[int, int, int, bool]]:
    """One molecule as a record, and its ``(num_nodes, num_edges, smiles_bytes, has_pos)``."""
    num_nodes, num_edges = int(data.num_nodes), int(data.edge_index.size(1))
    if num_nodes > np.iinfo(np.int16).max:
        raise ValueError(
            f"molecule {shorten(str(data.smiles))!r} has {num_nodes} atoms; the on-disk "
            f"store holds at most {np.iinfo(np.int16).max}"
        )
    pos = getattr(data, "pos", None)
    has_pos = pos is not None and bool(getattr(data, "has_pos", torch.ones(1)).all())
    smiles = str(data.smiles).encode()
    parts = [
        pos.to(torch.float32).numpy().tobytes() if has_pos else b"",
        data.edge_index.to(torch.int16).numpy().tobytes(),
        data.x.to(torch.uint8).numpy().tobytes(),
        data.edge_attr.to(torch.uint8).numpy().tobytes(),
        smiles,
    ]
    record = b"".join(parts)
    size = _record_size(num_nodes, num_edges, len(smiles), has_pos)
    return record + bytes(size - len(record)), (num_nodes, num_edges, len(smiles), has_pos)


def _decode(
    buffer: bytes, num_nodes: int, num_edges: int, smiles_bytes: int, has_pos: bool
) -> dict[str, Any]:
    """The fields of a record; ``pos`` is NaN when the molecule has no coordinates (as
    :class:`~pyg_molblend.transforms.AddConformer` leaves a molecule it cannot embed)."""
    n, e = num_nodes, num_edges
    at = 0

    def take(dtype: Any, count: int, shape: tuple[int, ...]) -> np.ndarray:
        nonlocal at
        array = np.frombuffer(buffer, dtype=dtype, count=count, offset=at).reshape(shape)
        at += array.nbytes
        return array

    if has_pos:
        pos = torch.from_numpy(take(np.float32, 3 * n, (n, 3)).copy())
    else:
        pos = torch.full((n, 3), float("nan"))
    edge_index = torch.from_numpy(take(np.int16, 2 * e, (2, e)).astype(np.int64))
    x = torch.from_numpy(take(np.uint8, 9 * n, (n, 9)).astype(np.int64))
    edge_attr = torch.from_numpy(take(np.uint8, 3 * e, (e, 3)).astype(np.int64))
    smiles = buffer[at : at + smiles_bytes].decode()
    return dict(x=x, edge_index=edge_index, edge_attr=edge_attr, smiles=smiles, pos=pos)


# --------------------------------------------------------------------------- sources

#: Rows of a SMILES file read at a time while a store is prepared.
_READ_CHUNK = 65_536


def _smiles_items(paths: Sequence[str], max_molecules: int | None) -> Iterator[tuple]:
    """``(row, where, smiles)`` of every molecule of the SMILES files, in order, read in
    chunks (as ``predict`` reads its input), so that a file of millions of rows is never
    held in memory whole."""
    row = 0
    for path in paths:
        for chunk, column in iter_smiles_table(path, chunk_size=_READ_CHUNK):
            for line, smiles in zip(chunk.index, chunk[column], strict=True):
                if max_molecules is not None and row >= max_molecules:
                    return
                yield row, f"{path}, line {line}", str(smiles).strip()
                row += 1


def _sdf_items(paths: Sequence[str], max_molecules: int | None) -> Iterator[tuple]:
    """``(row, where, molblock)`` of every record of the SDF files, in order; records are
    cut at ``$$$$`` lines and parsed by the workers."""
    row = 0
    for path in paths:
        with open_input(path, "rt") as f:
            lines: list[str] = []
            record = 0
            for line in f:
                if line.rstrip("\r\n") == "$$$$":
                    if max_molecules is not None and row >= max_molecules:
                        return
                    yield row, f"{path}, record {record}", "".join(lines)
                    lines, record, row = [], record + 1, row + 1
                else:
                    lines.append(line)
            if "".join(lines).strip():  # a last record without its $$$$ line
                if max_molecules is None or row < max_molecules:
                    yield row, f"{path}, record {record}", "".join(lines)
                    row += 1


#: The fields a store keeps of a graph.
_STORED = ("x", "edge_index", "edge_attr", "pos", "has_pos", "smiles")


def _graph_items(graphs: Sequence[Data], name: str) -> Iterator[tuple]:
    """``(index, where, graph)`` with only the stored fields, the graph as pickle bytes
    (:func:`~pyg_molblend.datasets.utils._dumps`, as ``apply_transform`` sends graphs):
    each tensor with just its own elements (a graph of an in-memory dataset holds views of
    the whole dataset's storage), and no file descriptor per tensor on the way to a worker
    (QM9's 128k graphs ran out of them: "Too many open files")."""
    for index in range(len(graphs)):
        data = graphs[index]
        fields = {key: data[key] for key in _STORED if key in data}
        yield index, f"{name}, molecule {index}", _dumps(Data(**fields))


def _chunks(items: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    chunk: list[tuple] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --------------------------------------------------------------------------- writing


class _ShardWriter:
    """Runs in a worker: featurizes one chunk, applies ``pre_transform`` and writes the
    shard (data file first, then its index, each renamed into place when complete, so a
    killed preparation leaves either a whole shard or none)."""

    def __init__(
        self,
        folder: str,
        kind: str,
        pre_transform: Transform | None,
        max_atoms: int | None,
        skip_invalid: bool,
    ) -> None:
        self.folder, self.kind = folder, kind
        self.pre_transform, self.max_atoms, self.skip_invalid = (
            pre_transform,
            max_atoms,
            skip_invalid,
        )

    def graph(self, item: Any) -> Data:
        if self.kind == "smiles":
            return from_smiles(item)
        if self.kind == "sdf":
            from rdkit import Chem

            with quiet_rdkit():
                mol = Chem.MolFromMolBlock(item, removeHs=False)
            return from_mol(mol)
        return _loads(item)  # bytes of _graph_items, made in this run

    def reject(self, skipped: list, row: int, text: str, reason: str, message: str) -> None:
        """Records a rejected molecule, or raises as
        :class:`~pyg_molblend.datasets.utils.Rejections` does without ``skip_invalid``."""
        Rejections("", self.skip_invalid, "").add(row, text, message)
        skipped.append([row, text, reason, message])

    def __call__(self, task: tuple[int, list[tuple]]) -> tuple[int, int, list]:
        shard, chunk = task
        records, index, skipped = [], [], []
        offset = 0
        for row, where, item in chunk:
            try:
                data = self.graph(item)
            except ValueError as error:
                text = item if self.kind == "smiles" else where
                self.reject(skipped, row, text, "invalid", f"{where}: {error}")
                continue
            if self.max_atoms is not None and data.num_nodes > self.max_atoms:
                message = (
                    f"{where}: molecule {shorten(str(data.smiles))!r} has {data.num_nodes} "
                    f"atoms, above max_atoms={self.max_atoms}"
                )
                self.reject(skipped, row, str(data.smiles), "too_large", message)
                continue
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            record, (num_nodes, num_edges, smiles_bytes, has_pos) = _encode(data)
            records.append(record)
            index.append((offset, row, num_nodes, num_edges, smiles_bytes, has_pos))
            offset += len(record)
        stem = osp.join(self.folder, f"shard_{shard:06d}")
        with open(stem + ".bin.tmp", "wb") as f:
            f.writelines(records)
        os.replace(stem + ".bin.tmp", stem + ".bin")
        columns = list(zip(*index, strict=True)) if index else [[] for _ in _INDEX]
        arrays = {
            name: np.asarray(column, dtype=dtype)
            for (name, dtype), column in zip(_INDEX, columns, strict=True)
        }
        content = hashlib.sha256(b"".join(records)).hexdigest()
        with open(stem + ".index.tmp", "wb") as f:  # numpy arrays and JSON: no pickle
            np.savez(f, **arrays, skipped=np.array(json.dumps(skipped)), content=np.array(content))
        os.replace(stem + ".index.tmp", stem + ".index")
        return shard, len(index), skipped


def _read_index(stem: str) -> tuple[dict[str, np.ndarray], list, str]:
    """A shard's index columns, its skipped molecules and the SHA-256 of its records
    (read without unpickling)."""
    with np.load(stem + ".index", allow_pickle=False) as npz:
        arrays = {name: npz[name] for name, _ in _INDEX}
        return arrays, json.loads(str(npz["skipped"])), str(npz["content"])


# --------------------------------------------------------------------------- the dataset


class OnDiskMoleculeDataset(Dataset):
    r"""Unlabelled molecules on disk, for pretraining on corpora that do not fit in memory
    (PCQM4Mv2's 3.4M molecules, say), in the spirit of PyG's
    :class:`~torch_geometric.data.OnDiskDataset`: a :class:`~torch_geometric.data.Dataset`
    whose :meth:`get` reads one molecule from disk.

    Only the graph and its coordinates are stored, in compact dtypes (atom and bond
    features ``uint8``, bonds ``int16``, coordinates ``float32``: about 39 bytes per atom
    with coordinates, 27 without, i.e. 820 and 600 bytes per drug-like molecule);
    the pair relations (shortest paths, path bonds) are not stored but computed per batch
    on the batch's device by the package's kernels
    (:func:`~pyg_molblend.training.utils.dense_batch` does it for batches that lack them).
    Graphs come back as :func:`~pyg_molblend.data.from_smiles` makes them (``int64``
    features), with ``pos`` and ``has_pos`` when the store holds coordinates.

    **Preparation** cuts the sources into shards of :obj:`shard_size` molecules; each
    shard is featurized, ``pre_transform``-ed (say
    :class:`~pyg_molblend.transforms.AddConformer`) and written by one of
    :obj:`num_workers` processes, first to a temporary name and then renamed, so that a
    killed preparation continues where it stopped: finished shards are kept, the others
    redone. The store lives in ``root/ondisk_<key>``, the key covering the inputs'
    contents and every option (as :func:`~pyg_molblend.datasets.utils.cache_key`).

    **Reading** keeps 33 bytes per molecule in memory (record offsets, source rows, atom,
    bond and SMILES byte counts, ``has_pos``, shard numbers) and reads each molecule with
    one ``pread`` of its record: no memory map, so the process's resident memory does not
    grow with the corpus as an epoch goes over it, and each
    :class:`~torch.utils.data.DataLoader` worker opens its own file handles.
    :attr:`num_nodes_per_graph` gives the atom counts to
    :class:`~pyg_molblend.data.SizeBucketBatchSampler` without reading any record.

    Args:
        root (str): directory of the store.
        smiles (Sequence[str], optional): SMILES files (see
            :func:`~pyg_molblend.datasets.read_smiles_file`).
        sdf (Sequence[str], optional): SDF files (optionally ``.gz``); records keep their
            heavy-atom coordinates (``has_pos`` True when 3D).
        graphs (Sequence[Data], optional): already featurized molecules (QM9 with its DFT
            geometries, say), stored as they are (minus any stored pair relations).
        graphs_name (str, optional): the name of :obj:`graphs` in messages and in the key.
            (default: :obj:`"graphs"`)
        transform (callable, optional): applied on access.
        pre_transform (callable, optional): applied once per molecule before it is
            stored, e.g. :class:`~pyg_molblend.transforms.AddConformer`.
        force_reload (bool, optional): rebuild the store. (default: :obj:`False`)
        skip_invalid (bool, optional, keyword-only): skip (and count in one warning per
            reason) unparsable or too large molecules instead of raising.
            (default: :obj:`False`)
        max_molecules (int, optional, keyword-only): only the first molecules of the
            SMILES files, and of the SDF files.
        max_atoms (int, optional, keyword-only): largest molecule accepted, in heavy atoms.
            (default: :data:`~pyg_molblend.constants.DEFAULT_MAX_ATOMS`)
        num_workers (int, optional, keyword-only): processes that prepare shards.
            (default: :obj:`0`)
        shard_size (int, optional, keyword-only): molecules per shard. (default: :obj:`4096`)

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "corpus.smi").write_text("CCO\nc1ccccc1\n")
        >>> dataset = OnDiskMoleculeDataset(str(folder / "store"), smiles=[folder / "corpus.smi"])
        >>> len(dataset), dataset[1].smiles, dataset.num_nodes_per_graph.tolist()
        (2, 'c1ccccc1', [3, 6])
    """

    def __init__(
        self,
        root: str,
        smiles: Sequence[str | os.PathLike] = (),
        sdf: Sequence[str | os.PathLike] = (),
        graphs: Sequence[Data] | None = None,
        graphs_name: str = "graphs",
        transform: Transform | None = None,
        pre_transform: Transform | None = None,
        force_reload: bool = False,
        *,
        skip_invalid: bool = False,
        max_molecules: int | None = None,
        max_atoms: int | None = DEFAULT_MAX_ATOMS,
        num_workers: int = 0,
        shard_size: int = 4096,
    ) -> None:
        self.smiles_paths, self.sdf_paths = input_files(smiles), input_files(sdf)
        if not self.smiles_paths and not self.sdf_paths and graphs is None:
            raise ValueError(f"{type(self).__name__} needs SMILES files, SDF files or graphs")
        if shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {shard_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        self.graphs, self.graphs_name = graphs, graphs_name
        self.skip_invalid, self.max_molecules, self.max_atoms = (
            skip_invalid,
            max_molecules,
            max_atoms,
        )
        self.num_workers, self.shard_size = num_workers, shard_size
        self.force_reload = force_reload
        self._pre_transform = pre_transform
        self._handles: dict[int, tuple[int, list[int]]] = {}
        super().__init__(root, transform, log=False)
        self._store_options = self._options()
        self.key = cache_key(self.smiles_paths + self.sdf_paths, self._store_options)
        self.folder = osp.join(root, f"ondisk_{self.key}")
        self._prepare()
        self._open()

    # ------------------------------------------------------------------ preparation

    def _options(self) -> dict[str, Any]:
        """Every option that changes what the store holds (the inputs' paths included);
        computed once, in ``__init__``, for the key and :meth:`identity_digest`."""
        from pyg_molblend.training.checkpoint import data_fingerprint

        return {
            "class": type(self).__name__,
            "format": STORE_FORMAT,
            "smiles": self.smiles_paths,
            "sdf": self.sdf_paths,
            "graphs": None
            if self.graphs is None
            else [self.graphs_name, data_fingerprint(self.graphs)],
            "pre_transform": describe(self._pre_transform),
            "skip_invalid": self.skip_invalid,
            "max_molecules": self.max_molecules,
            "max_atoms": self.max_atoms,
            "shard_size": self.shard_size,
        }

    def _tasks(self) -> Iterator[tuple[str, int, list[tuple]]]:
        """``(kind, shard, chunk)`` of every shard, in store order."""
        shard = 0
        sources: list[tuple[str, Iterator[tuple]]] = []
        if self.smiles_paths:
            sources.append(("smiles", _smiles_items(self.smiles_paths, self.max_molecules)))
        if self.sdf_paths:
            sources.append(("sdf", _sdf_items(self.sdf_paths, self.max_molecules)))
        if self.graphs is not None:
            sources.append(("graphs", _graph_items(self.graphs, self.graphs_name)))
        for kind, items in sources:
            for chunk in _chunks(items, self.shard_size):
                yield kind, shard, chunk
                shard += 1

    def _prepare(self) -> None:
        manifest = osp.join(self.folder, "manifest.json")
        if self.force_reload and osp.isdir(self.folder):
            shutil.rmtree(self.folder)
        if osp.isfile(manifest):
            return
        os.makedirs(self.folder, exist_ok=True)
        done = {
            int(name[6:12])
            for name in os.listdir(self.folder)
            if name.startswith("shard_") and name.endswith(".index")
        }
        kinds: list[str] = []
        counts: list[int] = []
        skipped: list[list] = []
        writers = {
            kind: _ShardWriter(
                self.folder, kind, self._pre_transform, self.max_atoms, self.skip_invalid
            )
            for kind in ("smiles", "sdf", "graphs")
        }

        def todo() -> Iterator[tuple[_ShardWriter, tuple[int, list[tuple]]]]:
            for kind, shard, chunk in self._tasks():
                kinds.append(kind)
                if shard not in done:
                    yield writers[kind], (shard, chunk)

        bar = tqdm(desc=f"Preparing {osp.basename(self.folder)}", unit="mol")
        with bar:
            for _, count, shard_skipped in self._run(todo()):
                bar.update(count + len(shard_skipped))
        # What the store holds, whatever its path: every record's bytes (SMILES, atoms,
        # bonds, coordinates), the index and the skipped rows, shard by shard.
        digest = hashlib.sha256()
        for shard, kind in enumerate(kinds):
            arrays, shard_skipped, content = _read_index(self._stem(shard))
            counts.append(len(arrays["offset"]))
            skipped += [[kind, *entry] for entry in shard_skipped]
            digest.update(content.encode())
            for name, _ in _INDEX:
                digest.update(arrays[name].tobytes())
            rows = [[row, text, reason] for row, text, reason, _ in shard_skipped]
            digest.update(json.dumps(rows).encode())  # not the messages: they name paths
        if not sum(counts):
            raise ValueError(f"No molecule of {self._sources()} is left to store")
        meta = {
            "format": STORE_FORMAT,
            "key": self.key,
            "shards": counts,
            "kinds": kinds,
            "skipped": skipped,
            "digest": digest.hexdigest(),
        }
        with open(manifest + ".tmp", "w") as f:
            json.dump(meta, f)
        os.replace(manifest + ".tmp", manifest)
        # One counted warning per source and reason, worded as the in-memory datasets do.
        sources = {"smiles": self.smiles_paths, "sdf": self.sdf_paths, "graphs": []}
        invalid = {"smiles": "with an invalid SMILES", "sdf": "that RDKit cannot read"}
        for kind, paths in sources.items():
            for reason in ("invalid", "too_large"):
                what = invalid.get(kind) if reason == "invalid" else None
                rejected = Rejections(
                    what or f"above max_atoms={self.max_atoms}",
                    True,
                    ", ".join(paths) or self.graphs_name,
                )
                for entry_kind, row, text, why, message in skipped:
                    if entry_kind == kind and why == reason:
                        rejected.add(int(row), text, message)
                rejected.warn()

    def _run(self, tasks: Iterator[tuple[_ShardWriter, Any]]) -> Iterator[tuple[int, int, list]]:
        """Runs the shard writers, at most two shards per worker in flight (a pool's
        ``imap`` would read every chunk of the sources into its queue at once)."""
        if self.num_workers == 0:
            yield from (writer(task) for writer, task in tasks)
            return
        with worker_pool(self.num_workers) as pool:
            pending: collections.deque = collections.deque()
            for writer, task in tasks:
                pending.append(pool.apply_async(writer, (task,)))
                while len(pending) >= 2 * self.num_workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()

    def _sources(self) -> str:
        names = self.smiles_paths + self.sdf_paths
        if self.graphs is not None:
            names.append(self.graphs_name)
        return ", ".join(names)

    def _stem(self, shard: int) -> str:
        return osp.join(self.folder, f"shard_{shard:06d}")

    # ------------------------------------------------------------------ reading

    def _open(self) -> None:
        with open(osp.join(self.folder, "manifest.json")) as f:
            self.meta: dict[str, Any] = json.load(f)
        columns: dict[str, list[np.ndarray]] = {name: [] for name, _ in _INDEX}
        shard_of = []
        for shard, count in enumerate(self.meta["shards"]):
            arrays, _, _ = _read_index(self._stem(shard))
            for name, _ in _INDEX:
                columns[name].append(arrays[name])
            shard_of.append(np.full(count, shard, dtype=np.int32))
        self._index = {name: np.concatenate(parts) for name, parts in columns.items()}
        self._shard = np.concatenate(shard_of)
        self._has_coordinates = bool(self._index["has_pos"].any())
        #: ``(row, text)`` of the molecules skipped (rows counted per kind of source:
        #: SMILES files, SDF files, graphs); the text is the SMILES, or where the record was.
        self.skipped = [(int(row), str(text)) for _, row, text, _, _ in self.meta["skipped"]]

    def _file(self, shard: int) -> int:
        pid = os.getpid()
        handles = self._handles.get(pid)
        if handles is None:  # a new process (a DataLoader worker): its own descriptors
            self._handles = {pid: (pid, [-1] * len(self.meta["shards"]))}
            handles = self._handles[pid]
        fds = handles[1]
        if fds[shard] < 0:
            fds[shard] = os.open(self._stem(shard) + ".bin", os.O_RDONLY)
        return fds[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}  # descriptors do not travel to spawned workers
        return state

    def __del__(self) -> None:
        for pid, (_, fds) in getattr(self, "_handles", {}).items():
            if pid == os.getpid():
                for fd in fds:
                    if fd >= 0:
                        os.close(fd)

    @property
    def raw_file_names(self) -> list[str]:
        return []

    @property
    def processed_file_names(self) -> list[str]:
        return []

    def len(self) -> int:
        return len(self._shard)

    def get(self, idx: int) -> Data:
        index = self._index
        num_nodes = int(index["num_nodes"][idx])
        num_edges = int(index["num_edges"][idx])
        smiles_bytes = int(index["smiles_bytes"][idx])
        has_pos = bool(index["has_pos"][idx])
        size = _record_size(num_nodes, num_edges, smiles_bytes, has_pos)
        shard = int(self._shard[idx])
        buffer = os.pread(self._file(shard), size, int(index["offset"][idx]))
        fields = _decode(buffer, num_nodes, num_edges, smiles_bytes, has_pos)
        if self._has_coordinates:
            fields["has_pos"] = torch.tensor([has_pos])
        else:
            del fields["pos"]
        return Data(**fields, featurizer=FEATURIZER, num_nodes=num_nodes)

    @property
    def num_nodes_per_graph(self) -> Tensor:
        """Atom count of every molecule of this dataset (or subset), ``[len]`` (long),
        from the in-memory index."""
        return self._per_graph(torch.from_numpy(self._index["num_nodes"].astype(np.int64)))

    @property
    def has_pos_per_graph(self) -> Tensor:
        """``has_pos`` of every molecule of this dataset (or subset), ``[len]`` (bool)."""
        return self._per_graph(torch.from_numpy(self._index["has_pos"].copy()))

    def _per_graph(self, values: Tensor) -> Tensor:
        """:obj:`values` of the whole store, restricted to this subset."""
        if self._indices is None:
            return values
        return values[torch.as_tensor(list(self.indices()), dtype=torch.long)]

    @property
    def smiles(self) -> list[str]:
        """The SMILES of the molecules, in order (reads every record)."""
        return [self.get(i).smiles for i in self.indices()]

    def content_digest(self) -> str:
        """A digest of the molecules of this dataset (or subset), in order, without
        reading them: the digest of every record, the index and the skipped rows taken
        when the store was prepared, and the subset's indices. It does not depend on where
        the store or its inputs are, so a store rebuilt elsewhere from the same molecules
        resumes a pretraining run."""
        digest = hashlib.sha256(self.meta["digest"].encode())
        if self._indices is not None:
            digest.update(np.asarray(list(self.indices()), dtype=np.int64).tobytes())
        return digest.hexdigest()

    def identity_digest(self) -> str:
        """A digest of which molecules this dataset (or subset) holds, in order, but not
        of their coordinates: the inputs' bytes (not their paths), the options, and each
        molecule's source row, atom, bond and SMILES-byte counts, and the skipped rows.

        Two stores prepared from the same inputs with the same options share it even when
        RDKit's conformer timeout (wall-clock, so it depends on the machine's load) gave a
        few molecules other coordinates or none, where :meth:`content_digest` differs: a
        pretraining run resumes on such a rebuilt store with a warning
        (:func:`~pyg_molblend.training.checkpoint.data_identity`)."""
        options = {k: v for k, v in self._store_options.items() if k not in ("smiles", "sdf")}
        files = [file_content(path) for path in self.smiles_paths + self.sdf_paths]
        text = json.dumps({"options": options, "inputs": files}, sort_keys=True, default=repr)
        digest = hashlib.sha256(text.encode())
        skipped = [entry[:4] for entry in self.meta["skipped"]]  # not the messages (paths)
        digest.update(json.dumps([self.meta["kinds"], self.meta["shards"], skipped]).encode())
        for name in ("row", "num_nodes", "num_edges", "smiles_bytes"):
            digest.update(self._index[name].tobytes())
        if self._indices is not None:
            digest.update(np.asarray(list(self.indices()), dtype=np.int64).tobytes())
        return digest.hexdigest()

    @property
    def source_counts(self) -> dict[str, int]:
        """Molecules stored per source: ``"smiles"``, ``"sdf"`` and :obj:`graphs_name`."""
        counts: dict[str, int] = {}
        for kind, count in zip(self.meta["kinds"], self.meta["shards"], strict=True):
            name = self.graphs_name if kind == "graphs" else kind
            counts[name] = counts.get(name, 0) + count
        return counts

    @property
    def nbytes(self) -> int:
        """Bytes of the store on disk."""
        return sum(os.path.getsize(osp.join(self.folder, name)) for name in os.listdir(self.folder))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)}, {self.folder!r})"
