"""Whether a camera's radial distortion can be estimated from what it sees.

A radial term moves a point by k1 * r^3 (r from the principal point), a focal length by f * r:
near the image centre the two look alike, so when a camera's observations all lie there the
bundle adjustment trades one for the other and settles on both wrong (temple_sparse_ring's
object fills the middle of each photo: k1 -0.48 and a focal length 4 % long, against 0.3 %
without the term). Such cameras are adjusted without the radial term; cameras whose
observations reach the outer part of the image keep it.
"""
from dataclasses import dataclass

import numpy as np
import pycolmap

# The model each radial model becomes when its distortion cannot be seen: same focal length
# and principal point, no distortion.
_WITHOUT_RADIAL = {"SIMPLE_RADIAL": "SIMPLE_PINHOLE", "RADIAL": "SIMPLE_PINHOLE"}


@dataclass(frozen=True)
class RadialSupport:
    outer_radius: float = 0.7  # the outer part starts at this fraction of the half-diagonal
    # Of a camera's observations needed there. temple_sparse_ring has 0.1 %; the photo sets'
    # other cameras 2.8 % (british_museum's least) to 24 %, and gating those at 5 % changed
    # where the solvers settle on british_museum without improving it.
    min_outer_fraction: float = 0.01


def outer_fraction(rec: pycolmap.Reconstruction, camera_id: int, outer_radius: float) -> float:
    """Fraction of the camera's observations of 3D points (all its images) lying beyond
    outer_radius of the half-diagonal from the image centre; 0 when it has none."""
    camera = rec.camera(camera_id)
    centre = np.array([camera.width, camera.height]) / 2  # COLMAP pixel convention: the middle
    half_diagonal = np.hypot(camera.width, camera.height) / 2
    radii = [np.linalg.norm(np.array([p.xy for p in image.points2D if p.has_point3D()]).reshape(-1, 2) - centre, axis=1)
             for image in rec.images.values() if image.camera_id == camera_id and image.has_pose]
    radii = np.concatenate(radii) if radii else np.zeros(0)
    return float((radii > outer_radius * half_diagonal).mean()) if radii.size else 0.0


def drop_unsupported_radial(rec: pycolmap.Reconstruction, keep: tuple[int, ...] = (),
                            support: RadialSupport = RadialSupport()) -> list[int]:
    """Cameras of rec with a radial model whose observations stay near the image centre become
    the same camera without distortion, in place (their radial terms set aside; a distortion
    they cannot see is taken as none). Cameras in `keep` (known intrinsics) are left alone.
    Returns the ids changed."""
    changed = []
    for camera_id, camera in rec.cameras.items():
        target = _WITHOUT_RADIAL.get(camera.model.name)
        if target is None or camera_id in keep:
            continue
        if outer_fraction(rec, camera_id, support.outer_radius) >= support.min_outer_fraction:
            continue
        focal, cx, cy = camera.params[0], camera.params[1], camera.params[2]
        replacement = pycolmap.Camera(model=target, width=camera.width, height=camera.height,
                                      params=[focal, cx, cy], camera_id=camera_id)
        replacement.has_prior_focal_length = camera.has_prior_focal_length
        rec.cameras[camera_id] = replacement
        changed.append(camera_id)
    return changed
