"""Query-frame tracks: each query point followed into every verified neighbour, by its matches
or, where the matcher missed it, by correlation on the pair's epipolar geometry."""
import numpy as np
import torch
from scipy import ndimage

from sfm_core.query_tracks import FollowSettings, epipolar_distance, local_affines, query_frame_tracks
from sfm_core.track_refinement import CorrelationRefiner, KeypointShape, refine_tracks
from sfm_core.tracks import tracked_keypoints
from sfm_core.verification import VerifiedPair
from tests.test_track_refinement import warped_pair

SHIFT2 = np.array([6.4, -4.2])


def fundamental_of_warp(warp, epipole=(5000.0, 2000.0)) -> np.ndarray:
    """A fundamental matrix every point pair (x, warp(x)) satisfies: [e]x H, H the warp's
    homography, e any epipole (a planar scene seen twice)."""
    origin, ex, ey = warp(np.array([[0.0, 0.0]]))[0], warp(np.array([[1.0, 0.0]]))[0], warp(np.array([[0.0, 1.0]]))[0]
    homography = np.eye(3)
    homography[:2] = np.c_[ex - origin, ey - origin, origin]
    e = np.array([*epipole, 1.0])
    cross = np.array([[0, -e[2], e[1]], [e[2], 0, -e[0]], [-e[1], e[0], 0]])
    return cross @ homography


def verified(index1, index2, matches, fundamental) -> VerifiedPair:
    matches = np.asarray(matches, np.uint32).reshape(-1, 2)
    return VerifiedPair(index1, index2, len(matches), matches, "UNCALIBRATED", None, None, fundamental)


def scene():
    """Frame 0, frame 1 (frame 0 turned 20 degrees, enlarged 1.3 times) and frame 2 (frame 0
    shifted). 200 points of frame 0: all detected and matched in frame 2; in frame 1 the first
    120 are detected, of which the matcher matched the first 80."""
    image, turned, to_turned = warped_pair()
    shifted = ndimage.shift(image, (SHIFT2[1], SHIFT2[0]), order=3, mode="nearest").astype(np.float32)
    to_shifted = lambda xy: xy + SHIFT2  # noqa: E731
    points = np.random.default_rng(0).uniform(170, 340, (200, 2))
    keypoints = [points.astype(np.float32), to_turned(points[:120]).astype(np.float32),
                 to_shifted(points).astype(np.float32)]
    first80 = np.c_[np.arange(80), np.arange(80)]
    all200 = np.c_[np.arange(200), np.arange(200)]
    pairs = [verified(0, 1, first80, fundamental_of_warp(to_turned)),
             verified(0, 2, all200, fundamental_of_warp(to_shifted))]
    images = [torch.from_numpy(image), torch.from_numpy(turned), torch.from_numpy(shifted)]
    return keypoints, pairs, images, points, to_turned


def test_missed_points_are_followed_to_where_they_are():
    keypoints, pairs, images, points, to_turned = scene()
    tracks = query_frame_tracks(keypoints, pairs, images, [(1.0, 1.0)] * 3)

    # One track per query point of frame 0 (the best connected): the detected but unmatched
    # keypoints of frame 1 do not start second tracks of the same points.
    assert tracks.keypoint_index.shape[1] == 200 and (tracks.query_frame == 0).all()
    order = np.argsort(tracks.keypoint_index[0])
    index, xy, seen = tracks.keypoint_index[:, order], tracks.xy[:, order], tracks.visibility[:, order]
    np.testing.assert_array_equal(index[0], np.arange(200))
    np.testing.assert_array_equal(index[2], np.arange(200))
    np.testing.assert_array_equal(index[1, :80], np.arange(80))  # the matches
    # The other 120 found by correlation, at new keypoint numbers after frame 1's 120 detected ones.
    followed = seen[1, 80:]
    assert followed.mean() > 0.9
    assert (index[1, 80:][followed] >= 120).all()
    error = np.linalg.norm(xy[1, 80:][followed] - to_turned(points[80:][followed]), axis=1)
    assert np.median(error) < 0.2 and error.max() < 1.0
    assert (tracks.confidence[1][tracks.keypoint_index[1] >= 120].astype(float) >= 0.8).all()

    # The geometry stages get the followed points as keypoints of their own.
    moved = tracked_keypoints(keypoints, tracks)
    assert len(moved[1]) == 120 + followed.sum()
    np.testing.assert_allclose(moved[1][index[1, 80:][followed]], xy[1, 80:][followed])


