"""Descriptor matching (mutual nearest neighbours + ratio test) and track building."""
import numpy as np
import pytest
import torch

import sfm_core.matching
from sfm_core.matching import match_mutual_nearest, normalise_descriptors, rounded_similarity
from sfm_core.tracks import build_tracks, track_support, track_xy, tracks_from_pairs
from sfm_core.verification import VerifiedPair


def unit_rows(array) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.as_tensor(np.asarray(array, np.float32)), dim=1)


def as_set(matches: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in matches}


# ---------------------------------------------------------------- matching

def test_recovers_a_permutation_among_distractors():
    rng = np.random.default_rng(0)
    n, extra = 300, 100
    desc1 = rng.standard_normal((n, 128))
    desc1 /= np.linalg.norm(desc1, axis=1, keepdims=True)
    perm = rng.permutation(n)
    # Row j of desc2 is row perm[j] of desc1 with noise of norm ~0.25 (random unit vectors
    # in 128-D lie ~sqrt(2) apart), followed by unrelated distractor rows.
    noisy = desc1[perm] + 0.25 / np.sqrt(128) * rng.standard_normal((n, 128))
    desc2 = np.concatenate([noisy, rng.standard_normal((extra, 128))])

    matches = match_mutual_nearest(unit_rows(desc1), unit_rows(desc2))

    assert matches.dtype == np.uint32 and matches.ndim == 2 and matches.shape[1] == 2
    expected = {(int(perm[j]), j) for j in range(n)}  # desc1 row perm[j] <-> desc2 row j
    assert as_set(matches) == expected
    assert len(matches) == n  # no duplicates


def test_similarity_without_bfloat16_instructions_is_the_bfloat16_product(monkeypatch):
    # What a CPU without bfloat16 instructions computes (a float32 product, rounded) against
    # torch's own bfloat16 product of the same rows: the shortlist, hence the matches, must
    # not depend on the CPU.
    rng = np.random.default_rng(1)
    desc1 = normalise_descriptors(rng.integers(0, 256, (700, 128)).astype(np.uint8)).to(torch.bfloat16)
    desc2 = normalise_descriptors(rng.integers(0, 256, (500, 128)).astype(np.uint8)).to(torch.bfloat16)
    monkeypatch.setattr(sfm_core.matching, "has_fast_bfloat16", lambda device: False)
    emulated = rounded_similarity(desc1, desc2)
    assert emulated.dtype == torch.bfloat16 and emulated.shape == (700, 500)
    product = desc1 @ desc2.T
    differ = emulated != product
    assert differ.float().mean() < 1e-4  # float32 sums in another order round differently, rarely
    ulp = torch.finfo(torch.bfloat16).eps * product.float().abs().clamp(min=2 ** -126)
    assert ((emulated.float() - product.float()).abs() <= ulp).all()


def test_uint8_descriptors_through_normalise_descriptors():
    rng = np.random.default_rng(1)
    n = 200
    # Sparse, SIFT-like uint8 histograms.
    raw = rng.integers(0, 256, (n, 128)) * (rng.random((n, 128)) < 0.3)
    perm = rng.permutation(n)
    jittered = np.clip(raw[perm] + rng.integers(-4, 5, (n, 128)), 0, 255)
    desc1 = normalise_descriptors(raw.astype(np.uint8))
    desc2 = normalise_descriptors(jittered.astype(np.uint8))

    assert desc1.dtype == torch.float32 and desc1.shape == (n, 128)
    assert torch.allclose(desc1.norm(dim=1), torch.ones(n), atol=1e-5)
    matches = match_mutual_nearest(desc1, desc2)
    assert as_set(matches) == {(int(perm[j]), j) for j in range(n)}


def test_duplicated_descriptor_fails_the_ratio_test():
    rng = np.random.default_rng(2)
    n = 50
    desc1 = rng.standard_normal((n, 128))
    desc1 /= np.linalg.norm(desc1, axis=1, keepdims=True)
    desc2 = desc1 + 0.1 / np.sqrt(128) * rng.standard_normal((n, 128))
    ambiguous = 7
    # A second, almost identical copy of row 7: two equally good candidates.
    twin = desc1[ambiguous] + 0.1 / np.sqrt(128) * rng.standard_normal(128)
    desc2 = np.concatenate([desc2, twin[None]])

    matches = match_mutual_nearest(unit_rows(desc1), unit_rows(desc2))

    assert ambiguous not in matches[:, 0]
    assert as_set(matches) == {(i, i) for i in range(n) if i != ambiguous}


