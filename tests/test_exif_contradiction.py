"""EXIF focal lengths are a prior, checked against the view graph before they are trusted:
photos cropped after the shot read short, and their pairs say so."""
import flows  # noqa: F401  (torch before pycolmap)
import numpy as np
import pycolmap
import pytest
from two_view_scenes import SIZE, scene_pairs

from sfm_core.calibration import calibrate_focal_lengths
from sfm_core.cameras import cameras_for_images
from sfm_core.exif_contradiction import CONTRADICTED_ABOVE, MIN_DEPARTURE


def calibrate(exif_focals: list[float], pairs, constant_ids=()):
    """Each photo its own camera with an EXIF focal length (ids 1..n, one EXIF focal each)."""
    n = len(exif_focals)
    cameras, camera_of_frame = cameras_for_images([SIZE] * n, [("maker", f"model {k}") for k in range(n)],
                                                  exif_focals, shared="exif")
    assert len(cameras) == n and all(c.has_prior_focal_length for c in cameras)
    return calibrate_focal_lengths(cameras, camera_of_frame, pairs, list(range(n)), constant_ids)


def focal_lengths(result) -> np.ndarray:
    return np.array([result.cameras[result.camera_of_frame[f]].focal_length
                     for f in range(len(result.camera_of_frame))])


def test_right_exif_is_kept():
    focals = list(np.random.default_rng(2).uniform(0.7, 1.35, 14) * 640.0)
    result = calibrate(focals, scene_pairs(focals))
    test = result.exif_test
    assert test.cameras == 14 and not test.contradicted and test.rejected == {}
    assert test.departure < MIN_DEPARTURE / 2
    assert all(c.has_prior_focal_length for c in result.cameras)
    assert np.abs(focal_lengths(result) / focals - 1).max() < 0.05


def test_exif_of_cropped_photos_is_rejected_for_the_view_graphs_focal_lengths():
    rng = np.random.default_rng(3)
    focals = list(rng.uniform(0.7, 1.35, 14) * 640.0)
    # Crops of 0.56-0.95 of the frame keep its EXIF: the EXIF focal length reads that short.
    exif = list(np.array(focals) * rng.uniform(0.56, 0.95, 14))
    result = calibrate(exif, scene_pairs(focals))
    test = result.exif_test
    assert test.contradicted and test.statistic > 2 * CONTRADICTED_ABOVE and test.departure > 2 * MIN_DEPARTURE
    # Every EXIF is dropped; the view graph's calibration finds the focal lengths.
    assert test.rejected == {k + 1: exif[k] for k in range(14)}
    exif_errors = np.abs(np.array(exif) / focals - 1)
    errors = np.abs(focal_lengths(result) / focals - 1)
    assert np.median(exif_errors) > 0.15 and np.median(errors) < 0.02 and errors.max() < 0.05


def test_known_cameras_and_too_few_pairs_are_not_judged():
    focals = [500.0, 700.0, 900.0]
    short = [0.6 * f for f in focals]
    # Known intrinsics (constant): nothing to test.
    result = calibrate(short, scene_pairs(focals), constant_ids=(1, 2, 3))
    assert result.exif_test is None and [c.focal_length for c in result.cameras] == short
    # Two pairs for three focal lengths: no evidence either way, the EXIF stays.
    result = calibrate(short, scene_pairs(focals)[:2])
    assert result.exif_test.statistic is None and not result.exif_test.contradicted
    assert all(c.has_prior_focal_length for c in result.cameras)


@pytest.mark.slow
def test_the_flow_rejects_the_exif_of_cropped_photos(tmp_path, prefect_api):
    """30 synthetic photos cropped after the shot, each keeping its frame's EXIF (synth
    --nuisances crops): the report says their EXIF was contradicted, and the model's focal
    lengths come from the view graph and the adjustment, not from EXIF."""
    from flows.reconstruct import reconstruct
    from flows.synth import make_collection
    from storage.manifest import read_manifest

    make_collection(str(tmp_path / "crops"), 30, seed=4, nuisances=("crops",))
    report = reconstruct(str(tmp_path / "crops" / "images"), str(tmp_path / "out"))

    [chunk] = report["stages"]["cameras"]["chunks"]
    rejected = chunk["exif_rejected"]
    assert report["totals"]["focal_sources"]["exif_rejected"] == len(rejected) >= 25
    assert all(why.startswith("contradicted by the view graph: EXIF ") for why in rejected.values())
    # The manifest gives the rejection and its reason, and keeps what ingest read beside it.
    manifest = {r.name: r for r in read_manifest(str(tmp_path / "out" / "manifest.parquet"))}
    assert all(manifest[name].focal_source == f"exif_rejected: {why}" for name, why in rejected.items())
    assert all(manifest[name].ingest_focal_source == "exif" for name in rejected)
    # The verdict does not hold a rejected EXIF focal length against the model: no camera started from it.
    assert not any("with an EXIF focal length left it" in reason for reason in report["verdict"]["reasons"])

    model = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse" / "0"))
    truth = pycolmap.Reconstruction(str(tmp_path / "crops" / "gt"))
    true_focal = {image.name: truth.camera(image.camera_id).params[0] for image in truth.images.values()}
    names = [image.name for image in model.images.values() if image.has_pose and image.name in rejected]
    exif_errors = [abs(manifest[name].focal_length_px / true_focal[name] - 1) for name in names]
    errors = [abs(model.camera(model.find_image_with_name(name).camera_id).focal_length / true_focal[name] - 1)
              for name in names]
    assert np.median(exif_errors) > 0.15 and np.median(errors) < 0.05
    # Their principal points were refined: a crop moves it off the centre.
    offsets = [abs(camera.principal_point_x - camera.width / 2) for camera in model.cameras.values()]
    assert np.median(offsets) > 1.0
