"""The one reader of SMILES files (``iter_smiles_table``) behind ``predict``, ``embed`` and
the pretraining corpora: formats, compression, line numbers, errors."""

import bz2
import gzip
import lzma

import pytest

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


def test_max_molecules_reads_no_further_than_it_needs(tmp_path):
    path = tmp_path / "corpus.csv"
    rows = ["CCO", "CCN", "CCC"] * 3400  # 10,200 rows: the reader's second chunk holds the end
    path.write_text("smiles\n" + "\n".join(rows) + "\nCCO,a field too many\n")
    with pytest.raises(ValueError, match="line 10202"):
        read_smiles_file(path)
    assert read_smiles_lines(path, limit=2) == [(2, "CCO"), (3, "CCN")]
    dataset = SmilesDataset(str(tmp_path / "root"), [str(path), str(path)], max_molecules=4)
    assert dataset.smiles == ["CCO", "CCN", "CCC", "CCO"]
