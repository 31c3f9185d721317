"""Bundle adjustment with Theseus, batched over all observations, differentiable.

The reprojection model is CeresBundleAdjuster's: world-to-camera poses (`cam_from_world`),
the COLMAP camera model of each image (SIMPLE_PINHOLE, PINHOLE, SIMPLE_RADIAL, RADIAL), COLMAP
pixels (centre of the top-left pixel at (0.5, 0.5)), principal point fixed, and the cost
`0.5 * sum_i w_i * rho(|r_i|^2)` with Ceres's Cauchy loss `rho(s) = a^2 log(1 + s / a^2)`,
`a` = robust_loss_scale_px (w_i = 1 reproduces Ceres's cost exactly).

Why not a `th.Objective` of one cost function per observation: Theseus's SparseLinearization
writes the Jacobian with a Python loop over cost functions at every iteration, and the
optimizer retracts one variable at a time; with ~10^5 observations and 10^4 points that
Python work dominates (DESIGN.md: ~37 s against ~0.8 s for Ceres). Here every observation
is a row block of one Jacobian computed in torch at once: poses are one batched `th.SE3`
(its `transform_from` gives the analytic pose and point Jacobians, `retract` the update),
points one batched `th.Point3`, the sparsity pattern is built once with numpy in Theseus's
`SparseStructure`, and each Levenberg-Marquardt step is solved by Theseus's differentiable
sparse solvers (`CholmodSolveFunction` on the CPU, `LUCudaSolveFunction` on CUDA).

Gradients: the solution x* is a function of the observations and weights through
`grad_x F(x*, obs, w) = 0`. `solve_differentiable` optimises without autograd, then takes
one Gauss-Newton step from the detached x* with autograd on (Theseus's IMPLICIT backward
mode): the step is zero at the optimum and its derivative is the implicit-function-theorem
one, `-H^-1 d(grad_x F)/d(obs, w)`, where H carries the Cauchy curvature (Triggs's
correction, as Ceres's Corrector) so that it is the Gauss-Newton Hessian of the robust cost.
"""
from dataclasses import dataclass, replace

import numpy as np
import pycolmap
import theseus as th
import torch
from theseus.optimizer.autograd import CholmodSolveFunction
from theseus.optimizer.linear_system import SparseStructure

from sfm_core.bundle_adjustment import BundleAdjustmentSettings


@dataclass(frozen=True)
class CameraLayout:
    """Indices into a COLMAP model's params of its focal length(s), principal point, radial terms."""

    focal: tuple[int, ...]
    principal_point: tuple[int, int]
    radial: tuple[int, ...]


CAMERA_LAYOUTS = {
    "SIMPLE_PINHOLE": CameraLayout((0,), (1, 2), ()),
    "PINHOLE": CameraLayout((0, 1), (2, 3), ()),
    "SIMPLE_RADIAL": CameraLayout((0,), (1, 2), (3,)),
    "RADIAL": CameraLayout((0,), (1, 2), (3, 4)),
}


@dataclass
class BAProblem:
    """Observations and structure of a bundle adjustment, M observations of N points in C images.

    xy: (M, 2) observed pixels (COLMAP convention); weight: (M,) confidence of each observation
    (multiplies its robust cost). image_index: (M,) long, into the poses; point_index: (M,) long,
    into the points; camera_of_image: (C,) long, into camera_params (images may share a camera).
    """

    xy: torch.Tensor
    weight: torch.Tensor
    image_index: torch.Tensor
    point_index: torch.Tensor
    camera_of_image: torch.Tensor
    model: str
    constant_camera: torch.Tensor | None = None  # (K,) bool: intrinsics held fixed (known)
    # (K,) bool: radial terms held at 0 (cameras adjusted without one, sfm_core.distortion)
    fixed_radial: torch.Tensor | None = None


@dataclass
class BAState:
    """The variables. cam_from_world: (C, 3, 4) [R | t], x_cam = R x_world + t; points: (N, 3)
    world; camera_params: (K, P) COLMAP params of the problem's camera model."""

    cam_from_world: torch.Tensor
    points: torch.Tensor
    camera_params: torch.Tensor


