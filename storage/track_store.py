"""tracks.zarr: the tracks of each group of images (one group per chunk).

Layout (Zarr v3, chunked and compressed), per group name:
    image_ids       (F,)      int32    manifest image_id of each frame
    keypoint_index  (F, N)    int32    keypoint of track n in frame f, -1 if not visible
    xy              (F, N, 2) float32  full-resolution COLMAP pixel coordinates, NaN if not visible
    visibility      (F, N)    bool
    confidence      (F, N)    float16  support of the observation in [0, 1], 0 if not visible
    query_frame     (N,)      int32    frame (row) each track is followed from
"""
import numpy as np
import zarr

from sfm_core.tracks import Tracks


def write_tracks(path: str, group_name: str, image_ids: np.ndarray, tracks: Tracks) -> None:
    group = zarr.open_group(path, mode="a").create_group(group_name, overwrite=True)
    group.create_array("image_ids", data=np.asarray(image_ids, np.int32))
    group.create_array("keypoint_index", data=np.asarray(tracks.keypoint_index, np.int32))
    group.create_array("xy", data=np.asarray(tracks.xy, np.float32))
    group.create_array("visibility", data=np.asarray(tracks.visibility, bool))
    group.create_array("confidence", data=np.asarray(tracks.confidence, np.float16))
    group.create_array("query_frame", data=np.asarray(tracks.query_frame, np.int32))
    group.attrs["complete"] = True


def read_tracks(path: str, group_name: str) -> tuple[np.ndarray, Tracks]:
    """Returns image_ids (F,) and the group's tracks."""
    group = zarr.open_group(path, mode="r")[group_name]
    return group["image_ids"][:], Tracks(*(group[name][:] for name in
                                          ("keypoint_index", "xy", "visibility", "confidence", "query_frame")))


def has_tracks(path: str, group_name: str) -> bool:
    """Whether the group was written completely."""
    try:
        return bool(zarr.open_group(path, mode="r")[group_name].attrs.get("complete", False))
    except (FileNotFoundError, KeyError):
        return False