def test_ratio_is_on_euclidean_distances():
    # Query e0 has its nearest candidate at angle a1 and the second at angle a2 (chosen so
    # the Euclidean distance ratio 2 sin(a1/2) / 2 sin(a2/2) is exactly 0.7).
    a2 = np.radians(80.0)
    d2 = 2 * np.sin(a2 / 2)
    a1 = 2 * np.arcsin(0.7 * d2 / 2)
    e = np.eye(8)
    desc1 = np.stack([e[0], e[3]])
    desc2 = np.stack([np.cos(a1) * e[0] + np.sin(a1) * e[1],
                      np.cos(a2) * e[0] + np.sin(a2) * e[2],
                      e[3]])
    loose = match_mutual_nearest(unit_rows(desc1), unit_rows(desc2), ratio=0.8)
    strict = match_mutual_nearest(unit_rows(desc1), unit_rows(desc2), ratio=0.6)
    assert as_set(loose) == {(0, 0), (1, 2)}
    assert as_set(strict) == {(1, 2)}
    # A ratio on similarities (cos a2 / cos a1) or on squared distances would be below 0.6
    # here and accept the strict case too: the angles tell those variants apart.
    assert np.cos(a2) / np.cos(a1) < 0.6 and 0.7 ** 2 < 0.6


def test_non_mutual_nearest_is_rejected():
    e = np.eye(8)
    # Both desc1 rows are nearest to desc2 row 0, which prefers desc1 row 0.
    desc1 = np.stack([e[0], 0.8 * e[0] + 0.6 * e[1]])
    desc2 = np.stack([e[0], e[4], e[5]])
    matches = match_mutual_nearest(unit_rows(desc1), unit_rows(desc2))
    assert as_set(matches) == {(0, 0)}


def brute_force_matches(desc1: np.ndarray, desc2: np.ndarray, ratio: float) -> set[tuple[int, int]]:
    """Mutual nearest neighbours with the ratio test, from full float64 distance matrices."""
    distance = np.sqrt(np.clip(2 - 2 * desc1 @ desc2.T, 0, None))
    order = np.argsort(distance, axis=1)
    nearest12, second = order[:, 0], order[:, 1]
    nearest21 = distance.argmin(axis=0)
    rows = np.arange(len(desc1))
    keep = (distance[rows, nearest12] < ratio * distance[rows, second]) & (nearest21[nearest12] == rows)
    return {(int(i), int(nearest12[i])) for i in rows[keep]}


@pytest.mark.parametrize("native_bfloat16", [True, False])
def test_same_matches_as_a_brute_force_search(native_bfloat16, monkeypatch):
    # Both ways to the bfloat16 shortlist: a bfloat16 product, and a float32 one rounded.
    monkeypatch.setattr(sfm_core.matching, "has_fast_bfloat16", lambda device: native_bfloat16)
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 256, (1500, 128)) * (rng.random((1500, 128)) < 0.3)
    shared = raw[:600] + rng.integers(-150, 151, (600, 128))  # 600 seen again with noise, 900 unrelated
    other = np.concatenate([shared, rng.integers(0, 256, (700, 128)) * (rng.random((700, 128)) < 0.3)])
    desc1 = normalise_descriptors(np.clip(raw, 0, 255).astype(np.uint8))
    desc2 = normalise_descriptors(np.clip(other, 0, 255).astype(np.uint8))
    expected = brute_force_matches(desc1.double().numpy(), desc2.double().numpy(), 0.8)
    assert 300 < len(expected) < 600  # the noise leaves some ambiguous: the test has both kinds
    assert as_set(match_mutual_nearest(desc1, desc2, 0.8)) == expected


@pytest.mark.parametrize("rows1, rows2", [(0, 5), (5, 0), (0, 0), (1, 5), (5, 1), (1, 1)])
def test_too_few_rows_give_no_matches(rows1, rows2):
    rng = np.random.default_rng(3)
    desc1 = unit_rows(rng.standard_normal((rows1, 16)))
    desc2 = unit_rows(rng.standard_normal((rows2, 16)))
    matches = match_mutual_nearest(desc1, desc2)
    assert matches.shape == (0, 2) and matches.dtype == np.uint32


# ---------------------------------------------------------------- tracks

def pair(index1: int, index2: int, inliers) -> VerifiedPair:
    inliers = np.asarray(inliers, np.uint32).reshape(-1, 2)
    return VerifiedPair(index1, index2, len(inliers), inliers, "CALIBRATED", None, None, None)


