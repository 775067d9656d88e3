"""Predictions on new molecules from fine-tuned models: one ``model.pt``, an ensemble
folder, or Monte Carlo dropout on one model; SMILES lists in memory or files streamed in
chunks."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.transforms import Compose
from tqdm.auto import tqdm

from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.datasets.csv_dataset import uncompressed_name
from pyg_molblend.datasets.smiles import iter_smiles_table
from pyg_molblend.datasets.utils import (
    FEATURIZED,
    check_num_workers,
    featurize_rows,
    rejection_message,
    worker_pool,
)
from pyg_molblend.models import MoleBlendPredictor, output_names
from pyg_molblend.training.checkpoint import (
    PRETRAINED_NAME,
    CheckpointError,
    load_predictor,
    resolve_checkpoint,
)
from pyg_molblend.training.finetune import map_batches
from pyg_molblend.training.io import atomic_path
from pyg_molblend.training.utils import check_precision
from pyg_molblend.transforms import AddConformer, AddShortestPath

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "STATUSES",
    "UNCERTAINTY",
    "ModelSet",
    "ensemble_files",
    "iter_smiles_table",
    "predict_file",
    "predict_smiles",
]

#: Ways to estimate the uncertainty of a prediction: the members' spread, or dropout
#: kept on at inference (Monte Carlo dropout, Gal & Ghahramani, 2016).
UNCERTAINTY = ("ensemble", "dropout")

#: Values of the ``status`` column: predicted, predicted from 2D relations because no
#: conformer could be made (3D modes), or not predicted and why.
STATUSES = ("ok", "ok_2d_fallback", "invalid_smiles", "too_many_atoms")

#: RDKit seed of the conformers of 3D modes, as in fine-tuning (``cli.common``).
CONFORMER_SEED = 0

_MEMBER = re.compile(r"model_(\d+)\.pt$")


def ensemble_files(path: str | os.PathLike) -> list[Path]:
    """The model files of :obj:`path`: the file itself, or in a folder ``model.pt`` (one
    model) or the members ``model_0.pt``, ``model_1.pt``, ... that ``finetune
    --ensemble-size`` writes, in member order.

    Raises:
        CheckpointError: if the path does not exist or a folder holds no model.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ("model_10.pt", "model_2.pt", "metrics.json"):
        ...     _ = (folder / name).write_text("")
        >>> [p.name for p in ensemble_files(folder)]
        ['model_2.pt', 'model_10.pt']
    """
    if str(path) == PRETRAINED_NAME:  # refused later by load_predictor, with the reason
        return [resolve_checkpoint(path)]
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CheckpointError(f"Checkpoint not found: {str(path)!r}")
    if (path / "model.pt").is_file():
        return [path / "model.pt"]
    members = [(int(m.group(1)), p) for p in path.iterdir() if (m := _MEMBER.fullmatch(p.name))]
    if not members:
        raise CheckpointError(
            f"{str(path)!r} holds no model.pt and no ensemble members model_<i>.pt "
            "(written by pyg-molblend finetune)"
        )
    return [p for _, p in sorted(members)]


class ModelSet:
    r"""The fine-tuned model, or the members of an ensemble, behind one checkpoint path,
    ready to predict with or without an uncertainty.

    With several members the prediction is the members' mean and its uncertainty their
    standard deviation (population, ``ddof=0``) per task. With :obj:`"dropout"` each
    member predicts :obj:`samples` times with its dropout on (attention and head
    dropout, at the rates it was fine-tuned with) and the samples of all members are
    pooled the same way. Random draws come from a generator seeded with :obj:`seed`, so
    the same call gives the same numbers; the global RNG is left as it was.

    Args:
        path (str or Path): a ``model.pt`` or a folder (see :func:`ensemble_files`).
        device (str, optional): where to run. (default: :obj:`"cpu"`)
        precision (str, optional): the arithmetic, one of
            :data:`~pyg_molblend.training.utils.PRECISIONS`; predictions come back as
            float32 either way. (default: :obj:`"fp32"`)

    Raises:
        ValueError: for an unknown precision, or one :obj:`device` cannot run.
        CheckpointError: for a file that is not a fine-tuned model (a pretraining
            checkpoint has no task head), another feature contract, or members that do
            not predict the same tasks in the same mode.

    Examples:
        >>> import tempfile, pathlib
        >>> from pyg_molblend.data import from_smiles
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> from pyg_molblend.training.checkpoint import predictor_checkpoint, save_checkpoint
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for member in range(2):
        ...     _ = torch.manual_seed(member)
        ...     predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1, "regression")
        ...     save_checkpoint(folder / f"model_{member}.pt",
        ...                     predictor_checkpoint(predictor, target_names=["logS"]))
        >>> models = ModelSet(folder)
        >>> graphs = [AddShortestPath()(from_smiles(s)) for s in ["CCO", "c1ccccc1"]]
        >>> mean, std = models.predict(graphs, uncertainty="ensemble")
        >>> len(models), models.target_names, mean.shape, bool((std > 0).all())
        (2, ['logS'], (2, 1), True)
    """

    def __init__(
        self, path: str | os.PathLike, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        check_precision(precision, device)
        self.path = Path(path)
        self.files = ensemble_files(path)
        self.device = device
        self.precision = precision
        self.members: list[MoleBlendPredictor] = []
        self.meta: dict[str, Any] = {}
        for file in self.files:
            predictor, meta = load_predictor(file)
            if not self.members:
                self.meta = meta
            else:
                key = (
                    "num_tasks",
                    "task_type",
                    "num_classes",
                    "mode",
                    "target_names",
                    "num_descriptors",
                )
                ours = {k: meta.get(k) for k in key}
                first = {k: self.meta.get(k) for k in key}
                if ours != first:
                    raise CheckpointError(
                        f"Ensemble member {str(file)!r} predicts {ours}, but "
                        f"{str(self.files[0])!r} predicts {first}"
                    )
            self.members.append(predictor.to(device).eval())

    def __len__(self) -> int:
        return len(self.members)

    @property
    def task_type(self) -> str:
        return self.meta["task_type"]

    @property
    def mode(self) -> str:
        return self.meta["mode"]

    @property
    def num_tasks(self) -> int:
        return self.meta["num_tasks"]

    @property
    def num_classes(self) -> int | None:
        """Classes per task of multiclass models, else :obj:`None`."""
        return self.meta.get("num_classes")

    @property
    def output_names(self) -> list[str]:
        """The prediction columns: the task names, or ``<task>_class_<k>`` (multiclass)."""
        return output_names(self.target_names, self.num_classes)

    @property
    def num_descriptors(self) -> int:
        """Descriptors per molecule the models take (0: none)."""
        return int(self.meta.get("num_descriptors", 0))

    def check_descriptors(self, descriptors: np.ndarray | None, rows: int | None) -> None:
        """Raises a :class:`ValueError` unless :obj:`descriptors` is what the models take:
        :obj:`None` for models without descriptors, else ``[rows, num_descriptors]``
        (:obj:`rows` :obj:`None`: any number of rows)."""
        if descriptors is None:
            if self.num_descriptors:
                raise ValueError(
                    f"{str(self.path)!r} was fine-tuned with {self.num_descriptors} "
                    "descriptors per molecule; give them (--descriptors FILE, one row per "
                    "input row)"
                )
            return
        if not self.num_descriptors:
            raise ValueError(
                f"{str(self.path)!r} was fine-tuned without descriptors; do not give any"
            )
        shape = list(np.shape(descriptors))
        if len(shape) != 2 or shape[1] != self.num_descriptors:
            raise ValueError(
                f"{str(self.path)!r} takes {self.num_descriptors} descriptors per molecule, "
                f"got descriptors of shape {shape}"
            )
        if rows is not None and shape[0] != rows:
            raise ValueError(
                f"Got descriptors for {shape[0]} molecules but {rows} molecules to predict; "
                "they need one row per molecule, in the same order"
            )

    @property
    def target_names(self) -> list[str]:
        names = self.meta.get("target_names")
        return list(names) if names else [f"task_{i}" for i in range(self.num_tasks)]

    def check_uncertainty(self, uncertainty: str | None, samples: int = 10) -> None:
        """Raises a :class:`ValueError` if :obj:`uncertainty` cannot be estimated here."""
        if uncertainty is None:
            return
        if uncertainty not in UNCERTAINTY:
            raise ValueError(f"uncertainty must be one of {UNCERTAINTY}, got {uncertainty!r}")
        if uncertainty == "ensemble" and len(self) < 2:
            raise ValueError(
                f"uncertainty='ensemble' needs an ensemble, but {str(self.path)!r} holds one "
                "model (fine-tune with --ensemble-size N, or use uncertainty='dropout')"
            )
        if uncertainty == "dropout":
            if samples < 2:
                raise ValueError(f"samples must be at least 2 for dropout, got {samples}")
            if not any(_dropout_rates(m) for m in self.members):
                raise ValueError(
                    f"uncertainty='dropout' needs dropout, but {str(self.path)!r} has none"
                )

    def predict(
        self,
        graphs: Sequence[Data],
        batch_size: int = 64,
        uncertainty: str | None = None,
        samples: int = 10,
        seed: int = 0,
        progress: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions ``[len(graphs), len(output_names)]`` (probabilities or values in
        target units) and, with an :obj:`uncertainty`, their standard deviation (else
        :obj:`None`). Graphs need the pair fields of
        :class:`~pyg_molblend.transforms.AddShortestPath` (and ``pos`` in 3D modes)."""
        self.check_uncertainty(uncertainty, samples)
        if len(graphs) == 0:
            empty = np.zeros((0, len(self.output_names)), np.float32)
            return empty, (empty.copy() if uncertainty else None)
        runs = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for predictor in self.members:
                draws = samples if uncertainty == "dropout" else 1
                predictor.train(uncertainty == "dropout")
                try:
                    rows = map_batches(
                        lambda dense, p=predictor, k=draws: torch.stack(
                            [p.predict(dense) for _ in range(k)], dim=1
                        ),
                        graphs,
                        batch_size,
                        self.device,
                        progress=progress,
                        max_hops=predictor.encoder.max_hops,
                        precision=self.precision,
                    )
                finally:
                    predictor.eval()
                assert rows is not None
                runs.append(rows.float())
        stacked = torch.cat(runs, dim=1).numpy()  # [N, members * draws, T]
        mean = stacked.mean(axis=1)
        return mean, (stacked.std(axis=1) if uncertainty else None)


