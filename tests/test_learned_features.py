"""Learned features (ALIKED + LightGlue, XFeat + LighterGlue): geometric matches on overlapping
photos and few on unrelated ones, their pixel convention, no downloads, the store's groups per
kind, and the flow end to end with --features xfeat."""
import json
import socket
import urllib.request

import numpy as np
import pycolmap
import pytest
import torch
from PIL import Image

from flows.layout import OutputLayout
from flows.settings import Settings
from flows.tasks import extract_features, ingest
from sfm_core.learned_features import empty_features, make_extractor
from sfm_core.learned_matching import LightGlueMatcher, make_matcher
from sfm_core.synthetic import render_distractor, render_scene
from sfm_core.verification import verification_options, verify_pair
from storage.feature_store import FeatureStore
from storage.images import load_image
from storage.synthetic_io import load_package_textures, write_scene
from conftest import shared_set

LEARNED = ("aliked", "xfeat")
MIN_INLIERS = Settings().min_inliers  # what the pipeline asks of a verified pair
SIZE = (480, 360)


@pytest.fixture(scope="module")
def views():
    """Two overlapping views of the rendered landmark (20 degrees apart) and their exact cameras."""
    return render_scene(load_package_textures(), n_cameras=2, image_size=SIZE, arc_deg=20, supersample=1)


@pytest.fixture(scope="module")
def models():
    """Each learned kind's extractor and matcher, built once (ALIKED takes seconds)."""
    return {kind: (make_extractor(kind, 2048), make_matcher(kind)) for kind in LEARNED}


def match(kind, models, rgb1, rgb2, scale1=(1.0, 1.0), scale2=(1.0, 1.0)):
    extractor, matcher = models[kind]
    f1, f2 = extractor(rgb1, scale1), extractor(rgb2, scale2)
    return f1, f2, matcher(matcher.prepare(f1), matcher.prepare(f2))


def verified_inliers(f1, f2, matches) -> int:
    """Inliers of the pair as the pipeline verifies it (sfm_core.verification, pycolmap's
    RANSAC two-view geometry, at least MIN_INLIERS), 0 where it turns the pair away."""
    cameras = [pycolmap.Camera.create_from_model_name(1, "SIMPLE_RADIAL", 1.2 * max(w, h), w, h)
               for w, h in (np.multiply(f.image_size, f.scale_xy).round().astype(int) for f in (f1, f2))]
    pair = verify_pair(0, 1, f1.keypoints, f2.keypoints, matches, *cameras, verification_options(MIN_INLIERS))
    return 0 if pair is None else len(pair.inliers)


