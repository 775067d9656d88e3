"""Checkpoints: atomic writes, validation on load, the shipped pretrained weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from pyg_molblend import __version__
from pyg_molblend.constants import ATOM_FEATURE_DIMS, BOND_FEATURE_DIMS
from pyg_molblend.models import MoleBlend

__all__ = [
    "FEATURE_CONTRACT",
    "PRETRAINED_NAME",
    "PRETRAINED_PATH",
    "CheckpointError",
    "load_checkpoint",
    "load_encoder",
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
    """A checkpoint that cannot be read or does not fit (message names the file)."""


def resolve_checkpoint(path_or_name: str | os.PathLike) -> Path:
    """A file path, or the shipped checkpoint for the name ``"pretrained"``."""
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
    saving leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": _FORMAT,
        "version": __version__,
        "feature_contract": FEATURE_CONTRACT,
        **payload,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path_or_name: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_checkpoint`.

    Args:
        path_or_name: a path, or ``"pretrained"``.
        kind (str, optional): required ``payload["kind"]`` (``"pretrain"`` or
            ``"predictor"``).

    Raises:
        CheckpointError: unreadable file, not one of ours, another feature contract, or
            the wrong kind; the message names the file.
    """
    path = resolve_checkpoint(path_or_name)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several unrelated types for bad files
        raise CheckpointError(f"Cannot read checkpoint {str(path)!r}: {error}") from error
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
    return payload


def load_encoder(path_or_name: str | os.PathLike, **overrides: Any) -> MoleBlend:
    """The :class:`MoleBlend` encoder of a pretraining or fine-tuning checkpoint.

    Keyword arguments override the stored configuration for settings that do not change
    the parameters (dropout rates, say).
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
