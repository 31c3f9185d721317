"""Training data and losses for the learned track refiner, made by the project itself.

Two sources, nothing downloaded:
- warps of photographs (`warp_batch`): a point of a photo, seen again through a random local
  affine change (any roll, scale 0.6-1.6, some shear) with changed brightness, contrast,
  blur and noise; the query patch is sampled through an estimate of that change as far off
  as SIFT's scale and orientation are, the window around a coarse position up to
  `coarse_error_px` away. The label is the true offset.
- rendered scenes (`track_problem`): points on the synthetic landmark's faces seen by
  several rendered views, with their true projections, coarse positions and the affine
  change between views from the faces' planes. They make small bundle adjustment problems
  (`end_to_end_loss`): the refined positions and their confidences go into the Theseus
  solver and the refined model's reprojection error against the true projections flows
  back into the refiner.

Conventions: images are (H, W) float32 in [0, 1]; pixel coordinates follow COLMAP (the centre
of the top-left pixel is (0.5, 0.5)); poses are cam_from_world.
"""
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from sfm_core.bundle_adjustment import BundleAdjustmentSettings
from sfm_core.synthetic import Landmark
from sfm_core.theseus_ba import BAProblem, BAState, free_params, residuals, solve_differentiable
from sfm_core.track_refinement import PatchGeometry, sample_patches


@dataclass(frozen=True)
class TrainingSettings:
    seed: int = 0
    batch: int = 256  # warped samples per step
    learning_rate: float = 2e-3
    offset_minutes: float = 20.0  # first stage: the offsets of warped photos
    end_to_end_minutes: float = 8.0  # second stage: through bundle adjustment on rendered scenes
    coarse_error_px: float = 2.0  # coarse positions are up to this far from the truth, per axis
    affine_angle_error_deg: float = 8.0  # how far SIFT's orientation difference may be off
    affine_scale_error: float = 0.12  # and its scale ratio (log-normal sigma)
    confident_within_px: float = 0.75  # the confidence learns whether the offset is this close
    views: int = 6  # views of one end-to-end problem
    points: int = 120  # points of one end-to-end problem

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------- warps of photographs

class PhotoSet:
    """Photos to warp, (H, W) float32 each, with a blurred copy and where their texture is.

    blurred[i] is photos[i] smoothed (sigma 1.2 px); texture[i] (H * W,) weights points by
    local gradient energy, so that samples fall where a keypoint detector would put them.
    """

    def __init__(self, photos: list[torch.Tensor]):
        self.photos = photos
        self.blurred = [_gaussian_blur(p, 1.2) for p in photos]
        self.texture = []
        for photo in photos:
            gy, gx = torch.gradient(photo)
            energy = _gaussian_blur(gx * gx + gy * gy, 2.0)
            self.texture.append((energy.flatten() + 1e-8) / (energy.sum() + 1e-8 * energy.numel()))


