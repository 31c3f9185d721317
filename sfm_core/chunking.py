"""Cutting a large view graph into overlapping chunks that are reconstructed one by one.

Each connected component of the verified view graph is partitioned into connected, compact
cores by recursive normalised-cut (spectral) bisection; the cores are linked by a maximum
spanning tree of the core graph (weight: summed inlier counts between two cores), and every
core but the tree's root grows into its parent core by the `overlap` frames most strongly
connected to it. Linked chunks thus share at least `overlap` frames, the images a Sim(3)
alignment of their models is estimated from, and the chunks of a component form one
connected chunk graph.
"""
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.sparse import coo_matrix, csr_matrix, diags, identity
from scipy.sparse.csgraph import breadth_first_order, connected_components, minimum_spanning_tree
from scipy.sparse.linalg import eigsh

# Up to this many frames the Fiedler vector comes from a dense eigendecomposition; above,
# from sparse shift-invert Lanczos (20x faster at 1000 frames; ARPACK needs n well above k).
_DENSE_EIGEN_MAX_FRAMES = 50


@dataclass
class Chunk:
    index: int
    frames: list[int]  # global frame indices (0..F-1), sorted
    anchor: int  # the chunk's best-connected frame (max summed inlier weight within the chunk)
    component: int = 0  # index of the view-graph component (largest first) the chunk belongs to
    parent: int | None = None  # the chunk this one grew into by `overlap` frames; None for a root


@dataclass
class ChunkPlan:
    chunks: list[Chunk]
    unconnected: list[int]  # frames with no verified pair: reported and left out, never forced into a chunk


def plan_chunks(num_frames: int, edges: np.ndarray, weights: np.ndarray, chunk_size: int, overlap: int) -> ChunkPlan:
    """Overlapping chunks of at most chunk_size frames covering every connected frame.

    edges: (P, 2) int frame indices of verified pairs (either order; duplicates are summed);
    weights: (P,) positive, e.g. inlier counts (pairs with weight <= 0 are ignored).
    A component of the view graph that fits in chunk_size frames is one chunk; a larger one
    is cut into about ceil(n / (chunk_size - overlap)) chunks, each sharing at least
    `overlap` frames with its parent. Deterministic.
    """
    if chunk_size < 2 or not 0 < overlap <= chunk_size // 2:
        raise ValueError(f"need chunk_size >= 2 and 0 < overlap <= chunk_size / 2, got {chunk_size}, {overlap}")
    graph = view_graph(num_frames, edges, weights)
    degree = np.asarray((graph != 0).sum(axis=1)).ravel()
    chunks: list[Chunk] = []
    for component_index, frames in enumerate(graph_components(graph, degree > 0)):
        first = len(chunks)
        for frames_of_chunk, parent in _component_chunks(graph, frames, chunk_size, overlap):
            chunk_frames = np.sort(frames_of_chunk)
            chunks.append(Chunk(len(chunks), chunk_frames.tolist(), _anchor(graph, chunk_frames), component_index,
                                None if parent is None else first + parent))
    return ChunkPlan(chunks, np.nonzero(degree == 0)[0].tolist())


def view_graph(num_frames: int, edges: np.ndarray, weights: np.ndarray) -> csr_matrix:
    """Symmetric (F, F) sparse weight matrix; self-pairs and non-positive weights dropped."""
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    keep = (weights > 0) & (edges[:, 0] != edges[:, 1])
    rows, cols, values = edges[keep, 0], edges[keep, 1], weights[keep]
    upper = coo_matrix((values, (np.minimum(rows, cols), np.maximum(rows, cols))), shape=(num_frames, num_frames))
    upper = upper.tocsr()  # sums duplicated pairs
    return (upper + upper.T).tocsr()


def graph_components(graph: csr_matrix, linked: np.ndarray) -> list[np.ndarray]:
    """Frames of each connected component among `linked` frames, largest first (ties: lowest frame)."""
    _, labels = connected_components(graph, directed=False)
    components = [np.nonzero((labels == label) & linked)[0] for label in np.unique(labels[linked])]
    return sorted(components, key=lambda frames: (-len(frames), frames[0]))


def _component_chunks(graph: csr_matrix, frames: np.ndarray, chunk_size: int,
                      overlap: int) -> list[tuple[np.ndarray, int | None]]:
    """(frames, parent position in the returned list) of the chunks of one connected component."""
    if len(frames) <= chunk_size:
        return [(frames, None)]
    cores = _bisect(graph, frames, chunk_size - overlap)
    parents = _core_tree_parents(graph, cores)
    return [(core if parent is None else _grow_into(graph, core, cores[parent], overlap), parent)
            for core, parent in zip(cores, parents)]


