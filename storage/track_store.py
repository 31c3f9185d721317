"""tracks.zarr: the tracks of each group of images (one group now; one per chunk later).

Layout (Zarr v3), per group name:
    image_ids       (F,)      int32    manifest image_id of each frame
    keypoint_index  (F, N)    int32    keypoint of track n in frame f, -1 if not visible
    xy              (F, N, 2) float32  full-resolution COLMAP pixel coordinates, NaN if not visible
    visibility      (F, N)    bool
"""
import numpy as np
import zarr


def write_tracks(path: str, group_name: str, image_ids: np.ndarray, keypoint_index: np.ndarray,
                 xy: np.ndarray, visibility: np.ndarray) -> None:
    group = zarr.open_group(path, mode="a").create_group(group_name, overwrite=True)
    group.create_array("image_ids", data=np.asarray(image_ids, np.int32))
    group.create_array("keypoint_index", data=np.asarray(keypoint_index, np.int32))
    group.create_array("xy", data=np.asarray(xy, np.float32))
    group.create_array("visibility", data=np.asarray(visibility, bool))
    group.attrs["complete"] = True


def read_tracks(path: str, group_name: str) -> tuple[np.ndarray, np.ndarray]:
    """Returns image_ids (F,) and keypoint_index (F, N)."""
    group = zarr.open_group(path, mode="r")[group_name]
    return group["image_ids"][:], group["keypoint_index"][:]
