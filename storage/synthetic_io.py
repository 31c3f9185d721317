"""Textures for, and on-disk output of, the synthetic landmark scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pycolmap
from PIL import ExifTags, Image

# Photos shipped inside scikit-image (no download), chosen for dense detail
# and few uniform areas; the first ones land on the main building.
PACKAGE_TEXTURES = (
    "astronaut", "chelsea", "coffee", "stereo_motorcycle", "immunohistochemistry",
    "camera", "gravel", "grass", "coins", "brick", "text", "rocket",
)


def load_package_textures() -> list[np.ndarray]:
    """Photos from ``skimage.data`` as (h, w, 3) uint8 RGB arrays."""
    import skimage.data

    out = []
    for name in PACKAGE_TEXTURES:
        img = getattr(skimage.data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
            img = img[0]
        img = np.asarray(img, np.uint8)
        out.append(np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3].copy())
    return out


def scene_reconstruction(scene) -> pycolmap.Reconstruction:
    """Ground truth as a pycolmap model: one PINHOLE camera per image, no points."""
    return cameras_reconstruction(scene.names, scene.intrinsics, scene.cam_from_world)


def cameras_reconstruction(names, intrinsics, cam_from_world) -> pycolmap.Reconstruction:
    """A model of exact cameras: names[k] taken with intrinsics[k] (fx, fy, cx, cy, w, h),
    PINHOLE, at cam_from_world[k] (R (3, 3), t (3,)); image and camera ids k + 1, no points."""
    rec = pycolmap.Reconstruction()
    for k, (name, (fx, fy, cx, cy, w, h), (R, t)) in enumerate(zip(names, intrinsics, cam_from_world), start=1):
        rec.add_camera_with_trivial_rig(pycolmap.Camera(
            model="PINHOLE", width=w, height=h, params=[fx, fy, cx, cy], camera_id=k))
        rec.add_image_with_trivial_frame(
            pycolmap.Image(name=name, camera_id=k, image_id=k),
            pycolmap.Rigid3d(pycolmap.Rotation3d(np.asarray(R, float)), np.asarray(t, float)))
    return rec


# EXIF of the synthetic photos: a phone-like camera whose 35 mm-equivalent focal length is
# written as cameras write it (whole millimetres), so the prior is good to about 2 %.
SYNTHETIC_MAKE = "landmark-sfm"
_CROP_FACTOR = 5.6  # a small sensor: the lens's true focal length is the equivalent one / 5.6


def write_jpeg(img: np.ndarray, path: str | Path, quality: int = 92, focal_px: float | None = None,
               frame_size: tuple[int, int] | None = None, model: str | None = None) -> None:
    """(H, W, 3) uint8 RGB to a JPEG file; with focal_px (full-resolution pixels of a `frame_size`
    (w, h) frame, default the image's), EXIF as a camera writes it: Make, Model (one per frame
    size, or `model`), FocalLength, FocalLengthIn35mmFilm and the frame's pixel dimensions. A photo
    cropped and resized after the shot keeps the EXIF of its frame: pass that frame's focal and size."""
    exif = Image.Exif()
    if focal_px is not None:
        height, width = img.shape[:2]
        width, height = frame_size or (width, height)
        exif[ExifTags.Base.Make] = SYNTHETIC_MAKE
        exif[ExifTags.Base.Model] = model or f"synthetic {width}x{height}"
        focal_35mm = round(focal_px / max(width, height) * 36.0)
        details = exif.get_ifd(ExifTags.IFD.Exif)
        details[ExifTags.Base.FocalLengthIn35mmFilm] = focal_35mm
        details[ExifTags.Base.FocalLength] = round(focal_35mm / _CROP_FACTOR, 2)
        details[ExifTags.Base.ExifImageWidth] = width
        details[ExifTags.Base.ExifImageHeight] = height
    Image.fromarray(img).save(path, quality=quality, exif=exif)


def write_scene(scene, out_dir: str | Path, jpeg_quality: int = 92) -> None:
    """Write ``out_dir/images/<name>`` (JPEG) and the COLMAP text model ``out_dir/gt/``."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "gt").mkdir(parents=True, exist_ok=True)
    for name, img in zip(scene.names, scene.images):
        write_jpeg(img, out_dir / "images" / name, jpeg_quality)
    scene_reconstruction(scene).write_text(str(out_dir / "gt"))
