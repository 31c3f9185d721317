"""On-disk stores: features.zarr, tracks.zarr, pairs.parquet, atomic publication, COLMAP models."""
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pycolmap
import pytest
import zarr
from scipy.spatial.transform import Rotation

from sfm_core.cameras import initial_camera
from sfm_core.features import Features
from sfm_core.model import new_reconstruction
from sfm_core.tracks import Tracks, tracks_from_pairs
from sfm_core.verification import VerifiedPair
from storage.atomic import atomic_path
from storage.colmap_model import model_dirs, poses_by_name, read_model, write_model
from storage.feature_store import FeatureStore
from storage.pair_table import read_pairs, write_pairs
from storage.track_store import read_tracks, write_tracks

SETTINGS = {"max_image_size": 1024, "max_features": 4096, "extractor": "sift"}


def random_features(rng, n: int) -> Features:
    return Features(
        keypoints=rng.uniform(0, 1000, (n, 2)).astype(np.float32),
        scales=rng.uniform(1, 10, n).astype(np.float32),
        descriptors=rng.integers(0, 256, (n, 128)).astype(np.uint8),
        orientations=rng.uniform(-np.pi, np.pi, n).astype(np.float32),
        image_size=(1000, 750),
        scale_xy=(1.5, 1.5),
    )


