"""The on-disk pretraining corpus: what goes in comes out, pair relations per batch equal
the precomputed ones, preparation resumes and does not depend on the worker count."""

from __future__ import annotations

import json
import lzma
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from pyg_molblend.cli import main
from pyg_molblend.data import SizeBucketBatchSampler, from_smiles, to_dense
from pyg_molblend.datasets import OnDiskMoleculeDataset, SDFDataset
from pyg_molblend.datasets.utils import num_without_pos
from pyg_molblend.models import MoleBlend
from pyg_molblend.training.checkpoint import data_fingerprint
from pyg_molblend.transforms import AddConformer, AddShortestPath

ASSETS = Path(__file__).parent.parent / "assets"


class CountingConformer(AddConformer):
    """AddConformer that counts the molecules it embeds (in this process)."""

    calls = 0

    def forward(self, data):
        CountingConformer.calls += 1
        return super().forward(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, real_smiles) -> Path:
    """The first 120 real molecules that parse, one per line, plus an invalid line."""
    parsed = []
    for smiles in real_smiles:
        try:
            from_smiles(smiles)
        except ValueError:
            continue
        parsed.append(smiles)
        if len(parsed) == 120:
            break
    path = tmp_path_factory.mktemp("corpus") / "corpus.smi"
    path.write_text("smiles\n" + "\n".join([*parsed[:60], "C1CC", *parsed[60:]]) + "\n")
    return path


def _store(root, corpus, **kwargs) -> OnDiskMoleculeDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return OnDiskMoleculeDataset(str(root), smiles=[corpus], skip_invalid=True, **kwargs)


def test_graphs_and_conformers_come_back_as_stored(tmp_path, corpus):
    conformer = AddConformer(seed=0)
    store = _store(tmp_path, corpus, pre_transform=conformer, shard_size=32, max_molecules=70)
    smiles = [s for s in corpus.read_text().split()[1:71] if s != "C1CC"]
    assert len(store) == 69 and store.skipped == [(60, "C1CC")]
    assert len(store.meta["shards"]) == 3  # 70 rows in shards of 32
    for i in (0, 59, 60, 68):  # around the skipped row and across shards
        expected = conformer(from_smiles(smiles[i]))
        got = store[i]
        assert got.smiles == smiles[i]
        for key in ("x", "edge_index", "edge_attr"):
            assert got[key].dtype == torch.long
            assert torch.equal(got[key], expected[key]), key
        assert torch.equal(got.pos, expected.pos) and bool(got.has_pos) == bool(expected.has_pos)
    counts = store.num_nodes_per_graph
    assert counts.tolist() == [from_smiles(s).num_nodes for s in smiles]
    assert num_without_pos(store) == int((~store.has_pos_per_graph).sum()) == 0
    # A subset keeps its own counts and its own fingerprint.
    subset = store[torch.tensor([5, 1])]
    assert subset.num_nodes_per_graph.tolist() == [counts[5].item(), counts[1].item()]
    assert data_fingerprint(subset) != data_fingerprint(store)
    again = _store(tmp_path, corpus, pre_transform=conformer, shard_size=32, max_molecules=70)
    assert again.folder == store.folder and data_fingerprint(again) == data_fingerprint(store)


class EmbedsEveryOther(AddConformer):
    """Stands in for molecules RDKit cannot embed: every other one fails."""

    def embed(self, smiles, num_nodes):
        self.count = getattr(self, "count", 0) + 1
        return None if self.count % 2 == 0 else super().embed(smiles, num_nodes)


def test_molecules_without_a_conformer_come_back_flagged(tmp_path, corpus):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        store = _store(tmp_path, corpus, pre_transform=EmbedsEveryOther(seed=0), max_molecules=6)
    assert store.has_pos_per_graph.tolist() == [True, False] * 3
    assert num_without_pos(store) == 3
    assert bool(store[1].pos.isnan().all()) and not bool(store[1].has_pos)
    assert not bool(store[0].pos.isnan().any()) and bool(store[0].has_pos)
    # no coordinate bytes are stored for them: the records of 2D molecules are shorter
    flat = _store(tmp_path / "2d", corpus, max_molecules=6)
    assert flat.nbytes < store.nbytes


