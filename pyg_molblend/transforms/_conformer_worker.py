"""RDKit conformer embedding, the work of :class:`~pyg_molblend.transforms.AddConformer`.

:func:`embed_positions` runs in the caller's process when there is no time limit, and
otherwise in a child process that reads one JSON request per line on standard input and
answers one JSON line on standard output, so that the caller can kill it when the limit
passes: RDKit's own ``timeout`` only bounds part of the work (the bounds-matrix smoothing
before it, cubic in the number of atoms with hydrogens, takes 15 s for a C300 chain, and
each attempt overruns it by seconds). This file runs as a script, so it imports only the
standard library and RDKit.
"""

from __future__ import annotations

import json
import sys


def embed_positions(
    smiles: str, num_nodes: int, seed: int, optimize: bool, max_iters: int, timeout: int
) -> list[list[float]] | None:
    """Coordinates (Angstrom) of the first :obj:`num_nodes` atoms of :obj:`smiles` with
    hydrogens added: ETKDG v3, retried from random coordinates, then MMFF94 if asked and
    parameterised. :obj:`None` if neither embedding succeeds."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.RemoveHs(Chem.MolFromSmiles(smiles)))
    for random_coords in (False, True):
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        params.useRandomCoords = random_coords
        params.timeout = timeout
        if AllChem.EmbedMolecule(mol, params) == 0:
            break
    else:
        return None
    if optimize and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=max_iters)
    return mol.GetConformer().GetPositions()[:num_nodes].tolist()


def main() -> None:
    """Serves :func:`embed_positions` requests, one JSON object per line, until EOF."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but replies on the reply stream
    from rdkit.Chem import AllChem  # noqa: F401 - imported before "ready", not per request

    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            reply = {"pos": embed_positions(**json.loads(line))}
        except Exception as error:  # reported to the caller, which raises it
            reply = {"error": f"{type(error).__name__}: {error}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