def assert_features_equal(a: Features, b: Features) -> None:
    assert (a.image_size, a.scale_xy) == (b.image_size, b.scale_xy)
    for name in ("keypoints", "scales", "descriptors", "orientations"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---------------------------------------------------------------- features.zarr

def test_feature_store_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    path = str(tmp_path / "features.zarr")
    features = {"a" * 64: random_features(rng, 50), "b" * 64: random_features(rng, 0)}
    store = FeatureStore(path, "sift")
    for sha, f in features.items():
        assert not store.has(sha, SETTINGS)
        store.write(sha, f, SETTINGS)

    reopened = FeatureStore(path, "sift")  # a later run
    for sha, f in features.items():
        assert reopened.has(sha, SETTINGS)
        assert_features_equal(reopened.read(sha), f)
        np.testing.assert_array_equal(reopened.read_keypoints(sha), f.keypoints)
    assert not reopened.has("c" * 64, SETTINGS)


def test_feature_store_has_depends_on_settings(tmp_path):
    store = FeatureStore(str(tmp_path / "features.zarr"), "sift")
    store.write("a" * 64, random_features(np.random.default_rng(1), 10), SETTINGS)
    assert store.has("a" * 64, dict(SETTINGS))
    assert not store.has("a" * 64, {**SETTINGS, "max_features": 2048})
    assert not store.has("a" * 64, {**SETTINGS, "extra": 1})
    assert not store.has("a" * 64, {})


def test_feature_store_ignores_group_without_complete_flag(tmp_path):
    path = str(tmp_path / "features.zarr")
    store = FeatureStore(path, "sift")
    sha = "d" * 64
    store.write(sha, random_features(np.random.default_rng(2), 10), SETTINGS)
    # A run killed between the arrays and the attrs: arrays there, no "complete".
    group = zarr.open_group(path, mode="a")["sift"][sha]
    del group.attrs["complete"]
    assert not FeatureStore(path, "sift").has(sha, SETTINGS)
    # And a group whose attrs were never written at all.
    bare = zarr.open_group(path, mode="a")["sift"].create_group("e" * 64)
    bare.create_array("keypoints", data=np.zeros((3, 2), np.float32))
    assert not FeatureStore(path, "sift").has("e" * 64, SETTINGS)


def test_feature_store_rewrite_replaces(tmp_path):
    rng = np.random.default_rng(3)
    store = FeatureStore(str(tmp_path / "features.zarr"), "sift")
    store.write("f" * 64, random_features(rng, 40), {**SETTINGS, "max_features": 8192})
    smaller = random_features(rng, 7)
    store.write("f" * 64, smaller, SETTINGS)
    assert store.has("f" * 64, SETTINGS)
    assert not store.has("f" * 64, {**SETTINGS, "max_features": 8192})
    assert_features_equal(store.read("f" * 64), smaller)


# ---------------------------------------------------------------- tracks.zarr

def _random_tracks(rng, num_frames: int, num_tracks: int) -> Tracks:
    keypoint_index = rng.integers(-1, 50, (num_frames, num_tracks)).astype(np.int32)
    visibility = keypoint_index >= 0
    xy = np.where(visibility[..., None], rng.uniform(0, 640, (num_frames, num_tracks, 2)), np.nan).astype(np.float32)
    confidence = np.where(visibility, rng.uniform(0, 1, visibility.shape), 0).astype(np.float16)
    return Tracks(keypoint_index, xy, visibility, confidence, rng.integers(0, num_frames, num_tracks).astype(np.int32))


def assert_tracks_equal(read: Tracks, written: Tracks) -> None:
    for name in ("keypoint_index", "xy", "visibility", "confidence", "query_frame"):
        np.testing.assert_array_equal(getattr(read, name), getattr(written, name))  # NaNs compare equal here
        assert getattr(read, name).dtype == getattr(written, name).dtype, name


def test_tracks_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    path = str(tmp_path / "tracks.zarr")
    image_ids = np.array([3, 9, 4, 12])
    tracks, other = _random_tracks(rng, 4, 30), _random_tracks(rng, 2, 5)
    write_tracks(path, "chunk-0", image_ids, tracks)
    write_tracks(path, "chunk-1", np.array([1, 2]), other)

    ids_read, read = read_tracks(path, "chunk-0")
    np.testing.assert_array_equal(ids_read, image_ids)
    assert_tracks_equal(read, tracks)
    assert read.confidence.dtype == np.float16 and read.xy.dtype == np.float32
    assert zarr.open_group(path, mode="r")["chunk-0"].attrs["complete"] is True
    assert_tracks_equal(read_tracks(path, "chunk-1")[1], other)


def test_tracks_rewrite_replaces_group(tmp_path):
    rng = np.random.default_rng(5)
    path = str(tmp_path / "tracks.zarr")
    write_tracks(path, "chunk-0", np.arange(3), _random_tracks(rng, 3, 10))
    replacement = _random_tracks(rng, 2, 4)
    write_tracks(path, "chunk-0", np.array([7, 8]), replacement)
    ids, read = read_tracks(path, "chunk-0")
    np.testing.assert_array_equal(ids, [7, 8])
    assert_tracks_equal(read, replacement)


def test_tracks_with_no_tracks(tmp_path):
    path = str(tmp_path / "tracks.zarr")
    empty = tracks_from_pairs([np.zeros((4, 2), np.float32)] * 3, [])
    write_tracks(path, "chunk-0", np.array([1, 2, 3]), empty)
    ids, read = read_tracks(path, "chunk-0")
    assert read.keypoint_index.shape == (3, 0) and read.query_frame.shape == (0,)
    np.testing.assert_array_equal(ids, [1, 2, 3])


# ---------------------------------------------------------------- pairs.parquet

def make_pairs(rng) -> list[VerifiedPair]:
    rotation = Rotation.random(random_state=5).as_quat()
    return [
        VerifiedPair(0, 1, 120, rng.integers(0, 500, (80, 2)).astype(np.uint32), "CALIBRATED",
                     rotation, np.array([0.6, 0.0, 0.8]), rng.standard_normal((3, 3))),
        VerifiedPair(0, 2, 40, rng.integers(0, 500, (25, 2)).astype(np.uint32), "PLANAR", None, None, None),
        VerifiedPair(2, 1, 33, rng.integers(0, 500, (16, 2)).astype(np.uint32), "UNCALIBRATED",
                     None, None, rng.standard_normal((3, 3))),
        VerifiedPair(1, 2, 0, np.zeros((0, 2), np.uint32), "DEGENERATE", None, None, None),
    ]


def assert_pairs_equal(read: list[VerifiedPair], written: list[VerifiedPair]) -> None:
    assert len(read) == len(written)
    for a, b in zip(read, written):
        assert (a.index1, a.index2, a.num_matches, a.configuration) == (b.index1, b.index2, b.num_matches, b.configuration)
        assert a.inliers.dtype == np.uint32 and a.inliers.shape == b.inliers.shape
        np.testing.assert_array_equal(a.inliers, b.inliers)
        for name in ("rotation_xyzw", "translation", "fundamental"):
            x, y = getattr(a, name), getattr(b, name)
            if y is None:
                assert x is None, name
            else:
                assert x.shape == y.shape, name
                np.testing.assert_array_equal(x, y, err_msg=name)  # float64 round-trips exactly


def test_pairs_round_trip(tmp_path):
    rng = np.random.default_rng(6)
    pairs = make_pairs(rng)
    image_ids = [17, 3, 42]  # manifest ids of frames 0, 1, 2
    path = tmp_path / "pairs.parquet"
    write_pairs(str(path), pairs, image_ids)

    assert leftovers(tmp_path, {"pairs.parquet"}) == []
    table = pq.read_table(path).to_pydict()
    assert table["image_id1"] == [17, 17, 42, 3]
    assert table["image_id2"] == [3, 42, 3, 42]
    assert table["num_inliers"] == [len(p.inliers) for p in pairs]
    assert_pairs_equal(read_pairs(str(path), image_ids), pairs)


def test_pairs_read_with_reordered_frames(tmp_path):
    """Frames are found again through the manifest ids, not positions."""
    pairs = make_pairs(np.random.default_rng(7))
    path = str(tmp_path / "pairs.parquet")
    write_pairs(path, pairs, [17, 3, 42])
    new_order = [42, 17, 3]  # frame 0 is now id 42, and so on
    frame_of_old = {0: 1, 1: 2, 2: 0}
    read = read_pairs(path, new_order)
    assert [(p.index1, p.index2) for p in read] == [(frame_of_old[p.index1], frame_of_old[p.index2]) for p in pairs]


def test_empty_pair_table(tmp_path):
    path = str(tmp_path / "pairs.parquet")
    write_pairs(path, [], [1, 2])
    assert read_pairs(path, [1, 2]) == []


def test_pairs_rewrite_replaces(tmp_path):
    rng = np.random.default_rng(8)
    path = str(tmp_path / "pairs.parquet")
    write_pairs(path, make_pairs(rng), [1, 2, 3])
    second = make_pairs(rng)[1:2]
    write_pairs(path, second, [1, 2, 3])
    assert_pairs_equal(read_pairs(path, [1, 2, 3]), second)
    assert leftovers(tmp_path, {"pairs.parquet"}) == []


# ---------------------------------------------------------------- atomic_path

def test_atomic_path_publishes_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with atomic_path(str(target)) as tmp:
        Path(tmp).write_text("new")
        assert target.read_text() == "old"  # not visible before the body ends
    assert target.read_text() == "new"
    assert leftovers(tmp_path, {"out.txt"}) == []


def test_atomic_path_keeps_old_file_when_body_raises(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(str(target)) as tmp:
            Path(tmp).write_text("half written")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert leftovers(tmp_path, {"out.txt"}) == []


def test_atomic_path_failure_without_old_file_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(ValueError):
        with atomic_path(str(target)) as tmp:
            Path(tmp).write_text("half written")
            raise ValueError
    assert leftovers(tmp_path, set()) == []


def test_atomic_path_folders(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            os.mkdir(tmp)
            (Path(tmp) / "new.bin").write_text("new")
            raise RuntimeError
    assert sorted(p.name for p in target.iterdir()) == ["old.bin"]
    assert leftovers(tmp_path, {"model"}) == []

    with atomic_path(str(target)) as tmp:
        os.mkdir(tmp)
        (Path(tmp) / "new.bin").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.bin"]
    assert leftovers(tmp_path, {"model"}) == []


# ---------------------------------------------------------------- COLMAP models

def small_reconstruction(seed: int, num_points: int = 12) -> tuple[pycolmap.Reconstruction, np.ndarray]:
    """Three posed images (two cameras) seeing `num_points` points; returns rec and the points."""
    rng = np.random.default_rng(seed)
    cameras = [initial_camera(1, 640, 480, 500.0), initial_camera(2, 800, 600, None, "PINHOLE")]
    camera_of_frame = [0, 1, 0]
    points = rng.uniform(-1, 1, (num_points, 3))
    poses = []
    for _ in range(3):
        R = Rotation.from_rotvec(rng.normal(0, 0.1, 3)).as_matrix()
        centre = np.array([*rng.uniform(-1, 1, 2), -6.0])
        poses.append((R, -R @ centre))
    keypoints = []
    for f, (R, t) in enumerate(poses):
        camera = cameras[camera_of_frame[f]]
        keypoints.append(np.asarray(camera.img_from_cam(points @ R.T + t)))
    names = [f"img_{f}.jpg" for f in range(3)]
    rec = new_reconstruction(names, cameras, camera_of_frame, keypoints, [0, 1, 2])
    for f, (R, t) in enumerate(poses):
        image = rec.image(f + 1)
        rec.frame(image.frame_id).set_cam_from_world(image.camera_id, pycolmap.Rigid3d(pycolmap.Rotation3d(R), t))
        rec.register_frame(image.frame_id)
    for n, xyz in enumerate(points):
        rec.add_point3D(xyz, pycolmap.Track([pycolmap.TrackElement(f + 1, n) for f in range(3)]))
    return rec, points


def observations(rec: pycolmap.Reconstruction) -> set:
    return {(tuple(np.round(p.xyz, 9)), tuple(sorted((e.image_id, e.point2D_idx) for e in p.track.elements)))
            for p in rec.points3D.values()}


def test_model_round_trip(tmp_path):
    rec, points = small_reconstruction(9)
    write_model(rec, tmp_path / "sparse" / "0")
    assert leftovers(tmp_path / "sparse", {"0"}) == []

    back = read_model(tmp_path / "sparse" / "0")
    assert back.num_reg_images() == 3 and back.num_points3D() == len(points)
    for camera_id, camera in rec.cameras.items():
        assert back.cameras[camera_id].model == camera.model
        np.testing.assert_allclose(back.cameras[camera_id].params, camera.params)
    truth, read = poses_by_name(rec), poses_by_name(back)
    assert sorted(read) == ["img_0.jpg", "img_1.jpg", "img_2.jpg"]
    for name, (R, t) in truth.items():
        np.testing.assert_allclose(read[name][0], R, atol=1e-12)
        np.testing.assert_allclose(read[name][1], t, atol=1e-12)
    assert observations(back) == observations(rec)
    for image_id, image in rec.images.items():
        np.testing.assert_allclose([p.xy for p in back.image(image_id).points2D], [p.xy for p in image.points2D])


def test_write_model_replaces_existing(tmp_path):
    first, _ = small_reconstruction(10, num_points=12)
    second, _ = small_reconstruction(11, num_points=5)
    folder = tmp_path / "sparse" / "0"
    write_model(first, folder)
    (folder / "stale.txt").write_text("left from an older run")
    write_model(second, folder)
    back = read_model(folder)
    assert back.num_points3D() == 5 and observations(back) == observations(second)
    assert not (folder / "stale.txt").exists()
    assert leftovers(tmp_path / "sparse", {"0"}) == []


def test_model_dirs_in_numeric_order(tmp_path):
    rec, _ = small_reconstruction(12, num_points=4)
    for name in ("10", "2", "0", "1"):
        write_model(rec, tmp_path / "models" / name)
    (tmp_path / "models" / "notes").mkdir()
    (tmp_path / "models" / "0.tmp-1234abcd").mkdir()  # an unfinished write is not a model
    assert [p.name for p in model_dirs(tmp_path / "models")] == ["0", "1", "2", "10"]
    assert model_dirs(tmp_path / "missing") == []


def test_read_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        read_model(tmp_path / "empty")
