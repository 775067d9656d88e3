"""``pyg-molblend embed`` over a SMILES file: the column read, chunks, skips counted once."""

import numpy as np
import pytest

from pyg_molblend.cli import main
from pyg_molblend.cli.embed import embed_smiles


def test_embed_reads_the_named_column_of_a_tsv(tmp_path):
    path = tmp_path / "library.tsv"
    path.write_text("name\tsmiles\tparent\nx\tC1CC\tCCO\ny\tC1CC\tc1ccccc1\n")
    out = tmp_path / "e.npy"
    args = ["embed", "--checkpoint", "pretrained", "--smiles", str(path), "--out", str(out)]
    assert main([*args, "--smiles-column", "parent"]) == 0
    expected = embed_smiles("pretrained", ["CCO", "c1ccccc1"])
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)
    assert main(args) == 2  # the default column holds the invalid "C1CC"
    assert main([*args, "--smiles-column", "SMILES"]) == 2  # a named column matches exactly


def test_embed_streams_a_file_in_chunks_and_counts_skips_once(tmp_path, monkeypatch, capsys):
    import pyg_molblend.cli.embed as embed

    smiles = ["CCO", "C1CC", "c1ccccc1O", "C" * 40, "CC(=O)Nc1ccc(O)cc1", "CN"]
    path = tmp_path / "library.smi"
    path.write_text("\n".join(smiles) + "\n")
    sizes = []
    real = embed.featurize_smiles

    def featurize(chunk, *args, **kwargs):
        sizes.append(len(chunk))
        return real(chunk, *args, **kwargs)

    monkeypatch.setattr(embed, "featurize_smiles", featurize)
    out = tmp_path / "e.npy"
    args = ["embed", "--checkpoint", "pretrained", "--smiles", str(path), "--out", str(out)]
    with pytest.warns(UserWarning) as caught:
        assert main([*args, "--skip-invalid", "--max-atoms", "30", "--chunk-size", "2"]) == 0
    assert sizes == [2, 2, 2]  # never more than a chunk of molecules at once
    # one warning per reason for the whole file, not one per chunk
    messages = sorted(str(w.message) for w in caught if "Skipped" in str(w.message))
    assert len(messages) == 2
    assert messages[0].startswith("Skipped 1 molecules") and "line 4" in messages[0]
    assert "line 2" in messages[1] and "invalid SMILES" in messages[1]
    captured = capsys.readouterr()
    assert "wrote 6 x 128 embeddings" in captured.out and "(2 skipped: NaN rows)" in captured.out
    bars = [x for x in captured.err.replace("\r", "\n").splitlines() if x.startswith("embed:")]
    assert " 6/6 " in bars[-1]
    rows = np.load(out)
    assert np.isnan(rows[[1, 3]]).all() and np.isfinite(rows[[0, 2, 4, 5]]).all()
    whole = embed_smiles("pretrained", [smiles[i] for i in (0, 2, 4, 5)])
    np.testing.assert_allclose(rows[[0, 2, 4, 5]], whole, rtol=1e-5, atol=1e-6)
    # without --skip-invalid the error names the line in a later chunk; nothing is written
    out.unlink()
    path.write_text("CCO\nCN\nCCC\nC1CC\n")
    assert main([*args, "--chunk-size", "2"]) == 2
    assert f"{path}, line 4" in capsys.readouterr().err
    assert list(tmp_path.glob("*.npy*")) == [] and list(tmp_path.glob(".e.npy*")) == []


def test_embed_with_workers_writes_the_same_rows_in_3d(tmp_path, monkeypatch):
    # --num-workers featurizes (conformers included) in other processes: the same .npy,
    # byte for byte, NaN rows and counted warnings included; a molecule without a
    # conformer is counted in the main process from its has_pos flag.
    from pyg_molblend.transforms import AddConformer

    real = AddConformer.embed

    def flaky(self, smiles, num_nodes):  # forked workers inherit the patch
        return None if smiles == "CN" else real(self, smiles, num_nodes)

    monkeypatch.setattr(AddConformer, "embed", flaky)
    path = tmp_path / "library.smi"
    path.write_text("CCO\nC1CC\nc1ccccc1O\nCN\nCC(=O)Nc1ccc(O)cc1\n")
    args = ["embed", "--checkpoint", "pretrained", "--smiles", str(path), "--mode", "2d+3d"]
    args += ["--skip-invalid", "--chunk-size", "3"]
    written, warned = [], []
    for workers in ("0", "1"):
        out = tmp_path / f"e{workers}.npy"
        with pytest.warns(UserWarning) as caught:
            assert main([*args, "--out", str(out), "--num-workers", workers]) == 0
        written.append(out.read_bytes())
        warned.append(sorted(str(w.message) for w in caught))
    assert written[0] == written[1]
    assert warned[0] == warned[1]
    assert any(m.startswith("1 molecules had no conformer") for m in warned[0])
    rows = np.load(tmp_path / "e1.npy")
    assert np.isnan(rows[1]).all() and np.isfinite(rows[[0, 2, 3, 4]]).all()