def epipolar_distance(scene, x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """Distance (px) of each x2 from the epipolar line of its x1, under the exact cameras."""
    def calibration(intrinsics):
        fx, fy, cx, cy = intrinsics[:4]
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    (r1, t1), (r2, t2) = scene.cam_from_world
    rotation = r2 @ r1.T
    t = t2 - rotation @ t1
    cross = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    fundamental = np.linalg.inv(calibration(scene.intrinsics[1])).T @ cross @ rotation \
        @ np.linalg.inv(calibration(scene.intrinsics[0]))
    lines = np.c_[x1, np.ones(len(x1))] @ fundamental.T
    return np.abs((lines * np.c_[x2, np.ones(len(x2))]).sum(1)) / np.linalg.norm(lines[:, :2], axis=1)


# ---------------------------------------------------------------- rendered photos

@pytest.mark.parametrize("kind", LEARNED)
def test_matches_of_overlapping_views_obey_the_exact_geometry(kind, models, views):
    f1, f2, matches = match(kind, models, views.images[0], views.images[1])
    assert matches.dtype == np.uint32 and matches.shape[1] == 2
    assert f1.descriptors.dtype == np.float32 and f1.descriptors.shape[1] == {"aliked": 128, "xfeat": 64}[kind]
    assert len(matches) >= 150
    distance = epipolar_distance(views, f1.keypoints[matches[:, 0]], f2.keypoints[matches[:, 1]])
    assert np.mean(distance < 2.0) >= 0.8
    assert verified_inliers(f1, f2, matches) >= 0.8 * len(matches)


@pytest.mark.parametrize("kind", LEARNED)
def test_unrelated_photos_get_few_matches(kind, models, views):
    """Against photos of nothing in the scene (coloured noise under discs and bars), a few
    percent of the overlapping pair's matches. They are not always turned away by
    verification: the rendered ground and the noise are alike, and LighterGlue's chance
    matches there follow one shift (seeds 1-8 against both views: XFeat + LighterGlue had
    6 of 16 pairs verified, ALIKED + LightGlue 1); real unrelated photos are tested below."""
    overlapping = len(match(kind, models, views.images[0], views.images[1])[2])
    for seed in range(1, 5):
        assert len(match(kind, models, views.images[0], render_distractor(SIZE, seed))[2]) < 0.1 * overlapping


@pytest.mark.parametrize("kind", LEARNED)
def test_keypoints_are_in_full_resolution_colmap_coordinates(kind, models, views):
    """The same view extracted at full size and at half size (scale_xy 2) gives matched
    keypoints at the same full-resolution positions: a half-pixel slip in either
    convention would move them by 0.5 px on average."""
    image = views.images[0]
    half = np.asarray(Image.fromarray(image).reduce(2))  # 2 x 2 box average: pixel centres at 2 (i + 0.5)
    f1, f2, matches = match(kind, models, image, half, scale2=(2.0, 2.0))
    assert f2.image_size == (SIZE[0] // 2, SIZE[1] // 2) and f2.scale_xy == (2.0, 2.0)
    np.testing.assert_allclose(f2.processing_keypoints(), f2.keypoints / 2 - 0.5, rtol=1e-6)
    offset = f2.keypoints[matches[:, 1]] - f1.keypoints[matches[:, 0]]
    close = np.linalg.norm(offset, axis=1) < 3
    assert close.sum() >= 100
    assert np.all(np.abs(np.median(offset[close], axis=0)) < 0.35)


def test_learned_keypoints_have_a_fixed_scale_and_no_orientation(models, views):
    for kind in LEARNED:
        features = models[kind][0](views.images[0], (1.5, 1.5))
        assert np.all(features.orientations == 0)
        assert np.all(features.scales == features.scales[0]) and features.scales[0] > 1.5
        empty = empty_features(kind)
        assert empty.descriptors.shape == (0, features.descriptors.shape[1])
        assert empty.descriptors.dtype == features.descriptors.dtype


# ---------------------------------------------------------------- real photos

@pytest.mark.parametrize("kind", LEARNED)
def test_real_photos_overlapping_and_unrelated(kind, models):
    cake, kitchen = shared_set("cake") / "images", shared_set("kitchen") / "images"
    load = lambda path: load_image(str(path), 640)  # noqa: E731
    first, second, unrelated = load(cake / "frame000096.jpg"), load(cake / "frame000112.jpg"), load(kitchen / "05.png")
    f1, f2, matches = match(kind, models, first.pixels, second.pixels, first.scale_xy, second.scale_xy)
    assert verified_inliers(f1, f2, matches) >= 100
    f1, f3, matches = match(kind, models, first.pixels, unrelated.pixels, first.scale_xy, unrelated.scale_xy)
    assert verified_inliers(f1, f3, matches) < MIN_INLIERS


# ---------------------------------------------------------------- no downloads

@pytest.mark.parametrize("features", ["superpoint", "sift"])
def test_lightglue_weights_that_are_not_shipped_are_refused(features, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_network)
    with pytest.raises(ValueError, match=f"weights for '{features}' are not shipped.*aliked"):
        LightGlueMatcher(features)


def test_models_load_without_network_access(monkeypatch, views):
    for target, name in [(torch.hub, "load_state_dict_from_url"), (torch.hub, "download_url_to_file"),
                         (urllib.request, "urlopen"), (socket, "create_connection"),
                         (socket.socket, "connect")]:
        monkeypatch.setattr(target, name, _refuse_network)
    for kind in LEARNED:
        extractor, matcher = make_extractor(kind, 256), make_matcher(kind)
        features = extractor(views.images[0], (1.0, 1.0))
        assert len(matcher(matcher.prepare(features), matcher.prepare(features))) > 50


def _refuse_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args[:2]}")


# ---------------------------------------------------------------- the store and the flow

@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    """Six rendered photos and their exact cameras."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(render_scene(load_package_textures(), n_cameras=6, image_size=(400, 300), arc_deg=60,
                             supersample=1), root)
    return root


def test_store_keeps_each_kind_and_reuses_it(small_scene, tmp_path):
    layout = OutputLayout(tmp_path)
    images = str(small_scene / "images")
    ingest.fn(layout, Settings(), "listing-1", images)

    def features(kind: str, upstream: str) -> dict:
        return extract_features.fn(layout, Settings(features=kind, max_features=512), upstream)

    assert features("xfeat", "listing-1")["computed"] == 6
    assert features("sift", "listing-1")["computed"] == 6  # switching kind recomputes
    # Switching back after the collection's listing changed (a stage key unseen so far): the
    # stored XFeat features are found, not computed again.
    again = features("xfeat", "listing-2")
    assert (again["status"], again["computed"], again["reused"]) == ("ran", 0, 6)
    sha = next(iter(zarr_groups(layout, "xfeat")))
    assert set(zarr_groups(layout, "xfeat")) == set(zarr_groups(layout, "sift"))
    xfeat, sift = FeatureStore(str(layout.features), "xfeat").read(sha), FeatureStore(str(layout.features), "sift").read(sha)
    assert xfeat.descriptors.dtype == np.float32 and xfeat.descriptors.shape[1] == 64
    assert sift.descriptors.dtype == np.uint8 and sift.descriptors.shape[1] == 128
    assert xfeat.image_size == sift.image_size == (400, 300)


def zarr_groups(layout: OutputLayout, kind: str) -> list[str]:
    import zarr
    return [name for name, _ in zarr.open_group(str(layout.features), mode="r")[kind].groups()]


def test_flow_end_to_end_with_xfeat(small_scene, tmp_path, prefect_api, monkeypatch):
    from flows.cli import main
    from storage.colmap_model import evaluate_model_dirs
    monkeypatch.setattr(socket.socket, "connect", _refuse_network_but_local(socket.socket.connect))
    out = tmp_path / "out"
    assert main(["run", str(small_scene / "images"), "--out", str(out), "--features", "xfeat"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["features"] == "xfeat"
    assert report["stages"]["features"]["computed"] == 6
    assert report["totals"]["registered"] == 6
    assert (out / "features.zarr" / "xfeat").is_dir() and not (out / "features.zarr" / "sift").exists()
    accuracy = evaluate_model_dirs(out / "sparse" / "0", small_scene / "gt")
    assert accuracy["auc@5"] >= 0.9


def _refuse_network_but_local(connect):
    """socket.connect that lets the local Prefect API through and refuses anything else."""
    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise AssertionError(f"network access attempted: {address}")
        return connect(self, address)
    return guarded
