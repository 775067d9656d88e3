"""Checkpoints: atomic writes, validation on load, the shipped pretrained weights."""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pyg_molblend import __version__
from pyg_molblend.constants import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
from pyg_molblend.models import MoleBlend, MoleBlendPredictor
from pyg_molblend.training.io import atomic_path

__all__ = [
    "FEATURE_CONTRACT",
    "PRETRAINED_NAME",
    "PRETRAINED_PATH",
    "CheckpointError",
    "data_fingerprint",
    "data_identity",
    "load_checkpoint",
    "load_encoder",
    "load_predictor",
    "predictor_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]

#: ``--checkpoint pretrained`` loads the weights shipped in the package, from this file.
PRETRAINED_NAME = "pretrained"
PRETRAINED_PATH = Path(__file__).resolve().parent.parent / "resources" / "pretrained_small.pt"

#: What a checkpoint's model expects from the data; checked when loading.
FEATURE_CONTRACT = {
    "featurizer": "ogb",
    "atom_feature_dims": list(ATOM_FEATURE_DIMS),
    "bond_feature_dims": list(BOND_FEATURE_DIMS),
    "hydrogens": False,
}

_FORMAT = "pyg_molblend"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit (message names the file).

    Examples:
        >>> try:
        ...     load_checkpoint("no/such/file.pt")
        ... except CheckpointError as error:
        ...     isinstance(error, ValueError)
        True
    """


def data_fingerprint(dataset: Sequence) -> str:
    """A hash of the molecules a model is trained on (their SMILES, atom counts and
    labels, in order), stored in checkpoints so that a resumed run or
    a stored split can tell whether it sees the same data.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> a = data_fingerprint([from_smiles("CCO"), from_smiles("CCN")])
        >>> a == data_fingerprint([from_smiles("CCN"), from_smiles("CCO")])  # order matters
        False
    """
    digest = hashlib.sha256(f"{len(dataset)}\n".encode())
    if hasattr(dataset, "content_digest"):  # an on-disk store: its digest, no record read
        digest.update(dataset.content_digest().encode())
        return digest.hexdigest()
    data = getattr(dataset, "_data", None)
    if getattr(dataset, "_indices", True) is None and data is not None:  # whole in-memory set
        graphs = [data]
        sizes = getattr(dataset, "slices", {}).get("x")
        if sizes is not None:
            digest.update(sizes.numpy().tobytes())
    else:
        graphs = [dataset[i] for i in range(len(dataset))]
        digest.update(repr([int(g.num_nodes) for g in graphs]).encode())
    for graph in graphs:
        smiles = getattr(graph, "smiles", None)
        digest.update(("\n".join(smiles) if isinstance(smiles, list) else str(smiles)).encode())
        labels = getattr(graph, "y", None)
        if isinstance(labels, Tensor):
            digest.update(labels.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def data_identity(dataset: Sequence, fingerprint: str | None = None) -> str:
    """Which molecules a model is trained on, in order, without their coordinates where
    two builds of the same molecules can differ in them: for an on-disk store
    (:meth:`~pyg_molblend.datasets.OnDiskMoleculeDataset.identity_digest`), whose RDKit
    conformer timeout is wall-clock, so a store rebuilt on another machine may give a few
    molecules other coordinates or none; :func:`data_fingerprint` for any other dataset
    (which hashes no coordinates). A pretraining run whose :func:`data_fingerprint`
    differs from its checkpoint's but whose identity does not resumes with a warning.

    Args:
        fingerprint (str, optional): :func:`data_fingerprint` of :obj:`dataset`, when
            already computed (it is not computed twice).

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> graphs = [from_smiles("CCO"), from_smiles("CCN")]
        >>> data_identity(graphs) == data_fingerprint(graphs)  # an in-memory list
        True
    """
    if hasattr(dataset, "identity_digest"):
        digest = hashlib.sha256(f"{len(dataset)}\n".encode())
        digest.update(dataset.identity_digest().encode())
        return digest.hexdigest()
    return data_fingerprint(dataset) if fingerprint is None else fingerprint


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """A file path, or the shipped checkpoint for the name ``"pretrained"``.

    Examples:
        >>> resolve_checkpoint("pretrained").name  # the shipped weights
        'pretrained_small.pt'
    """
    if str(path_or_name) == PRETRAINED_NAME:
        path = PRETRAINED_PATH
        if not path.exists():
            raise CheckpointError(
                f"No pretrained checkpoint is shipped in this installation ({path} missing)"
            )
        return path
    path = Path(path_or_name)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {str(path)!r}")
    return path


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write atomically (a temporary file renamed over the target), so a run killed while
    saving, or a full disk, leaves the previous checkpoint intact.

    The payload must hold only tensors, dicts, lists, tuples, numbers, strings and
    :obj:`None`: :func:`load_checkpoint` reads with ``weights_only=True`` and refuses
    anything else.

    Raises:
        CheckpointError: if a weight tensor is not finite (a diverged run must not
            replace a good checkpoint), or the file cannot be written (naming it).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
        >>> save_checkpoint(path, {"kind": "note", "values": torch.ones(2)})
        >>> load_checkpoint(path, kind="note")["values"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    _check_finite(payload, path)
    payload = {
        "format": _FORMAT,
        "version": __version__,
        "feature_contract": FEATURE_CONTRACT,
        **payload,
    }
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as error:  # a full disk surfaces as a RuntimeError
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
        raise CheckpointError(
            f"Cannot write checkpoint {str(path)!r} (disk full or not writable?): {reason}; "
            "the previous file, if any, is unchanged"
        ) from error


#: Payload entries holding model weights, checked to be finite on save and on load.
_WEIGHT_KEYS = ("encoder_state", "head_state")


def _check_finite(payload: Mapping[str, Any], path: Path) -> None:
    for key in _WEIGHT_KEYS:
        state = payload.get(key)
        if not isinstance(state, Mapping):
            continue
        for name, value in state.items():
            if (
                isinstance(value, Tensor)
                and value.is_floating_point()
                and not bool(torch.isfinite(value).all())
            ):
                raise CheckpointError(
                    f"Checkpoint {str(path)!r}: weight {name!r} holds NaN or infinite values "
                    "(a diverged run); refusing it"
                )


def load_checkpoint(path_or_name: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Args:
        path_or_name: a path, or ``"pretrained"``.
        kind (str, optional): required ``payload["kind"]`` (``"pretrain"`` or
            ``"predictor"``).

    Raises:
        CheckpointError: unreadable file, one holding Python objects beyond tensors,
            containers, numbers and strings (never unpickled: that could run code), not
            one of ours, another feature contract, the wrong kind, or non-finite
            weights; the message names the file.

    Examples:
        >>> payload = load_checkpoint("pretrained", kind="pretrain")  # refuses other kinds
        >>> payload["kind"], sorted(payload["encoder_config"])[:3]
        ('pretrain', ['activation_dropout', 'attn_dropout', 'blend'])
    """
    path = resolve_checkpoint(path_or_name)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # garbage bytes, not a refused Python object
            raise CheckpointError(
                f"{str(path)!r} is not a readable checkpoint (corrupt, truncated or another format)"
            ) from error
        raise CheckpointError(
            f"{str(path)!r} is not a readable pyg_molblend checkpoint: it holds Python objects "
            "other than tensors, numbers, strings, lists and dicts, and loading those could "
            "run code, so it was refused"
        ) from error
    except Exception as error:  # torch raises several unrelated types for bad files
        raise CheckpointError(
            f"{str(path)!r} is not a readable checkpoint (corrupt, truncated or another "
            f"format: {type(error).__name__})"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a pyg_molblend checkpoint")
    if payload.get("feature_contract") != FEATURE_CONTRACT:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} was trained on features {payload.get('feature_contract')}, "
            f"this version uses {FEATURE_CONTRACT}"
        )
    if kind is not None and payload.get("kind") != kind:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds a {payload.get('kind')!r} model, expected {kind!r}"
        )
    _check_finite(payload, path)
    return payload