@dataclass
class _System:
    """A robustified linearisation: rows (M, 2, D) of A over columns cols (M, D), rhs b (M, 2)."""

    rows: torch.Tensor
    b: torch.Tensor


def free_params(model: str, settings: BundleAdjustmentSettings) -> list[int]:
    """Indices into the camera params that the settings refine."""
    layout = CAMERA_LAYOUTS[model]
    return [*(layout.focal if settings.refine_focal_length else ()),
            *(layout.principal_point if settings.refine_principal_point else ()),
            *(layout.radial if settings.refine_extra_params else ())]


def project(params: torch.Tensor, x_cam: torch.Tensor, layout: CameraLayout) -> tuple[torch.Tensor, ...]:
    """COLMAP projection of camera points x_cam (M, 3) with per-observation params (M, P).

    Returns pixels (M, 2), d pixels / d x_cam (M, 2, 3) and d pixels / d params (M, 2, P).
    """
    z = x_cam[:, 2]
    uv = x_cam[:, :2] / z[:, None]
    r2 = (uv * uv).sum(1)
    k = params[:, list(layout.radial)]  # (M, R)
    exponents = torch.arange(1, k.shape[1] + 1, dtype=r2.dtype, device=r2.device)
    powers = r2[:, None] ** exponents  # r2, r2^2
    distortion = 1 + (k * powers).sum(1)
    d_distortion = (k * exponents * r2[:, None] ** (exponents - 1)).sum(1)  # d distortion / d r2
    focal = params[:, [layout.focal[0], layout.focal[-1]]]  # (fx, fy), equal for one focal
    distorted = uv * distortion[:, None]
    pixels = focal * distorted + params[:, list(layout.principal_point)]
    # d distorted / d uv = distortion I + 2 d_distortion uv uv^T; d uv / d x_cam = [I / z, -uv / z]
    d_distorted = distortion[:, None, None] * torch.eye(2, dtype=z.dtype, device=z.device) \
        + 2 * d_distortion[:, None, None] * uv[:, :, None] * uv[:, None, :]
    d_uv = torch.cat([torch.diag_embed(1 / z[:, None].expand(-1, 2)), -uv[:, :, None] / z[:, None, None]], 2)
    d_x_cam = focal[:, :, None] * (d_distorted @ d_uv)
    d_params = torch.zeros(*pixels.shape, params.shape[1], dtype=z.dtype, device=z.device)
    if len(layout.focal) == 1:
        d_params[:, :, layout.focal[0]] = distorted
    else:
        d_params[:, 0, layout.focal[0]] = distorted[:, 0]
        d_params[:, 1, layout.focal[1]] = distorted[:, 1]
    d_params[:, 0, layout.principal_point[0]] = 1
    d_params[:, 1, layout.principal_point[1]] = 1
    for j, index in enumerate(layout.radial):
        d_params[:, :, index] = focal * uv * powers[:, j, None]
    return pixels, d_x_cam, d_params


def moving_intrinsics(problem: BAProblem, num_cameras: int, num_params: int,
                      device: torch.device) -> torch.Tensor | None:
    """(K, P) bool: which intrinsics of each camera row the adjustment moves (none of a known
    camera's, no radial term of a camera adjusted without one); None when all move."""
    if problem.constant_camera is None and problem.fixed_radial is None:
        return None
    moving = torch.ones(num_cameras, num_params, dtype=torch.bool, device=device)
    if problem.constant_camera is not None:
        moving &= ~problem.constant_camera.to(device)[:, None]
    if problem.fixed_radial is not None:
        radial = list(CAMERA_LAYOUTS[problem.model].radial)
        moving[:, radial] &= ~problem.fixed_radial.to(device)[:, None]
    return moving


