"""features.zarr: the local features of every image, one Zarr group per image keyed by sha256.

Layout (Zarr v3, compressed):
    features.zarr/<sha256>/keypoints    (N, 2) float32  full-resolution COLMAP pixel coordinates
    features.zarr/<sha256>/scales       (N,)   float32  SIFT scale in full-resolution pixels
    features.zarr/<sha256>/descriptors  (N, 128) uint8
    features.zarr/<sha256>/orientations (N,)   float32  SIFT orientation, radians (x right, y down)
    attrs: {"complete": true, "settings": {...}} written last, so a group cut short by a
    killed run is never read as finished.
Keying by content means a renamed or duplicated photo is extracted once.
"""
import numpy as np
import zarr

from sfm_core.features import Features


class FeatureStore:
    def __init__(self, path: str):
        self.root = zarr.open_group(path, mode="a")

    def has(self, sha256: str, settings: dict) -> bool:
        if sha256 not in self.root:
            return False
        attrs = self.root[sha256].attrs.asdict()
        return attrs.get("complete", False) and attrs.get("settings") == settings

    def write(self, sha256: str, features: Features, settings: dict) -> None:
        group = self.root.create_group(sha256, overwrite=True)
        group.create_array("keypoints", data=np.ascontiguousarray(features.keypoints, np.float32))
        group.create_array("scales", data=np.ascontiguousarray(features.scales, np.float32))
        group.create_array("descriptors", data=np.ascontiguousarray(features.descriptors, np.uint8))
        group.create_array("orientations", data=np.ascontiguousarray(features.orientations, np.float32))
        group.attrs.update({"complete": True, "settings": settings})

    def read(self, sha256: str) -> Features:
        group = self.root[sha256]
        return Features(group["keypoints"][:], group["scales"][:], group["descriptors"][:], group["orientations"][:])

    def read_keypoints(self, sha256: str) -> np.ndarray:
        return self.root[sha256]["keypoints"][:]