def load_encoder(path_or_name: str | os.PathLike, **overrides: Any) -> MoleBlend:
    """The :class:`MoleBlend` encoder of a pretraining or fine-tuning checkpoint.

    Keyword arguments override the stored configuration for settings that do not change
    the parameters (dropout rates, say).

    Examples:
        >>> encoder = load_encoder("pretrained")  # the weights shipped in the package
        >>> encoder.config["num_layers"], encoder.config["channels"]
        (4, 128)
    """
    payload = load_checkpoint(path_or_name)
    config = {**payload["encoder_config"], **overrides}
    state = payload["encoder_state"]
    model = MoleBlend.from_config(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"Checkpoint {str(path_or_name)!r} does not match its stored configuration: {error}"
        ) from error
    return model


def predictor_checkpoint(predictor: MoleBlendPredictor, **meta: Any) -> dict[str, Any]:
    """The payload of a fine-tuned model (``kind="predictor"``, what ``finetune`` writes
    as ``model.pt``): the encoder as :func:`load_encoder` reads it, the head, and under
    ``"predictor"`` the task (``num_tasks``, ``task_type``, ``num_classes``, ``mode``)
    plus :obj:`meta`
    (what the CLI stores: target names, data set, split rows, seed, data fingerprint).

    Examples:
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 2, "regression")
        >>> payload = predictor_checkpoint(predictor, target_names=["logS", "logP"])
        >>> payload["kind"], payload["predictor"]["num_tasks"], payload["predictor"]["target_names"]
        ('predictor', 2, ['logS', 'logP'])
    """
    state = predictor.state_dict()
    return {
        "kind": "predictor",
        "encoder_config": predictor.encoder.config,
        "encoder_state": {
            k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")
        },
        "head_state": {k: v for k, v in state.items() if not k.startswith("encoder.")},
        "predictor": {
            "num_tasks": predictor.num_tasks,
            "task_type": predictor.task_type,
            "num_classes": predictor.num_classes,
            "mode": predictor.mode,
            "num_descriptors": predictor.num_descriptors,
            "dropout": predictor.dropout,
            **meta,
        },
    }


