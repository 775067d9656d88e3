"""Helpers shared by the dataset classes."""

from __future__ import annotations

import copy
import multiprocessing
import numbers
import pickle
from collections.abc import Callable, Sequence

from torch import Tensor
from torch_geometric.data import Data, InMemoryDataset
from tqdm import tqdm

__all__ = ["apply_transform", "merge_datasets"]

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
    """
    integral = isinstance(num_workers, numbers.Integral) and not isinstance(num_workers, bool)
    if not integral or num_workers < 0:
        raise ValueError(f"num_workers must be a non-negative integer, got {num_workers!r}")
    if num_workers == 0:
        return [transform(data) for data in tqdm(data_list, desc=desc)]
    if chunksize is None:
        chunksize = max(1, len(data_list) // (_CHUNKS_PER_WORKER * num_workers))
    with multiprocessing.Pool(num_workers) as pool:
        inputs = (_dumps(data) for data in data_list)
        results = pool.imap(_Pickled(transform), inputs, chunksize=chunksize)
        return [pickle.loads(r) for r in tqdm(results, total=len(data_list), desc=desc)]


class _Pickled:
    """Runs the transform in a worker on a graph passed, and returned, as pickle bytes.

    A tensor sent through a :class:`multiprocessing.Pool` as it is goes through torch's
    shared-memory reduction, which holds a file descriptor per tensor until the other
    side takes it: tens of thousands of graphs exhaust the descriptor limit ("Too many
    open files"). Bytes hold none.
    """

    def __init__(self, transform: Callable[[Data], Data]) -> None:
        self.transform = transform

    def __call__(self, data: bytes) -> bytes:
        return _dumps(self.transform(pickle.loads(data)))


def _dumps(data: Data) -> bytes:
    """The graph as pickle bytes, each tensor with just its own elements.

    Pickling a tensor writes its whole storage, so a graph whose ``y`` is a row of a
    dataset-wide target table (or any graph taken from a collated
    :class:`~torch_geometric.data.InMemoryDataset`, whose fields are slices of shared
    storages) would carry the whole table with it, once per graph: gigabytes for
    ToxCast. Such views are copied first; a tensor that owns its storage is not.
    """
    data = copy.copy(data)
    for store in data.stores:
        for key, value in store.items():
            if isinstance(value, Tensor) and _is_partial_view(value):
                store[key] = value.clone()
    return pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)


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
    with another's).

    Raises:
        ValueError: naming the dataset, graph and field if a graph lacks one of :obj:`keys`.
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
            data_list.append(Data(**{key: data[key] for key in keys}))
    if not data_list:
        raise ValueError("merge_datasets got no graphs")
    return _MergedDataset(data_list)