def columns(keypoint_index: np.ndarray) -> set[tuple[int, ...]]:
    """Tracks as a set of per-frame keypoint tuples (track order is not specified)."""
    return {tuple(int(k) for k in column) for column in keypoint_index.T}


def test_chain_joins_into_one_track():
    pairs = [pair(0, 1, [(0, 1), (2, 3)]), pair(1, 2, [(1, 4)])]
    keypoint_index = build_tracks([5, 5, 5], pairs)
    assert keypoint_index.dtype == np.int32 and keypoint_index.shape == (3, 2)
    assert columns(keypoint_index) == {(0, 1, 4), (2, 3, -1)}


def test_pair_order_is_respected():
    # Pair (2, 0): inliers[:, 0] index frame 2, inliers[:, 1] frame 0.
    pairs = [pair(2, 0, [(3, 1)]), pair(0, 1, [(1, 2)])]
    keypoint_index = build_tracks([2, 3, 4], pairs)
    assert columns(keypoint_index) == {(1, 2, 3)}


def test_ambiguous_frame_is_dropped_rest_of_track_kept():
    # Keypoint 0 of frames 0 and 1 both match keypoints 0 and 1 of frame 2.
    pairs = [pair(0, 1, [(0, 0)]), pair(1, 2, [(0, 0)]), pair(0, 2, [(0, 1)]),
             pair(0, 1, [(3, 3)])]  # an unrelated clean track
    keypoint_index = build_tracks([4, 4, 4], pairs)
    assert columns(keypoint_index) == {(0, 0, -1), (3, 3, -1)}


def test_track_too_short_after_dropping_ambiguous_frame_disappears():
    pairs = [pair(0, 1, [(0, 0), (0, 1)]), pair(0, 1, [(2, 2)])]
    keypoint_index = build_tracks([3, 3], pairs)
    assert columns(keypoint_index) == {(2, 2)}


def test_min_length():
    pairs = [pair(0, 1, [(0, 0), (1, 1)]), pair(1, 2, [(0, 0)])]
    assert columns(build_tracks([2, 2, 2], pairs, min_length=2)) == {(0, 0, 0), (1, 1, -1)}
    assert columns(build_tracks([2, 2, 2], pairs, min_length=3)) == {(0, 0, 0)}
    assert build_tracks([2, 2, 2], pairs, min_length=4).shape == (3, 0)


def test_no_pairs_give_no_tracks():
    keypoint_index = build_tracks([3, 4, 5], [])
    assert keypoint_index.shape == (3, 0) and keypoint_index.dtype == np.int32


def test_tracks_of_random_scene_match_the_points():
    """Points seen by random subsets of frames, every pair of frames matched exactly."""
    rng = np.random.default_rng(4)
    num_frames, num_points = 6, 80
    seen = rng.random((num_frames, num_points)) < 0.5
    # Keypoints of a frame: its visible points in random order plus unmatched clutter.
    keypoint_of = np.full((num_frames, num_points), -1)
    num_keypoints = []
    for f in range(num_frames):
        points = np.nonzero(seen[f])[0]
        clutter = 10
        slots = rng.permutation(len(points) + clutter)[:len(points)]
        keypoint_of[f, points] = slots
        num_keypoints.append(len(points) + clutter)
    pairs = []
    for i in range(num_frames):
        for j in range(i + 1, num_frames):
            common = np.nonzero(seen[i] & seen[j])[0]
            pairs.append(pair(i, j, np.stack([keypoint_of[i, common], keypoint_of[j, common]], 1)))

    keypoint_index = build_tracks(num_keypoints, pairs)

    expected = {tuple(int(k) for k in keypoint_of[:, p]) for p in range(num_points) if seen[:, p].sum() >= 2}
    assert keypoint_index.shape == (num_frames, len(expected))
    assert columns(keypoint_index) == expected


def test_track_xy():
    keypoints = [np.array([[1.5, 2.5], [3.0, 4.0]], np.float32),
                 np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]], np.float32)]
    keypoint_index = np.array([[1, -1, 0],
                               [2, 0, -1]], np.int32)
    xy, visible = track_xy(keypoint_index, keypoints)
    assert xy.shape == (2, 3, 2) and xy.dtype == np.float32
    assert visible.tolist() == [[True, False, True], [True, True, False]]
    np.testing.assert_array_equal(xy[0, 0], [3.0, 4.0])
    np.testing.assert_array_equal(xy[0, 2], [1.5, 2.5])
    np.testing.assert_array_equal(xy[1, 0], [50.0, 60.0])
    np.testing.assert_array_equal(xy[1, 1], [10.0, 20.0])
    assert np.isnan(xy[0, 1]).all() and np.isnan(xy[1, 2]).all()
    assert not np.isnan(xy[visible]).any()


