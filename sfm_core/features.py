"""Local features: SIFT on a downscaled image, keypoints mapped back to full resolution.
(The learned extractors, ALIKED and XFeat, are in sfm_core/learned_features.py.)

Pixel coordinates follow COLMAP: the centre of the top-left pixel is (0.5, 0.5), so a
keypoint found at x_small in the downscaled image lies at x_small * (W_full / W_small)
in the full image (a pure scale, no half-pixel shift).
"""
from dataclasses import dataclass

import numpy as np
import pycolmap

from sfm_core.exposure import stretch_dark


@dataclass
class Features:
    keypoints: np.ndarray  # (N, 2) float32, full-resolution COLMAP pixel coordinates
    scales: np.ndarray  # (N,) float32, keypoint scale in full-resolution pixels (learned: a fixed one)
    # (N, 128) uint8 SIFT, RootSIFT-normalised as COLMAP stores them, or (N, D) float32 unit rows
    # of a learned extractor (ALIKED D = 128, XFeat D = 64)
    descriptors: np.ndarray
    orientations: np.ndarray  # (N,) float32, orientation in radians (x right, y down; learned: 0)
    # The image they were extracted from (the LightGlue matchers normalise keypoints by it):
    image_size: tuple[int, int] = (0, 0)  # its (W, H) in pixels
    scale_xy: tuple[float, float] = (1.0, 1.0)  # full-resolution size / its size, per axis

    @staticmethod
    def empty(descriptor_dim: int = 128, dtype=np.uint8) -> "Features":
        return Features(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, descriptor_dim), dtype),
                        np.zeros(0, np.float32))

    def processing_keypoints(self) -> np.ndarray:
        """(N, 2) float32 keypoints in the image they were extracted from, in the convention of
        the learned extractors and LightGlue: the centre of the top-left pixel at (0, 0)."""
        return (self.keypoints / np.asarray(self.scale_xy, np.float32) - 0.5).astype(np.float32)


class SiftExtractor:
    """COLMAP's CPU SIFT (pycolmap), at most `max_features` detections per image."""

    descriptor_dim, descriptor_dtype = 128, np.uint8

    def __init__(self, max_features: int = 4096):
        self.max_features = max_features
        options = pycolmap.FeatureExtractionOptions()
        options.sift.max_num_features = max_features
        # One orientation per keypoint: duplicates only add ambiguous matches.
        options.sift.max_num_orientations = 1
        options.num_threads = 1
        self._extractor = pycolmap.FeatureExtractor.create(options)

    def __call__(self, rgb: np.ndarray, scale_xy: tuple[float, float]) -> Features:
        """rgb: (H, W, 3) uint8 downscaled image; scale_xy: full / downscaled size per axis."""
        gray = np.ascontiguousarray(stretch_dark(rgb.astype(np.float32).mean(axis=2) / 255.0))
        keypoints, descriptors = self._extractor.extract_from_float32_array(gray)
        matrix = pycolmap.keypoints_to_matrix(keypoints)  # (N, 4) x, y, scale, orientation
        descriptors = np.asarray(descriptors.data, dtype=np.uint8)
        # COLMAP's limit is per octave and approximate (5-6k come back for 4096): keep the
        # largest-scale keypoints, the ones COLMAP's own limit keeps first.
        if len(matrix) > self.max_features:
            keep = np.sort(np.argsort(-matrix[:, 2], kind="stable")[: self.max_features])
            matrix, descriptors = matrix[keep], descriptors[keep]
        sx, sy = scale_xy
        return Features(
            keypoints=(matrix[:, :2] * np.array([sx, sy], np.float32)).astype(np.float32),
            scales=(matrix[:, 2] * (sx + sy) / 2).astype(np.float32),
            descriptors=descriptors,
            orientations=matrix[:, 3].astype(np.float32),
            image_size=(rgb.shape[1], rgb.shape[0]),
            scale_xy=(float(sx), float(sy)),
        )
