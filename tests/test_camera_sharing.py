"""Photos of one size without EXIF share a camera only when their verified pairs agree
(shared_cameras="auto"): tested on fundamental matrices estimated from projected points."""
import flows  # noqa: F401  (torch before pycolmap)
import numpy as np
import pycolmap
from two_view_scenes import SIZE, scene_pairs

from sfm_core.calibration import calibrate_focal_lengths
from sfm_core.camera_sharing import MIN_SPREAD, SPLIT_ABOVE
from sfm_core.cameras import cameras_for_images
from sfm_core.verification import VerifiedPair


def calibrate(focals: list[float], pairs: list[VerifiedPair]):
    n = len(focals)
    cameras, camera_of_frame = cameras_for_images([SIZE] * n, [(None, None)] * n, [None] * n, shared="auto")
    assert len(cameras) == 1  # one size, no EXIF: one candidate camera
    result = calibrate_focal_lengths(cameras, camera_of_frame, pairs, list(range(n)),
                                     own_camera_ids=[100 + f for f in range(n)])
    estimated = np.array([result.cameras[result.camera_of_frame[f]].focal_length for f in range(n)])
    return result, np.abs(estimated / np.array(focals) - 1)


def test_one_cameras_photos_keep_their_shared_camera():
    focals = [640.0] * 14
    result, errors = calibrate(focals, scene_pairs(focals))
    [test] = result.sharing_tests
    # Noise alone gives the statistic, an F ratio, values around 1 (0.7-1.95 over 8 seeds), but
    # the freed focal lengths stay where the shared one is.
    assert not test.split and test.statistic < 3 and test.spread < MIN_SPREAD / 4
    assert len(set(result.camera_of_frame)) == 1 and result.cameras[0].camera_id == 1
    assert errors.max() < 0.05


def test_photos_of_one_size_from_many_cameras_get_one_each():
    focals = list(np.random.default_rng(1).uniform(0.7, 1.35, 14) * 640.0)
    result, errors = calibrate(focals, scene_pairs(focals))
    [test] = result.sharing_tests
    assert test.split and test.statistic > 2 * SPLIT_ABOVE and test.spread > 2 * MIN_SPREAD
    # Each photo its own camera, with the id it was given, and its own focal length.
    assert sorted(result.cameras[result.camera_of_frame[f]].camera_id for f in range(14)) == list(range(100, 114))
    assert np.median(errors) < 0.03 and errors.max() < 0.15
    # The same photos forced to share one camera: every focal length is a compromise.
    shared, shared_errors = calibrate_without_test(focals)
    assert np.median(shared_errors) > 3 * np.median(errors)


def calibrate_without_test(focals: list[float]):
    n = len(focals)
    cameras, camera_of_frame = cameras_for_images([SIZE] * n, [(None, None)] * n, [None] * n, shared="size")
    result = calibrate_focal_lengths(cameras, camera_of_frame, scene_pairs(focals), list(range(n)))
    assert result.sharing_tests == []
    return result, np.abs(result.cameras[0].focal_length / np.array(focals) - 1)


def test_too_few_pairs_to_tell_keeps_the_camera_shared():
    focals = [500.0, 700.0, 900.0]
    pairs = scene_pairs(focals)[:2]  # as many unknowns as constraints: no evidence either way
    result, _ = calibrate(focals, pairs)
    [test] = result.sharing_tests
    assert test.statistic is None and not test.split and len(set(result.camera_of_frame)) == 1


def test_a_calibration_that_runs_out_of_the_searched_range_is_not_taken():
    from sfm_core.calibration import _trusted
    from sfm_core.cameras import initial_camera

    searched = initial_camera(7, 640, 480, None)
    searched.focal_length = 650.0

    def calibrated(focal: float, prior: bool = False) -> pycolmap.Camera:
        camera = initial_camera(7, 640, 480, focal if prior else None)
        camera.focal_length = focal
        return camera

    assert _trusted(searched, calibrated(700.0), ()).focal_length == 700.0
    # 12x the long side, from a search that gave about 1x (seen on synth --n 40 --nuisances no-exif).
    assert _trusted(searched, calibrated(7837.0), ()).focal_length == 650.0
    assert _trusted(searched, calibrated(150.0), ()).focal_length == 650.0
    assert _trusted(searched, None, ()).focal_length == 650.0
    # A focal length from EXIF may be long (a telephoto lens); known cameras stay as they are.
    exif = initial_camera(7, 640, 480, 6000.0)
    assert _trusted(exif, calibrated(6100.0, prior=True), ()).focal_length == 6100.0
    assert _trusted(searched, calibrated(700.0), (7,)).focal_length == 650.0
