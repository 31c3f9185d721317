"""The colours of 3D points, sampled from the photos that observe them, as COLMAP's
`extract_colors_for_all_images` does, but from images we decoded ourselves (any format
storage.images reads, EXIF-oriented, possibly downscaled).

Conventions
- Observations are COLMAP pixel coordinates of the full-resolution (viewed) photo: the centre
  of the top-left pixel is (0.5, 0.5) and a W x H photo covers [0, W] x [0, H].
- A downscaled image covers the same extent, so a full-resolution point maps to it by a pure
  per-axis division by scale_xy = (W_full / W_small, H_full / H_small).
- A point's colour is the mean of the bilinear samples of all its observations, rounded to
  uint8 (COLMAP rounds the mean the same way).
"""
import numpy as np


def sample_bilinear(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Colours of `image` (H, W, C) at `xy` (N, 2) COLMAP pixel coordinates of that image.

    Returns (N, C) float64. At a pixel centre (j + 0.5, i + 0.5) the sample is exactly
    image[i, j]; between centres it interpolates the four neighbours; within half a pixel
    of the border (and beyond) it takes the nearest border pixel.
    """
    h, w = image.shape[:2]
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    # Shift to integer pixel centres, then clamp into the grid of centres.
    x = np.clip(xy[:, 0] - 0.5, 0.0, w - 1.0)
    y = np.clip(xy[:, 1] - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bottom = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def observation_colours(image: np.ndarray, xy_full: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """Colours (N, 3) float64 of observations `xy_full` (N, 2), COLMAP pixel coordinates of the
    full-resolution photo, sampled from its decoded `image` (h, w, 3) uint8, which is the
    full photo scaled down by `scale_xy` = (W_full / w, H_full / h)."""
    xy = np.asarray(xy_full, np.float64).reshape(-1, 2) / np.asarray(scale_xy, np.float64)
    return sample_bilinear(image, xy)


def mean_colours(point_ids: np.ndarray, colours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean colour of each point over its observations.

    point_ids: (M,) int, the 3D point of each observation (repeated across images).
    colours: (M, 3) float, the colour sampled at each observation.
    Returns (ids (P,) int64 sorted and unique, colours (P, 3) uint8, the rounded means).
    """
    point_ids = np.asarray(point_ids, np.int64).reshape(-1)
    colours = np.asarray(colours, np.float64).reshape(-1, 3)
    if len(point_ids) != len(colours):
        raise ValueError(f"{len(point_ids)} point ids for {len(colours)} colours")
    ids, which = np.unique(point_ids, return_inverse=True)
    sums = np.zeros((len(ids), 3))
    np.add.at(sums, which, colours)
    counts = np.bincount(which, minlength=len(ids))[:, None]
    # floor(x + 0.5): round half up, as COLMAP's std::round does for these non-negative means.
    means = np.floor(sums / np.maximum(counts, 1) + 0.5)
    return ids, np.clip(means, 0, 255).astype(np.uint8)
