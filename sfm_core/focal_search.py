"""The view graph's self-calibration cost and the global search of focal lengths by it.

For a pair with fundamental matrix F (x2^T F x1 = 0) and intrinsics K1, K2, the essential
matrix K2^T F K1 has two equal singular values when the focal lengths are right; the cost is
(s1 - s2) / (s1 + s2), capped, weighted by the pair's inliers.
"""
import copy as copy_module
from dataclasses import dataclass

import numpy as np
import pycolmap

from sfm_core.verification import VerifiedPair


@dataclass
class CalibrationGraph:
    """The verified pairs' fundamental matrices, indexed by camera, for the self-calibration cost."""
    principal: np.ndarray  # (C, 2) principal point per camera, COLMAP pixel convention
    first: np.ndarray  # (P,) camera index of each pair's first image
    second: np.ndarray  # (P,) camera index of its second image
    fundamentals: np.ndarray  # (P, 3, 3), x2^T F x1 = 0
    weights: np.ndarray  # (P,) inliers of each pair

    @classmethod
    def of(cls, cameras: list[pycolmap.Camera], camera_of_frame: list[int],
           pairs: list[VerifiedPair]) -> "CalibrationGraph":
        """pairs: with a fundamental matrix, frames indexing camera_of_frame."""
        return cls(np.array([[c.principal_point_x, c.principal_point_y] for c in cameras], np.float64),
                   np.array([camera_of_frame[p.index1] for p in pairs], int),
                   np.array([camera_of_frame[p.index2] for p in pairs], int),
                   np.stack([p.fundamental for p in pairs]),
                   np.array([len(p.inliers) for p in pairs], np.float64))

    def gaps(self, focal: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Capped singular-value gap (s1 - s2) / (s1 + s2) of K2^T F K1 for the pairs `rows`,
        with the cameras' focal lengths `focal` (C,)."""
        k1 = _intrinsic_matrices(focal[self.first[rows]], self.principal[self.first[rows]])
        k2 = _intrinsic_matrices(focal[self.second[rows]], self.principal[self.second[rows]])
        singular = np.linalg.svd(k2.transpose(0, 2, 1) @ self.fundamentals[rows] @ k1, compute_uv=False)
        gap = (singular[:, 0] - singular[:, 1]) / np.maximum(singular[:, 0] + singular[:, 1], 1e-12)
        return np.minimum(gap, _MAX_PAIR_COST)

    def rows_of(self, camera: int) -> np.ndarray:
        """The pairs that see `camera`."""
        return np.nonzero((self.first == camera) | (self.second == camera))[0]

    def cost(self, focal: np.ndarray, rows: np.ndarray) -> float:
        """The pairs' gaps weighted by their inliers, summed."""
        return float(np.sum(self.weights[rows] * self.gaps(focal, rows)))

    def cost_with(self, focal: np.ndarray, camera: int, value: float, rows: np.ndarray) -> float:
        """cost() with camera `camera`'s focal length set to `value`, the others as in `focal`."""
        trial = focal.copy()
        trial[camera] = value
        return self.cost(trial, rows)


# Focal lengths searched, as multiples of the image's long side: from fisheye-wide to telephoto.
FOCAL_RANGE = (0.3, 4.0)
_FOCAL_STEPS = 48
_SEARCH_SWEEPS = 3
_MAX_PAIR_COST = 0.3  # a pair's cost is capped: a wrong fundamental matrix must not pull


def search_focal_lengths(cameras: list[pycolmap.Camera], camera_of_frame: list[int],
                         pairs: list[VerifiedPair]) -> list[pycolmap.Camera]:
    """Copies of `cameras` whose unknown focal lengths (no prior) minimise the view graph's
    self-calibration cost, found by a global search rather than from the 1.2 x guess.

    Each unknown camera's focal length is searched on a log grid with the others held, a few sweeps over them, then
    refined by golden section. pycolmap's own calibration, a local one from the guess, can
    end at a minimum twice the true focal length (seen on ETH3D pipes).
    """
    unknown = [k for k, camera in enumerate(cameras) if not camera.has_prior_focal_length]
    if not unknown or not pairs:
        return cameras
    focal = np.array([c.focal_length for c in cameras], np.float64)
    graph = CalibrationGraph.of(cameras, camera_of_frame, pairs)

    for _ in range(_SEARCH_SWEEPS):
        for k in unknown:
            rows = graph.rows_of(k)
            if not len(rows):
                continue
            long_side = max(cameras[k].width, cameras[k].height)
            grid = np.geomspace(*FOCAL_RANGE, _FOCAL_STEPS) * long_side
            costs = [graph.cost_with(focal, k, value, rows) for value in grid]
            best = int(np.argmin(costs))
            low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
            focal[k] = golden_section(lambda value: graph.cost_with(focal, k, value, rows), low, high)
    searched = []
    for k, camera in enumerate(cameras):
        copy = copy_module.copy(camera)
        if k in unknown:
            copy.focal_length = float(focal[k])
        searched.append(copy)
    return searched


def f_ratio(held_cost: float, freed_cost: float, added_unknowns: int, free_unknowns: int,
            pairs: int) -> float | None:
    """Whether freeing focal lengths fits the pairs better than chance: the cost it removes per
    unknown it adds, over the cost left per pair beyond the `free_unknowns` of the freed fit;
    None when there are no more pairs than those unknowns (too few to tell)."""
    if pairs <= free_unknowns:
        return None
    return ((held_cost - freed_cost) / added_unknowns) / max(freed_cost / (pairs - free_unknowns), 1e-12)


def _intrinsic_matrices(focal: np.ndarray, principal: np.ndarray) -> np.ndarray:
    """(P, 3, 3) pinhole matrices of focal lengths (P,) and principal points (P, 2)."""
    k = np.zeros((len(focal), 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focal
    k[:, :2, 2] = principal
    k[:, 2, 2] = 1
    return k


def golden_section(fn, low: float, high: float, iterations: int = 30) -> float:
    """The minimiser of a unimodal fn on [low, high], searched in log space."""
    ratio = (np.sqrt(5) - 1) / 2
    a, b = np.log(low), np.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = fn(np.exp(c)), fn(np.exp(d))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = fn(np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = fn(np.exp(d))
    return float(np.exp((a + b) / 2))