def _bisect(graph: csr_matrix, frames: np.ndarray, max_core: int) -> list[np.ndarray]:
    """Connected cores of at most max_core frames of the connected `frames`, by recursive spectral bisection.

    A set meant to become k = ceil(n / max_core) cores is split along its Fiedler vector into
    parts of k // 2 and k - k // 2 cores' worth of frames; pieces a cut leaves disconnected
    from their side move to the other side, so both sides stay connected.
    """
    if len(frames) <= max_core:
        return [frames]
    parts = -(-len(frames) // max_core)
    order = np.argsort(_fiedler_vector(graph[frames][:, frames]), kind="stable")
    first = np.zeros(len(frames), dtype=bool)
    first[order[: round(len(frames) * (parts // 2) / parts)]] = True
    first = _keep_sides_connected(graph[frames][:, frames], first)
    return _bisect(graph, frames[first], max_core) + _bisect(graph, frames[~first], max_core)


def _fiedler_vector(weights: csr_matrix) -> np.ndarray:
    """(n,) second eigenvector of the normalised-cut problem L v = lambda D v of a connected graph.

    Its sign is fixed (largest-magnitude entry positive) so that the cut is deterministic.
    """
    degree = np.asarray(weights.sum(axis=1)).ravel()
    scale = diags(1.0 / np.sqrt(degree))
    laplacian = identity(len(degree), format="csr") - scale @ weights @ scale  # I - D^-1/2 W D^-1/2
    if len(degree) <= _DENSE_EIGEN_MAX_FRAMES:
        _, vectors = scipy.linalg.eigh(laplacian.toarray(), subset_by_index=[0, 1])
    else:
        # Shift-invert just below 0 finds the two smallest eigenvalues quickly; v0 fixes the start.
        _, vectors = eigsh(laplacian, k=2, sigma=-1e-3, which="LM", v0=np.sqrt(degree))
    vector = vectors[:, 1] / np.sqrt(degree)
    return vector * np.sign(vector[np.argmax(np.abs(vector))])


def _keep_sides_connected(weights: csr_matrix, first: np.ndarray) -> np.ndarray:
    """Move the pieces of each side that are cut off from the side's largest piece to the other side.

    weights: (n, n) of a connected graph; first: (n,) bool, the first side. Each moved piece
    touches only the other side, so both sides end up connected.
    """
    first = first.copy()
    for side in (True, False):
        members = np.nonzero(first == side)[0]
        _, labels = connected_components(weights[members][:, members], directed=False)
        largest = np.argmax(np.bincount(labels))
        first[members[labels != largest]] = not side
    return first


def _core_tree_parents(graph: csr_matrix, cores: list[np.ndarray]) -> list[int | None]:
    """Parent core of each core in a maximum spanning tree of the core graph, rooted at its heaviest core.

    The core graph links two cores by the summed weight of the pairs between them.
    """
    membership = np.zeros((graph.shape[0], len(cores)))
    for index, core in enumerate(cores):
        membership[core, index] = 1.0
    between = membership.T @ (graph @ membership)
    np.fill_diagonal(between, 0.0)
    # The minimum spanning tree of inverse weights is a maximum spanning tree of the weights.
    inverse = np.divide(1.0, between, out=np.zeros_like(between), where=between > 0)
    tree = minimum_spanning_tree(csr_matrix(inverse))
    root = int(np.argmax(between.sum(axis=1)))
    _, predecessors = breadth_first_order(tree, root, directed=False)
    return [None if index == root else int(predecessors[index]) for index in range(len(cores))]


def _grow_into(graph: csr_matrix, core: np.ndarray, parent_core: np.ndarray, count: int) -> np.ndarray:
    """core plus the `count` frames of parent_core most strongly connected to it, added greedily.

    Each step adds the parent frame with the largest summed weight to the frames chosen so
    far, so the shared frames are well connected within both chunks.
    """
    score = np.asarray(graph[parent_core][:, core].sum(axis=1)).ravel()
    within_parent = graph[parent_core][:, parent_core].toarray()
    taken = np.zeros(len(parent_core), dtype=bool)
    for _ in range(min(count, len(parent_core))):
        best = int(np.argmax(np.where(taken, -np.inf, score)))
        taken[best] = True
        score += within_parent[:, best]
    return np.concatenate([core, parent_core[taken]])


def _anchor(graph: csr_matrix, frames: np.ndarray) -> int:
    """The frame of `frames` (sorted) with the largest summed weight to the others; lowest index on ties."""
    return int(frames[np.argmax(np.asarray(graph[frames][:, frames].sum(axis=1)).ravel())])

