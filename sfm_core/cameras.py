"""Initial camera intrinsics and which images share them."""
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


def camera_groups(sizes: list[tuple[int, int]], makes_models: list[tuple[str | None, str | None]],
                  focals: list[float | None]) -> list[int]:
    """Index of the shared camera of each image.

    Images share intrinsics when they have the same size, the same EXIF camera and the same
    EXIF focal length (both absent counts as the same): photos from one camera and lens
    setting, such as the frames of one video. Internet photos differ in size, and so get a
    camera each.
    """
    keys: dict[tuple, int] = {}
    return [keys.setdefault(key, len(keys)) for key in zip(sizes, makes_models, focals)]


def cameras_for_images(sizes: list[tuple[int, int]], makes_models: list[tuple[str | None, str | None]],
                       focals: list[float | None], model: str = "SIMPLE_RADIAL") -> tuple[list[pycolmap.Camera], list[int]]:
    """The distinct initial cameras (ids 1..K) and the camera index of each image."""
    groups = camera_groups(sizes, makes_models, focals)
    cameras = []
    for group in range(max(groups, default=-1) + 1):
        first = groups.index(group)
        cameras.append(initial_camera(group + 1, *sizes[first], focals[first], model))
    return cameras, groups
