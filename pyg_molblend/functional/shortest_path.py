"""All-pairs shortest paths of a batch of graphs, with the first bonds of one path."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from torch import Tensor

from pyg_molblend.constants import DEFAULT_MAX_HOPS, MAX_SPD, NO_EDGE, SPD_UNREACHABLE

__all__ = ["pair_index", "shortest_path"]

# Up to this many nodes in a batch the propagation operator is a dense matrix (one small
# GEMM per step beats sparse kernels); above it, a sparse CSR matrix over the edge list.
# A single graph this small on the CPU (a molecule in AddShortestPath) runs the same
# steps in numpy, whose calls cost a fraction of torch's on arrays of a few hundred entries.
_DENSE_MAX_NODES = 128


def pair_index(ptr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Where each flattened ordered pair of a batch lives in padded ``[B, N, N]`` form.

    A graph with :math:`n` nodes stores its pair values row-major as :math:`n^2` entries
    (pair :math:`(i, j)` at :math:`i n + j`); a batch concatenates them graph after graph.

    Returns:
        ``(graph, row, col)``, each of length :math:`\sum_g n_g^2`.

    Examples:
        >>> graph, row, col = pair_index(torch.tensor([0, 1, 3]))  # graphs of 1 and 2 nodes
        >>> graph.tolist(), row.tolist(), col.tolist()
        ([0, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 1, 0, 1])
    """
    num_nodes = ptr.diff()
    num_pairs = num_nodes * num_nodes
    total = int(num_pairs.sum())
    graph = torch.repeat_interleave(
        torch.arange(num_nodes.numel(), device=ptr.device), num_pairs, output_size=total
    )
    start = torch.cumsum(num_pairs, 0) - num_pairs
    offset = torch.arange(total, device=ptr.device) - start[graph]
    n = num_nodes[graph]
    return graph, torch.div(offset, n, rounding_mode="floor"), offset % n


def shortest_path(
    edge_index: Tensor,
    ptr: Tensor,
    max_distance: int = MAX_SPD,
    max_hops: int = DEFAULT_MAX_HOPS,
) -> tuple[Tensor, Tensor]:
    r"""Shortest-path distance and the first bonds of one shortest path, all ordered pairs.

    For every graph of a batch and every ordered node pair :math:`(i, j)` this returns the
    hop distance :math:`d_{ij}` and the ids of the first :math:`\min(d_{ij}, K)` edges
    along one shortest path from :math:`i` to :math:`j` (:math:`K` = :obj:`max_hops`).

    The frontier of all sources is propagated along the batch's edges at once: with
    :math:`R_t \in \{0,1\}^{|V| \times n_{max}}` holding "node :math:`v` is reached from
    local source :math:`s` within :math:`t` hops", :math:`R_{t+1} = \min(1, (A + I) R_t)`
    until nothing changes, so :math:`d = T + 1 - \sum_t R_t`. Work is
    :math:`O(|E| \cdot n_{max} \cdot \mathrm{diameter})`; no dense :math:`N^3` product over
    padded graphs is formed. The first bond from :math:`i` toward :math:`j` is the
    lowest-id edge :math:`(i, k)` with :math:`d_{kj} = d_{ij} - 1`; following it gives one
    shortest path. Edge ids are positions in :obj:`edge_index`, and since the choice only
    compares ids within a graph, a graph gets the same path whether it is processed alone
    or in any batch.

    One graph of at most 128 nodes on the CPU (the per-molecule case of
    :class:`~pyg_molblend.transforms.AddShortestPath`) takes the same steps in numpy, with
    the same results: on arrays this small most of the cost is per call, and numpy's is a
    fraction of torch's.

    Args:
        edge_index (Tensor): ``[2, E]`` edges of an undirected graph batch, both
            directions present (as :func:`~pyg_molblend.data.from_smiles` stores them).
        ptr (Tensor): ``[B + 1]`` node offsets of the graphs (``Batch.ptr``).
        max_distance (int, optional): distances above it are stored as
            :obj:`max_distance`. (default: :obj:`254`)
        max_hops (int, optional): number of path edges :math:`K` kept. (default: :obj:`5`)

    Returns:
        ``(spd, path)``: ``spd`` ``[P]`` (long) and ``path`` ``[P, K]`` (long edge ids,
        :obj:`NO_EDGE` = -1 where there is no bond), flattened row-major per graph with
        :math:`P = \sum_g n_g^2` (see :func:`pair_index`). Self pairs have distance 0,
        pairs in different connected components :obj:`SPD_UNREACHABLE` (255).

    Examples:
        >>> edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])  # a path 0 - 1 - 2
        >>> spd, path = shortest_path(edge_index, torch.tensor([0, 3]), max_hops=2)
        >>> spd.view(3, 3).tolist(), path[2].tolist()  # 0 -> 2: edge 0 (0->1), then edge 2 (1->2)
        ([[0, 1, 2], [1, 0, 1], [2, 1, 0]], [0, 2])
    """
    if not 0 <= max_distance <= MAX_SPD:
        raise ValueError(f"max_distance must be in [0, {MAX_SPD}], got {max_distance}")
    if max_hops < 0:
        raise ValueError(f"max_hops must be non-negative, got {max_hops}")
    if ptr.numel() == 2:
        return one_graph_shortest_path(edge_index, int(ptr[-1]), max_distance, max_hops)
    # Inference mode: no autograd bookkeeping in the kernel's many small operations. The
    # results are cloned out of it, so they are ordinary tensors (usable as indices under
    # autograd).
    with torch.inference_mode():
        ptr = ptr.to(edge_index.device)
        buckets = _size_buckets(ptr.diff()) if ptr.numel() > 2 else []
        if len(buckets) > 1:
            spd, path = _bucketed(edge_index, ptr, buckets, max_distance, max_hops)
        else:
            spd, path = _shortest_path(edge_index, ptr, max_distance, max_hops)
    return spd.clone(), path.clone()


