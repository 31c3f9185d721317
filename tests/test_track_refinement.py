"""Fine track refinement: observations re-found from their query frame to sub-pixel precision."""
import numpy as np
import pytest
import skimage.data
import torch
from scipy import ndimage

from sfm_core.track_refinement import CorrelationRefiner, KeypointShape, correlation, peak_offset, refine_tracks
from sfm_core.tracks import Tracks

ANGLE, SCALE, SHIFT = np.radians(20), 1.3, np.array([3.3, -2.7])


def warped_pair():
    """A photo and the same photo turned by 20 degrees, enlarged 1.3 times and shifted:
    target = A (query - c) + c + SHIFT, COLMAP pixel coordinates."""
    image = ndimage.gaussian_filter(skimage.data.astronaut().mean(axis=2).astype(np.float32) / 255, 0.7)
    height, width = image.shape
    warp = SCALE * np.array([[np.cos(ANGLE), -np.sin(ANGLE)], [np.sin(ANGLE), np.cos(ANGLE)]])
    centre = np.array([width / 2, height / 2])
    rows, cols = np.mgrid[0:height, 0:width]
    pixels = np.stack([cols + 0.5, rows + 0.5], axis=-1).reshape(-1, 2)
    source = (pixels - centre - SHIFT) @ np.linalg.inv(warp).T + centre
    target = ndimage.map_coordinates(image, [source[:, 1] - 0.5, source[:, 0] - 0.5], order=3, mode="nearest")
    return image, target.reshape(height, width).astype(np.float32), lambda xy: (xy - centre) @ warp.T + centre + SHIFT


def two_frame_tracks(query_xy: np.ndarray, target_xy: np.ndarray) -> Tracks:
    n = len(query_xy)
    return Tracks(np.zeros((2, n), np.int32), np.stack([query_xy, target_xy]).astype(np.float32),
                  np.ones((2, n), bool), np.ones((2, n), np.float16), np.zeros(n, np.int32))


def test_observations_move_to_their_true_position_across_scale_and_roll():
    query_image, target_image, to_target = warped_pair()
    rng = np.random.default_rng(0)
    query_xy = rng.uniform(150, 360, (300, 2))
    truth = to_target(query_xy)
    coarse = truth + rng.uniform(-2, 2, truth.shape)  # where independent detections would put them
    tracks = two_frame_tracks(query_xy, coarse)
    # SIFT would give the target keypoints a 1.3 times larger scale, turned by +20 degrees.
    shape = KeypointShape(np.stack([np.full(300, 2.0), np.full(300, 2.0 * SCALE)]),
                          np.stack([np.zeros(300), np.full(300, ANGLE)]))
    images = [torch.from_numpy(query_image), torch.from_numpy(target_image)]

    refined = refine_tracks(tracks, images, [(1.0, 1.0), (1.0, 1.0)], shape, CorrelationRefiner())

    before = np.linalg.norm(coarse - truth, axis=1)
    after = np.linalg.norm(refined.xy[1] - truth, axis=1)
    assert np.median(before) > 1.0
    assert np.median(after) < 0.25 and np.mean(after < 0.5) > 0.7
    np.testing.assert_array_equal(refined.xy[0], tracks.xy[0])  # the query frame stays
    assert (refined.confidence[0] == 1).all() and np.median(refined.confidence[1].astype(float)) > 0.9
    # Without the keypoints' scale and orientation, the 20-degree roll defeats the patches.
    flat_shape = KeypointShape(np.full((2, 300), 2.0), np.zeros((2, 300)))
    naive = refine_tracks(tracks, images, [(1.0, 1.0), (1.0, 1.0)], flat_shape, CorrelationRefiner())
    assert np.median(np.linalg.norm(naive.xy[1] - truth, axis=1)) > 1.0


def test_coordinates_scale_between_feature_and_full_resolution():
    query_image, target_image, to_target = warped_pair()
    rng = np.random.default_rng(1)
    query_xy = rng.uniform(150, 360, (100, 2))
    truth = to_target(query_xy)
    coarse = truth + rng.uniform(-1.5, 1.5, truth.shape)
    shape = KeypointShape(np.stack([np.full(100, 4.0), np.full(100, 4.0 * SCALE)]),
                          np.stack([np.zeros(100), np.full(100, ANGLE)]))
    # The same images, but the tracks in coordinates twice as large (features at half size).
    tracks = two_frame_tracks(2 * query_xy, 2 * coarse)
    refined = refine_tracks(tracks, [torch.from_numpy(query_image), torch.from_numpy(target_image)],
                            [(2.0, 2.0), (2.0, 2.0)], shape, CorrelationRefiner())
    assert np.median(np.linalg.norm(refined.xy[1] / 2 - truth, axis=1)) < 0.25


def test_a_flat_patch_has_no_confidence_and_stays():
    flat = torch.full((200, 200), 0.5)
    tracks = two_frame_tracks(np.array([[100.0, 100.0]]), np.array([[101.2, 99.4]]))
    shape = KeypointShape(np.full((2, 1), 2.0), np.zeros((2, 1)))
    refined = refine_tracks(tracks, [flat, flat], [(1.0, 1.0), (1.0, 1.0)], shape, CorrelationRefiner())
    assert float(refined.confidence[1, 0]) == 0.0
    np.testing.assert_array_equal(refined.xy[1], tracks.xy[1])


def test_peak_offset_is_sub_pixel():
    # A paraboloid peaking at (+0.3, -0.2) from the centre of a 7 x 7 map.
    steps = torch.arange(7.0) - 3
    y, x = torch.meshgrid(steps, steps, indexing="ij")
    scores = 1 - (x - 0.3) ** 2 - (y + 0.2) ** 2
    assert peak_offset(scores[None]).tolist()[0] == pytest.approx([0.3, -0.2], abs=1e-5)


def test_correlation_is_one_where_the_patch_sits():
    window = torch.rand(1, 15, 15, generator=torch.Generator().manual_seed(0))
    query = window[:, 3:10, 1:8]  # the 7 x 7 patch 1 px above and 3 px left of the centred one
    scores = correlation(query, window)
    assert scores.shape == (1, 9, 9)
    assert float(scores[0, 3, 1]) == pytest.approx(1.0, abs=1e-5)
    assert int(scores.flatten().argmax()) == 3 * 9 + 1
    # A noise map is no paraboloid around its peak: the sub-pixel step stays within half a pixel.
    assert peak_offset(scores).tolist()[0] == pytest.approx([-3.0, -1.0], abs=0.5)
