"""Initial camera intrinsics and which images share them."""
from dataclasses import dataclass

import pycolmap

# COLMAP's guess when nothing is known: focal = 1.2 * the long side.
DEFAULT_FOCAL_FACTOR = 1.2


def initial_camera(camera_id: int, width: int, height: int, focal_px: float | None,
                   model: str = "SIMPLE_RADIAL") -> pycolmap.Camera:
    """A camera with the principal point at the image centre (COLMAP pixel convention)."""
    prior = focal_px is not None and focal_px > 0
    focal = focal_px if prior else DEFAULT_FOCAL_FACTOR * max(width, height)
    camera = pycolmap.Camera.create_from_model_name(camera_id, model, focal, width, height)
    camera.has_prior_focal_length = prior
    return camera


# How photos come to share a camera (Settings.shared_cameras):
# "auto": as "size", then the cameras stage tests each such shared camera against the view
#   graph and gives each of its photos a camera of its own where the pairs say they are not
#   one camera (sfm_core.camera_sharing);
# "size": photos of one size without an EXIF focal length share one camera, untested (the
#   frames of one video);
# "exif": only photos whose EXIF names the same camera and focal length, at the same size.
SHARED_CAMERAS = ("auto", "size", "exif")


def check_shared_cameras(shared: str) -> None:
    """Raises ValueError naming the choices when `shared` is not one of SHARED_CAMERAS."""
    if shared not in SHARED_CAMERAS:
        raise ValueError(f"unknown shared_cameras {shared!r}: choose one of {', '.join(SHARED_CAMERAS)}")


def camera_groups(sizes: list[tuple[int, int]], makes_models: list[tuple[str | None, str | None]],
                  focals: list[float | None], shared: str = "auto") -> list[int]:
    """Index of the shared camera of each image.

    Images share intrinsics when they have the same size, the same EXIF camera and the same
    EXIF focal length: photos from one camera and lens setting. Photos without an EXIF focal
    length share one camera per size unless `shared` is "exif", where each calibrates its
    own; with "auto" the sharing is a candidate that the cameras stage tests (internet photos
    come in a few standard sizes, so the same size is no evidence of the same camera).
    """
    check_shared_cameras(shared)
    keys: dict[tuple, int] = {}
    return [keys.setdefault(key if key[2] is not None or shared != "exif" else ("own", frame), len(keys))
            for frame, key in enumerate(zip(sizes, makes_models, focals))]


def cameras_for_images(sizes: list[tuple[int, int]], makes_models: list[tuple[str | None, str | None]],
                       focals: list[float | None], model: str = "SIMPLE_RADIAL",
                       shared: str = "auto") -> tuple[list[pycolmap.Camera], list[int]]:
    """The distinct initial cameras (ids 1..K) and the camera index of each image (camera_groups)."""
    groups = camera_groups(sizes, makes_models, focals, shared)
    cameras = []
    for group in range(max(groups, default=-1) + 1):
        first = groups.index(group)
        cameras.append(initial_camera(group + 1, *sizes[first], focals[first], model))
    return cameras, groups


def parse_camera_spec(spec: str) -> pycolmap.Camera:
    """A known camera from 'MODEL WIDTH HEIGHT PARAMS...', a line of COLMAP's cameras.txt
    without its id (e.g. 'PINHOLE 1244 829 686.05 686.51 623.84 411.95'); principal point in
    COLMAP pixel coordinates. Raises ValueError saying what is wrong."""
    parts = spec.split()
    if len(parts) < 4:
        raise ValueError(f"camera {spec!r}: expected MODEL WIDTH HEIGHT PARAMS...")
    models = [name for name in pycolmap.CameraModelId.__members__ if name != "INVALID"]
    if parts[0] not in models:
        raise ValueError(f"camera {spec!r}: {parts[0]} is not a COLMAP camera model ({', '.join(models)})")
    try:
        width, height, params = int(parts[1]), int(parts[2]), [float(x) for x in parts[3:]]
        camera = pycolmap.Camera(model=parts[0], width=width, height=height, params=params)
    except (ValueError, TypeError) as error:
        raise ValueError(f"camera {spec!r}: {error}") from None
    if not camera.verify_params():
        raise ValueError(f"camera {spec!r}: {parts[0]} takes {len(camera.params_info.split(','))} parameters "
                         f"({camera.params_info}), got {len(params)}")
    camera.has_prior_focal_length = True
    return camera


@dataclass
class InitialCameras:
    cameras: list[pycolmap.Camera]  # ids 1..K
    camera_of_frame: list[int]  # index into cameras, per image
    constant_ids: tuple[int, ...]  # camera ids of known intrinsics, held fixed


def with_known_intrinsics(cameras: list[pycolmap.Camera], camera_of_frame: list[int], sizes: list[tuple[int, int]],
                          known: list[pycolmap.Camera]) -> InitialCameras:
    """Images whose size is a known camera's take that camera (one shared, held fixed); the
    others keep theirs. Camera ids are renumbered 1..K."""
    known_by_size = {(c.width, c.height): c for c in known}
    keys: dict[tuple, int] = {}
    groups = [keys.setdefault(("known", size) if size in known_by_size else ("own", group), len(keys))
              for size, group in zip(sizes, camera_of_frame)]
    result, constant = [], []
    for (kind, value), index in sorted(keys.items(), key=lambda item: item[1]):
        source = known_by_size[value] if kind == "known" else cameras[value]
        camera = pycolmap.Camera(model=source.model.name, width=source.width, height=source.height,
                                 params=list(source.params), camera_id=index + 1)
        camera.has_prior_focal_length = source.has_prior_focal_length
        result.append(camera)
        if kind == "known":
            constant.append(index + 1)
    return InitialCameras(result, groups, tuple(constant))
