"""The one reader of SMILES files (``iter_smiles_table``) behind ``predict``, ``embed`` and
the pretraining corpora: formats, compression, line numbers, errors."""

import bz2
import gzip
import lzma

import numpy as np
import pytest

from pyg_molblend.cli import main
from pyg_molblend.cli.embed import embed_smiles
from pyg_molblend.datasets import SmilesDataset, read_smiles_file
from pyg_molblend.datasets.smiles import iter_smiles_table, read_smiles_lines

SMI = "smiles\nCCO ethanol\n\n c1ccccc1O  phenol\nCN\n"
OPENERS = {"": open, ".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


@pytest.mark.parametrize("suffix", list(OPENERS))
def test_smi_files_read_the_same_whatever_the_compression(tmp_path, suffix):
    path = tmp_path / f"library.smi{suffix}"
    with OPENERS[suffix](path, "wt") as f:
        f.write(SMI)
    # header line 1 dropped, blank line 3 skipped, editor line numbers kept
    assert read_smiles_lines(path) == [(2, "CCO"), (4, "c1ccccc1O"), (5, "CN")]
    ((chunk, column),) = list(iter_smiles_table(path))
    assert column == "smiles" and chunk["name"].tolist() == ["ethanol", "phenol", ""]


@pytest.mark.parametrize("suffix", list(OPENERS))
def test_csv_and_tsv_files_read_the_same_whatever_the_compression(tmp_path, suffix):
    for sep, ext in ((",", "csv"), ("\t", "tsv")):
        path = tmp_path / f"library.{ext}{suffix}"
        with OPENERS[suffix](path, "wt") as f:
            f.write(f"id{sep}SMILES{sep}other\nm1{sep} CCO {sep}CN\n\nm2{sep}NA{sep}CC\n")
        assert read_smiles_lines(path) == [(2, "CCO"), (4, "NA")]  # "NA" stays a string
        assert read_smiles_file(path) == ["CCO", "NA"]
        assert read_smiles_lines(path, "other") == [(2, "CN"), (4, "CC")]


def test_unreadable_smiles_files_are_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.smi"
    empty.write_text("")
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,smiles\n")
    blank = tmp_path / "blank.smi"
    blank.write_text("smiles\n\n")
    no_column = tmp_path / "mols.csv"
    no_column.write_text("id,structure\nm1,CCO\n")
    cases = [
        (empty, "is empty"),
        (header_only, "has a header but no molecules"),
        (blank, "holds no molecules"),
        (no_column, "has no 'smiles' column"),
        (tmp_path / "missing.smi", "not found"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            read_smiles_file(path)
        assert str(path) in str(error.value)
    with pytest.raises(ValueError, match="is empty"):  # the in-memory corpus reads it too
        SmilesDataset(str(tmp_path / "root"), [str(empty)])


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


def test_max_molecules_reads_no_further_than_it_needs(tmp_path):
    path = tmp_path / "corpus.csv"
    rows = ["CCO", "CCN", "CCC"] * 3400  # 10,200 rows: the reader's second chunk holds the end
    path.write_text("smiles\n" + "\n".join(rows) + "\nCCO,a field too many\n")
    with pytest.raises(ValueError, match="line 10202"):
        read_smiles_file(path)
    assert read_smiles_lines(path, limit=2) == [(2, "CCO"), (3, "CCN")]
    dataset = SmilesDataset(str(tmp_path / "root"), [str(path), str(path)], max_molecules=4)
    assert dataset.smiles == ["CCO", "CCN", "CCC", "CCO"]
