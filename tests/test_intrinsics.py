"""Known intrinsics (--intrinsics): the photos of their size use them, and they stay fixed."""
import numpy as np
import pycolmap
import pytest

from sfm_core.ba_problems import perturbed_reconstruction
from sfm_core.bundle_adjustment import BundleAdjustmentSettings, CeresBundleAdjuster
from sfm_core.cameras import cameras_for_images, parse_camera_spec, with_known_intrinsics
from sfm_core.theseus_ba import TheseusBundleAdjuster


def test_a_camera_spec_is_parsed_or_refused_with_the_reason():
    camera = parse_camera_spec("PINHOLE 1244 829 686.05 686.51 623.84 411.95")
    assert (camera.model.name, camera.width, camera.height) == ("PINHOLE", 1244, 829)
    np.testing.assert_allclose(camera.params, [686.05, 686.51, 623.84, 411.95])
    assert camera.has_prior_focal_length
    for spec, reason in [("PINHOLE 1244 829 686 686 623", "PINHOLE takes 4 parameters"),
                         ("NOSUCH 10 10 1 2 3", "NOSUCH"), ("PINHOLE 10", "expected MODEL WIDTH HEIGHT PARAMS"),
                         ("PINHOLE ten 10 1 1 5 5", "ten")]:
        with pytest.raises(ValueError, match=reason):
            parse_camera_spec(spec)


def test_photos_of_a_known_size_share_the_known_camera_held_fixed():
    sizes = [(640, 480), (640, 480), (800, 600), (1024, 768)]
    cameras, groups = cameras_for_images(sizes, [("A", "x")] * 4, [None, None, 900.0, None])
    known = with_known_intrinsics(cameras, groups, sizes, [parse_camera_spec("PINHOLE 640 480 500 501 320 240"),
                                                          parse_camera_spec("SIMPLE_PINHOLE 2000 1000 1500 1000 500")])
    assert known.camera_of_frame[0] == known.camera_of_frame[1] != known.camera_of_frame[2]
    assert [c.camera_id for c in known.cameras] == [1, 2, 3]
    first = known.cameras[known.camera_of_frame[0]]
    assert first.model.name == "PINHOLE" and list(first.params) == [500, 501, 320, 240]
    assert known.constant_ids == (first.camera_id,)
    # The others keep what they had: EXIF focal, or the guess.
    assert known.cameras[known.camera_of_frame[2]].focal_length == 900.0
    assert not known.cameras[known.camera_of_frame[3]].has_prior_focal_length


@pytest.mark.parametrize("adjuster", [CeresBundleAdjuster(), TheseusBundleAdjuster()], ids=["ceres", "theseus"])
def test_known_intrinsics_stay_fixed_in_bundle_adjustment(adjuster):
    rec = perturbed_reconstruction(8, 800)  # every focal length 2 % too long
    before = {camera_id: np.array(camera.params) for camera_id, camera in rec.cameras.items()}

    adjuster.adjust(rec, BundleAdjustmentSettings(constant_cameras=(1, 2)))

    for camera_id in (1, 2):
        np.testing.assert_array_equal(rec.cameras[camera_id].params, before[camera_id])
    # The free ones move back towards the truth (1000 px).
    assert all(abs(rec.cameras[c].focal_length - 1000) < abs(before[c][0] - 1000) for c in range(3, 9))


@pytest.mark.slow
def test_the_flow_keeps_known_intrinsics(tmp_path, prefect_api):
    from flows.reconstruct import reconstruct
    from local_prefect import write_small_scene

    images = write_small_scene(tmp_path / "scene")  # 8 photos of 320 x 240, 58 degrees wide, and a text file
    truth = pycolmap.Reconstruction(str(tmp_path / "scene" / "gt"))
    spec = "PINHOLE 320 240 " + " ".join(str(p) for p in truth.cameras[1].params)
    report = reconstruct(str(images), str(tmp_path / "out"), intrinsics=[spec])

    model = pycolmap.Reconstruction(str(tmp_path / "out" / "sparse" / "0"))
    assert report["totals"]["registered"] == 8 and list(report["settings"]["intrinsics"]) == [spec]
    assert report["totals"]["focal_sources"] == {"exif": 0, "exif_rejected": 0, "calibrated": 0, "known": 8}
    assert [(c.model.name, list(c.params)) for c in model.cameras.values()] == [("PINHOLE", list(truth.cameras[1].params))]


def test_photos_share_a_camera_only_when_their_exif_names_the_same_one():
    from flows.settings import Settings
    from sfm_core.cameras import camera_groups

    sizes = [(640, 480)] * 3 + [(800, 600)] * 3
    exif = [("A", "x"), ("A", "x"), ("B", "y"), (None, None), (None, None), ("A", "x")]
    focals = [500.0, 500.0, 500.0, None, None, 500.0]
    # One size is no evidence of one camera: without an EXIF focal each photo calibrates its own.
    assert camera_groups(sizes, exif, focals, "exif") == [0, 0, 1, 2, 3, 4]
    # "size" (the frames of one video): photos of one size without EXIF share; "auto", the
    # default, starts from the same grouping, which the cameras stage then tests.
    assert camera_groups(sizes, exif, focals) == camera_groups(sizes, exif, focals, "size") == [0, 0, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="unknown shared_cameras 'all'"):
        camera_groups(sizes, exif, focals, "all")
    with pytest.raises(ValueError, match="choose one of auto, size, exif"):
        Settings(shared_cameras="video")


@pytest.mark.parametrize("adjuster", [CeresBundleAdjuster(), TheseusBundleAdjuster()], ids=["ceres", "theseus"])
def test_principal_points_are_refined_only_when_asked(adjuster):
    """Held for all photos but those cropped after the shot (their EXIF contradicted)."""
    def off_centre():
        rec = perturbed_reconstruction(8, 800)
        for camera in rec.cameras.values():  # the truth is the centre (800, 600)
            camera.principal_point_x += 12.0
            camera.principal_point_y -= 9.0
        return rec

    held = off_centre()
    held_error = adjuster.adjust(held, BundleAdjustmentSettings())
    assert all((c.principal_point_x, c.principal_point_y) == (812.0, 591.0) for c in held.cameras.values())

    freed = off_centre()
    freed_error = adjuster.adjust(freed, BundleAdjustmentSettings(refine_principal_point=True, constant_cameras=(1,)))
    assert (freed.cameras[1].principal_point_x, freed.cameras[1].principal_point_y) == (812.0, 591.0)  # known
    assert all(abs(freed.cameras[c].principal_point_x - 812.0) > 0.1 for c in range(2, 9))
    # The freed principal points explain the observations better (where they end is loosely
    # tied: a shift of the principal point is nearly a turn of the camera).
    assert freed_error < held_error
