"""Output files that are never half-written: atomic writes, strict JSON, early checks.

Every file the training loops and the command line write (``metrics.json``,
``predictions.csv``, embeddings, checkpoints, ``log.jsonl`` lines) goes through these
helpers, so a run killed at any moment leaves either the previous file or the new one,
and JSON readers that reject bare ``NaN`` (the standard ones) can read every file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "append_jsonl",
    "atomic_path",
    "atomic_write",
    "check_writable",
    "json_safe",
    "read_jsonl",
    "write_json",
]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    r"""A temporary path beside :obj:`path`, renamed over it when the block succeeds
    (and removed when it fails), so readers never see a partial file.

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "table.csv"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("a,b\n1,2\n")
        ...     target.exists()  # not there until the block ends
        False
        >>> target.read_text()
        'a,b\n1,2\n'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_write(path: str | os.PathLike, newline: str | None = None) -> Iterator[IO[str]]:
    """Open a text file for writing that appears at :obj:`path` only when complete.

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> try:
        ...     with atomic_write(path) as f:
        ...         _ = f.write("half")
        ...         raise OSError("disk full")
        ... except OSError:
        ...     pass
        >>> path.exists()  # a failed write leaves nothing behind
        False
    """
    with atomic_path(path) as tmp, open(tmp, "w", newline=newline) as f:
        yield f


def json_safe(value: Any) -> Any:
    """:obj:`value` with every non-finite float (NaN, inf) replaced by :obj:`None`, so
    that it serialises as strict JSON (``null``).

    Examples:
        >>> json_safe({"loss": float("nan"), "steps": [1, float("inf")]})
        {'loss': None, 'steps': [1, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # NumPy/torch scalars
        return json_safe(value.item())
    return value


def write_json(path: str | os.PathLike, value: Any) -> None:
    """Write strict JSON (non-finite numbers as ``null``) atomically.

    Examples:
        >>> import json, tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
        >>> write_json(path, {"rmse": float("nan")})
        >>> json.loads(path.read_text())
        {'rmse': None}
    """
    text = json.dumps(json_safe(value), indent=2, allow_nan=False)
    with atomic_write(path) as f:
        f.write(text + "\n")


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    r"""Append one strict-JSON line with a single ``write`` call (a killed run leaves at
    most one partial last line, which :func:`read_jsonl` ignores).

    Examples:
        >>> import tempfile, pathlib
        >>> log = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
        >>> append_jsonl(log, {"step": 1, "loss": 0.5})
        >>> append_jsonl(log, {"step": 2, "loss": float("nan")})  # strict JSON: NaN is null
        >>> log.read_text()
        '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": null}\n'
    """
    line = (json.dumps(json_safe(record), allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete records of a file written by :func:`append_jsonl` (a partial last
    line, from a run killed while writing, is left out).

    Examples:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
        >>> append_jsonl(path, {"step": 1}); append_jsonl(path, {"step": 2})
        >>> read_jsonl(path)
        [{'step': 1}, {'step': 2}]
    """
    records = []
    with open(path) as f:
        for line in f:
            if not line.endswith("\n"):
                break
            records.append(json.loads(line))
    return records


def check_writable(directory: str | os.PathLike, flag: str = "--out") -> Path:
    """Create :obj:`directory` if needed and prove that a file can be written in it,
    before any work is done.

    Raises:
        ValueError: naming the directory, the option it came from and the reason.

    Examples:
        >>> import tempfile, pathlib
        >>> blocker = pathlib.Path(tempfile.mkdtemp()) / "file"
        >>> _ = blocker.write_text("")
        >>> try:
        ...     check_writable(blocker / "out")
        ... except ValueError as error:
        ...     print(str(error).split(":")[0])
        Cannot write to --out ...
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(fd)
        os.unlink(name)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"Cannot write to {flag} {str(directory)!r}: {reason}") from None
    return directory