def _model_set(checkpoint: str | os.PathLike | ModelSet, device: str) -> ModelSet:
    return checkpoint if isinstance(checkpoint, ModelSet) else ModelSet(checkpoint, device)


def _dropout_rates(predictor: MoleBlendPredictor) -> list[float]:
    rates = [float(getattr(m, "p", 0.0)) for m in predictor.modules() if hasattr(m, "p")]
    rates += [float(getattr(m, "attn_dropout", 0.0)) for m in predictor.modules()]
    return [r for r in rates if r > 0]


def _prepare(
    smiles: Sequence[str],
    mode: str,
    max_atoms: int | None,
    skip_invalid: bool,
    where: Sequence[str],
    conformer: AddConformer | None,
    descriptors: np.ndarray | None = None,
    pool: Any = None,
    num_workers: int = 0,
) -> tuple[list[Data], list[int], list[str]]:
    """Graphs of the SMILES that can be predicted (with their row of
    :obj:`descriptors`), their positions, and every row's status; featurized by the
    :obj:`num_workers` processes of :obj:`pool` when given (the same graphs, in the same
    order), here otherwise."""
    texts = [str(text).strip() for text in smiles]
    transform = AddShortestPath() if conformer is None else Compose([AddShortestPath(), conformer])
    results = featurize_rows(texts, max_atoms, transform, pool, num_workers)
    graphs, kept, status = [], [], []
    for i, (outcome, data) in enumerate(results):
        if outcome != FEATURIZED:  # INVALID_SMILES or TOO_MANY_ATOMS, the row's status
            if not skip_invalid:
                message = rejection_message(outcome, data, texts[i], where[i], max_atoms)
                raise ValueError(f"{message}; pass skip_invalid=True to predict the others")
            status.append(outcome)
            continue
        if descriptors is not None:
            values = np.asarray(descriptors[i], dtype=np.float32)
            if not np.isfinite(values).all():
                column = int(np.flatnonzero(~np.isfinite(values))[0])
                raise ValueError(
                    f"{where[i]}: descriptor column {column} is {values[column]}; descriptors "
                    "must be finite"
                )
            data.descriptors = torch.from_numpy(values).view(1, -1)
        graphs.append(data)
        kept.append(i)
        status.append("ok" if conformer is None or bool(data.has_pos.all()) else "ok_2d_fallback")
    return graphs, kept, status


