"""Dark photos (night-time, under-exposed) are stretched before their features are detected;
photos exposed as most are stay exactly as they are."""
import numpy as np
import pycolmap
import pytest

import sfm_core.features
from sfm_core.exposure import MAX_GAIN, MIN_BRIGHTNESS_RANGE, stretch_dark
from sfm_core.features import SiftExtractor
from sfm_core.matching import match_mutual_nearest, normalise_descriptors
from sfm_core.synthetic import night_copy, render_scene
from storage.synthetic_io import load_package_textures


def test_a_well_exposed_photo_is_left_as_it_is():
    rng = np.random.default_rng(0)
    colour = rng.uniform(0.0, 1.0, (60, 80, 3)).astype(np.float32)
    grey = colour.mean(-1)
    assert stretch_dark(colour) is colour and stretch_dark(grey) is grey
    # Just wide enough: still left alone.
    narrow = (0.3 + MIN_BRIGHTNESS_RANGE * 1.02 * rng.uniform(0.0, 1.0, (60, 80))).astype(np.float32)
    assert stretch_dark(narrow) is narrow


def test_a_dark_photo_is_stretched_onto_the_whole_range_in_order():
    rng = np.random.default_rng(1)
    dark = (0.02 + 0.12 * rng.uniform(0.0, 1.0, (60, 80, 3))).astype(np.float32)
    bright = stretch_dark(dark)
    assert bright.dtype == np.float32 and bright.shape == dark.shape
    low, high = np.percentile(bright.mean(-1), (0.5, 99.5))
    assert low < 0.05 and high > 0.95  # (the percentiles are read on every other pixel)
    assert np.corrcoef(dark.ravel(), bright.ravel())[0, 1] > 0.99  # a linear stretch: the order kept
    assert dark.max() < 0.15  # the input is not modified
    # Nearly flat: the gain is bounded, so noise is not blown up to the whole range.
    flat = (0.1 + 0.01 * rng.uniform(0.0, 1.0, (60, 80))).astype(np.float32)
    assert np.ptp(stretch_dark(flat)) <= MAX_GAIN * np.ptp(flat) * 1.001


@pytest.fixture(scope="module")
def two_views():
    """Two rendered views of the landmark 12 degrees apart, (H, W, 3) uint8."""
    scene = render_scene(load_package_textures(), n_cameras=2, image_size=(480, 360), arc_deg=12.0, seed=3)
    return scene.images


def verified_matches(features1, features2) -> int:
    matches = match_mutual_nearest(normalise_descriptors(features1.descriptors),
                                   normalise_descriptors(features2.descriptors))
    if len(matches) < 8:
        return 0
    found = pycolmap.estimate_fundamental_matrix(features1.keypoints[matches[:, 0]].astype(np.float64),
                                                 features2.keypoints[matches[:, 1]].astype(np.float64))
    return int(found["num_inliers"]) if found else 0


def test_night_copies_match_their_day_neighbours_once_stretched(two_views, monkeypatch):
    day, neighbour = two_views
    extract = SiftExtractor(2048)
    other = extract(neighbour, (1.0, 1.0))
    for seed in range(3):
        night = night_copy(day, np.random.default_rng(seed))
        stretched = verified_matches(extract(night, (1.0, 1.0)), other)
        with monkeypatch.context() as patch:
            patch.setattr(sfm_core.features, "stretch_dark", lambda image: image)
            as_it_is = verified_matches(extract(night, (1.0, 1.0)), other)
        assert stretched >= 30 and stretched >= 2 * as_it_is + 10, (seed, stretched, as_it_is)
    # By day the photo is left as it is: its features do not change.
    grey = day.astype(np.float32).mean(-1) / 255
    assert stretch_dark(grey) is grey
