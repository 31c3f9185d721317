"""features.zarr: the local features of every image, one Zarr group per feature kind and image,
keyed by the kind and the image's sha256.

Layout (Zarr v3, compressed):
    features.zarr/<kind>/<sha256>/keypoints    (N, 2) float32  full-resolution COLMAP pixel coordinates
    features.zarr/<kind>/<sha256>/scales       (N,)   float32  keypoint scale in full-resolution pixels
    features.zarr/<kind>/<sha256>/descriptors  (N, D) uint8 (sift, D = 128) or float32 (aliked: 128, xfeat: 64)
    features.zarr/<kind>/<sha256>/orientations (N,)   float32  orientation, radians (x right, y down)
    attrs: {"image_size": [W, H], "scale_xy": [sx, sy]} of the image they were extracted from,
    then {"complete": true, "settings": {...}} written last, so a group cut short by a killed
    run is never read as finished.
Keying by content means a renamed or duplicated photo is extracted once; a group per kind
means switching kinds computes the new kind's features and switching back finds the old ones.
"""
import numpy as np
import zarr

from sfm_core.features import Features

DESCRIPTOR_DTYPES = (np.uint8, np.float32)


class FeatureStore:
    def __init__(self, path: str, kind: str):
        """The store at `path`, its features of `kind` ("sift", "aliked", "xfeat")."""
        self.root = zarr.open_group(path, mode="a").require_group(kind)

    def has(self, sha256: str, settings: dict) -> bool:
        if sha256 not in self.root:
            return False
        attrs = self.root[sha256].attrs.asdict()
        return attrs.get("complete", False) and attrs.get("settings") == settings

    def write(self, sha256: str, features: Features, settings: dict) -> None:
        if features.descriptors.dtype not in DESCRIPTOR_DTYPES:
            raise TypeError(f"descriptors of {sha256} are {features.descriptors.dtype}: the store keeps uint8 or float32")
        group = self.root.create_group(sha256, overwrite=True)
        group.create_array("keypoints", data=np.ascontiguousarray(features.keypoints, np.float32))
        group.create_array("scales", data=np.ascontiguousarray(features.scales, np.float32))
        group.create_array("descriptors", data=np.ascontiguousarray(features.descriptors))
        group.create_array("orientations", data=np.ascontiguousarray(features.orientations, np.float32))
        group.attrs.update({"image_size": [int(v) for v in features.image_size],
                            "scale_xy": [float(v) for v in features.scale_xy]})
        group.attrs.update({"complete": True, "settings": settings})

    def read(self, sha256: str) -> Features:
        group = self.root[sha256]
        attrs = group.attrs.asdict()
        return Features(group["keypoints"][:], group["scales"][:], group["descriptors"][:], group["orientations"][:],
                        image_size=tuple(attrs["image_size"]), scale_xy=tuple(attrs["scale_xy"]))

    def read_keypoints(self, sha256: str) -> np.ndarray:
        return self.root[sha256]["keypoints"][:]