def test_a_point_off_its_epipolar_line_is_not_followed():
    keypoints, pairs, images, points, to_turned = scene()
    # The pair's geometry says frame 1's points lie 10 px lower than they do.
    wrong = fundamental_of_warp(lambda xy: to_turned(xy) + np.array([0.0, 10.0]), epipole=(-3000.0, 200.0))
    pairs[0] = verified(0, 1, pairs[0].inliers, wrong)
    assert np.median(epipolar_distance(wrong, points[:80], keypoints[1][:80])) > 5
    tracks = query_frame_tracks(keypoints, pairs, images, [(1.0, 1.0)] * 3)
    assert (tracks.keypoint_index[1] < 120).all()  # nothing followed into frame 1


def test_without_geometry_nothing_is_followed_and_tracks_are_the_matches():
    keypoints, pairs, images, _, _ = scene()
    pairs = [verified(p.index1, p.index2, p.inliers, None) for p in pairs]  # planar/panoramic pairs: no F
    tracks = query_frame_tracks(keypoints, pairs, images, [(1.0, 1.0)] * 3)
    lengths = tracks.visibility.sum(axis=0)
    assert tracks.keypoint_index.shape[1] == 200
    assert (lengths == 3).sum() == 80 and (lengths == 2).sum() == 120
    assert (tracks.confidence[tracks.visibility].astype(float) == 1).all()


def test_refinement_leaves_followed_points_where_correlation_put_them():
    keypoints, pairs, images, _, _ = scene()
    tracks = query_frame_tracks(keypoints, pairs, images, [(1.0, 1.0)] * 3)
    followed = np.zeros(tracks.visibility.shape, bool)
    followed[1] = tracks.keypoint_index[1] >= 120
    shape = KeypointShape(np.full(tracks.visibility.shape, 2.0), np.zeros(tracks.visibility.shape))
    refined = refine_tracks(tracks, images, [(1.0, 1.0)] * 3, shape, CorrelationRefiner(), settled=followed)
    np.testing.assert_array_equal(refined.xy[followed], tracks.xy[followed])
    np.testing.assert_array_equal(refined.confidence[followed], tracks.confidence[followed])


def test_local_affine_recovers_an_affine_map():
    rng = np.random.default_rng(3)
    source = rng.uniform(0, 100, (50, 2))
    linear, shift = np.array([[1.2, 0.3], [-0.1, 0.9]]), np.array([4.0, -7.0])
    target = source @ linear.T + shift
    query = np.array([[50.0, 50.0], [10.0, 90.0]])
    mapped, fitted, residual = local_affines(source, target, query, neighbours=8)
    np.testing.assert_allclose(mapped, query @ linear.T + shift, atol=1e-3)
    np.testing.assert_allclose(fitted, np.stack([linear, linear]), atol=1e-4)
    assert (residual < 1e-3).all()


def test_no_pairs_give_no_tracks():
    keypoints, _, images, _, _ = scene()
    tracks = query_frame_tracks(keypoints, [], images, [(1.0, 1.0)] * 3, FollowSettings())
    assert tracks.keypoint_index.shape == (3, 0) and tracks.query_frame.shape == (0,)


def test_tracks_reach_the_neighbours_of_neighbours_by_their_matches():
    """Frame 3 is matched to frame 1 only: the query frame's tracks reach it through frame 1
    with two hops, and not with one (its keypoints are then held by the tracks through 1)."""
    keypoints = [np.random.default_rng(f).uniform(0, 100, (10, 2)).astype(np.float32) for f in range(4)]
    images = [torch.zeros(100, 100)] * 4
    same = lambda n: np.c_[np.arange(n), np.arange(n)]  # noqa: E731
    pairs = [verified(0, 1, same(10), None), verified(0, 2, same(10), None), verified(1, 3, same(8), None)]
    reached = query_frame_tracks(keypoints, pairs, images, [(1.0, 1.0)] * 4, FollowSettings(match_hops=2))
    assert (reached.query_frame == 0).all() and reached.keypoint_index.shape[1] == 10
    np.testing.assert_array_equal(np.sort(reached.visibility.sum(axis=0)), [3, 3] + [4] * 8)
    query_point = reached.keypoint_index[0]
    np.testing.assert_array_equal(reached.keypoint_index[3], np.where(query_point < 8, query_point, -1))
    near = query_frame_tracks(keypoints, pairs, images, [(1.0, 1.0)] * 4, FollowSettings(match_hops=1))
    assert (near.visibility.sum(axis=0) == 3).all() and not near.visibility[3].any()
