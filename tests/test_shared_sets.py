"""Acceptance on the real photo sets in ../shared/data (ground truth or COLMAP's reference).

Slow end-to-end runs: CI runs them; `make test-fast` skips them.
"""
import pycolmap
import pytest

from flows.reconstruct import reconstruct
from storage.colmap_model import evaluate_model_dirs

from conftest import shared_set

# set, truth folder, minimum registered, minimum AUC@5 (issue #2), minimum mean track length
CASES = [
    ("fountain_p11", "gt", 11, 0.95, 0.0),
    ("statue", "reference", 9, 0.90, 0.0),
    ("kitchen", "reference", 24, 0.80, 0.0),
    # Internet photos without EXIF, self-calibrated: issue 2's 0.90 is out of reach (0.92 with the
    # reference's intrinsics, see README). Issue 17's bar instead: COLMAP re-run side by side
    # (benchmarks/compare_colmap.py) scores AUC@5 0.70 with its incremental mapper, with tracks
    # 4.64 long; ours 0.81 and 5.07.
    ("british_museum", "reference", 10, 0.70, 4.64),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, truth, min_registered, min_auc5, min_track_length", CASES)
def test_reconstruction_matches_the_truth(name, truth, min_registered, min_auc5, min_track_length, tmp_path,
                                          prefect_api):
    data = shared_set(name)
    report = reconstruct(str(data / "images"), str(tmp_path))
    model = pycolmap.Reconstruction(str(tmp_path / "sparse" / "0"))
    accuracy = evaluate_model_dirs(tmp_path / "sparse" / "0", data / truth)
    print(name, report["totals"], accuracy)
    assert model.compute_mean_reprojection_error() <= 1.0
    assert accuracy["registered"] >= min_registered
    assert accuracy["auc@5"] >= min_auc5
    assert model.compute_mean_track_length() >= min_track_length


@pytest.mark.slow
def test_demo_reconstructs_its_own_scene(tmp_path, prefect_api):
    from flows.demo import run_demo

    report, accuracy, summary = run_demo(str(tmp_path), n_cameras=30)
    assert "registered: 30 of 30" in summary
    assert accuracy["registered"] == 30 and accuracy["auc@5"] >= 0.95
    assert report["totals"]["mean_reprojection_error_px"] <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name, truth, known_intrinsics", [
    ("british_museum", "reference", False), ("fountain_p11", "gt", False),
    # Self-calibrated, british_museum's cost has several minima close together (both solvers'
    # answers are stationary for the other); with its cameras known it has one.
    ("british_museum", "reference", True)])
def test_theseus_reaches_the_answer_of_ceres(name, truth, known_intrinsics, tmp_path, prefect_api):
    import shutil
    data = shared_set(name)
    intrinsics = reference_intrinsics(data / truth) if known_intrinsics else None
    ceres = reconstruct(str(data / "images"), str(tmp_path / "ceres"), intrinsics=intrinsics)
    # The same features, matches, tracks and initial cameras: only the bundle adjustment differs.
    shutil.copytree(tmp_path / "ceres", tmp_path / "theseus")
    theseus = reconstruct(str(data / "images"), str(tmp_path / "theseus"), bundle_adjuster="theseus",
                          intrinsics=intrinsics)
    assert theseus["stages"]["cameras"]["status"] == "reused" and theseus["stages"]["bundle-adjustment"]["status"] == "ran"
    errors = [run["totals"]["mean_reprojection_error_px"] for run in (ceres, theseus)]
    assert errors[1] == pytest.approx(errors[0], rel=0.01)
    auc = [evaluate_model_dirs(tmp_path / solver / "sparse" / "0", data / truth)["auc@5"] for solver in ("ceres", "theseus")]
    assert auc[1] == pytest.approx(auc[0], abs=0.02)
    if known_intrinsics:
        assert min(auc) >= 0.90  # issue 2's bar, which the self-calibrated run misses


def reference_intrinsics(model_dir) -> list[str]:
    """The model's cameras as --intrinsics lines ("MODEL WIDTH HEIGHT PARAMS..."): one per photo size."""
    lines = (line.split() for line in (model_dir / "cameras.txt").read_text().splitlines())
    return [" ".join(fields[1:]) for fields in lines if fields and not fields[0].startswith("#")]
