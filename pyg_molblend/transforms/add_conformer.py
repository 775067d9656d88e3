from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import IO, Any

import torch
from torch_geometric.data import Data
from torch_geometric.data.datapipes import functional_transform
from torch_geometric.transforms import BaseTransform

from pyg_molblend.transforms._conformer_worker import embed_positions

__all__ = ["AddConformer", "ConformerError", "SampleConformer"]

_ON_FAILURE = ("flag", "raise")


class ConformerError(ValueError):
    """Raised by :class:`AddConformer` with ``on_failure="raise"`` when no conformer
    can be embedded; the message names the SMILES.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> class NeverEmbeds(AddConformer):  # stands in for a molecule RDKit cannot embed
        ...     def embed(self, smiles, num_nodes):
        ...         return None
        >>> try:
        ...     NeverEmbeds(on_failure="raise")(from_smiles("CCO"))
        ... except ConformerError as error:
        ...     print(error)
        Conformer embedding failed or took longer than timeout=10 s for SMILES 'CCO'
    """


@functional_transform("add_conformer")
class AddConformer(BaseTransform):
    r"""Adds RDKit 3D coordinates (ETKDG v3, optionally MMFF94-optimised) in Angstrom
    (functional name: :obj:`add_conformer`).

    The molecule is rebuilt from ``data.smiles``, hydrogens are added for the embedding
    and dropped again unless the graph has them as nodes, so ``pos`` rows follow the atom
    order of :func:`~pyg_molblend.data.from_smiles`. Writes ``data.pos`` ``[N, 3]`` and
    ``data.has_pos`` ``[1]`` (bool).

    Failure is explicit, never zero coordinates: with ``on_failure="flag"`` a molecule
    that cannot be embedded, or whose embedding (both attempts and the optimisation
    together) takes longer than :obj:`timeout` seconds, gets ``has_pos = False`` and NaN
    coordinates (so a batch still collates and nothing can mistake them for a geometry),
    a warning naming the SMILES, and is counted in :attr:`num_failures`; with
    ``on_failure="raise"`` a :class:`ConformerError` is raised. A molecule that already
    has a real geometry (``has_pos`` True, from an SDF, say) is kept as it is unless
    :obj:`overwrite`.

    The timeout is enforced, not advisory: with :obj:`timeout` > 0 the embedding runs in
    a helper process (one per process using the transform, started on first use), which
    is killed and restarted when the time is up. RDKit's own ``timeout`` leaves its
    bounds-matrix smoothing (cubic in the atoms with hydrogens) and parts of each attempt
    unbounded: a C300 chain took 168 s with ``timeout=10``. Which molecules time out
    depends on the machine's speed; :obj:`timeout` = 0 runs RDKit in this process without
    any limit.

    Args:
        seed (int, optional): RDKit random seed; same seed, same coordinates.
            (default: :obj:`0`)
        optimize (bool, optional): MMFF94 optimisation after embedding; molecules
            without MMFF parameters keep their ETKDG coordinates. (default: :obj:`False`)
        max_iters (int, optional): MMFF iterations. (default: :obj:`200`)
        on_failure (str, optional): :obj:`"flag"` or :obj:`"raise"`. (default: :obj:`"flag"`)
        timeout (int, optional): seconds one molecule may take, both embedding attempts
            and the optimisation together (0 = no limit). (default: :obj:`10`)
        overwrite (bool, optional): replace existing real coordinates.
            (default: :obj:`False`)
        num_conformers (int, optional): conformers per molecule :math:`K`. With
            :math:`K > 1`, ``data.pos_conformers`` ``[N, K, 3]`` holds them all (conformer
            :math:`k` from seed ``seed + 1000 k``; one that cannot be embedded is replaced by
            the earlier ones in turn) and ``data.pos`` is the first, the same as with
            :math:`K = 1`; :class:`SampleConformer` picks one per access for training,
            as MoleBLEND and Uni-Mol fine-tune on one of 11 conformers per epoch.
            :obj:`timeout` applies to each conformer. (default: :obj:`1`)

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> data = AddConformer(seed=0)(from_smiles("CCO"))
        >>> data.pos.shape, bool(data.has_pos)
        (torch.Size([3, 3]), True)
    """

    def __init__(
        self,
        seed: int = 0,
        optimize: bool = False,
        max_iters: int = 200,
        on_failure: str = "flag",
        timeout: int = 10,
        overwrite: bool = False,
        num_conformers: int = 1,
    ) -> None:
        if isinstance(num_conformers, bool) or not isinstance(num_conformers, int):
            raise ValueError(f"num_conformers must be a positive integer, got {num_conformers!r}")
        if num_conformers < 1:
            raise ValueError(f"num_conformers must be a positive integer, got {num_conformers!r}")
        if on_failure not in _ON_FAILURE:
            raise ValueError(f"on_failure must be one of {_ON_FAILURE}, got {on_failure!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
            raise ValueError(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        self.seed = seed
        self.optimize = optimize
        self.max_iters = max_iters
        self.on_failure = on_failure
        self.timeout = timeout
        self.overwrite = overwrite
        self.num_conformers = num_conformers
        self.num_failures = 0

    def forward(self, data: Data) -> Data:
        has_pos = getattr(data, "has_pos", None)
        if not self.overwrite and has_pos is not None and bool(has_pos.all()):
            return data
        smiles = getattr(data, "smiles", None)
        if not isinstance(smiles, str):
            raise ValueError("AddConformer needs 'data.smiles' (use pyg_molblend.data.from_smiles)")
        pos = self.embed(smiles, data.num_nodes)
        if pos is None:
            self.num_failures += 1
            message = (
                f"Conformer embedding failed or took longer than timeout={self.timeout} s "
                f"for SMILES {smiles!r}"
            )
            if self.on_failure == "raise":
                raise ConformerError(message)
            warnings.warn(f"{message}; has_pos=False ({self.num_failures} so far)", stacklevel=2)
            pos = torch.full((self.num_conformers, data.num_nodes, 3), float("nan"))
            data.has_pos = torch.tensor([False])
        else:
            data.has_pos = torch.tensor([True])
        pos = pos.view(self.num_conformers, data.num_nodes, 3)
        data.pos = pos[0]
        if self.num_conformers > 1:
            data.pos_conformers = pos.transpose(0, 1).contiguous()
        return data

    def embed(self, smiles: str, num_nodes: int) -> torch.Tensor | None:
        """Coordinates ``[num_nodes, 3]`` for :obj:`smiles` (``[K, num_nodes, 3]`` with
        :obj:`num_conformers` K > 1), or :obj:`None` on failure or timeout."""
        from rdkit import Chem

        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"Invalid SMILES string (RDKit cannot parse it): {smiles!r}")
        mol = Chem.RemoveHs(mol)
        heavy = mol.GetNumAtoms()
        mol = Chem.AddHs(mol)
        if num_nodes not in (heavy, mol.GetNumAtoms()):
            raise ValueError(
                f"Graph has {num_nodes} atoms but SMILES {smiles!r} has {heavy} heavy atoms "
                f"({mol.GetNumAtoms()} with hydrogens)"
            )
        request = {
            "smiles": smiles,
            "num_nodes": num_nodes,
            "seed": self.seed,
            "optimize": self.optimize,
            "max_iters": self.max_iters,
            "timeout": self.timeout,
            "num_conformers": self.num_conformers,
        }
        if self.timeout == 0:
            positions = embed_positions(**request)
        else:
            positions = _worker().run(request, self.timeout * self.num_conformers)
        if positions is None:
            return None
        pos = torch.tensor(positions, dtype=torch.float)
        return pos if bool(torch.isfinite(pos).all()) else None

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(seed={self.seed}, optimize={self.optimize}, "
            f"max_iters={self.max_iters}, on_failure={self.on_failure!r}, "
            f"timeout={self.timeout}, overwrite={self.overwrite}"
            + (f", num_conformers={self.num_conformers})" if self.num_conformers > 1 else ")")
        )


@functional_transform("sample_conformer")
class SampleConformer(BaseTransform):
    r"""Sets ``data.pos`` to one of the molecule's conformers ``data.pos_conformers``
    (``[N, K, 3]``, from :class:`AddConformer` with ``num_conformers=K``), drawn uniformly
    with torch's random generator at every access (functional name:
    :obj:`sample_conformer`): as a training dataset's ``transform``, each epoch sees each
    molecule in a new conformer, while evaluation without it keeps the first
    (``data.pos``). A molecule without ``pos_conformers`` is returned unchanged.

    Examples:
        >>> from pyg_molblend.data import from_smiles
        >>> data = AddConformer(seed=0, num_conformers=3)(from_smiles("CCCO"))
        >>> data.pos_conformers.shape
        torch.Size([4, 3, 3])
        >>> _ = torch.manual_seed(1)
        >>> picked = SampleConformer()(data).pos
        >>> any(torch.equal(picked, data.pos_conformers[:, k]) for k in range(3))
        True
    """

    def forward(self, data: Data) -> Data:
        conformers = getattr(data, "pos_conformers", None)
        if conformers is None:
            return data
        k = int(torch.randint(conformers.size(1), ()))
        data.pos = conformers[:, k]
        return data


class _Worker:
    """A child process running :func:`embed_positions`, killable when a request takes
    too long. Replies are read by a thread into a queue, so that waiting has a timeout on
    every platform."""

    def __init__(self) -> None:
        script = Path(__file__).with_name("_conformer_worker.py")
        self.pid = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()
        if self.replies.get() != "ready\n":
            raise RuntimeError("The conformer helper process did not start")

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.replies.put(line)
        self.replies.put(None)

    @property
    def alive(self) -> bool:
        return self.pid == os.getpid() and self.process.poll() is None

    def run(self, request: dict[str, Any], timeout: float) -> list[list[float]] | None:
        """The reply to :obj:`request`, or :obj:`None` if it takes more than
        :obj:`timeout` seconds (the process is then killed)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        try:
            line = self.replies.get(timeout=timeout)
        except queue.Empty:
            self.close()
            return None
        if line is None:
            raise RuntimeError(f"The conformer helper process died on {request['smiles']!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise ValueError(f"Conformer embedding of {request['smiles']!r}: {reply['error']}")
        return reply["pos"]

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


_WORKER: _Worker | None = None
_WORKER_LOCK = threading.Lock()


def _worker() -> _Worker:
    """This process's helper, started on first use and after a kill (a forked process
    starts its own instead of sharing its parent's)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or not _WORKER.alive:
            _WORKER = _Worker()
        return _WORKER
