"""A fold is found by the structure it lays twice, and split along its two sides."""
import numpy as np
import pytest

from sfm_core.superimposition import MIN_FOLD_SHARE, split_model, superimposition
from test_verdict import arc, scene_model


def _folded_or_right(folded: bool, wall_only: int = 0):
    """20 photos on an arc around a block, every other one of side B (then `wall_only` more). The block's points are
    seen from both sides (its walls look alike); 24,000 ground points before it are each one
    side's ground. Folded: as when the far side's photos were posed on the near side, each
    side's photos see only their own ground, laid over the other's in the same place. Right:
    any photo sees all the ground in its view."""
    rng = np.random.default_rng(3)
    block = np.column_stack([rng.uniform(-1, 1, (1500, 2)), rng.uniform(1, 2.5, 1500)])
    ground = np.column_stack([rng.uniform(-1.5, 1.5, (24000, 2)), np.zeros(24000)])
    ground_side = rng.random(len(ground)) < 0.5  # True: side B's ground
    points = np.vstack([block, ground])
    side_b = np.arange(20) % 2 == 1
    keep = [np.r_[np.ones(len(block), bool), ground_side == b] if folded else None for b in side_b]
    # Photos that see the block only (as from close to a wall): nothing tells their side.
    keep += [np.r_[np.ones(len(block), bool), np.zeros(len(ground), bool)]] * wall_only
    rec = scene_model(arc(20 + wall_only, 10.0, 90), points, keep=keep)
    return rec, {f"{c:02d}.jpg" for c in np.nonzero(side_b)[0]}


def test_a_folded_model_is_found_and_split_along_its_two_sides():
    rec, side_b = _folded_or_right(folded=True)
    found = superimposition(rec)
    assert found.folded and found.share >= MIN_FOLD_SHARE and found.undecided == []
    side_a = {image.name for image in rec.images.values()} - side_b
    assert {frozenset(side) for side in found.sides} == {frozenset(side_a), frozenset(side_b)}
    first, second = split_model(rec, found.sides)
    assert [{image.name for image in piece.images.values()} for piece in (first, second)] == list(map(set, found.sides))
    assert first.num_reg_images() + second.num_reg_images() == rec.num_reg_images() == 20
    for piece in (first, second):
        assert all(len({e.image_id for e in p.track.elements}) >= 2 for p in piece.points3D.values())
        assert piece.num_points3D() > 1000
        assert 0 < piece.compute_mean_reprojection_error() < 1e-3  # exact projections, errors computed


def test_photos_that_see_only_what_both_sides_share_are_on_neither_side():
    rec, side_b = _folded_or_right(folded=True, wall_only=2)
    found = superimposition(rec)
    assert found.folded and found.undecided == ["20.jpg", "21.jpg"]
    assert {frozenset(side) for side in found.sides} == {frozenset(side_b), frozenset(
        f"{c:02d}.jpg" for c in range(20)) - side_b}
    pieces = split_model(rec, found.sides)
    assert sum(piece.num_reg_images() for piece in pieces) == 20


def test_a_right_model_is_not_folded():
    rec, _ = _folded_or_right(folded=False)
    found = superimposition(rec)
    assert not found.folded and found.share < 0.05


@pytest.mark.parametrize("photos", [1, 3])
def test_too_small_a_model_is_not_scored(photos):
    rec, _ = _folded_or_right(folded=True)
    for image_id in sorted(rec.reg_image_ids())[photos:]:
        rec.deregister_frame(image_id)
    assert superimposition(rec).share == 0.0


def test_a_fold_with_no_pairs_across_its_sides_is_merged_as_its_two_sides():
    from flows.tasks import _unfold  # imports Prefect and torch: only here

    folded, side_b = _folded_or_right(folded=True)
    right, _ = _folded_or_right(folded=False)
    models, folds, split_sides, doppelgangers = _unfold([("chunk-0/0", folded), ("chunk-1/0", right)], lambda: [])
    assert [label for label, _ in models] == ["chunk-0/0 side 1", "chunk-0/0 side 2", "chunk-1/0"]
    assert models[-1][1] is right and doppelgangers == set()
    assert {frozenset(image.name for image in side.images.values()) for _, side in models[:2]} == {
        frozenset(side_b), frozenset(image.name for image in folded.images.values()) - side_b}
    assert {frozenset(side) for side in split_sides} == {frozenset(side_b), frozenset(
        image.name for image in folded.images.values()) - side_b}
    [fold] = folds
    assert fold["photos"] == 20 and sorted(fold["sides"]) == [10, 10] and fold["share"] >= MIN_FOLD_SHARE
    assert fold["undecided"] == [] and fold["outcome"] == "split" and fold["chunk_model"] == "chunk-0/0"


@pytest.mark.slow
def test_the_symmetric_building_comes_out_as_one_right_model_not_folded(tmp_path, prefect_api):
    """synth --nuisances symmetric, 80 photos: the reconstruction folds its halves onto each other
    (AUC@5 0.49 as one model); the merge stage joins the two sides the right way round through
    the pairs across them, and the photos it could not place are left out with the reason."""
    import pycolmap
    from flows.outcomes import UNDECIDED_SIDE
    from flows.reconstruct import reconstruct
    from flows.synth import make_collection
    from sfm_core.evaluation import evaluate_poses
    from storage.colmap_model import model_dirs, poses_by_name
    from storage.manifest import read_manifest

    make_collection(str(tmp_path / "sym"), 80, seed=0, nuisances=("symmetric",))
    report = reconstruct(str(tmp_path / "sym" / "images"), str(tmp_path / "out"))

    [fold] = report["stages"]["merge"]["folds"]
    assert fold["outcome"] == "joined" and fold["seam_pairs"] > 0 and fold["posed_across"] >= 3
    truth = poses_by_name(pycolmap.Reconstruction(str(tmp_path / "sym" / "gt")))
    [model] = [pycolmap.Reconstruction(str(folder)) for folder in model_dirs(tmp_path / "out" / "sparse")]
    assert model.num_reg_images() == sum(fold["sides"])
    assert model.compute_mean_reprojection_error() < 0.3  # the sides' own poses and points, as adjusted (0.18 px)
    assert not superimposition(model).folded
    poses = poses_by_name(model)
    assert evaluate_poses(poses, {k: v for k, v in truth.items() if k in poses})["auc@5"] >= 0.9
    # The seam ties the sides' points together: no side hangs on the other by too few points.
    assert report["totals"]["undetermined"] == 0
    left_out = {r.name for r in read_manifest(str(tmp_path / "out" / "manifest.parquet"))
                if r.result == f"left out: {UNDECIDED_SIDE}"}
    assert left_out == set(fold["undecided"]) and sum(fold["sides"]) + len(left_out) == 80