def test_fingerprint_follows_the_molecules_not_the_paths(tmp_path, corpus):
    store = _store(tmp_path / "a", corpus, shard_size=50)
    copy = tmp_path / "elsewhere" / "renamed.smi"
    copy.parent.mkdir()
    copy.write_bytes(corpus.read_bytes())
    moved = _store(tmp_path / "b", copy, shard_size=50)
    assert moved.folder != store.folder
    assert data_fingerprint(moved) == data_fingerprint(store)  # a rebuilt store resumes
    edited = tmp_path / "edited.smi"
    edited.write_text(corpus.read_text().replace("\n", "\nCCO\n", 1))  # one molecule more
    assert data_fingerprint(_store(tmp_path / "c", edited, shard_size=50)) != data_fingerprint(
        store
    )
    for name in os.listdir(store.folder):  # nothing in the store is a pickle
        if name.endswith(".index"):
            with np.load(Path(store.folder) / name, allow_pickle=False) as npz:
                assert set(npz.files) >= {"offset", "num_nodes", "skipped", "content"}


class TimesOut(AddConformer):
    """Stands in for RDKit's wall-clock conformer timeout: which molecule (counted from 1)
    gets no conformer is set on the class, so two builds differ while the transform's
    description (its repr, in the store's key) stays the same."""

    slow = 0

    def embed(self, smiles, num_nodes):
        self.count = getattr(self, "count", 0) + 1
        return None if self.count == TimesOut.slow else super().embed(smiles, num_nodes)


def test_identity_ignores_the_coordinates_of_a_rebuilt_store(tmp_path, corpus):
    from pyg_molblend.training.checkpoint import data_identity

    def build(folder, slow, source=corpus, transform=TimesOut):
        TimesOut.slow = slow
        return _store(tmp_path / folder, source, pre_transform=transform(seed=0), max_molecules=8)

    store, rebuilt = build("a", slow=2), build("b", slow=5)
    assert store.has_pos_per_graph.tolist() != rebuilt.has_pos_per_graph.tolist()
    assert data_fingerprint(store) != data_fingerprint(rebuilt)  # other coordinates...
    assert data_identity(store) == data_identity(rebuilt)  # ...of the same molecules
    assert data_identity(store[torch.arange(4)]) == data_identity(rebuilt[torch.arange(4)])
    assert data_identity(store[torch.arange(4)]) != data_identity(store)
    edited = tmp_path / "edited.smi"
    edited.write_text(corpus.read_text().replace("\n", "\nCCO\n", 1))  # one molecule more
    assert data_identity(build("c", slow=2, source=edited)) != data_identity(store)
    # Another conformer procedure is other data, not another timeout.
    assert data_identity(build("d", slow=2, transform=EmbedsEveryOther)) != data_identity(store)
    assert data_identity(_store(tmp_path / "e", corpus, max_molecules=8)) != data_identity(store)
    graphs = [from_smiles("CCO"), from_smiles("CCN")]  # in memory: the fingerprint itself
    assert data_identity(graphs) == data_fingerprint(graphs)


def test_pretraining_resumes_on_a_rebuilt_store_with_a_warning(tmp_path, corpus):
    from pyg_molblend.training.pretrain import PretrainConfig, pretrain

    TimesOut.slow = 3
    store = _store(tmp_path / "a", corpus, pre_transform=TimesOut(seed=0), max_molecules=24)
    config = PretrainConfig(steps=2, batch_size=8, warmup_steps=1, progress=False)
    out = tmp_path / "run"
    pretrain(MoleBlend.from_preset("small"), store, out, config)
    TimesOut.slow = 7  # prepared again elsewhere: another molecule timed out
    rebuilt = _store(tmp_path / "b", corpus, pre_transform=TimesOut(seed=0), max_molecules=24)
    with pytest.warns(UserWarning, match="same order but not all of the same coordinates"):
        summary = pretrain(MoleBlend.from_preset("small"), rebuilt, out, config, resume=True)
    assert summary["resumed_from"] == 2
    # Another setting is refused, with no word of the run continuing.
    smaller = PretrainConfig(steps=2, batch_size=4, warmup_steps=1, progress=False)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError, match="batch"):
        warnings.simplefilter("always")
        pretrain(MoleBlend.from_preset("small"), rebuilt, out, smaller, resume=True)
    assert not [w for w in caught if "continues" in str(w.message)]
    # Other molecules are still refused.
    other = _store(tmp_path / "c", corpus, pre_transform=TimesOut(seed=0), max_molecules=16)
    with pytest.raises(ValueError, match="the input molecules"):
        pretrain(MoleBlend.from_preset("small"), other, out, config, resume=True)