def one_graph_shortest_path(
    edge_index: Tensor,
    num_nodes: int,
    max_distance: int = MAX_SPD,
    max_hops: int = DEFAULT_MAX_HOPS,
    spd_dtype: torch.dtype = torch.long,
    path_dtype: torch.dtype = torch.long,
) -> tuple[Tensor, Tensor]:
    """:func:`shortest_path` of one graph (arguments checked by the caller), its outputs
    in the given dtypes (``AddShortestPath`` stores them as uint8 and int16): in numpy
    when the graph is small and on the CPU, else by the torch kernel."""
    if edge_index.device.type == "cpu" and num_nodes <= _DENSE_MAX_NODES:
        spd, path = _one_graph_numpy(
            edge_index.numpy(),
            num_nodes,
            max_distance,
            max_hops,
            _numpy_dtype(spd_dtype),
            _numpy_dtype(path_dtype),
        )
        return torch.from_numpy(spd), torch.from_numpy(path)
    ptr = torch.tensor([0, num_nodes], device=edge_index.device)
    with torch.inference_mode():
        spd, path = _shortest_path(edge_index, ptr, max_distance, max_hops)
    return spd.to(spd_dtype, copy=True), path.to(path_dtype, copy=True)


@functools.cache
def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _size_buckets(size: Tensor) -> list[Tensor]:
    """Group graph ids by the power of two their node count rounds up to."""
    key = torch.ceil(torch.log2(size.clamp(min=1).to(torch.float))).to(torch.long)
    return [(key == k).nonzero().view(-1) for k in torch.unique(key)]


def _bucketed(
    edge_index: Tensor, ptr: Tensor, buckets: list[Tensor], max_distance: int, max_hops: int
) -> tuple[Tensor, Tensor]:
    """Run graphs of similar size together, so that the ``[|V|, n_max]`` reach matrix of
    a batch holding a few large molecules is not padded to their size for all of them."""
    device = edge_index.device
    size = ptr.diff()
    num_graphs = size.numel()
    node_graph = torch.repeat_interleave(
        torch.arange(num_graphs, device=device), size, output_size=int(ptr[-1])
    )
    edge_graph = node_graph[edge_index[0]]
    pair_ptr = torch.zeros(num_graphs + 1, dtype=torch.long, device=device)
    torch.cumsum(size * size, 0, out=pair_ptr[1:])
    spd = torch.empty(int(pair_ptr[-1]), dtype=torch.long, device=device)
    path = torch.empty((spd.numel(), max_hops), dtype=torch.long, device=device)
    in_bucket = torch.zeros(num_graphs, dtype=torch.bool, device=device)
    for graphs in buckets:
        in_bucket.zero_()[graphs] = True
        nodes = in_bucket[node_graph].nonzero().view(-1)
        edges = in_bucket[edge_graph].nonzero().view(-1)
        relabel = torch.empty_like(node_graph)
        relabel[nodes] = torch.arange(nodes.numel(), device=device)
        sub_size = size[graphs]
        sub_ptr = torch.zeros(graphs.numel() + 1, dtype=torch.long, device=device)
        torch.cumsum(sub_size, 0, out=sub_ptr[1:])
        sub_spd, sub_path = _shortest_path(
            relabel[edge_index[:, edges]], sub_ptr, max_distance, max_hops, edges
        )
        # Flat pair positions of the bucket's graphs in the whole batch, in order.
        sub_pairs = sub_size * sub_size
        offset = torch.repeat_interleave(
            pair_ptr[graphs] - (torch.cumsum(sub_pairs, 0) - sub_pairs),
            sub_pairs,
            output_size=sub_spd.numel(),
        )
        where = offset + torch.arange(sub_spd.numel(), device=device)
        spd[where] = sub_spd
        path[where] = sub_path
    return spd, path


