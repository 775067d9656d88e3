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
    smiles: str,
    num_nodes: int,
    seed: int,
    optimize: bool,
    max_iters: int,
    timeout: int,
    num_conformers: int = 1,
) -> list | None:
    """Coordinates (Angstrom) of the first :obj:`num_nodes` atoms of :obj:`smiles` with
    hydrogens added: ETKDG v3, retried from random coordinates, then MMFF94 if asked and
    parameterised. :obj:`None` if neither embedding succeeds.

    With :obj:`num_conformers` K > 1, a list of K such coordinate lists: conformer k is
    embedded with seed ``seed + 1000 k`` (so conformer 0 is the one K = 1 gives; RDKit's
    seeds 0 and 1 give the same conformer, hence not ``seed + k``); a later
    conformer that cannot be embedded is replaced by the earlier ones in turn, and the
    whole molecule fails only when conformer 0 does."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    found: list[list[list[float]]] = []
    for k in range(num_conformers):
        mol = Chem.AddHs(Chem.RemoveHs(Chem.MolFromSmiles(smiles)))
        for random_coords in (False, True):
            params = AllChem.ETKDGv3()
            params.randomSeed = seed + 1000 * k
            params.useRandomCoords = random_coords
            params.timeout = timeout
            if AllChem.EmbedMolecule(mol, params) == 0:
                break
        else:
            if k == 0:
                return None
            continue
        if optimize and AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, maxIters=max_iters)
        found.append(mol.GetConformer().GetPositions()[:num_nodes].tolist())
    if num_conformers == 1:
        return found[0]
    return [found[k % len(found)] for k in range(num_conformers)]


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