def test_pair_relations_per_batch_equal_the_precomputed_ones(tmp_path, corpus):
    store = _store(tmp_path, corpus)  # 2D: no coordinates stored, none returned
    assert "pos" not in store[0] and num_without_pos(store) == 0
    graphs = [store[i] for i in range(len(store))]
    stored = to_dense(Batch.from_data_list(graphs), max_hops=5)
    precomputed = to_dense(
        Batch.from_data_list([AddShortestPath()(from_smiles(g.smiles)) for g in graphs]),
        max_hops=5,
    )
    assert torch.equal(stored.spd, precomputed.spd)
    assert torch.equal(stored.path_edge, precomputed.path_edge)
    assert torch.equal(stored.x, precomputed.x)


def test_preparation_resumes_and_does_not_depend_on_workers(tmp_path, corpus):
    options = dict(shard_size=16, max_molecules=64)  # 4 shards; row 60 (invalid) in the last
    CountingConformer.calls = 0
    serial = _store(tmp_path / "a", corpus, pre_transform=CountingConformer(seed=0), **options)
    assert CountingConformer.calls == 63
    # A preparation killed after some shards: the manifest and the last shards are missing.
    folder = Path(serial.folder)
    os.remove(folder / "manifest.json")
    os.remove(folder / "shard_000003.index")
    (folder / "shard_000002.index").rename(folder / "shard_000002.index.tmp")
    kept = (folder / "shard_000000.bin").stat().st_mtime_ns
    CountingConformer.calls = 0
    resumed = _store(tmp_path / "a", corpus, pre_transform=CountingConformer(seed=0), **options)
    assert CountingConformer.calls == 64 - 32 - 1  # shards 2 and 3 only: rows 32 to 63
    assert (folder / "shard_000000.bin").stat().st_mtime_ns == kept
    assert data_fingerprint(resumed) == data_fingerprint(serial)
    parallel = _store(
        tmp_path / "b", corpus, pre_transform=AddConformer(seed=0), num_workers=2, **options
    )
    for shard in range(4):
        name = f"shard_{shard:06d}.bin"
        assert (Path(parallel.folder) / name).read_bytes() == (folder / name).read_bytes()


def test_loader_workers_and_size_batches_read_the_same_molecules(tmp_path, corpus):
    store = _store(tmp_path, corpus, shard_size=50)
    sampler = SizeBucketBatchSampler(store, batch_size=16, seed=3)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(store, batch_sampler=sampler, num_workers=workers)
        batches[workers] = [(b.smiles, b.num_nodes) for b in loader]
    assert batches[0] == batches[2] and len(batches[0]) == 8
    sizes = [n / len(s) for s, n in batches[0]]
    assert max(sizes) > 2 * min(sizes)  # batches of different sizes: it sorted by size


def test_sdf_records_and_graphs_keep_their_geometries(tmp_path):
    sdf = ASSETS / "qm9_mini.sdf"
    reference = SDFDataset(str(tmp_path / "mem"), [sdf])
    store = OnDiskMoleculeDataset(str(tmp_path / "disk"), sdf=[sdf], shard_size=7)
    assert len(store) == len(reference) and store.source_counts == {"sdf": len(reference)}
    for i in range(len(store)):
        assert torch.equal(store[i].pos, reference[i].pos)
        assert torch.equal(store[i].x, reference[i].x) and store[i].smiles == reference[i].smiles
    graphs = OnDiskMoleculeDataset(str(tmp_path / "g"), graphs=reference, graphs_name="mini")
    assert graphs.source_counts == {"mini": len(reference)}
    assert torch.equal(graphs[3].pos, reference[3].pos)
    # compressed SDF files read the same, by both readers (bz2 and xz as well as gz)
    packed = tmp_path / "mini.sdf.xz"
    packed.write_bytes(lzma.compress(sdf.read_bytes()))
    for dataset in (
        SDFDataset(str(tmp_path / "mem_xz"), [packed]),
        OnDiskMoleculeDataset(str(tmp_path / "disk_xz"), sdf=[packed], shard_size=7),
    ):
        assert len(dataset) == len(reference)
        assert all(torch.equal(dataset[i].pos, reference[i].pos) for i in range(len(dataset)))


