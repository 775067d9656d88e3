"""The ``pyg-molblend`` command line: ``finetune``, ``pretrain``, ``evaluate``, ``embed``."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence

import torch

from pyg_molblend import __version__
from pyg_molblend.constants import DEFAULT_MAX_ATOMS
from pyg_molblend.models import PRESETS

__all__ = ["build_parser", "main"]


def _ratio(text: str) -> tuple[float, float, float]:
    parts = [p for p in text.replace(":", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"blend ratio must be three numbers, got {text!r}"
        ) from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"blend ratio must be three numbers, got {text!r}")
    return values  # type: ignore[return-value]


def device_type(text: str) -> str:
    """``--device``: ``auto`` is CUDA when a device is visible, else the CPU; anything
    else must be a device name torch knows (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"device {text!r}: no CUDA device is visible")
    return text


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device_type,
        default="auto",
        help="cpu, cuda, cuda:N, or auto: CUDA when present (default: auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    from pyg_molblend.cli.labelled import add_data_arguments, default_checkpoint

    parser = argparse.ArgumentParser(
        prog="pyg-molblend", description="MoleBLEND molecular pretraining and fine-tuning"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    ft = sub.add_parser("finetune", help="fine-tune and evaluate on a labelled dataset")
    add_data_arguments(ft)
    ft.add_argument(
        "--mode",
        default="2d",
        choices=("2d", "3d", "2d+3d"),
        help="relations the model sees; 3D modes generate RDKit conformers",
    )
    ft.add_argument(
        "--checkpoint",
        default=default_checkpoint(),
        help="pretrained weights: a checkpoint path or 'pretrained' "
        "(default: the shipped weights if present, else from scratch)",
    )
    ft.add_argument("--from-scratch", action="store_true", help="ignore --checkpoint")
    ft.add_argument(
        "--preset",
        default="small",
        choices=sorted(PRESETS),
        help="model size when training from scratch (default: small)",
    )
    ft.add_argument("--epochs", type=int, default=30)
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--lr", type=float, default=3e-4)
    ft.add_argument("--weight-decay", type=float, default=0.0)
    ft.add_argument("--seed", type=int, default=0)
    add_device_argument(ft)
    ft.add_argument("--out", default="runs/finetune", help="output directory")

    ev = sub.add_parser("evaluate", help="evaluate a fine-tuned model.pt on a dataset")
    add_data_arguments(ev, evaluate=True)
    ev.add_argument("--checkpoint", required=True, help="model.pt written by finetune")
    ev.add_argument("--batch-size", type=int, default=64)
    add_device_argument(ev)
    ev.add_argument("--out", default="runs/evaluate", help="output directory")

    pt = sub.add_parser("pretrain", help="MoleBLEND pretraining on unlabelled SMILES")
    pt.add_argument(
        "--smiles",
        nargs="+",
        default=[],
        help="SMILES files: CSV with a 'smiles' column, or .smi (optionally .gz); "
        "molecules get RDKit conformers",
    )
    pt.add_argument(
        "--sdf",
        nargs="+",
        default=[],
        help="SDF files (optionally .gz) whose records carry 3D coordinates (DFT geometries "
        "such as PCQM4Mv2's); records without 3D get RDKit conformers",
    )
    pt.add_argument(
        "--qm9",
        metavar="ROOT",
        help="a QM9 root whose raw/ holds qm9pack tables (qm9_*.csv[.gz]) or gdb9.sdf: "
        "molecules with their DFT geometries",
    )
    pt.add_argument(
        "--qm9-max-molecules",
        type=int,
        default=None,
        help="use only the first QM9 molecules (in QM9 index order)",
    )
    pt.add_argument("--root", default=None, help="cache of processed molecules (default: OUT/data)")
    pt.add_argument("--preset", default="small", choices=sorted(PRESETS))
    pt.add_argument("--steps", type=int, default=1000)
    pt.add_argument("--batch-size", type=int, default=64)
    pt.add_argument("--lr", type=float, default=2e-4)
    pt.add_argument("--warmup-steps", type=int, default=100)
    pt.add_argument("--save-every", type=int, default=100)
    pt.add_argument(
        "--blend-ratio",
        type=_ratio,
        default=(2.0, 2.0, 6.0),
        help="SPD:edge:3D ratio, e.g. 2:2:6 (default)",
    )
    pt.add_argument(
        "--mode",
        default="blend",
        choices=("blend", "2d", "3d", "2d+3d"),
        help="pretraining relations (default: blend; others for ablations)",
    )
    pt.add_argument(
        "--no-conformers", action="store_true", help="skip RDKit conformers (2D-only pretraining)"
    )
    pt.add_argument(
        "--max-molecules",
        type=int,
        default=None,
        help="use only the first molecules of the --smiles files, and of the --sdf files",
    )
    pt.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip invalid and too-large molecules (counted) instead of failing",
    )
    pt.add_argument(
        "--max-atoms",
        type=int,
        default=DEFAULT_MAX_ATOMS,
        help=f"largest molecule accepted, in heavy atoms (default: {DEFAULT_MAX_ATOMS})",
    )
    pt.add_argument(
        "--force-reload", action="store_true", help="rebuild the processed corpus cache"
    )
    pt.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes for conformer generation and for loading batches (default: 0)",
    )
    pt.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/checkpoint.pt (same settings and data; starts fresh if absent)",
    )
    pt.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an OUT that holds a checkpoint, replacing it and its log",
    )
    pt.add_argument("--seed", type=int, default=0)
    add_device_argument(pt)
    pt.add_argument("--out", default="runs/pretrain")

    em = sub.add_parser("embed", help="graph embeddings of SMILES as a .npy file")
    em.add_argument(
        "--checkpoint", required=True, help="pretrain or finetune checkpoint, or 'pretrained'"
    )
    em.add_argument("--smiles", required=True, help="CSV with a 'smiles' column or .smi")
    em.add_argument("--out", required=True, help="output .npy file ('.npy' is added if missing)")
    em.add_argument(
        "--mode",
        default=None,
        choices=("2d", "3d", "2d+3d"),
        help="default: the fine-tuned model's mode, else 2d",
    )
    em.add_argument("--batch-size", type=int, default=64)
    em.add_argument(
        "--skip-invalid",
        action="store_true",
        help="write a NaN row for an invalid or too-large SMILES instead of failing",
    )
    em.add_argument(
        "--max-atoms",
        type=int,
        default=DEFAULT_MAX_ATOMS,
        help=f"largest molecule accepted, in heavy atoms (default: {DEFAULT_MAX_ATOMS})",
    )
    add_device_argument(em)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def format_warning(message, category, filename, lineno, line=None):
        # One line in the command's voice, not a source location inside a library.
        return f"pyg-molblend {args.command}: warning: {cli_wording(str(message))}\n"

    default_format = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        return _run(args)
    finally:
        warnings.formatwarning = default_format


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "finetune":
            from pyg_molblend.cli.labelled import run_finetune

            if args.from_scratch:
                args.checkpoint = None
            run_finetune(args)
        elif args.command == "evaluate":
            from pyg_molblend.cli.labelled import run_evaluate

            run_evaluate(args)
        elif args.command == "pretrain":
            from pyg_molblend.cli.pretrain import run_pretrain

            run_pretrain(args)
        else:
            from pyg_molblend.cli.embed import run_embed

            run_embed(args)
    except (ValueError, OSError) as error:  # user errors; CheckpointError is a ValueError
        print(f"pyg-molblend {args.command}: error: {cli_wording(str(error))}", file=sys.stderr)
        return 2
    return 0


#: Library messages name Python keywords (``skip_invalid=True``); on the command line the
#: same advice names the flag.
_KEYWORD = re.compile(r"\b(skip_invalid|force_reload|overwrite|resume)=True\b")
_OPTION = re.compile(r"\b(max_atoms|lr|batch_size)\b(?=[ =)])")


def cli_wording(message: str) -> str:
    """:obj:`message` with Python keyword advice rewritten as command-line flags."""
    message = _KEYWORD.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
    return _OPTION.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
