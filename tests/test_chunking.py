import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sfm_core.chunking import plan_chunks


def chain(frames: list[int], reach: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Each frame paired with the next `reach` frames, weight falling with the gap."""
    edges = [(frames[i], frames[i + d]) for i in range(len(frames)) for d in range(1, reach + 1) if i + d < len(frames)]
    return np.array(edges), np.array([120.0 / abs(frames.index(b) - frames.index(a)) for a, b in edges])


def ring(frames: list[int], reach: int = 3) -> tuple[np.ndarray, np.ndarray]:
    edges, weights = chain(frames, reach)
    closing = [(frames[-d], frames[i]) for d in range(1, reach + 1) for i in range(reach + 1 - d)]
    return np.vstack([edges, closing]), np.concatenate([weights, np.full(len(closing), 40.0)])


def grid(rows: int, cols: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(rows * cols).reshape(rows, cols) + offset
    edges = np.vstack([np.stack([index[:, :-1].ravel(), index[:, 1:].ravel()], 1),
                       np.stack([index[:-1, :].ravel(), index[1:, :].ravel()], 1),
                       np.stack([index[:-1, :-1].ravel(), index[1:, 1:].ravel()], 1)])
    return edges, 30.0 + (edges.sum(axis=1) % 7)  # uneven weights, deterministic


def random_geometric(num_frames: int, num_edges: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames scattered on a square, each pair among the num_edges closest ones; weight falls with distance."""
    points = np.random.default_rng(seed).uniform(0, 1, (num_frames, 2))
    first, second = np.triu_indices(num_frames, 1)
    distance = np.linalg.norm(points[first] - points[second], axis=1)
    closest = np.argsort(distance)[:num_edges]
    return np.stack([first[closest], second[closest]], 1), 1000 * np.exp(-10 * distance[closest])


def assert_valid_plan(plan, num_frames, edges, chunk_size, overlap):
    """Sizes, coverage, overlaps with the parent, connectivity of chunks and of the chunk graph."""
    graph = coo_matrix((np.ones(len(edges)), tuple(np.asarray(edges).T)), shape=(num_frames, num_frames)).tocsr()
    linked = set(np.asarray(edges).ravel().tolist())
    covered = set()
    for chunk in plan.chunks:
        assert len(chunk.frames) <= chunk_size
        assert chunk.frames == sorted(set(chunk.frames))
        assert chunk.anchor in chunk.frames
        frames = np.array(chunk.frames)
        assert connected_components(graph[frames][:, frames], directed=False)[0] == 1
        covered |= set(chunk.frames)
        if chunk.parent is not None:
            assert len(set(chunk.frames) & set(plan.chunks[chunk.parent].frames)) >= overlap
    assert covered == linked
    assert sorted(plan.unconnected) == sorted(set(range(num_frames)) - linked)
    assert not covered & set(plan.unconnected)


def chunk_links(plan, min_shared: int) -> np.ndarray:
    """(C, C) bool: chunks sharing at least min_shared frames."""
    frames = [set(chunk.frames) for chunk in plan.chunks]
    return np.array([[i != j and len(a & b) >= min_shared for j, b in enumerate(frames)] for i, a in enumerate(frames)])


@pytest.mark.parametrize("shape", ["chain", "ring", "grid"])
def test_300_frames_cut_into_overlapping_chunks(shape):
    edges, weights = {"chain": chain(list(range(300))), "ring": ring(list(range(300))), "grid": grid(15, 20)}[shape]
    plan = plan_chunks(300, edges, weights, chunk_size=80, overlap=10)
    assert_valid_plan(plan, 300, edges, 80, 10)
    assert 4 <= len(plan.chunks) <= 6  # ceil(300 / 70) = 5
    # Linked by >= overlap shared frames, the chunks form one connected graph.
    assert connected_components(chunk_links(plan, 10), directed=False)[0] == 1
    assert sum(chunk.parent is None for chunk in plan.chunks) == 1


def test_chain_chunks_are_contiguous_stretches_and_neighbours_overlap():
    edges, weights = chain(list(range(300)))
    plan = plan_chunks(300, edges, weights, chunk_size=80, overlap=10)
    stretches = sorted((chunk.frames[0], chunk.frames[-1], len(chunk.frames)) for chunk in plan.chunks)
    for first, last, size in stretches:
        assert last - first + 1 == size  # compact: no frame of the stretch skipped
    for (_, last, _), (first, _, _) in zip(stretches, stretches[1:]):
        assert last - first + 1 >= 10  # consecutive stretches share >= overlap frames


def test_unconnected_frames_and_small_components():
    # Frames 0-199: a ring; 200-219 and 220-224: two small components; 225-229: no pair at all.
    big, big_weights = ring(list(range(200)))
    small, small_weights = chain(list(range(200, 220)))
    tiny, tiny_weights = chain(list(range(220, 225)))
    edges = np.vstack([big, small, tiny])
    weights = np.concatenate([big_weights, small_weights, tiny_weights])
    plan = plan_chunks(230, edges, weights, chunk_size=60, overlap=8)
    assert_valid_plan(plan, 230, edges, 60, 8)
    assert plan.unconnected == list(range(225, 230))
    components = {}
    for chunk in plan.chunks:
        components.setdefault(chunk.component, []).append(set(chunk.frames))
    assert [len(components[c]) for c in sorted(components)] == [4, 1, 1]  # ceil(200 / 52) = 4
    assert components[1] == [set(range(200, 220))]
    assert components[2] == [set(range(220, 225))]
    assert all(frames <= set(range(200)) for frames in components[0])


def test_two_components_never_share_a_chunk():
    first, first_weights = grid(10, 10)
    second, second_weights = grid(10, 10, offset=100)
    edges, weights = np.vstack([second, first]), np.concatenate([second_weights, first_weights])
    plan = plan_chunks(200, edges, weights, chunk_size=40, overlap=6)
    assert_valid_plan(plan, 200, edges, 40, 6)
    for chunk in plan.chunks:
        assert set(chunk.frames) <= set(range(100)) or set(chunk.frames) <= set(range(100, 200))
    assert connected_components(chunk_links(plan, 1), directed=False)[0] == 2


def test_anchor_is_the_best_connected_frame():
    # A star: frame 3 paired with every other frame, the others only with neighbours.
    edges = [(3, f) for f in range(10) if f != 3] + [(f, f + 1) for f in range(9)]
    weights = [50.0] * 9 + [10.0] * 9
    plan = plan_chunks(10, np.array(edges), np.array(weights), chunk_size=20, overlap=3)
    assert len(plan.chunks) == 1 and plan.chunks[0].anchor == 3 and plan.chunks[0].frames == list(range(10))


def test_duplicate_reversed_self_and_zero_weight_pairs():
    edges = np.array([[0, 1], [1, 0], [1, 2], [2, 2], [3, 4]])
    plan = plan_chunks(5, edges, np.array([5.0, 5.0, 9.0, 100.0, 0.0]), chunk_size=4, overlap=1)
    assert [chunk.frames for chunk in plan.chunks] == [[0, 1, 2]]
    assert plan.chunks[0].anchor == 1
    assert plan.unconnected == [3, 4]


def test_deterministic_and_fast_for_1000_frames():
    import time

    edges, weights = random_geometric(1000, 20_000)
    start = time.perf_counter()
    plan = plan_chunks(1000, edges, weights, chunk_size=100, overlap=15)
    seconds = time.perf_counter() - start
    assert_valid_plan(plan, 1000, edges, 100, 15)
    assert len(plan.chunks) <= np.ceil(1000 / 85) + 2
    assert connected_components(chunk_links(plan, 15), directed=False)[0] == 1
    assert seconds < 5.0
    again = plan_chunks(1000, edges[::-1], weights[::-1], chunk_size=100, overlap=15)
    assert [c.frames for c in again.chunks] == [c.frames for c in plan.chunks]


@pytest.mark.parametrize("chunk_size, overlap", [(1, 0), (80, 0), (80, 41)])
def test_bad_sizes_are_refused(chunk_size, overlap):
    edges, weights = chain(list(range(10)))
    with pytest.raises(ValueError):
        plan_chunks(10, edges, weights, chunk_size, overlap)
