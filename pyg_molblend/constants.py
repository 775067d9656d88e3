"""Named constants shared by the data pipeline and the model.

Every magic number of the reference implementation (510, 512 * 9, ...) that matters
to a user lives here under a name, so that tests and encoders refer to one value.
"""

#: Number of integer atom features produced by :func:`pyg_molblend.data.from_smiles`
#: (the OGB vocabulary: atomic number, chirality, degree, formal charge, #H, radical
#: electrons, hybridization, aromatic, in-ring).
NUM_ATOM_FEATURES = 9

#: Number of integer bond features (type, stereo, conjugated).
NUM_BOND_FEATURES = 3

#: Vocabulary size of each OGB atom feature (``ogb.utils.features.get_atom_feature_dims``).
ATOM_FEATURE_DIMS = (119, 5, 12, 12, 10, 6, 6, 2, 2)

#: Vocabulary size of each OGB bond feature (``ogb.utils.features.get_bond_feature_dims``).
BOND_FEATURE_DIMS = (5, 6, 2)

#: Shortest-path distance stored for an ordered atom pair with no path between the atoms
#: (different fragments of a salt, say). Larger than any capped distance.
SPD_UNREACHABLE = 255

#: Largest shortest-path distance that can be stored (``uint8`` minus the unreachable code).
MAX_SPD = 254

#: Shortest-path distance written into padded pairs of a :class:`DenseMolBatch`.
SPD_PAD = -1

#: Default number of bonds kept along one shortest path (the reference's
#: ``multi_hop_max_dist``).
DEFAULT_MAX_HOPS = 5

#: Task types of labelled datasets and predictors: binary labels (0/1) per task, class
#: indices (0 to K - 1, the same K classes for every task), or real values.
TASK_TYPES = ("classification", "multiclass", "regression")

#: Label of a position that a classification loss ignores (``torch.nn.functional.cross_entropy``'s
#: default ``ignore_index``): self pairs, padding, unreachable pairs, hops past a path's end.
IGNORE_INDEX = -100

#: Edge id written where a path has no bond at that hop (self pairs, unreachable pairs,
#: hops beyond the path length, padding).
NO_EDGE = -1

#: Largest number of bonds (directed edges) a molecule may have for its path edge ids to
#: fit the stored ``int16`` dtype.
MAX_STORED_EDGES = 32767

#: Largest molecule, in graph nodes (heavy atoms unless hydrogens are nodes), that the
#: datasets accept by default (their ``max_atoms`` option) and the CLI's ``--max-atoms``.
#: Pair data grows as N^2 and conformer embedding faster still: a C1000 chain costs
#: minutes and gigabytes in the pre-transforms, so larger molecules are rejected (or, with
#: ``skip_invalid=True``, skipped and counted) before any transform runs.
DEFAULT_MAX_ATOMS = 256

#: Name of the atom and bond vocabulary of :func:`pyg_molblend.data.from_smiles`, stored
#: on every graph it makes as ``data.featurizer`` and checked by
#: :func:`pyg_molblend.data.to_dense`: graphs of another featurizer (PyG's own
#: ``torch_geometric.utils.from_smiles`` has the same shapes, other meanings) are refused.
#: Equal to ``FEATURE_CONTRACT["featurizer"]`` of the checkpoints.
FEATURIZER = "ogb"
