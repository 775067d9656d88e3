"""The ``pyg-molblend`` command line: ``finetune``, ``predict``, ``evaluate``, ``pretrain``,
``embed``.

Its Python interface is :func:`main` and :func:`build_parser`. Each subcommand is a module
of this package with ``add_arguments(subparsers)`` (its options) and ``run(args)`` (the
command), and :mod:`pyg_molblend.cli.common` holds what they share; these are the
command line's internals, exercised through :func:`main` by ``tests/cli/``.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings
from collections.abc import Sequence

from pyg_molblend import __version__

__all__ = ["build_parser", "main"]


#: The subcommands, each a module of this package with ``add_arguments(subparsers)`` and
#: ``run(args)``.
COMMANDS = ("finetune", "predict", "evaluate", "hpopt", "pretrain", "embed")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyg-molblend``: one subparser per module of :data:`COMMANDS`.

    Examples:
        >>> args = build_parser().parse_args(["finetune", "--dataset", "esol", "--epochs", "5"])
        >>> args.command, args.dataset, args.epochs
        ('finetune', 'esol', 5)
    """
    parser = argparse.ArgumentParser(
        prog="pyg-molblend", description="MoleBLEND molecular pretraining and fine-tuning"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        importlib.import_module(f"pyg_molblend.cli.{command}").add_arguments(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``pyg-molblend`` with :obj:`argv` (default: ``sys.argv[1:]``) and returns the
    exit code: 0 on success, 2 for a user error (a :class:`ValueError` or
    :class:`OSError`, printed as one line naming the command) or a bad argument.

    Examples:
        >>> import contextlib, io
        >>> stderr = io.StringIO()
        >>> with contextlib.redirect_stderr(stderr):
        ...     code = main(["embed", "--checkpoint", "no/such.pt", "--smiles", "no/such.smi",
        ...                  "--out", "embeddings.npy"])
        >>> code, stderr.getvalue().splitlines()[0]
        (2, "pyg-molblend embed: error: Checkpoint file not found: 'no/such.pt'")
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        try:
            options = config_options(_subparser(parser, args.command), args.config)
        except ValueError as error:
            print(f"pyg-molblend {args.command}: error: {error}", file=sys.stderr)
            return 2
        # The file's values come first, so options given on the command line win.
        args = parser.parse_args([argv[0], *options, *argv[1:]])

    def format_warning(message, category, filename, lineno, line=None):
        # One line in the command's voice, not a source location inside a library.
        return f"pyg-molblend {args.command}: warning: {cli_wording(str(message))}\n"

    default_format = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        return _run(args)
    finally:
        warnings.formatwarning = default_format


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


def config_options(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """The options a ``--config`` JSON file stands for, as command-line words: each key is
    an option's name (``batch_size`` or ``batch-size``), each value its value (``true``
    for a flag; a list for an option of several values), so that every value is checked
    as if it had been typed.

    Raises:
        ValueError: naming the file and the key that is not an option of the command.

    Examples:
        >>> import json, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "best_config.json"
        >>> _ = path.write_text(json.dumps({"lr": 1e-4, "batch_size": 16}))
        >>> finetune = _subparser(build_parser(), "finetune")
        >>> config_options(finetune, str(path))
        ['--lr', '0.0001', '--batch-size', '16']
    """
    from pyg_molblend.cli.common import read_json

    config = read_json(path, "--config")
    if not isinstance(config, dict):
        raise ValueError(f"--config {path!r} must hold an object of option names and values")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    words: list[str] = []
    for key, value in config.items():
        action = actions.get(str(key).replace("-", "_"))
        if action is None or action.dest in ("config", "help"):
            raise ValueError(
                f"--config {path!r}: {key!r} is not an option of this command; options are "
                f"{sorted(k for k in actions if k not in ('config', 'help'))}"
            )
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise ValueError(f"--config {path!r}: {key!r} must be true or false")
            words += [flag] if value else []
        elif value is None:
            continue
        elif isinstance(value, list):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return words


def _run(args: argparse.Namespace) -> int:
    from pyg_molblend.training.utils import tune_malloc

    tune_malloc()  # a command owns its process: keep freed tensor memory between steps
    try:
        if getattr(args, "precision", None) is not None:  # before any data is read
            from pyg_molblend.training.utils import check_precision

            check_precision(args.precision, args.device)
        importlib.import_module(f"pyg_molblend.cli.{args.command}").run(args)
    except (ValueError, OSError) as error:  # user errors; CheckpointError is a ValueError
        print(f"pyg-molblend {args.command}: error: {cli_wording(str(error))}", file=sys.stderr)
        return 2
    return 0


#: Library messages name Python keywords (``skip_invalid=True``); on the command line the
#: same advice names the flag.
_KEYWORD = re.compile(r"\b(skip_invalid|force_reload|overwrite|resume)=True\b")
_OPTION = re.compile(r"\b(max_atoms|lr|batch_size|precision)\b(?=[ =)])")


def cli_wording(message: str) -> str:
    """:obj:`message` with Python keyword advice rewritten as command-line flags."""
    message = _KEYWORD.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
    return _OPTION.sub(lambda m: "--" + m.group(1).replace("_", "-"), message)