def residuals(problem: BAProblem, state: BAState, free: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reprojection residuals (M, 2) = projected - observed, and their Jacobian (M, 2, 6 + F + 3)
    with respect to [pose tangent (Theseus SE3 retract convention), free params, point]."""
    poses = th.SE3(tensor=state.cam_from_world[problem.image_index], disable_checks=True)
    pose_jacobians: list[torch.Tensor] = []
    x_cam = poses.transform_from(state.points[problem.point_index], jacobians=pose_jacobians).tensor
    camera = problem.camera_of_image[problem.image_index]  # (M,) camera row of each observation
    pixels, d_x_cam, d_params = project(state.camera_params[camera], x_cam, CAMERA_LAYOUTS[problem.model])
    moving = moving_intrinsics(problem, len(state.camera_params), d_params.shape[2], d_params.device)
    if moving is not None:  # no derivative for held intrinsics: their step is zero
        d_params = d_params * moving[camera].to(d_params.dtype)[:, None, :]
    d_pose, d_point = d_x_cam @ pose_jacobians[0], d_x_cam @ pose_jacobians[1]
    return pixels - problem.xy, torch.cat([d_pose, d_params[:, :, free], d_point], 2)


def robust_cost(problem: BAProblem, r: torch.Tensor, scale: float) -> torch.Tensor:
    """0.5 * sum_i w_i rho(|r_i|^2), Ceres's Cauchy loss of scale `scale` px."""
    a2 = scale * scale
    return 0.5 * (problem.weight * a2 * torch.log1p((r * r).sum(1) / a2)).sum()


def robustify(problem: BAProblem, r: torch.Tensor, jacobian: torch.Tensor, scale: float,
              curvature: bool) -> _System:
    """Rows sqrt(w rho') J and rhs -sqrt(w rho') r of the weighted least squares step.

    With `curvature`, Triggs's correction (Ceres's Corrector, clamped for outliers) adds the
    rho'' term so that A^T A is the Gauss-Newton Hessian of the robust cost: needed for exact
    implicit gradients. Without it the step is Ceres's for Cauchy (rho'' < 0: no correction).
    """
    a2 = scale * scale
    s = (r * r).sum(1)
    rho1 = 1 / (1 + s / a2)
    sqrt_w_rho1 = (problem.weight * rho1).sqrt()
    if not curvature:
        return _System(sqrt_w_rho1[:, None, None] * jacobian, -sqrt_w_rho1[:, None] * r)
    # alpha solves 0.5 alpha^2 - alpha - rho''/rho' s = 0; for Cauchy rho''/rho' = -rho1 / a2.
    alpha = 1 - (1 - 2 * s * rho1 / a2).clamp_min(0.25).sqrt()
    unit = r / s.clamp_min(1e-300).sqrt()[:, None]
    corrector = torch.eye(2, dtype=r.dtype, device=r.device) - alpha[:, None, None] * unit[:, :, None] * unit[:, None, :]
    rows = sqrt_w_rho1[:, None, None] * (corrector @ jacobian)
    return _System(rows, -(sqrt_w_rho1 / (1 - alpha))[:, None] * r)


class SparseStep:
    """The sparsity of the BA Jacobian (Theseus's SparseStructure) and a damped solver over it.

    Columns: 6 per pose, then F per camera (free intrinsics), then 3 per point; each
    observation is two rows over its pose, camera and point columns, already sorted.
    """

    def __init__(self, problem: BAProblem, num_points: int, num_free: int):
        num_images, num_cameras = len(problem.camera_of_image), int(problem.camera_of_image.max()) + 1
        image, point = problem.image_index.cpu().numpy(), problem.point_index.cpu().numpy()
        camera = problem.camera_of_image.cpu().numpy()[image]
        self.cols = np.concatenate([
            6 * image[:, None] + np.arange(6),
            6 * num_images + num_free * camera[:, None] + np.arange(num_free),
            6 * num_images + num_free * num_cameras + 3 * point[:, None] + np.arange(3)], 1)  # (M, D)
        self.num_cols = 6 * num_images + num_free * num_cameras + 3 * num_points
        width = self.cols.shape[1]
        col_ind = np.repeat(self.cols[:, None, :], 2, 1).reshape(-1)
        self.structure = SparseStructure(col_ind, np.arange(0, 2 * len(image) * width + 1, width),
                                         2 * len(image), self.num_cols)
        self.cols_t = torch.from_numpy(self.cols).to(problem.xy.device)
        self._solver = _make_solver(self.structure, problem.xy.device)

    def column_scale(self, system: _System) -> torch.Tensor:
        """(num_cols,) Jacobi scaling 1 / sqrt(diag(A^T A)): damping becomes Marquardt's."""
        diag = torch.zeros(self.num_cols, dtype=system.rows.dtype, device=system.rows.device)
        diag.index_add_(0, self.cols_t.reshape(-1), (system.rows.detach() ** 2).sum(1).reshape(-1))
        return 1 / (diag + 1e-12).sqrt()

    def solve(self, system: _System, damping: float) -> torch.Tensor:
        """argmin |A x - b|^2 + damping |x / scale|^2, (num_cols,), differentiable in A and b."""
        scale = self.column_scale(system)
        values = (system.rows * scale[self.cols_t][:, None, :]).reshape(1, -1)
        return self._solver(values, system.b.reshape(1, -1), damping)[0] * scale

    def apply(self, system: _System, step: torch.Tensor) -> torch.Tensor:
        """A @ step, (M, 2)."""
        return (system.rows @ step[self.cols_t][:, :, None])[:, :, 0]


def _make_solver(structure: SparseStructure, device: torch.device):
    """A differentiable damped sparse least-squares solve: LU on CUDA where Theseus's CUDA
    extension is built, CHOLMOD on the CPU otherwise. Returns f(A_val (1, nnz), b (1, rows), damping)."""
    if device.type == "cuda":
        try:
            return _lu_cuda_solver(structure, device)
        except ImportError:
            pass  # Theseus built without its CUDA extension: CHOLMOD works on copies
    from sksparse.cholmod import CholmodNotPositiveDefiniteError, analyze_AAt

    # Once: the ordering and fill-in. Simplicial, not supernodal: BA's 3 x 3 point blocks make
    # tiny supernodes, and CHOLMOD's supernodal factorisation took 5x longer (1.0 s against
    # 0.19 s at 30 cameras and 10,000 points).
    symbolic = analyze_AAt(structure.mock_csc_transpose(), mode="simplicial")

    def solve(values, b, damping):
        # The gauge (a similarity of the scene) leaves A^T A singular: a damping near zero can
        # lose positive definiteness to rounding; ten times more is still tiny after scaling.
        for _ in range(8):
            try:
                return CholmodSolveFunction.apply(values, b, structure, symbolic, damping, False)
            except CholmodNotPositiveDefiniteError:
                damping *= 10
        return CholmodSolveFunction.apply(values, b, structure, symbolic, damping, False)
    return solve


def _lu_cuda_solver(structure: SparseStructure, device: torch.device):
    from theseus.extlib.cusolver_lu_solver import CusolverLUSolver
    from theseus.optimizer.autograd import LUCudaSolveFunction

    row_ptr = torch.tensor(structure.row_ptr, dtype=torch.int32, device=device)
    col_ind = torch.tensor(structure.col_ind, dtype=torch.int32, device=device)
    at = structure.mock_csc_transpose()
    ata = (at @ at.T).tocsr()
    context = CusolverLUSolver(1, ata.shape[1], torch.tensor(ata.indptr, dtype=torch.int32, device=device),
                               torch.tensor(ata.indices, dtype=torch.int32, device=device))

    def solve(values, b, damping):
        alpha_beta = (torch.zeros(1, dtype=values.dtype, device=device),
                      torch.full((1,), damping, dtype=values.dtype, device=device))  # A^T A + beta I
        return LUCudaSolveFunction.apply(values, b, structure, row_ptr, col_ind, context, alpha_beta, True, False)
    return solve


def retract(problem: BAProblem, state: BAState, step: torch.Tensor, free: list[int]) -> BAState:
    """state (+) step: poses by SE3 retraction (x exp(delta)), free params and points additively."""
    num_images, num_cameras = state.cam_from_world.shape[0], state.camera_params.shape[0]
    pose_step, rest = step[:6 * num_images].reshape(-1, 6), step[6 * num_images:]
    params_step, point_step = rest[:len(free) * num_cameras], rest[len(free) * num_cameras:]
    poses = th.SE3(tensor=state.cam_from_world, disable_checks=True).retract(pose_step).tensor
    params = state.camera_params.clone()
    params[:, free] = params[:, free] + params_step.reshape(num_cameras, len(free))
    return BAState(poses, state.points + point_step.reshape(-1, 3), params)


# Ceres keeps its LM diagonal at least 1e-6; with Jacobi scaling a smaller floor does the same.
MIN_DAMPING = 1e-10


def levenberg_marquardt(problem: BAProblem, state: BAState, settings: BundleAdjustmentSettings,
                        step: SparseStep, function_tolerance: float = 1e-9) -> tuple[BAState, float]:
    """Ceres-like LM (Jacobi scaling, initial damping 1e-4, Nielsen's damping update).

    Stops after settings.max_iterations, or when an accepted step lowers the cost by less
    than function_tolerance relative. Returns the state and its robust cost.
    """
    free = free_params(problem.model, settings)
    damping, factor = 1e-4, 2.0
    r, jacobian = residuals(problem, state, free)
    cost = float(robust_cost(problem, r, settings.robust_loss_scale_px))
    for _ in range(settings.max_iterations):
        system = robustify(problem, r, jacobian, settings.robust_loss_scale_px, curvature=False)
        delta = step.solve(system, damping)
        predicted = 0.5 * float((system.b ** 2).sum() - ((system.b - step.apply(system, delta)) ** 2).sum())
        candidate = retract(problem, state, delta, free)
        new_r, new_jacobian = residuals(problem, candidate, free)
        new_cost = float(robust_cost(problem, new_r, settings.robust_loss_scale_px))
        gain = (cost - new_cost) / max(predicted, 1e-300)
        if gain > 1e-3 and np.isfinite(new_cost):
            converged = cost - new_cost < function_tolerance * cost
            state, r, jacobian, cost = candidate, new_r, new_jacobian, new_cost
            damping, factor = max(damping * max(1 / 3, 1 - (2 * min(gain, 1.0) - 1) ** 3), MIN_DAMPING), 2.0
            if converged:
                break
        else:
            damping, factor = damping * factor, factor * 2
            if damping > 1e16:
                break
    return state, cost


def solve_differentiable(problem: BAProblem, state: BAState, settings: BundleAdjustmentSettings,
                         implicit_damping: float = 1e-10, function_tolerance: float = 1e-9) -> BAState:
    """Bundle adjustment whose result carries autograd to problem.xy and problem.weight.

    The optimisation itself runs without autograd; a last Gauss-Newton step from the optimum
    (zero in value) carries the implicit gradient. The gauge (a similarity of the whole scene)
    is unconstrained: `implicit_damping` picks the least-norm gradient, exact for quantities
    that do not depend on the gauge (reprojections, relative poses, ratios of distances).
    """
    step = SparseStep(problem, state.points.shape[0], len(free_params(problem.model, settings)))
    with torch.no_grad():
        detached = replace(problem, xy=problem.xy.detach(), weight=problem.weight.detach())
        optimum, _ = levenberg_marquardt(detached, _detach(state), settings, step, function_tolerance)
    free = free_params(problem.model, settings)
    r, jacobian = residuals(problem, optimum, free)
    system = robustify(problem, r, jacobian, settings.robust_loss_scale_px, curvature=True)
    return retract(problem, optimum, step.solve(system, implicit_damping), free)


def _detach(state: BAState) -> BAState:
    return BAState(state.cam_from_world.detach(), state.points.detach(), state.camera_params.detach())


def problem_from_reconstruction(rec: pycolmap.Reconstruction) -> tuple[BAProblem, BAState, list, list, list]:
    """Tensors (float64, CPU) of rec's registered images, their cameras and observed points.

    Also returns the image ids, camera ids and point3D ids in tensor order, to write back.
    """
    image_ids = sorted(i for i, image in rec.images.items() if image.has_pose)
    camera_ids = sorted({rec.images[i].camera_id for i in image_ids})
    model = _common_model({rec.cameras[c].model.name for c in camera_ids})
    num_params = len(pycolmap.Camera.create_from_model_name(0, model, 1.0, 1, 1).params)
    camera_row = {c: k for k, c in enumerate(camera_ids)}
    xy, image_index, point_id = [], [], []
    for row, image_id in enumerate(image_ids):
        observed = rec.images[image_id].get_observation_points2D()
        xy += [p.xy for p in observed]
        point_id += [p.point3D_id for p in observed]
        image_index += [row] * len(observed)
    point_ids, point_index = np.unique(np.array(point_id, np.int64), return_inverse=True)
    poses = [rec.images[i].cam_from_world().matrix() for i in image_ids]
    problem = BAProblem(torch.tensor(np.array(xy)), torch.ones(len(xy), dtype=torch.float64),
                        torch.tensor(image_index), torch.from_numpy(point_index.reshape(-1)),
                        torch.tensor([camera_row[rec.images[i].camera_id] for i in image_ids]), model,
                        fixed_radial=torch.tensor([rec.cameras[c].model.name != model for c in camera_ids]))
    # A SIMPLE_PINHOLE camera's (f, cx, cy) are the radial model's first params; its radial terms are 0.
    params = [np.pad(np.asarray(rec.cameras[c].params, np.float64), (0, num_params - len(rec.cameras[c].params)))
              for c in camera_ids]
    state = BAState(torch.tensor(np.array(poses)), torch.tensor(np.array([rec.points3D[p].xyz for p in point_ids])),
                    torch.tensor(np.array(params)))
    return problem, state, image_ids, camera_ids, point_ids.tolist()


def _common_model(models: set[str]) -> str:
    """The camera model the problem is built on: the cameras' one model or, where cameras
    adjusted without their radial term (SIMPLE_PINHOLE) sit beside radial ones, the radial one."""
    if len(models) == 1 and models <= CAMERA_LAYOUTS.keys():
        return next(iter(models))
    radial = models - {"SIMPLE_PINHOLE"}
    if "SIMPLE_PINHOLE" in models and len(radial) == 1 and radial <= {"SIMPLE_RADIAL", "RADIAL"}:
        return radial.pop()
    raise ValueError(f"TheseusBundleAdjuster needs one camera model of {sorted(CAMERA_LAYOUTS)} (or SIMPLE_PINHOLE "
                     f"beside one radial model), got {sorted(models)}")


def write_to_reconstruction(rec: pycolmap.Reconstruction, state: BAState, image_ids: list, camera_ids: list,
                            point_ids: list) -> None:
    """Copy the state into rec (poses through each image's frame, as the rest of the project)."""
    poses, points, params = (t.detach().cpu().numpy() for t in (state.cam_from_world, state.points, state.camera_params))
    for image_id, pose in zip(image_ids, poses):
        image = rec.images[image_id]
        rotation = pycolmap.Rotation3d(pose[:, :3])
        rec.frame(image.frame_id).set_cam_from_world(image.camera_id, pycolmap.Rigid3d(rotation, pose[:, 3]))
    for camera_id, camera_params in zip(camera_ids, params):
        camera = rec.cameras[camera_id]
        camera.params = camera_params[:len(camera.params)]  # a SIMPLE_PINHOLE among radial ones: (f, cx, cy)
    for point_id, xyz in zip(point_ids, points):
        rec.points3D[point_id].xyz = xyz


class TheseusBundleAdjuster:
    name = "theseus"

    def adjust(self, rec: pycolmap.Reconstruction, settings: BundleAdjustmentSettings) -> float:
        """As CeresBundleAdjuster: normalise, refine in place, return the mean reprojection error."""
        rec.normalize()  # the same conditioning as Ceres's run (see CeresBundleAdjuster)
        problem, state, *ids = problem_from_reconstruction(rec)
        problem.constant_camera = torch.tensor([c in settings.constant_cameras for c in ids[1]])
        if not len(problem.xy):
            return float(rec.compute_mean_reprojection_error())
        step = SparseStep(problem, state.points.shape[0], len(free_params(problem.model, settings)))
        with torch.no_grad():
            state, _ = levenberg_marquardt(problem, state, settings, step, settings.function_tolerance)
        write_to_reconstruction(rec, state, *ids)
        rec.update_point_3d_errors()  # as Ceres's run: the mean error reads each point's cached error
        return float(rec.compute_mean_reprojection_error())