def _prediction_frame(
    models: ModelSet,
    smiles: Sequence[str],
    where: Sequence[str],
    taken: set[str],
    *,
    batch_size: int,
    uncertainty: str | None,
    samples: int,
    seed: int,
    max_atoms: int | None,
    skip_invalid: bool,
    conformer: AddConformer | None,
    descriptors: np.ndarray | None,
    pool: Any = None,
    num_workers: int = 0,
) -> tuple[pd.DataFrame, list[str]]:
    import pandas as pd

    graphs, kept, status = _prepare(
        smiles,
        models.mode,
        max_atoms,
        skip_invalid,
        where,
        conformer,
        descriptors,
        pool,
        num_workers,
    )
    mean, std = models.predict(graphs, batch_size, uncertainty, samples, seed)
    columns: dict[str, Any] = {}
    for t, name in enumerate(models.output_names):
        column = name if name not in taken else f"{name}_pred"
        values = np.full(len(smiles), np.nan)
        values[kept] = mean[:, t]
        columns[column] = values
        if std is not None:
            spread = np.full(len(smiles), np.nan)
            spread[kept] = std[:, t]
            columns[f"{column}_std"] = spread
    columns["status" if "status" not in taken else "prediction_status"] = status
    return pd.DataFrame(columns), status


def predict_smiles(
    smiles: Sequence[str],
    checkpoint: str | os.PathLike | ModelSet,
    *,
    uncertainty: str | None = None,
    samples: int = 10,
    batch_size: int = 64,
    device: str = "cpu",
    skip_invalid: bool = False,
    max_atoms: int | None = DEFAULT_MAX_ATOMS,
    seed: int = 0,
    descriptors: np.ndarray | None = None,
    num_workers: int = 0,
) -> pd.DataFrame:
    r"""Predictions for SMILES from a fine-tuned model or an ensemble folder, as a
    :class:`pandas.DataFrame` (also exported as :func:`pyg_molblend.predict`).

    One row per SMILES, in order: ``smiles``, a column per task named after the task
    (probabilities for classification, target units for regression; for multiclass a
    probability column ``<task>_class_<k>`` per class), with an
    :obj:`uncertainty` a ``<task>_std`` column beside each, and ``status`` (one of
    :data:`STATUSES`). In 3D modes conformers are generated with RDKit; a molecule
    without one is predicted from its 2D relations (``ok_2d_fallback``, counted in one
    warning).

    Args:
        smiles (Sequence[str]): the molecules.
        checkpoint (str or Path or ModelSet): a ``model.pt`` written by ``finetune`` or
            its output folder (an ensemble's members are averaged), or models loaded
            already (then :obj:`device` is theirs).
        uncertainty (str, optional): :obj:`None`, :obj:`"ensemble"` or
            :obj:`"dropout"` (see :class:`ModelSet`). (default: :obj:`None`)
        samples (int, optional): dropout samples per member. (default: :obj:`10`)
        batch_size (int, optional): molecules per batch. (default: :obj:`64`)
        device (str, optional): where to run. (default: :obj:`"cpu"`)
        skip_invalid (bool, optional): give an invalid SMILES, or a molecule above
            :obj:`max_atoms` heavy atoms, an empty prediction and its status instead of
            raising. (default: :obj:`False`)
        max_atoms (int, optional): largest molecule accepted.
            (default: :data:`~pyg_molblend.constants.DEFAULT_MAX_ATOMS`)
        seed (int, optional): seed of the dropout samples. (default: :obj:`0`)
        descriptors (np.ndarray, optional): ``[len(smiles), D]`` descriptors, for a model
            fine-tuned with :obj:`D` descriptors per molecule. (default: :obj:`None`)
        num_workers (int, optional): processes that featurize the molecules (RDKit
            parsing, shortest paths, conformers in 3D modes) instead of this one; the
            predictions are the same. (default: :obj:`0`)

    Raises:
        ValueError: naming the row of the first invalid or too large molecule (unless
            :obj:`skip_invalid`), for an uncertainty the model cannot give, for
            descriptors the model does not take (see :meth:`ModelSet.check_descriptors`),
            or for a negative :obj:`num_workers`.
        CheckpointError: for a checkpoint that is not a fine-tuned model.

    Examples:
        >>> import tempfile, pathlib
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> from pyg_molblend.training.checkpoint import predictor_checkpoint, save_checkpoint
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 1)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
        >>> save_checkpoint(path, predictor_checkpoint(predictor, target_names=["active"]))
        >>> table = predict_smiles(["CCO", "C1CC"], path, skip_invalid=True)
        >>> list(table.columns), table["status"].tolist(), bool(table["active"].isna()[1])
        (['smiles', 'active', 'status'], ['ok', 'invalid_smiles'], True)
    """
    import pandas as pd

    check_num_workers(num_workers)
    models = _model_set(checkpoint, device)
    models.check_uncertainty(uncertainty, samples)
    smiles = [str(s) for s in smiles]
    models.check_descriptors(descriptors, len(smiles))
    conformer = AddConformer(seed=CONFORMER_SEED) if models.mode != "2d" else None
    with worker_pool(num_workers) as pool:
        frame, status = _prediction_frame(
            models,
            smiles,
            [f"row {i}" for i in range(len(smiles))],
            {"smiles"},
            batch_size=batch_size,
            uncertainty=uncertainty,
            samples=samples,
            seed=seed,
            max_atoms=max_atoms,
            skip_invalid=skip_invalid,
            conformer=conformer,
            descriptors=descriptors,
            pool=pool,
            num_workers=num_workers,
        )
    _warn_fallbacks(status.count("ok_2d_fallback"))
    return pd.concat([pd.DataFrame({"smiles": smiles}), frame], axis=1)