def warp_batch(photos: PhotoSet, geometry: PatchGeometry, settings: TrainingSettings,
               generator: torch.Generator, size: int | None = None) -> tuple[torch.Tensor, ...]:
    """query (B, P, P), window (B, W, W) and offset (B, 2): where the query patch's centre lies
    in the window, relative to its centre, in window pixels (x, y)."""
    size = size or settings.batch
    photo = torch.randint(len(photos.photos), (size,), generator=generator)
    # The target view's local change: target offset p -> source offset M p.
    angle = (torch.rand(size, generator=generator) * 2 - 1) * math.pi
    scale = torch.exp(torch.empty(size).uniform_(math.log(0.6), math.log(1.6), generator=generator))
    shear = torch.eye(2) + 0.08 * torch.randn(size, 2, 2, generator=generator)
    true_map = scale[:, None, None] * _rotation(angle) @ shear
    # SIFT's estimate of it, off in roll and scale.
    angle_error = torch.randn(size, generator=generator) * math.radians(settings.affine_angle_error_deg)
    scale_error = torch.exp(torch.randn(size, generator=generator) * settings.affine_scale_error)
    estimate = true_map @ (scale_error[:, None, None] * _rotation(angle_error))
    offset = (torch.rand(size, 2, generator=generator) * 2 - 1) * settings.coarse_error_px

    query = torch.empty(size, geometry.patch_size, geometry.patch_size)
    window = torch.empty(size, geometry.window_size, geometry.window_size)
    window_radius = geometry.patch_radius + geometry.search_radius
    for index in torch.unique(photo).tolist():
        rows = torch.nonzero(photo == index)[:, 0]
        image = photos.photos[index]
        height, width = image.shape
        flat = torch.multinomial(photos.texture[index], len(rows), replacement=True, generator=generator)
        point = torch.stack([flat % width, flat // width], dim=1).float() + 0.5
        # Keep the whole window inside the photo whatever the change.
        margin = 2.2 * window_radius
        point = point.clamp(torch.tensor([margin, margin]), torch.tensor([width - margin, height - margin]))
        query[rows] = sample_patches(image, point, estimate[rows], geometry.patch_radius)
        # The window is centred `offset` away from the point: its pixel p shows source
        # point + M (p - offset).
        blurred = torch.rand(1, generator=generator).item() < 0.3
        source = photos.blurred[index] if blurred else image
        window[rows] = sample_patches(source, point - (offset[rows, None, :] @ true_map[rows].transpose(1, 2))[:, 0],
                                      true_map[rows], window_radius)
    return _photometric(query, generator, 0.1), _photometric(window, generator, 0.3), offset


def offset_loss(predicted: torch.Tensor, confidence: torch.Tensor, offset: torch.Tensor,
                settings: TrainingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-sample error px): a robust error of the offsets, and the confidence's
    cross-entropy against whether the offset came within confident_within_px."""
    error = (predicted - offset).norm(dim=1)
    robust = torch.sqrt(error * error + 0.01).mean()
    confident = (error < settings.confident_within_px).float().detach()
    calibration = torch.nn.functional.binary_cross_entropy(confidence.clamp(1e-4, 1 - 1e-4), confident)
    return robust + 0.1 * calibration, error.detach()


# ---------------------------------------------------------------- rendered scenes

@dataclass
class RenderedViews:
    """Views of the landmark: images (H, W) float32, intrinsics (F, 4) fx, fy, cx, cy and
    cam_from_world (F, 3, 4), both float64."""

    landmark: Landmark
    images: list[torch.Tensor]
    intrinsics: torch.Tensor
    cam_from_world: torch.Tensor

    def project(self, view: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels (N, 2) and depths (N,) of world points (N, 3) in a view."""
        pose = self.cam_from_world[view].numpy()
        camera = points @ pose[:, :3].T + pose[:, 3]
        fx, fy, cx, cy = self.intrinsics[view].numpy()
        return np.stack([fx * camera[:, 0] / camera[:, 2] + cx, fy * camera[:, 1] / camera[:, 2] + cy], 1), camera[:, 2]

    def centre(self, view: int) -> np.ndarray:
        pose = self.cam_from_world[view].numpy()
        return -pose[:, :3].T @ pose[:, 3]


@dataclass
class TrackProblem:
    """N points seen by V views. xy, true_xy: (V, N, 2); visible: (V, N) bool; query_view:
    (N,) long; affine: (V, N, 2, 2) estimated map of a pixel offset in view v to one in the
    query view; points: (N, 3) world; views: (V,) indices into the RenderedViews."""

    views: torch.Tensor
    points: torch.Tensor
    visible: torch.Tensor
    true_xy: torch.Tensor
    xy: torch.Tensor
    query_view: torch.Tensor
    affine: torch.Tensor


def track_problem(rendered: RenderedViews, geometry: PatchGeometry, settings: TrainingSettings,
                  rng: np.random.Generator) -> TrackProblem | None:
    """Points on the landmark's faces seen by at least 3 of `settings.views` neighbouring views,
    with coarse positions up to coarse_error_px from the truth (the query view's 0.3 px); None
    when too few points are seen."""
    count = len(rendered.images)
    first = int(rng.integers(0, count - settings.views + 1))
    views = np.arange(first, first + settings.views)
    margin = geometry.patch_radius + geometry.search_radius + settings.coarse_error_px + 2
    faces = rendered.landmark.faces
    candidates, face_of = [], []
    for _ in range(settings.points * 6):
        face = int(rng.integers(len(faces)))
        candidates.append(faces[face].point(*rng.uniform(0.02, 0.98, 2)))
        face_of.append(face)
    candidates, face_of = np.array(candidates), np.array(face_of)
    visible = np.zeros((len(views), len(candidates)), bool)
    true_xy = np.zeros((len(views), len(candidates), 2))
    for row, view in enumerate(views):
        xy, depth = rendered.project(view, candidates)
        height, width = rendered.images[view].shape
        inside = (depth > 0) & (xy[:, 0] > margin) & (xy[:, 0] < width - margin) \
            & (xy[:, 1] > margin) & (xy[:, 1] < height - margin)
        centre = rendered.centre(view)
        distance, hit = rendered.landmark.trace(centre, candidates - centre)
        visible[row] = inside & (hit == face_of) & (np.abs(distance - 1) < 1e-3)
        true_xy[row] = xy
    keep = np.nonzero(visible.sum(axis=0) >= 3)[0][: settings.points]
    if len(keep) < 20:
        return None
    visible, true_xy, points, face_of = visible[:, keep], true_xy[:, keep], candidates[keep], face_of[keep]
    query_view = visible.argmax(axis=0)  # the first view that sees each point
    noise = rng.uniform(-settings.coarse_error_px, settings.coarse_error_px, true_xy.shape)
    noise[query_view, np.arange(len(keep))] = rng.normal(0, 0.3, (len(keep), 2))
    affine = _affine_estimates(rendered, views, points, face_of, query_view, settings, rng)
    return TrackProblem(torch.as_tensor(views), torch.as_tensor(points), torch.as_tensor(visible),
                        torch.as_tensor(true_xy, dtype=torch.float32), torch.as_tensor(true_xy + noise, dtype=torch.float32),
                        torch.as_tensor(query_view), torch.as_tensor(affine, dtype=torch.float32))


def refine_problem(refiner, rendered: RenderedViews, problem: TrackProblem) -> tuple[torch.Tensor, torch.Tensor]:
    """The refiner's positions (V, N, 2) and confidences (V, N) of every observation, with
    autograd; query views keep their coarse position with confidence 1."""
    geometry = refiner.geometry
    xy, confidence = problem.xy.clone(), torch.ones(problem.visible.shape)
    rows, columns = torch.nonzero(problem.visible & (problem.query_view[None, :] != torch.arange(len(problem.views))[:, None]),
                                  as_tuple=True)
    query_rows = problem.query_view[columns]
    windows = torch.empty(len(rows), geometry.window_size, geometry.window_size)
    patches = torch.empty(len(rows), geometry.patch_size, geometry.patch_size)
    identity = torch.eye(2).expand(len(rows), 2, 2)
    for row in torch.unique(rows).tolist():
        here = torch.nonzero(rows == row)[:, 0]
        windows[here] = sample_patches(rendered.images[int(problem.views[row])], problem.xy[row, columns[here]],
                                       identity[here], geometry.patch_radius + geometry.search_radius)
    for row in torch.unique(query_rows).tolist():
        here = torch.nonzero(query_rows == row)[:, 0]
        patches[here] = sample_patches(rendered.images[int(problem.views[row])], problem.xy[row, columns[here]],
                                       problem.affine[rows[here], columns[here]], geometry.patch_radius)
    offset, found = refiner(patches, windows)
    xy = xy.index_put((rows, columns), problem.xy[rows, columns] + offset)
    confidence = confidence.index_put((rows, columns), found)
    return xy, confidence


def end_to_end_loss(refiner, rendered: RenderedViews, problem: TrackProblem, rng: np.random.Generator) -> torch.Tensor:
    """Refine the problem's tracks, bundle-adjust them (Theseus, confidences as weights, the
    views' true intrinsics held fixed) from perturbed poses and points, and measure the
    refined model's reprojection error against the true projections, in pixels."""
    xy, confidence = refine_problem(refiner, rendered, problem)
    view_index, point_index = torch.nonzero(problem.visible, as_tuple=True)
    observed = BAProblem(xy[view_index, point_index].double(), confidence[view_index, point_index].double(),
                         view_index, point_index, torch.arange(len(problem.views)), "PINHOLE")
    poses = rendered.cam_from_world[problem.views].clone()
    turn = torch.as_tensor(rng.normal(0, math.radians(0.3), (len(problem.views), 3)))
    poses[:, :, :3] = _rotation_from_vector(turn) @ poses[:, :, :3]
    poses[:, :, 3] += torch.as_tensor(rng.normal(0, 0.05, (len(problem.views), 3)))
    start = BAState(poses, problem.points.double() + torch.as_tensor(rng.normal(0, 0.05, problem.points.shape)),
                    rendered.intrinsics[problem.views].clone())
    settings = BundleAdjustmentSettings(refine_focal_length=False, refine_extra_params=False, max_iterations=30)
    refined = solve_differentiable(observed, start, settings)
    truth = replace(observed, xy=problem.true_xy[view_index, point_index].double())
    error, _ = residuals(truth, refined, free_params("PINHOLE", settings))
    return torch.sqrt((error * error).sum(dim=1) + 1e-4).mean()



# ---------------------------------------------------------------- helpers

def _affine_estimates(rendered: RenderedViews, views: np.ndarray, points: np.ndarray, face_of: np.ndarray,
                      query_view: np.ndarray, settings: TrainingSettings, rng: np.random.Generator) -> np.ndarray:
    """(V, N, 2, 2): the map of a pixel offset in each view to the query view's, from the
    faces' planes (J_query J_view^-1 of the face's texture coordinates), then put off as
    SIFT's estimate is."""
    jacobians = np.zeros((len(views), len(points), 2, 2))
    for row, view in enumerate(views):
        for axis in range(2):
            step = np.stack([rendered.landmark.faces[f].u_axis if axis == 0 else rendered.landmark.faces[f].v_axis
                             for f in face_of]) * 1e-3
            ahead, _ = rendered.project(view, points + step)
            behind, _ = rendered.project(view, points - step)
            jacobians[row, :, :, axis] = (ahead - behind) / 2e-3
    query = jacobians[query_view, np.arange(len(points))]  # (N, 2, 2)
    true_map = query[None] @ np.linalg.inv(jacobians + 1e-9 * np.eye(2))
    angle = rng.normal(0, math.radians(settings.affine_angle_error_deg), true_map.shape[:2])
    scale = np.exp(rng.normal(0, settings.affine_scale_error, true_map.shape[:2]))
    error = scale[..., None, None] * np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1),
                                               np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    return true_map @ error


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) rotations by `angle` in image axes (x right, y down)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _rotation_from_vector(vector: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) float64 rotations of axis-angle vectors (B, 3) (Rodrigues)."""
    angle = vector.norm(dim=1, keepdim=True).clamp_min(1e-12)
    axis = vector / angle
    k = torch.zeros(len(vector), 3, 3, dtype=vector.dtype)
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    k = k - k.transpose(1, 2)
    angle = angle[:, :, None]
    return torch.eye(3, dtype=vector.dtype) + torch.sin(angle) * k + (1 - torch.cos(angle)) * k @ k


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma + 0.5)
    steps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-steps ** 2 / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(image[None, None], (radius, radius, radius, radius), mode="replicate")
    smoothed = torch.nn.functional.conv2d(padded, kernel.reshape(1, 1, 1, -1))
    return torch.nn.functional.conv2d(smoothed, kernel.reshape(1, 1, -1, 1))[0, 0]


def _photometric(patches: torch.Tensor, generator: torch.Generator, strength: float) -> torch.Tensor:
    """Random gain, bias and noise per patch, as lighting and sensors change between photos."""
    size = len(patches)
    gain = 1 + strength * (torch.rand(size, 1, 1, generator=generator) * 2 - 1)
    bias = strength * 0.5 * (torch.rand(size, 1, 1, generator=generator) * 2 - 1)
    noise = strength * 0.1 * torch.rand(size, 1, 1, generator=generator) * torch.randn(patches.shape, generator=generator)
    return patches * gain + bias + noise
