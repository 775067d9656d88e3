"""OGB graph-property datasets (ogbg-mol*) and their official evaluators."""
from __future__ import annotations

import os
import os.path as osp
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from pyg_molblend.constants import FEATURIZER
from pyg_molblend.datasets.utils import cache_key, describe

if TYPE_CHECKING:
    from ogb.graphproppred import PygGraphPropPredDataset

__all__ = ["evaluate_ogb", "load_ogb"]


def _ogb_meta(name: str) -> Any:
    """The column of OGB's ``master.csv`` for :obj:`name`."""
    import ogb.graphproppred
    import pandas as pd

    path = osp.join(osp.dirname(ogb.graphproppred.__file__), "master.csv")
    master = pd.read_csv(path, index_col=0, keep_default_na=False)
    if name not in master:
        raise ValueError(f"Unknown OGB graph dataset {name!r}; available: {list(master)}")
    return master[name]


def _ogb_class() -> type:
    """:class:`ogb.graphproppred.PygGraphPropPredDataset` with a content-keyed cache,
    ``force_reload`` and the vocabulary tag (imported lazily: ``ogb`` is optional)."""
    from ogb.graphproppred import PygGraphPropPredDataset

    class OGBDataset(PygGraphPropPredDataset):
        def __init__(self, *args: Any, force_reload: bool = False, **kwargs: Any) -> None:
            self._force_reload = force_reload
            super().__init__(*args, **kwargs)

        @property
        def processed_file_names(self) -> str:
            inputs = sorted(
                osp.join(self.raw_dir, f) for f in os.listdir(self.raw_dir) if f != ".DS_Store"
            )
            options = {"name": self.name, "pre_transform": describe(self.pre_transform)}
            return f"geometric_data_{cache_key(inputs, options)}.pt"

        def _process(self) -> None:
            self.force_reload = self._force_reload
            super()._process()

        def get(self, idx: int) -> Data:
            data = super().get(idx)
            data.featurizer = FEATURIZER
            return data

    return OGBDataset


def load_ogb(
    name: str,
    root: str,
    transform: Callable[[Data], Data] | None = None,
    pre_transform: Callable[[Data], Data] | None = None,
    *,
    force_reload: bool = False,
) -> PygGraphPropPredDataset:
    r"""Loads an OGB graph-property dataset (for example ``"ogbg-molhiv"``) with
    :class:`ogb.graphproppred.PygGraphPropPredDataset`.

    OGB molecules already use the vocabulary of :func:`~pyg_molblend.data.from_smiles`
    (``x`` ``[N, 9]``, ``edge_attr`` ``[E, 3]``, long), but carry no ``smiles``, so
    SMILES-based transforms such as :class:`~pyg_molblend.transforms.AddConformer` do not
    apply. Labels are made float after loading, ``y`` ``[1, num_tasks]`` with NaN for a
    missing label, like the other datasets of this package (ogbg-molhiv stores them as
    long); this happens in memory, so it does not depend on :obj:`pre_transform` or on a
    cache written by plain OGB. The split is ``dataset.get_idx_split()`` (a dict of
    ``train``/``valid``/``test`` index tensors); score predictions with
    :func:`evaluate_ogb`. Every graph read from it carries the vocabulary tag
    ``featurizer == "ogb"`` that :func:`~pyg_molblend.data.to_dense` checks.

    OGB caches the processed graphs under one name whatever the ``pre_transform``; here
    the processed file is named by :func:`~pyg_molblend.datasets.utils.cache_key` of the
    raw files and the ``pre_transform``, so another ``pre_transform`` is processed again
    instead of read stale.

    The dataset lives in ``<root>/<name with '-' replaced by '_'>/`` and is downloaded
    there if absent. Two OGB 1.3.6 pitfalls are handled: its ``torch.load`` of the
    processed file needs PyG's classes allow-listed on torch >= 2.6, which is done here;
    and it asks on standard input whether to delete a dataset directory that lacks the
    ``RELEASE_v<version>.txt`` file, which raises :class:`FileNotFoundError` here instead.

    Args:
        name (str): OGB dataset name, e.g. :obj:`"ogbg-molhiv"`.
        root (str): root directory.
        transform (callable, optional): applied to each graph on access. (default: :obj:`None`)
        pre_transform (callable, optional): applied once before saving. (default: :obj:`None`)
        force_reload (bool, optional, keyword-only): process again even if a cache
            exists. (default: :obj:`False`)

    Returns:
        The :class:`~ogb.graphproppred.PygGraphPropPredDataset`.

    Raises:
        ValueError: for a name that OGB does not know.
        FileNotFoundError: if the dataset directory exists without its release file.

    Examples:
        >>> dataset = load_ogb("ogbg-molhiv", "data")  # downloads 3.2 MB once  # doctest: +SKIP
        >>> split = dataset.get_idx_split()  # doctest: +SKIP
        >>> len(dataset), len(split["test"]), dataset[0].y.dtype  # doctest: +SKIP
        (41127, 4113, torch.float32)
    """
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    meta = _ogb_meta(name)
    directory = osp.join(root, name.replace("-", "_"))
    if osp.exists(directory + "_pyg"):
        directory += "_pyg"
    release = osp.join(directory, f"RELEASE_v{meta['version']}.txt")
    if osp.isdir(directory) and not osp.exists(release):
        raise FileNotFoundError(
            f"{directory!r} exists but has no {osp.basename(release)!r}: it is not a complete "
            f"OGB dataset directory (add the release file, or delete the directory to "
            f"download it again)"
        )
    torch.serialization.add_safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage])
    dataset = _ogb_class()(
        name=name,
        root=root,
        transform=transform,
        pre_transform=pre_transform,
        force_reload=force_reload,
    )
    if not dataset._data.y.is_floating_point():
        dataset._data.y = dataset._data.y.to(torch.float)
    return dataset


def evaluate_ogb(name: str, y_true: Tensor | np.ndarray, y_pred: Tensor | np.ndarray) -> float:
    r"""Scores predictions with OGB's official :class:`ogb.graphproppred.Evaluator`.

    The metric is the dataset's (ROC-AUC for ogbg-molhiv, averaged over tasks that have
    both classes; average precision for ogbg-molpcba and ogbg-molmuv; RMSE for the
    regression sets); NaN labels are ignored.

    Args:
        name (str): OGB dataset name, e.g. :obj:`"ogbg-molhiv"`.
        y_true (Tensor or np.ndarray): labels ``[num_graphs, num_tasks]`` (or
            ``[num_graphs]`` for a single task).
        y_pred (Tensor or np.ndarray): scores (logits or probabilities for
            classification), same shape.

    Returns:
        The metric value.

    Raises:
        ValueError: if the shapes differ.

    Examples:
        >>> y_true = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
        >>> evaluate_ogb("ogbg-molhiv", y_true, torch.tensor([[0.1], [0.8], [0.3], [0.4]]))
        0.75
    """
    from ogb.graphproppred import Evaluator

    arrays = []
    for value in (y_true, y_pred):
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        arrays.append(array.reshape(-1, 1) if array.ndim == 1 else array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"y_true and y_pred must have the same shape, got {arrays[0].shape} and "
            f"{arrays[1].shape}"
        )
    evaluator = Evaluator(name)
    result = evaluator.eval({"y_true": arrays[0], "y_pred": arrays[1]})
    return float(result[evaluator.eval_metric])
