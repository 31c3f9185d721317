"""Image retrieval: vocabulary, VLAD global descriptors, candidate pairs."""
import itertools

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

from sfm_core.features import SiftExtractor
from sfm_core.retrieval import (candidate_pairs, exhaustive_pair_array, global_descriptors,
                                learn_vocabulary, retrieval_pairs, transitive_candidates)
from sfm_core.synthetic import render_scene
from storage.synthetic_io import load_package_textures

RING = 20  # cameras 18 degrees apart all around the landmark
SIZE = (320, 240)


def ring_distance(a: int, b: int) -> int:
    return min(abs(a - b), RING - abs(a - b))


def unrelated_photo(image: np.ndarray, angle: float, crop: float) -> np.ndarray:
    """A scikit-image photo that is no texture of the landmark, cropped, rotated, resized."""
    image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
    h, w = image.shape[:2]
    image = image[int(h * crop): h - int(h * crop), int(w * crop): w - int(w * crop)]
    image = skimage.transform.rotate(image, angle, resize=True)
    return (skimage.transform.resize(image, SIZE[::-1]) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def ring_descriptors() -> list[np.ndarray]:
    """SIFT of RING views of the landmark (in ring order), then 3 unrelated photos."""
    scene = render_scene(load_package_textures(), n_cameras=RING, image_size=SIZE, supersample=1,
                         arc_deg=360)
    distractors = [unrelated_photo(skimage.data.hubble_deep_field(), 30, 0.1),
                   unrelated_photo(skimage.data.moon(), -10, 0.05),
                   unrelated_photo(skimage.data.retina(), 0, 0.1)]
    extractor = SiftExtractor(1024)
    return [extractor(image, (1.0, 1.0)).descriptors for image in list(scene.images) + distractors]


def blobs(num_images: int, seed: int) -> list[np.ndarray]:
    """Random SIFT-like uint8 descriptors, 200 per image."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (200, 128)) * (rng.random((200, 128)) < 0.3)).astype(np.uint8)
            for _ in range(num_images)]


def test_ring_neighbours_are_proposed(ring_descriptors):
    pairs = candidate_pairs(ring_descriptors, num_neighbours=4, exhaustive_below=0)

    proposed = {(int(i), int(j)) for i, j in pairs}
    adjacent = {tuple(sorted((k, (k + 1) % RING))) for k in range(RING)}
    assert len(adjacent & proposed) >= 0.9 * RING
    ring_pairs = [(i, j) for i, j in proposed if j < RING]
    # Views more than 3 steps (54 degrees) apart barely overlap: few such proposals.
    assert np.mean([ring_distance(i, j) <= 3 for i, j in ring_pairs]) >= 0.8
    assert len(pairs) < len(exhaustive_pair_array(len(ring_descriptors))) / 3


def test_distractors_are_nobodys_strong_neighbour(ring_descriptors):
    vocabulary = learn_vocabulary(ring_descriptors, seed=0)
    desc = global_descriptors(ring_descriptors, vocabulary)
    similarity = (desc @ desc.T).fill_diagonal_(-torch.inf)

    ring_to_ring = similarity[:RING, :RING]
    nearest = ring_to_ring.argmax(dim=1)
    assert sum(ring_distance(k, int(nearest[k])) <= 2 for k in range(RING)) >= RING - 1
    top3 = similarity[:RING].topk(3, dim=1).indices
    assert int((top3 >= RING).any(dim=1).sum()) <= 1
    # A distractor's best match to the landmark is weaker than a typical view's nearest view.
    assert similarity[RING:, :RING].max() < ring_to_ring.max(dim=1).values.median()


def test_pairs_are_unique_ordered_and_cover_every_image():
    rng = np.random.default_rng(3)
    desc = torch.nn.functional.normalize(torch.as_tensor(rng.standard_normal((30, 16)), dtype=torch.float32), dim=1)

    pairs = retrieval_pairs(desc, k=3)

    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert len(np.unique(pairs, axis=0)) == len(pairs)
    assert set(pairs.ravel().tolist()) == set(range(30))
    assert 30 * 3 / 2 <= len(pairs) <= 30 * 3
    # Each image's 3 nearest by brute force are among its pairs.
    similarity = (desc @ desc.T).fill_diagonal_(-torch.inf)
    proposed = {(int(i), int(j)) for i, j in pairs}
    for i, row in enumerate(similarity.topk(3, dim=1).indices.tolist()):
        assert all((min(i, j), max(i, j)) in proposed for j in row)


def test_more_neighbours_than_images_gives_every_pair():
    desc = torch.eye(5)
    assert np.array_equal(retrieval_pairs(desc, k=10), exhaustive_pair_array(5))
    assert retrieval_pairs(desc[:1], k=10).shape == (0, 2)


def test_small_collections_are_matched_exhaustively():
    descriptors = blobs(6, seed=0)

    below = candidate_pairs(descriptors, num_neighbours=1, exhaustive_below=7)
    at = candidate_pairs(descriptors, num_neighbours=1, exhaustive_below=6)

    assert np.array_equal(below, np.array(list(itertools.combinations(range(6), 2))))
    assert len(at) < len(below)
    assert (at[:, 0] < at[:, 1]).all()


def test_deterministic_for_a_seed():
    descriptors = blobs(12, seed=1)

    first = learn_vocabulary(descriptors, num_words=8, seed=5)
    assert torch.equal(first, learn_vocabulary(descriptors, num_words=8, seed=5))
    assert not torch.equal(first, learn_vocabulary(descriptors, num_words=8, seed=6))
    assert np.array_equal(candidate_pairs(descriptors, num_neighbours=2, exhaustive_below=0, num_words=8, seed=5),
                          candidate_pairs(descriptors, num_neighbours=2, exhaustive_below=0, num_words=8, seed=5))


def test_vocabulary_finds_separated_clusters():
    rng = np.random.default_rng(4)
    centres = rng.integers(0, 256, (6, 128)) * (rng.random((6, 128)) < 0.3)
    images = [np.clip(centres[rng.integers(0, 6, 300)] + rng.integers(-6, 7, (300, 128)), 0, 255).astype(np.uint8)
              for _ in range(5)]

    words = learn_vocabulary(images, num_words=6, seed=0)

    unit_centres = torch.nn.functional.normalize(torch.as_tensor(centres, dtype=torch.float32), dim=1)
    assert torch.allclose(words.norm(dim=1), torch.ones(6), atol=1e-5)
    match = words @ unit_centres.T  # (6 words, 6 centres)
    assert (match.max(dim=0).values > 0.99).all()  # every centre has its word
    assert sorted(match.argmax(dim=1).tolist()) == list(range(6))


def test_fewer_descriptors_than_words_and_an_empty_image():
    descriptors = blobs(3, seed=2)[:2] + [np.zeros((0, 128), np.uint8)]
    descriptors[0] = descriptors[0][:3]

    words = learn_vocabulary(descriptors, num_words=500, seed=0)
    desc = global_descriptors(descriptors, words)

    assert len(words) == 203
    assert desc.shape == (3, 203 * 128)
    assert torch.count_nonzero(desc[2]) == 0
    assert torch.allclose(desc[:2].norm(dim=1), torch.ones(2), atol=1e-5)


def test_the_verified_view_graph_proposes_pairs_through_common_neighbours():
    chain = np.array([(0, 1), (1, 2), (2, 3), (3, 4)])
    assert transitive_candidates(chain, chain, 5).tolist() == [[0, 2], [1, 3], [2, 4]]
    # Pairs matched already (verified or not) are not proposed again.
    tried = np.concatenate([chain, [(3, 1)]])
    assert transitive_candidates(chain, tried, 5).tolist() == [[0, 2], [2, 4]]
    assert transitive_candidates(np.zeros((0, 2), np.int64), chain, 5).shape == (0, 2)


def test_transitive_candidates_are_bounded_per_image_and_ranked_by_shared_neighbours():
    # A hub verified with 30 photos proposes every pair of them: 435 pairs. At most 3 per
    # photo a round, each photo's best by neighbours shared: pairs that also share photo 31.
    hub = [(0, k) for k in range(1, 31)]
    second = [(31, k) for k in (5, 6, 7, 8)]
    verified = np.array(hub + second)
    proposed = transitive_candidates(verified, verified, 32, per_image=3)
    assert len(proposed) <= 3 * 32  # each photo picks its 3 best
    picked = {tuple(p) for p in proposed.tolist()}
    assert {(5, 6), (5, 7), (5, 8), (6, 7), (6, 8), (7, 8)} <= picked  # 2 shared neighbours each
    assert (0, 31) in picked  # the hub and photo 31 share four
    assert not picked & {tuple(v) for v in verified.tolist()} and all(a < b for a, b in picked)
    assert np.array_equal(proposed, transitive_candidates(verified[::-1], verified, 32, per_image=3))


def test_matching_adds_the_pairs_the_verified_view_graph_proposes(tmp_path):
    """The matching stage on 16 views all around the landmark, retrieval giving each photo only
    its 2 most similar: two rounds through verified neighbours verify most of what matching
    every pair verifies, within their bound, and every pair they add was not matched before."""
    from flows.layout import OutputLayout
    from flows.settings import Settings
    from flows.tasks import extract_features, ingest, match_pairs
    from storage.pair_table import read_pairs
    from storage.synthetic_io import write_scene

    write_scene(render_scene(load_package_textures(), n_cameras=16, image_size=(320, 240), supersample=1,
                             arc_deg=360), tmp_path / "scene")
    found = {}
    for name, exhaustive_below, rounds in (("retrieval", 0, 0), ("rounds", 0, 2), ("exhaustive", 100, 2)):
        layout = OutputLayout(tmp_path / name)
        settings = Settings(max_features=1024, retrieval_neighbours=2, exhaustive_below=exhaustive_below,
                            transitive_rounds=rounds)
        ingest.fn(layout, settings, "listing", str(tmp_path / "scene" / "images"))
        extract_features.fn(layout, settings, "listing")
        report = match_pairs.fn(layout, settings, "features")
        pairs = read_pairs(str(layout.pairs), list(range(1, 17)))
        assert report["pairs_verified"] == len(pairs)
        found[name] = report, {(p.index1, p.index2) for p in pairs}
    (alone, by_retrieval), (more, with_rounds) = found["retrieval"], found["rounds"]
    every, by_all = found["exhaustive"]
    assert every["pairs_matched"] == 120 and every["pairs_from_verified_neighbours"] == []  # all pairs: no rounds
    assert alone["pairs_from_verified_neighbours"] == [] and alone["pairs_matched"] <= 2 * 16
    added = more["pairs_from_verified_neighbours"]
    assert 1 <= len(added) <= 2 and all(r["matched"] <= 2 * 16 for r in added)
    assert more["pairs_matched"] == alone["pairs_matched"] + sum(r["matched"] for r in added)
    assert by_retrieval < with_rounds <= by_all
    assert len(with_rounds) >= 0.8 * len(by_all) > len(by_retrieval)
