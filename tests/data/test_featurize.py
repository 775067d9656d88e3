import pytest
import torch

from pyg_molblend.data import from_mol, from_smiles


def test_ethanol_features_and_edges():
    data = from_smiles("CCO")
    assert data.x.shape == (3, 9) and data.x.dtype == torch.long
    # Atomic number index is Z - 1 (C = 5, O = 7).
    assert data.x[:, 0].tolist() == [5, 5, 7]
    assert data.edge_index.tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert data.edge_attr.tolist() == [[0, 0, 0]] * 4
    assert data.smiles == "CCO"


def test_with_hydrogen_adds_nodes():
    data = from_smiles("CCO", with_hydrogen=True)
    assert data.num_nodes == 9
    assert data.edge_index.size(1) == 2 * 8
    assert (data.x[:, 0] == 0).sum() == 6  # six hydrogens (Z - 1 = 0)


def test_equals_ogb_smiles2graph(real_smiles):
    from ogb.utils import smiles2graph

    for smiles in real_smiles:
        ours = from_smiles(smiles)
        ref = smiles2graph(smiles)
        assert torch.equal(ours.x, torch.from_numpy(ref["node_feat"])), smiles
        assert torch.equal(ours.edge_index, torch.from_numpy(ref["edge_index"])), smiles
        assert torch.equal(ours.edge_attr, torch.from_numpy(ref["edge_feat"])), smiles


@pytest.mark.parametrize("bad", ["", "   ", "C1CC", "not a smiles", "C(C"])
def test_invalid_smiles_raise_naming_the_string(bad):
    with pytest.raises(ValueError) as info:
        from_smiles(bad)
    assert repr(bad) in str(info.value)


def test_non_string_raises_type_error():
    with pytest.raises(TypeError, match="None"):
        from_smiles(None)


def test_from_mol_keeps_3d_conformer():
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    data = from_mol(mol)
    assert data.num_nodes == 3 and data.pos.shape == (3, 3)
    assert bool(data.has_pos.item())
    expected = torch.tensor(mol.GetConformer().GetPositions()[:3], dtype=torch.float)
    assert torch.allclose(data.pos, expected)
    assert from_mol(mol, keep_conformer=False).pos is None
