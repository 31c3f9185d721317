"""Fine track refinement: every observation of a track moved to where its query frame's patch
correlates best, to sub-pixel precision, with a confidence.

Tracks come coarse, from matched SIFT keypoints: each frame's keypoint is an independent
detection, a pixel or so from where the query frame's keypoint really lies. As VGGSfM's fine
tracker does, each observation is re-found by comparing a patch around the query frame's
observation with a small search window around the coarse position: here by normalised
cross-correlation (the geometric refiner; a learned one can take its place, see
`PatchRefiner`). The query patch is sampled through the affine change between the two
keypoints (SIFT scale ratio and orientation difference), so views that differ in scale and
roll compare like with like.

Conventions: pixel coordinates follow COLMAP (the centre of the top-left pixel is (0.5, 0.5));
`images[f]` are grayscale at the resolution the features came from, `scale_xy[f]` the factor
from it to the full-resolution coordinates of the tracks.
"""
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np
import torch

from sfm_core.tracks import Tracks


@dataclass(frozen=True)
class PatchGeometry:
    patch_radius: int = 5  # patches are (2r + 1)^2 pixels of the features' resolution
    search_radius: int = 3  # offsets up to this many pixels from the coarse position are tried
    max_scale_ratio: float = 4.0  # keypoint scale ratios beyond this are clipped

    @property
    def patch_size(self) -> int:
        return 2 * self.patch_radius + 1

    @property
    def window_size(self) -> int:
        return 2 * (self.patch_radius + self.search_radius) + 1


