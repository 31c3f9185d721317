"""The reconstruction flow end to end, through a real Prefect API, on rendered photos."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pycolmap
import pytest

from conftest import without_chunk_checkpoints
from flows.layout import OutputLayout
from flows.reconstruct import STAGES, reconstruct
from flows.settings import TRACK_KINDS, Settings
from flows.stage_io import loop_breaking_pairs, usable_rows
from flows.tasks import pairs_set_aside, read_folds
from flows.verdicts import model_grades
from sfm_core.synthetic import render_scene
from sfm_core.verification import VerifiedPair
from storage.colmap_model import evaluate_model_dirs
from storage.feature_store import FeatureStore
from storage.manifest import read_manifest
from storage.pair_table import read_pairs, write_pairs
from storage.synthetic_io import load_package_textures, write_scene


@pytest.fixture(scope="module")
def scene_with_junk(tmp_path_factory):
    """12 rendered photos of the landmark beside three broken files."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(render_scene(load_package_textures(), n_cameras=12, image_size=(480, 360), arc_deg=120), root)
    images = root / "images"
    (images / "empty.jpg").write_bytes(b"")
    (images / "notes.jpg").write_text("not a photo, just text with a .jpg name\n")
    whole = (images / "img_000.jpg").read_bytes()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return root


@pytest.fixture(scope="module")
def run_with_junk(scene_with_junk, tmp_path_factory, prefect_api):
    out = tmp_path_factory.mktemp("out")
    report = reconstruct(str(scene_with_junk / "images"), str(out))
    return out, report


def test_bad_files_are_left_out_with_their_reason(run_with_junk):
    out, report = run_with_junk
    rows = {row.name: row for row in read_manifest(str(out / "manifest.parquet"))}
    assert rows["empty.jpg"].status == "empty file (0 bytes)"
    assert rows["notes.jpg"].status.startswith("not an image")
    assert rows["truncated.jpg"].status.startswith("corrupt or truncated image data")
    good = [r for r in rows.values() if r.name.startswith("img_")]
    assert len(good) == 12 and all(r.status == "ok" and r.sha256 and r.width == 480 for r in good)
    assert report["totals"]["left_out"] == 3 and report["totals"]["images"] == 12
    # The end of the run writes what became of each usable photo and where its focal length came from.
    assert all(r.result == "sparse/0" and r.focal_source == r.ingest_focal_source == "calibrated" for r in good)
    assert all(rows[name].result is None for name in ("empty.jpg", "notes.jpg", "truncated.jpg"))


def test_the_good_photos_are_reconstructed_accurately(run_with_junk, scene_with_junk):
    out, report = run_with_junk
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    assert model.num_reg_images() == 12
    assert model.compute_mean_reprojection_error() < 1.0
    accuracy = evaluate_model_dirs(out / "sparse" / "0", scene_with_junk / "gt")
    assert accuracy["auc@5"] >= 0.95
    assert accuracy["median_center_error_rel"] < 0.01


