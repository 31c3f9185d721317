"""The reconstruction flow end to end, through a real Prefect API, on rendered photos."""
import json
import shutil
import subprocess
import sys

import pycolmap
import pytest

from flows.reconstruct import STAGES, reconstruct
from flows.settings import TRACK_KINDS, Settings
from sfm_core.synthetic import render_scene
from storage.colmap_model import evaluate_model_dirs
from storage.manifest import read_manifest
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