def _warn_fallbacks(fallbacks: int) -> None:
    if fallbacks:
        warnings.warn(
            f"{fallbacks} molecules had no conformer and were predicted from their 2D "
            "relations (status ok_2d_fallback)",
            stacklevel=3,
        )


def _check_descriptor_rows(
    descriptors: np.ndarray, rows: int, path: str | os.PathLike, exact: bool = False
) -> None:
    if len(descriptors) < rows or (exact and len(descriptors) != rows):
        raise ValueError(
            f"The descriptors have {len(descriptors)} rows but {os.fspath(path)!r} has "
            f"{'at least ' if not exact else ''}{rows} molecules; they need one row per "
            "molecule, in the same order"
        )


def _count_lines(path: str) -> int | None:
    """Lines of a plain-text file, for the progress bar (an upper bound on its rows)."""
    if uncompressed_name(path) != path:  # compressed: its size says nothing of its lines
        return None
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def predict_file(
    path: str | os.PathLike,
    checkpoint: str | os.PathLike | ModelSet,
    out: str | os.PathLike,
    *,
    smiles_column: str | None = None,
    chunk_size: int = 10_000,
    uncertainty: str | None = None,
    samples: int = 10,
    batch_size: int = 64,
    device: str = "cpu",
    skip_invalid: bool = False,
    max_atoms: int | None = DEFAULT_MAX_ATOMS,
    seed: int = 0,
    progress: bool = True,
    descriptors: np.ndarray | None = None,
    num_workers: int = 0,
) -> dict[str, int]:
    """Streams a SMILES file (:func:`iter_smiles_table`) through :func:`predict_smiles`'s
    columns into the CSV :obj:`out`, :obj:`chunk_size` rows at a time, so memory stays
    bounded whatever the file's length; the output has one row per input row, in input
    order, with the input's columns first, and appears only when complete.

    Prediction columns are named after the tasks (``<task>_pred`` where the input
    already has a column of that name). Messages name the file and line.
    :obj:`descriptors` (``[rows, D]``, for a model with descriptors) has one row per data
    row of the file, in order. With :obj:`num_workers`, that many processes featurize
    the molecules (as in :func:`predict_smiles`), one pool for the whole file.

    Returns:
        The number of rows per status.
    """
    import pandas as pd

    check_num_workers(num_workers)
    models = _model_set(checkpoint, device)
    models.check_uncertainty(uncertainty, samples)
    models.check_descriptors(descriptors, None)
    conformer = AddConformer(seed=CONFORMER_SEED) if models.mode != "2d" else None
    counts = dict.fromkeys(STATUSES, 0)
    done = 0  # data rows so far
    lines = _count_lines(os.fspath(path))
    bar = tqdm(total=lines, desc="predict", unit="mol", disable=not progress)
    try:
        with atomic_path(out) as tmp, worker_pool(num_workers) as pool:
            with open(tmp, "w", newline="") as f:
                first = True
                for chunk, column in iter_smiles_table(path, smiles_column, chunk_size):
                    rows = None
                    if descriptors is not None:
                        rows = descriptors[done : done + len(chunk)]
                        _check_descriptor_rows(descriptors, done + len(chunk), path)
                    frame, status = _prediction_frame(
                        models,
                        chunk[column].tolist(),
                        [f"{os.fspath(path)}, line {line}" for line in chunk.index],
                        set(chunk.columns),
                        batch_size=batch_size,
                        uncertainty=uncertainty,
                        samples=samples,
                        seed=seed + int(chunk.index[0]),
                        max_atoms=max_atoms,
                        skip_invalid=skip_invalid,
                        conformer=conformer,
                        descriptors=rows,
                        pool=pool,
                        num_workers=num_workers,
                    )
                    done += len(chunk)
                    table = pd.concat([chunk.reset_index(drop=True), frame], axis=1)
                    table.to_csv(f, header=first, index=False, float_format="%.6g")
                    first = False
                    for value in status:
                        counts[value] += 1
                    bar.update(len(chunk))
                if descriptors is not None:
                    _check_descriptor_rows(descriptors, done, path, exact=True)
        if bar.total != done:  # the line count was an upper bound (header, blank lines)
            bar.total = done
            bar.refresh()
    finally:
        bar.close()
    _warn_fallbacks(counts["ok_2d_fallback"])
    skipped = counts["invalid_smiles"] + counts["too_many_atoms"]
    if skipped:
        warnings.warn(
            f"{skipped} molecules of {os.fspath(path)!r} were not predicted "
            f"({counts['invalid_smiles']} invalid SMILES, {counts['too_many_atoms']} above "
            f"max_atoms={max_atoms}); their status column says which",
            stacklevel=2,
        )
    return counts