def test_outputs_and_report(run_with_junk):
    out, report = run_with_junk
    written = json.loads((out / "report.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert tuple(written["stages"]) == STAGES
    for stage in written["stages"].values():
        assert stage["status"] == "ran" and stage["seconds"] >= 0
    assert written["stages"]["features"]["computed"] == 12
    assert written["totals"]["registered"] == 12
    # The model grades itself, at the top and per model; the rendered photos carry no EXIF focal.
    assert written["verdict"] == {"status": "ok", "reasons": []}
    assert written["stages"]["export"]["models"][0]["verdict"] == written["verdict"]
    assert written["totals"]["undetermined"] == 0
    assert written["totals"]["focal_sources"] == {"exif": 0, "exif_rejected": 0, "calibrated": 12, "known": 0}
    # Binary model with pycolmap 4's rig and frame files beside the classic three.
    assert {"cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"} <= {p.name for p in (out / "sparse" / "0").iterdir()}
    ply = (out / "points.ply").read_bytes()
    assert b"property uchar red" in ply
    assert (out / "features.zarr").is_dir() and (out / "tracks.zarr").is_dir() and (out / "pairs.parquet").is_file()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=120)


def test_missing_or_empty_source_is_a_one_line_error(tmp_path):
    missing = _cli("run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "does not exist" in missing.stderr and "nowhere" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _cli("run", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert empty.returncode != 0
    assert empty.stderr.strip().count("\n") == 0 and "holds no files" in empty.stderr


def test_eval_prints_the_protocol_keys(scene_with_junk):
    result = _cli("eval", str(scene_with_junk / "gt"), str(scene_with_junk / "gt"), "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"registered", "reference_images", "auc@3", "auc@5", "auc@10", "auc@30",
                            "median_center_error", "median_center_error_rel"}
    assert metrics["registered"] == metrics["reference_images"] == 12 and metrics["auc@3"] == 1.0


def test_the_other_track_kind_reconstructs_as_accurately(run_with_junk, scene_with_junk, tmp_path):
    """Both `--tracks` kinds end to end on the same photos; the checkpoint keys include the
    kind, so the run with the other kind builds its tracks anew and reuses the matches."""
    out, report = run_with_junk
    default = Settings().tracks
    other = next(kind for kind in TRACK_KINDS if kind != default)
    shutil.copytree(out, tmp_path / "out")
    again = reconstruct(str(scene_with_junk / "images"), str(tmp_path / "out"), tracks=other)
    assert again["stages"]["matching"]["status"] == "reused" and again["stages"]["tracks"]["status"] == "ran"
    accuracy = evaluate_model_dirs(tmp_path / "out" / "sparse" / "0", scene_with_junk / "gt")
    assert again["totals"]["registered"] == 12 and accuracy["auc@5"] >= 0.95
    lengths = {kind: r["stages"]["tracks"]["chunks"][0]["mean_track_length"]
               for kind, r in ((default, report), (other, again))}
    # Following each query point into the neighbours the matcher missed it in lengthens the tracks.
    assert lengths["query"] > lengths["pairs"]


def _doppelganger_inliers(model: pycolmap.Reconstruction, name1: str, name2: str, wrong_from: str,
                          keypoints1, keypoints2, count: int = 60):
    """(count, 2) keypoint index pairs between name1 and name2 that fit the relative pose of
    name1 and wrong_from instead of theirs: what a doppelganger pair's false matches do. Each
    keypoint of photo 1 is paired with the free keypoint of photo 2 nearest its epipolar line
    under the wrong pose (Sampson distance under 0.5 px)."""
    image1, image2, other = (model.find_image_with_name(n) for n in (name1, name2, wrong_from))
    wrong = other.cam_from_world() * image1.cam_from_world().inverse()  # a cam2_from_cam1 of the wrong photo
    camera1, camera2 = model.camera(image1.camera_id), model.camera(image2.camera_id)
    x1 = camera1.cam_from_img(keypoints1.astype(np.float64))
    x2 = camera2.cam_from_img(keypoints2.astype(np.float64))
    # Every keypoint of photo 1 against every keypoint of photo 2: (K1, K2) distances in pixels.
    squared = pycolmap.compute_squared_sampson_error(np.repeat(x1, len(x2), axis=0), np.tile(x2, (len(x1), 1)),
                                                     pycolmap.essential_matrix_from_pose(wrong))
    sampson = np.sqrt(np.asarray(squared)).reshape(len(x1), len(x2)) * camera1.mean_focal_length()
    matches, taken = [], set()
    for i in np.argsort(sampson.min(axis=1)):
        j = int(np.argmin(sampson[i]))
        if sampson[i, j] < 0.5 and j not in taken:
            matches.append((int(i), j))
            taken.add(j)
        if len(matches) == count:
            break
    return np.array(matches, np.uint32)


@pytest.mark.slow
def test_pairs_dropped_for_breaking_rotation_loops_are_not_held_against_the_model(run_with_junk, scene_with_junk,
                                                                                   tmp_path):
    """Two verified pairs whose matches fit another photo's relative pose (doppelgangers): the
    cameras stage drops them for breaking the rotation loops and names them in its report, and
    the verdict, which would find the right model contradicting them, does not hold them
    against it."""
    out, _ = run_with_junk
    # A copy whose stages from the tracks on run again, with the pairs changed under them.
    layout = OutputLayout(without_chunk_checkpoints(out, tmp_path / "out"))
    rows = usable_rows(layout)
    frame = {row.name: f for f, row in enumerate(rows)}
    store = FeatureStore(str(layout.features), Settings().features)
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    pairs = read_pairs(str(layout.pairs), [r.image_id for r in rows])
    wrong = {("img_002.jpg", "img_004.jpg"): "img_010.jpg", ("img_006.jpg", "img_008.jpg"): "img_000.jpg"}
    for (name1, name2), wrong_from in wrong.items():
        inliers = _doppelganger_inliers(model, name1, name2, wrong_from, store.read_keypoints(rows[frame[name1]].sha256),
                                        store.read_keypoints(rows[frame[name2]].sha256))
        assert len(inliers) == 60
        pairs = [p for p in pairs if {p.index1, p.index2} != {frame[name1], frame[name2]}]
        pairs.append(VerifiedPair(frame[name1], frame[name2], len(inliers), inliers, "CALIBRATED", None, None))
    write_pairs(str(layout.pairs), pairs, [r.image_id for r in rows])
    report = reconstruct(str(scene_with_junk / "images"), str(layout.root))
    dropped = {frozenset(pair) for pair in loop_breaking_pairs(report["stages"])}
    assert {frozenset(names) for names in wrong} <= dropped
    assert report["stages"]["cameras"]["pairs_breaking_loops"] == len(dropped)
    assert report["verdict"] == {"status": "ok", "reasons": []}
    assert evaluate_model_dirs(layout.sparse / "0", scene_with_junk / "gt")["auc@5"] >= 0.95
    # Read against the model, those pairs contradict it: without setting them aside it is suspect.
    models = [pycolmap.Reconstruction(str(layout.sparse / "0"))]
    held = model_grades(layout, models, Settings().features, {}, pairs_set_aside(read_folds(layout), []))
    assert held[0]["verdict"]["status"] == "suspect"
    assert "2 of" in held[0]["verdict"]["reasons"][0] and "img_002.jpg - img_004.jpg" in held[0]["verdict"]["reasons"][0]