def load_predictor(path: str | os.PathLike) -> tuple[MoleBlendPredictor, dict[str, Any]]:
    """A fine-tuned model written by :func:`predictor_checkpoint` and its ``"predictor"``
    metadata.

    Examples:
        >>> import tempfile, pathlib
        >>> from pyg_molblend.models import MoleBlend, MoleBlendPredictor
        >>> predictor = MoleBlendPredictor(MoleBlend.from_preset("small"), 2, "regression")
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.pt"
        >>> save_checkpoint(path, predictor_checkpoint(predictor, dataset="mine"))
        >>> loaded, meta = load_predictor(path)
        >>> meta["num_tasks"], meta["dataset"], loaded.task_type
        (2, 'mine', 'regression')
    """
    payload = load_checkpoint(path)
    if payload.get("kind") == "pretrain":
        raise CheckpointError(
            f"{str(path)!r} is a pretraining checkpoint: an encoder without a task head. "
            "Fine-tune it first (pyg-molblend finetune --checkpoint ...) and use the model.pt "
            "that writes"
        )
    if payload.get("kind") != "predictor":
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds a {payload.get('kind')!r} model, expected "
            "'predictor' (a model.pt written by pyg-molblend finetune)"
        )
    meta = payload["predictor"]
    encoder = load_encoder(path)
    try:
        predictor = MoleBlendPredictor(
            encoder,
            meta["num_tasks"],
            meta["task_type"],
            meta["mode"],
            dropout=meta.get("dropout", 0.0),
            num_descriptors=meta.get("num_descriptors", 0),
            num_classes=meta.get("num_classes"),
        )
    except ValueError as error:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} describes no valid model: {error}"
        ) from error
    try:
        predictor.load_state_dict(payload["head_state"], strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"Checkpoint {str(path)!r} head does not fit: {error}") from error
    return predictor, meta