def test_sift_keeps_at_most_max_features_largest_first():
    from sfm_core.features import SiftExtractor

    rng = np.random.default_rng(0)
    # Smoothed noise: thousands of blobs at every scale.
    image = rng.random((300, 400)).repeat(2, 0).repeat(2, 1)
    rgb = (np.stack([image] * 3, axis=2) * 255).astype(np.uint8)
    extractor = SiftExtractor(100_000)
    everything = extractor(rgb, (1.0, 1.0))
    extractor.max_features = 500  # same detector, only our cut differs
    limited = extractor(rgb, (1.0, 1.0))
    assert len(everything.keypoints) > 500 and len(limited.keypoints) == 500
    assert limited.descriptors.shape == (500, 128)
    # The kept ones are the 500 largest scales, with their own descriptors.
    assert np.isclose(limited.scales.min(), np.sort(everything.scales)[-500], rtol=1e-6)
    index = {tuple(k): i for i, k in enumerate(everything.keypoints)}
    rows = [index[tuple(k)] for k in limited.keypoints]
    np.testing.assert_array_equal(limited.descriptors, everything.descriptors[rows])
    np.testing.assert_array_equal(limited.orientations, everything.orientations[rows])
    assert len(SiftExtractor(500)(rgb, (1.0, 1.0)).keypoints) <= 500


def test_sift_orientation_turns_with_the_image():
    """The convention track refinement relies on: turning the picture by -90 degrees in image
    axes (x right, y down; np.rot90, counter-clockwise on screen) turns every keypoint's
    orientation by -90 degrees."""
    import skimage.data
    from sfm_core.features import SiftExtractor

    rgb = skimage.data.astronaut()
    extractor = SiftExtractor(1000)
    upright, turned = extractor(rgb, (1.0, 1.0)), extractor(np.ascontiguousarray(np.rot90(rgb)), (1.0, 1.0))
    matches = match_mutual_nearest(normalise_descriptors(upright.descriptors), normalise_descriptors(turned.descriptors))
    assert len(matches) > 200
    change = turned.orientations[matches[:, 1]] - upright.orientations[matches[:, 0]]
    change = np.degrees(np.angle(np.exp(1j * change)))
    assert np.median(np.abs(change + 90)) < 2


def test_support_of_a_chain_and_a_clique():
    # Track A: a chain 0-1-2 (frame 1 matched to both others); track B: a clique over 0, 1, 2.
    pairs = [pair(0, 1, [(0, 0), (1, 1)]), pair(1, 2, [(0, 0), (1, 1)]), pair(0, 2, [(1, 1)])]
    keypoint_index = build_tracks([2, 2, 2], pairs)
    confidence, query_frame = track_support(keypoint_index, [2, 2, 2], pairs)
    assert confidence.dtype == np.float16 and query_frame.dtype == np.int32
    chain = int(np.nonzero(keypoint_index[0] == 0)[0][0])
    clique = 1 - chain
    np.testing.assert_allclose(confidence[:, chain], [0.5, 1.0, 0.5])
    assert query_frame[chain] == 1
    np.testing.assert_allclose(confidence[:, clique], [1.0, 1.0, 1.0])
    assert query_frame[clique] == 0  # ties go to the first frame


def test_tracks_from_pairs_is_consistent():
    keypoints = [np.arange(8, dtype=np.float32).reshape(4, 2) + 10 * f for f in range(3)]
    pairs = [pair(0, 1, [(0, 1), (2, 3)]), pair(1, 2, [(1, 2)])]
    tracks = tracks_from_pairs(keypoints, pairs)
    assert tracks.keypoint_index.shape == (3, 2) and tracks.xy.shape == (3, 2, 2)
    np.testing.assert_array_equal(tracks.visibility, tracks.keypoint_index >= 0)
    assert np.all(tracks.confidence[~tracks.visibility] == 0)
    assert np.all(tracks.confidence[tracks.visibility] > 0)
    assert np.all(tracks.visibility[tracks.query_frame, np.arange(2)])  # a query frame sees its track
