"""The Theseus bundle adjuster: the same answer as Ceres, and gradients through the solution."""
from dataclasses import replace

import numpy as np
import pycolmap
import pytest
import torch

from sfm_core.ba_problems import perturbed_reconstruction, synthetic_reconstruction
from sfm_core.bundle_adjustment import BundleAdjustmentSettings, CeresBundleAdjuster
from sfm_core.evaluation import evaluate_poses
from sfm_core.theseus_ba import (BAState, TheseusBundleAdjuster, free_params, problem_from_reconstruction,
                                 residuals, solve_differentiable)
from storage.colmap_model import poses_by_name


def test_theseus_reaches_the_answer_of_ceres():
    ceres, theseus = perturbed_reconstruction(12, 1500), perturbed_reconstruction(12, 1500)  # 1 % outliers
    settings = BundleAdjustmentSettings()

    ceres_error = CeresBundleAdjuster().adjust(ceres, settings)
    theseus_error = TheseusBundleAdjuster().adjust(theseus, settings)

    assert theseus_error == pytest.approx(ceres_error, rel=0.01)
    agreement = evaluate_poses(poses_by_name(theseus), poses_by_name(ceres))
    assert agreement["registered"] == 12 and agreement["auc@3"] > 0.99
    # Both normalise the scene the same way, so the focal lengths are comparable directly.
    for camera_id, camera in ceres.cameras.items():
        assert theseus.cameras[camera_id].focal_length == pytest.approx(camera.focal_length, rel=1e-3)


def test_gradients_through_the_solution_match_finite_differences():
    # Nearly exact observations: the implicit gradient uses the Gauss-Newton Hessian, exact at
    # zero residual, so finite differences check the derivation and not that approximation.
    rec = synthetic_reconstruction(6, 60, seed=0, outlier_fraction=0.0, pixel_noise=0.01)
    rec.normalize()
    problem, exact, *_ = problem_from_reconstruction(rec)
    rng = np.random.default_rng(0)
    start = BAState(exact.cam_from_world, exact.points + torch.tensor(rng.normal(0, 0.01, exact.points.shape)),
                    exact.camera_params)
    settings = BundleAdjustmentSettings(max_iterations=200)
    probe = torch.tensor(rng.normal(0, 1, problem.xy.shape))

    def loss(xy: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """A random linear function of the refined points' projections (independent of the gauge)."""
        observed = replace(problem, xy=xy, weight=weight)
        refined = solve_differentiable(observed, start, settings, function_tolerance=1e-15)
        r, _ = residuals(observed, refined, free_params(problem.model, settings))
        return (probe * (r + xy)).sum()

    xy, weight = problem.xy.clone().requires_grad_(True), problem.weight.clone().requires_grad_(True)
    loss(xy, weight).backward()

    eps = 1e-3
    with torch.no_grad():
        for k, c in [(0, 0), (5, 1), (17, 0), (40, 1)]:
            step = torch.zeros_like(problem.xy)
            step[k, c] = eps
            numeric = (loss(problem.xy + step, problem.weight) - loss(problem.xy - step, problem.weight)) / (2 * eps)
            assert float(xy.grad[k, c]) == pytest.approx(float(numeric), rel=0.01, abs=2e-3)
        for k in (0, 9):
            step = torch.zeros_like(problem.weight)
            step[k] = eps
            numeric = (loss(problem.xy, problem.weight + step) - loss(problem.xy, problem.weight - step)) / (2 * eps)
            assert float(weight.grad[k]) == pytest.approx(float(numeric), rel=0.01, abs=1e-4)
    assert xy.grad.abs().sum() > 1  # the check above is not of zeros


def test_cameras_without_a_radial_term_beside_radial_ones():
    # As after sfm_core.distortion: some cameras SIMPLE_PINHOLE, the others SIMPLE_RADIAL.
    ceres, theseus = perturbed_reconstruction(8, 800), perturbed_reconstruction(8, 800)
    for rec in (ceres, theseus):
        for camera_id in (2, 5):
            camera = rec.cameras[camera_id]
            rec.cameras[camera_id] = pycolmap.Camera(model="SIMPLE_PINHOLE", width=camera.width, height=camera.height,
                                                     params=list(camera.params[:3]), camera_id=camera_id)
    CeresBundleAdjuster().adjust(ceres, BundleAdjustmentSettings())
    TheseusBundleAdjuster().adjust(theseus, BundleAdjustmentSettings())
    for camera_id in range(1, 9):
        model = "SIMPLE_PINHOLE" if camera_id in (2, 5) else "SIMPLE_RADIAL"
        assert ceres.cameras[camera_id].model.name == theseus.cameras[camera_id].model.name == model
        np.testing.assert_allclose(theseus.cameras[camera_id].params, ceres.cameras[camera_id].params, rtol=1e-3, atol=1e-3)
    assert abs(theseus.compute_mean_reprojection_error() - ceres.compute_mean_reprojection_error()) < 0.01