def _shortest_path(
    edge_index: Tensor,
    ptr: Tensor,
    max_distance: int,
    max_hops: int,
    edge_ids: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The kernel for graphs of similar size; ``edge_ids`` names the edges in the output
    (default: their positions in ``edge_index``)."""
    device = edge_index.device
    num_nodes = int(ptr[-1])
    num_edges = edge_index.size(1)
    if num_nodes == 0:
        return (
            torch.empty(0, dtype=torch.long, device=device),
            torch.empty((0, max_hops), dtype=torch.long, device=device),
        )
    src, dst = edge_index[0], edge_index[1]

    # reach[v, s]: node v is reached from the local source s of v's graph.
    size = ptr.diff()
    width = int(size.max())
    batch = torch.repeat_interleave(
        torch.arange(size.numel(), device=device), size, output_size=num_nodes
    )
    cols = torch.arange(width, device=device)
    local = torch.arange(num_nodes, device=device) - ptr[:-1][batch]
    reach = (local.unsqueeze(1) == cols).to(torch.float)
    num_pairs = int((size * size).sum())
    if num_nodes <= _DENSE_MAX_NODES:
        step = torch.eye(num_nodes, device=device)
        step[dst, src] = 1.0
    else:
        loops = torch.arange(num_nodes, device=device)
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            step = _sparse_step(dst, src, loops, num_nodes)
    reached_sum = reach.clone()
    rounds = 0
    while True:
        nxt = (step @ reach).clamp_(max=1.0)
        rounds += 1
        if torch.equal(nxt, reach):
            break
        reached_sum += nxt
        reach = nxt
    # d = T + 1 - (number of rounds t <= T in which the pair was reached). Unreached
    # entries (other component, padding column) all get the same value T + 1, larger than
    # any distance, so "d_kj == d_ij - 1" never holds between two of them.
    dist = rounds - reached_sum
    spd = dist.clamp(max=max_distance).masked_fill_(reached_sum == 0, SPD_UNREACHABLE)

    if max_hops == 0 or num_edges == 0:
        (spd,) = _compact(ptr, batch, cols, spd)
        path = torch.full((num_pairs, max_hops), NO_EDGE, dtype=torch.long, device=device)
        return spd.to(torch.long), path

    # first[i, j]: lowest edge id (i -> k) with d(k, j) = d(i, j) - 1, else num_edges.
    # index_select / take rather than advanced indexing: same result, less per-call overhead.
    closer = dist.index_select(0, dst) == dist.index_select(0, src) - 1
    candidate = torch.where(closer, torch.arange(num_edges, device=device).unsqueeze(1), num_edges)
    first = torch.full((num_nodes, width), num_edges, dtype=torch.long, device=device)
    first.scatter_reduce_(0, src.unsqueeze(1).expand(-1, width), candidate, "amin")
    # nxt[i, j]: flat index of the pair (k, j), k the node that edge reaches, or the
    # sentinel pair num_pairs (no edge), whose first edge is num_edges and next itself.
    hop_dst = torch.cat([dst, dst.new_full((1,), -1)])
    node = hop_dst.take(first)
    if edge_ids is not None:
        first = torch.cat([edge_ids, edge_ids.new_full((1,), NO_EDGE)]).take(first)
        none = NO_EDGE
    else:
        none = num_edges
    start = torch.cumsum(size * size, 0) - size * size - ptr[:-1] * size
    nxt = (start[batch] + node.T * size[batch]).T + cols
    nxt.masked_fill_(node < 0, num_pairs)
    spd, first, nxt = _compact(ptr, batch, cols, spd, first, nxt)

    first = torch.cat([first, first.new_full((1,), none)])
    nxt = torch.cat([nxt, nxt.new_full((1,), num_pairs)])
    hops = [first[:num_pairs]]
    pair = nxt[:num_pairs]
    for hop in range(1, max_hops):
        hops.append(first.index_select(0, pair))
        if hop + 1 < max_hops:
            pair = nxt.index_select(0, pair)
    path = torch.stack(hops, dim=1)
    if none != NO_EDGE:
        path.masked_fill_(path == none, NO_EDGE)
    return spd.to(torch.long), path


def _sparse_step(dst: Tensor, src: Tensor, loops: Tensor, num_nodes: int) -> Tensor:
    """Sparse CSR :math:`A + I` with :math:`A_{vu} = 1` for every edge :math:`u \\to v`."""
    return (
        torch.sparse_coo_tensor(
            torch.stack([torch.cat([dst, loops]), torch.cat([src, loops])]),
            torch.ones(dst.numel() + num_nodes, device=dst.device),
            (num_nodes, num_nodes),
            is_coalesced=False,
            check_invariants=False,
        )
        .coalesce()
        .to_sparse_csr()
    )


def _compact(ptr: Tensor, batch: Tensor, cols: Tensor, *tensors: Tensor) -> list[Tensor]:
    """Flatten ``[|V|, n_max]`` tensors to the ``[P]`` real pairs, row-major per graph."""
    if ptr.numel() == 2:  # one graph: every column is real
        return [t.reshape(-1) for t in tensors]
    valid = (cols.unsqueeze(0) < ptr.diff()[batch].unsqueeze(1)).view(-1).nonzero().view(-1)
    return [t.reshape(-1).index_select(0, valid) for t in tensors]


def _one_graph_numpy(
    edge_index: np.ndarray,
    num_nodes: int,
    max_distance: int,
    max_hops: int,
    spd_dtype: np.dtype,
    path_dtype: np.dtype,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_shortest_path`'s steps for one graph in numpy: the same distances and the
    same paths (lowest-id first bonds), ``[n * n]`` and ``[n * n, max_hops]``."""
    src, dst = edge_index[0], edge_index[1]
    n, num_edges, num_pairs = num_nodes, edge_index.shape[1], num_nodes * num_nodes
    step = np.zeros((n, n), dtype=np.float32)
    step.flat[:: n + 1] = 1.0
    step[dst, src] = 1.0
    reach = np.zeros((n, n), dtype=np.float32)
    reach.flat[:: n + 1] = 1.0
    reached_sum = reach.copy()
    rounds, count = 0, n
    while True:
        nxt = step @ reach
        np.minimum(nxt, 1.0, out=nxt)
        rounds += 1
        # Reach only grows (the step includes I): an unchanged count is the fixed point.
        grown = np.count_nonzero(nxt)
        if grown == count:
            break
        count = grown
        reached_sum += nxt
        reach = nxt
    dist = rounds - reached_sum  # unreached: rounds, above every distance (as the kernel)
    spd = np.minimum(dist, max_distance).astype(spd_dtype)
    spd[reached_sum == 0] = SPD_UNREACHABLE
    spd = spd.reshape(-1)
    if max_hops == 0 or num_edges == 0:
        return spd, np.full((num_pairs, max_hops), NO_EDGE, dtype=path_dtype)
    # first[i, j]: lowest edge id (i -> k) with d(k, j) = d(i, j) - 1, NO_EDGE if none.
    # Each table ends with a sentinel: the first edge NO_EDGE, whose index (-1) reads the
    # end of a table again, and the pair num_pairs, whose next pair is itself.
    candidate = np.where(dist[dst] == dist[src] - 1, np.arange(num_edges)[:, None], num_edges)
    first = np.full(num_pairs + 1, num_edges, dtype=np.int64)
    np.minimum.at(first[:num_pairs].reshape(n, n), src, candidate)
    first[first == num_edges] = NO_EDGE
    hop_dst = np.empty(num_edges + 1, dtype=np.int64)
    hop_dst[:num_edges] = dst
    hop_dst[num_edges] = NO_EDGE
    node = hop_dst[first[:num_pairs]]
    nxt_pair = np.empty(num_pairs + 1, dtype=np.int64)
    np.add(node.reshape(n, n) * n, np.arange(n), out=nxt_pair[:num_pairs].reshape(n, n))
    nxt_pair[:num_pairs][node == NO_EDGE] = num_pairs
    nxt_pair[num_pairs] = num_pairs
    path = np.empty((max_hops, num_pairs), dtype=path_dtype)
    path[0] = first[:num_pairs]
    pair = nxt_pair[:num_pairs]
    for hop in range(1, max_hops):
        path[hop] = first.take(pair)
        if hop + 1 < max_hops:
            pair = nxt_pair.take(pair)
    return spd, np.ascontiguousarray(path.T)