def test_bad_input_is_named(tmp_path, corpus):
    with pytest.raises(ValueError, match=r"corpus.smi, line 62: .*'C1CC'.*skip_invalid=True"):
        OnDiskMoleculeDataset(str(tmp_path), smiles=[corpus])
    with pytest.warns(UserWarning, match=r"Skipped 1 molecules of .*corpus.smi with an invalid"):
        OnDiskMoleculeDataset(str(tmp_path / "s"), smiles=[corpus], skip_invalid=True)
    with pytest.raises(ValueError, match="above max_atoms=5"):
        OnDiskMoleculeDataset(str(tmp_path / "m"), smiles=[corpus], max_atoms=5, skip_invalid=False)
    empty = tmp_path / "empty.smi"
    empty.write_text("C1CC\n")
    with pytest.raises(ValueError, match=r"No molecule of .*empty.smi is left"):
        _store(tmp_path / "e", empty)
    with pytest.raises(ValueError, match="needs SMILES files, SDF files or graphs"):
        OnDiskMoleculeDataset(str(tmp_path / "n"))
    with pytest.raises(ValueError, match="File not found"):
        OnDiskMoleculeDataset(str(tmp_path / "n"), smiles=[tmp_path / "missing.smi"])


def test_pretraining_from_the_store_equals_pretraining_in_memory(tmp_path, corpus):
    """Same molecules, same conformers, same batches: the pair relations computed per
    batch give the losses of the precomputed ones."""
    logs = {}
    for route in ("disk", "memory"):
        out = tmp_path / route
        args = ["pretrain", "--smiles", str(corpus), "--skip-invalid", "--steps", "3"]
        args += ["--max-molecules", "48"]
        args += ["--batch-size", "16", "--warmup-steps", "1", "--out", str(out)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert main(args + (["--in-memory"] if route == "memory" else [])) == 0
        lines = (out / "log.jsonl").read_text().splitlines()
        logs[route] = [json.loads(line) for line in lines]
    assert len(logs["disk"]) == 3
    for disk, memory in zip(logs["disk"], logs["memory"], strict=True):
        for key in ("loss", "spd", "edge", "3d", "denoise"):
            assert disk[key] == pytest.approx(memory[key], rel=1e-5), key
    assert any(name.startswith("ondisk_") for name in os.listdir(tmp_path / "disk" / "data"))
    assert not any(name.startswith("ondisk_") for name in os.listdir(tmp_path / "memory" / "data"))


def test_graphs_reach_workers_without_a_file_descriptor_per_tensor(tmp_path):
    # Graphs sent to a worker as they are go through torch's shared-memory reduction,
    # one file descriptor per tensor until the worker takes them: QM9's 128k molecules ran
    # out of them ("Too many open files"). Under a limit of 256 descriptors, 1,200 graphs
    # of 5 tensors each, in shards of 400, must still go through two workers.
    script = f"""
import resource, torch
from torch_geometric.data import Data
from pyg_molblend.datasets import OnDiskMoleculeDataset
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
limit = 256 if hard == resource.RLIM_INFINITY else min(256, hard)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
g = torch.Generator().manual_seed(0)
graphs = []
for i in range(1200):
    n = 3 + i % 5
    ring = torch.arange(n)
    edge_index = torch.stack([torch.cat([ring, (ring + 1) % n]), torch.cat([(ring + 1) % n, ring])])
    graphs.append(Data(x=torch.zeros(n, 9, dtype=torch.long), edge_index=edge_index,
                       edge_attr=torch.zeros(2 * n, 3, dtype=torch.long),
                       pos=torch.randn(n, 3, generator=g), has_pos=torch.tensor([True]),
                       smiles="C" * n))
store = OnDiskMoleculeDataset({str(tmp_path)!r}, graphs=graphs, graphs_name="rings",
                              shard_size=400, num_workers=2)
assert len(store) == 1200
assert torch.equal(store[777].pos, graphs[777].pos)
assert torch.equal(store[1199].edge_index, graphs[1199].edge_index)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