class PatchRefiner(Protocol):
    geometry: PatchGeometry

    def __call__(self, query: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (M, P, P) and window (M, W, W) -> offset (M, 2) in window pixels (x, y) of the
        query patch's centre from the window's centre, and confidence (M,) in [0, 1]."""


class CorrelationRefiner:
    """Normalised cross-correlation over every integer offset of the window, refined to
    sub-pixel by a parabola through the peak and its neighbours along each axis."""

    def __init__(self, geometry: PatchGeometry = PatchGeometry()):
        self.geometry = geometry

    def __call__(self, query: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = correlation(query, window)  # (M, K, K)
        return peak_offset(scores), scores.flatten(1).max(dim=1).values.clamp(0, 1)


def correlation(query: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """NCC of query (M, P, P) at every placement in window (M, W, W): (M, K, K), K = W - P + 1.

    A flat patch (no texture) correlates 0 everywhere. As one grouped convolution (a sample
    per group): the query's mean is zero after centring, so the placements' means drop out of
    the numerator and only their spread is needed, from two average poolings.
    """
    m, p = query.shape[0], query.shape[-1]
    q = query - query.mean(dim=(1, 2), keepdim=True)
    q = q / q.flatten(1).norm(dim=1)[:, None, None].clamp_min(1e-6)
    products = torch.nn.functional.conv2d(window[None], q[:, None], groups=m)[0]  # (M, K, K)
    mean = torch.nn.functional.avg_pool2d(window[:, None], p, stride=1)[:, 0]
    mean_square = torch.nn.functional.avg_pool2d(window[:, None] ** 2, p, stride=1)[:, 0]
    spread = (p * p * (mean_square - mean * mean)).clamp_min(0).sqrt()
    return torch.where(spread > 1e-6, products / spread.clamp_min(1e-6), torch.zeros_like(products))


def peak_offset(scores: torch.Tensor) -> torch.Tensor:
    """(M, 2) sub-pixel (x, y) of each (M, K, K) score map's peak, relative to its centre."""
    m, k = scores.shape[0], scores.shape[-1]
    flat = scores.flatten(1).argmax(dim=1)
    row, col = flat // k, flat % k
    rows = torch.arange(m)

    def vertex(before, at, after):
        curvature = before - 2 * at + after
        step = 0.5 * (before - after) / torch.where(curvature < -1e-6, curvature, -torch.ones_like(curvature))
        return torch.where(curvature < -1e-6, step.clamp(-0.5, 0.5), torch.zeros_like(step))

    inner_x = (col > 0) & (col < k - 1)
    inner_y = (row > 0) & (row < k - 1)
    cx, cy = col.clamp(1, k - 2), row.clamp(1, k - 2)
    dx = torch.where(inner_x, vertex(scores[rows, row, cx - 1], scores[rows, row, cx], scores[rows, row, cx + 1]), 0.0)
    dy = torch.where(inner_y, vertex(scores[rows, cy - 1, col], scores[rows, cy, col], scores[rows, cy + 1, col]), 0.0)
    centre = (k - 1) / 2
    return torch.stack([col + dx - centre, row + dy - centre], dim=1)


def sample_patches(image: torch.Tensor, centres: torch.Tensor, frames: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilinear patches of image (H, W) around centres (M, 2), COLMAP pixel coordinates.

    frames: (M, 2, 2) maps a patch offset (x, y) in patch pixels to an image offset. Returns
    (M, 2r + 1, 2r + 1); samples outside the image read the nearest border pixel.
    """
    height, width = image.shape
    steps = torch.arange(-radius, radius + 1, dtype=centres.dtype, device=centres.device)
    grid_y, grid_x = torch.meshgrid(steps, steps, indexing="ij")
    dx, dy = grid_x.reshape(1, -1), grid_y.reshape(1, -1)  # (1, S) patch offsets
    x = centres[:, 0:1] + frames[:, 0, 0:1] * dx + frames[:, 0, 1:2] * dy  # (M, S) image points
    y = centres[:, 1:2] + frames[:, 1, 0:1] * dx + frames[:, 1, 1:2] * dy
    # grid_sample, align_corners=False: -1 and 1 are the outer edges, as COLMAP's 0 and W.
    normalised = torch.stack([2 * x / width - 1, 2 * y / height - 1], dim=-1)
    sampled = torch.nn.functional.grid_sample(image[None, None], normalised[None], mode="bilinear",
                                              padding_mode="border", align_corners=False)
    return sampled[0, 0].reshape(len(centres), 2 * radius + 1, 2 * radius + 1)


@dataclass
class KeypointShape:
    """SIFT scale (in full-resolution pixels) and orientation (radians, image axes: x right,
    y down) of each track observation: scale (F, N), orientation (F, N); NaN where not visible."""
    scale: np.ndarray
    orientation: np.ndarray


def refine_tracks(tracks: Tracks, images: list[torch.Tensor], scale_xy: list[tuple[float, float]],
                  shape: KeypointShape, refiner: PatchRefiner, passes: int = 2, min_confidence: float = 0.5,
                  batch: int = 4096, settled: np.ndarray | None = None) -> Tracks:
    """Each visible observation of each track re-found from the track's query frame.

    settled: (F, N) bool, observations already found by correlation with their query patch
    (sfm_core.query_tracks' followed points): they keep their position and confidence.

    In each pass an observation moves by the refiner's offset when its confidence reaches
    min_confidence and the offset stays inside the search window; otherwise it stays. A
    second pass, from the moved positions, removes most of the first one's interpolation
    bias. The query frame's own observations stay, with confidence 1. Returns new Tracks: xy
    refined, confidence the last pass's (the query frame's 1), the rest unchanged.
    """
    settled = np.zeros(tracks.visibility.shape, bool) if settled is None else settled
    with torch.no_grad():
        for _ in range(passes):
            tracks = _refine_once(tracks, images, scale_xy, shape, refiner, min_confidence, batch, settled)
    return tracks


def _refine_once(tracks: Tracks, images: list[torch.Tensor], scale_xy: list[tuple[float, float]],
                 shape: KeypointShape, refiner: PatchRefiner, min_confidence: float, batch: int,
                 settled: np.ndarray) -> Tracks:
    geometry = refiner.geometry
    xy = torch.as_tensor(tracks.xy, dtype=torch.float32).clone()
    confidence = np.where(settled, tracks.confidence, 0).astype(np.float32)
    num_frames, num_tracks = tracks.visibility.shape
    query = torch.as_tensor(tracks.query_frame, dtype=torch.long)
    confidence[tracks.query_frame, np.arange(num_tracks)] = np.where(
        tracks.visibility[tracks.query_frame, np.arange(num_tracks)], 1.0, 0.0)
    scale = torch.as_tensor(np.asarray(shape.scale, np.float32))
    orientation = torch.as_tensor(np.asarray(shape.orientation, np.float32))
    feature_scale = torch.tensor(scale_xy, dtype=torch.float32)  # (F, 2) full / feature
    for frame in range(num_frames):
        observed = np.nonzero(tracks.visibility[frame] & (tracks.query_frame != frame) & ~settled[frame])[0]
        for start in range(0, len(observed), batch):
            track = torch.as_tensor(observed[start: start + batch], dtype=torch.long)
            source = query[track]
            centre = xy[frame, track] / feature_scale[frame]
            query_centre = xy[source, track] / feature_scale[source]
            window = sample_patches(images[frame], centre, _eye(len(track)), geometry.patch_radius
                                    + geometry.search_radius)
            affine = _affine(scale, orientation, feature_scale, frame, source, track, geometry)
            patch = _query_patches(images, source, query_centre, affine, geometry)
            offset, found = refiner(patch, window)
            inside = (offset.abs() <= geometry.search_radius - 0.5).all(dim=1)
            accept = (found >= min_confidence) & inside
            xy[frame, track[accept]] = (centre[accept] + offset[accept]) * feature_scale[frame]
            confidence[frame, track.numpy()] = found.detach().numpy()
    return replace(tracks, xy=xy.numpy(), confidence=confidence.astype(np.float16))


def _eye(m: int) -> torch.Tensor:
    return torch.eye(2).expand(m, 2, 2)


def _affine(scale: torch.Tensor, orientation: torch.Tensor, feature_scale: torch.Tensor, frame: int,
            source: torch.Tensor, track: torch.Tensor, geometry: PatchGeometry) -> torch.Tensor:
    """(M, 2, 2): a pixel offset in `frame` (features' resolution) as an offset in the source
    frame: (s_q / s_t) R(theta_q - theta_t), from the two keypoints' scales and orientations."""
    ratio = (scale[source, track] / feature_scale[source].mean(dim=1)) / (scale[frame, track] / feature_scale[frame].mean())
    ratio = torch.nan_to_num(ratio, nan=1.0).clamp(1 / geometry.max_scale_ratio, geometry.max_scale_ratio)
    angle = torch.nan_to_num(orientation[source, track] - orientation[frame, track], nan=0.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], dim=-1), torch.stack([sin, cos], dim=-1)], dim=-2)
    return ratio[:, None, None] * rotation


def _query_patches(images: list[torch.Tensor], source: torch.Tensor, centres: torch.Tensor, frames: torch.Tensor,
                   geometry: PatchGeometry) -> torch.Tensor:
    """(M, P, P) patches of each observation's query frame, sampled through `frames`."""
    patches = torch.empty(len(source), geometry.patch_size, geometry.patch_size)
    for frame in torch.unique(source).tolist():
        rows = torch.nonzero(source == frame)[:, 0]
        patches[rows] = sample_patches(images[frame], centres[rows], frames[rows], geometry.patch_radius)
    return patches
