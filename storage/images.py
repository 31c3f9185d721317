"""Reading photos robustly: probing them for the manifest, decoding them for features.

Conventions
- "Stored" size is the pixel grid in the file; width/height everywhere else are
  the *viewed* size, after EXIF orientation (a portrait phone photo stored as
  4032x3024 with orientation 6 has width 3024, height 4032).
- Pixel coordinates follow COLMAP: the top-left pixel's centre is (0.5, 0.5)
  and an image of W x H pixels covers [0, W] x [0, H]. A downscaled image
  covers the same extent, so a keypoint maps back to full resolution by a pure
  per-axis multiplication, no offset:
      x_full = x_small * sx,  y_full = y_small * sy,
      (sx, sy) = LoadedImage.scale_xy = (W_full / W_small, H_full / H_small).
  (With integer pixel centres the same map would read (x + 0.5) * s - 0.5.)

Memory
- JPEGs decode in draft mode: libjpeg's DCT scaling decodes straight to 1/2,
  1/4 or 1/8 size, so a 100-megapixel photo never exists at full size here.
- Other formats decode at full size and are refused beyond MAX_DECODE_PIXELS.

EXIF focal lengths are a prior, checked before they are trusted (_exif_focal_problem):
`focal_source` says "exif" when the focal is used, "exif_rejected: <why>" when it is not
(then focal_length_px is None and the camera is self-calibrated, as without EXIF), and
"calibrated" when EXIF gives no focal length.

Failures are reported with short human reasons (see the module constants and
the messages in _open/_decode/_check_not_tiny): probe_image puts them in its
`status`, load_image raises ImageReadError carrying them.
"""

import hashlib
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, TiffImagePlugin, UnidentifiedImageError

from sfm_core.focal_range import MAX_FOCAL_FACTOR, MIN_FOCAL_FACTOR
from storage.uris import StorageError, is_local, local_path, read_bytes

MAX_DECODE_PIXELS = 200_000_000
MIN_IMAGE_SIDE = 64  # below this there is too little texture for features
PROBE_DECODE_SIDE = 512  # probing decodes every pixel (to catch truncation), at reduced size

# Pillow's guard counts the declared pixels, which would refuse huge JPEGs that
# draft mode decodes cheaply; _decode applies MAX_DECODE_PIXELS to the pixels
# actually decoded instead.
Image.MAX_IMAGE_PIXELS = None

EMPTY_FILE = "empty file (0 bytes)"
NOT_AN_IMAGE = "not an image (Pillow cannot identify it)"

_TAG = ExifTags.Base
# EXIF orientation -> the transpose that turns the stored grid into the viewed one.
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ORIENTATIONS_SWAPPING_AXES = {5, 6, 7, 8}
# FocalPlaneResolutionUnit -> millimetres per unit (2 = inch is the EXIF default).
_MM_PER_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}

# Stored and EXIF aspect ratios further apart than rounding a resize to whole pixels can
# explain (a relative 1 %, plus one pixel of the short side) mean a crop.
ASPECT_TOLERANCE = 0.01
# Software tags of editors that crop: with a size other than the camera's, an edited copy may
# be a crop of the same aspect ratio, which no size comparison can tell from a resize.
EDITORS = ("photoshop", "gimp", "lightroom", "snapseed", "instagram", "picasa", "pixelmator", "affinity",
           "darktable", "rawtherapee", "capture one", "luminar", "vsco", "facetune", "photoscape", "paint.net",
           "acdsee")
FOCAL_FROM_EXIF = "exif"
FOCAL_REJECTED = "exif_rejected"  # recorded as "exif_rejected: <why>"
FOCAL_CALIBRATED = "calibrated"  # no usable EXIF focal: the view graph's self-calibration finds it


class ImageReadError(Exception):
    """A photo cannot be used; `reason` is the short human reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImageProbe:
    """What ingest records about one file. Fields are None when unknowable:
    sha256/bytes when the file cannot be read, width/height when it is not
    an image, the EXIF fields when the tags are missing or unusable."""

    name: str
    sha256: str | None
    bytes: int | None
    width: int | None  # viewed (oriented) size
    height: int | None
    focal_length_px: float | None  # at full resolution; None when absent or rejected
    focal_source: str | None  # "exif", "exif_rejected: <why>" or "calibrated"
    exif_focal_mm: float | None
    camera_make: str | None
    camera_model: str | None
    status: str  # "ok" or the reason the photo is unusable


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo, oriented and downscaled; see the module docstring for
    how its pixel coordinates map back to full resolution."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    width: int  # full-resolution viewed size
    height: int
    scale: float  # full long side / loaded long side, >= 1
    scale_xy: tuple[float, float]  # (W_full / W_loaded, H_full / H_loaded)


def probe_image(path: str, storage_options: dict | None = None) -> ImageProbe:
    """Read `path` (a local path or an fsspec URI) once, hash it, read its
    header and EXIF and decode every pixel (at reduced size) so truncated
    files are caught. Never raises for a bad file: the problem goes into
    `status`. Raises StorageError when the storage itself cannot be used
    (no credentials, endpoint unreachable): that is no fault of the photo."""
    sha256 = size = width = height = None
    focal_px = focal_source = focal_mm = make = model = None
    status = "ok"
    try:
        data = _read(path, storage_options)
        sha256, size = hashlib.sha256(data).hexdigest(), len(data)
        im = _open(data, path)
        ifd0, exif_ifd = _read_exif(im)
        orientation = _orientation(ifd0)
        width, height = _viewed_size(im.size, _pending_orientation(im, orientation))
        stored = _viewed_size((width, height), orientation)  # swapping axes is its own inverse
        focal_mm = _positive(exif_ifd.get(_TAG.FocalLength))
        focal_px = _focal_length_px(exif_ifd, stored, focal_mm)
        focal_px, focal_source = _checked_focal(focal_px, stored, ifd0, exif_ifd)
        make, model = _text(ifd0.get(_TAG.Make)), _text(ifd0.get(_TAG.Model))
        _check_not_tiny(width, height, path)
        _decode(im, path, _fit_long_side(im.size, PROBE_DECODE_SIDE))
    except ImageReadError as e:
        status = e.reason
    return ImageProbe(path, sha256, size, width, height, focal_px, focal_source, focal_mm, make, model, status)


def load_image(path: str, max_long_side: int, storage_options: dict | None = None) -> LoadedImage:
    """Decode `path` (a local path or an fsspec URI) to RGB, apply EXIF
    orientation and downscale (Lanczos, never upscale) so the long side is at
    most `max_long_side`."""
    if max_long_side < 1:
        raise ValueError(f"max_long_side must be >= 1, got {max_long_side}")
    im = _open(_read(path, storage_options), path)
    orientation = _pending_orientation(im, _orientation(_read_exif(im)[0]))
    width, height = _viewed_size(im.size, orientation)
    _check_not_tiny(width, height, path)

    target = _fit_long_side(im.size, max_long_side)
    box = _decode(im, path, target)
    small = _to_rgb(im).resize(target, Image.Resampling.LANCZOS, box=box)
    if orientation in _ORIENTATION_TRANSPOSE:
        small = small.transpose(_ORIENTATION_TRANSPOSE[orientation])

    pixels = np.array(small)
    h, w = pixels.shape[:2]
    return LoadedImage(pixels, width, height, max(width, height) / max(w, h), (width / w, height / h))


def _read(path: str, storage_options: dict | None = None) -> bytes:
    if is_local(path):
        try:
            with open(local_path(path), "rb") as f:
                return f.read()
        except OSError as e:
            raise ImageReadError(path, f"cannot read file ({e.strerror or e})") from e
    try:
        return read_bytes(path, storage_options)
    except StorageError as e:
        if e.kind in ("credentials", "connection", "unsupported"):
            raise  # the storage is unusable, not this photo: the caller should stop
        raise ImageReadError(path, f"cannot read file ({e.reason})") from e


def _open(data: bytes, path: str) -> Image.Image:
    """Identify the format and parse the header; pixels are not decoded yet."""
    if not data:
        raise ImageReadError(path, EMPTY_FILE)
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageReadError(path, NOT_AN_IMAGE) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"corrupt or truncated image data ({e})") from e


def _check_not_tiny(width: int, height: int, path: str) -> None:
    if min(width, height) < MIN_IMAGE_SIDE:
        raise ImageReadError(path, f"image too small ({width}x{height})")


def _decode(im: Image.Image, path: str, target: tuple[int, int]) -> tuple[float, ...] | None:
    """Decode all pixels of `im`; a JPEG at the strongest DCT reduction that
    keeps it at least `target` (stored orientation). Returns the region of the
    decoded image that covers the full photo (for Image.resize's `box`), or
    None when decoded at full size."""
    full_w, full_h = im.size
    drafted = im.draft("RGB", target)  # a no-op returning None for non-JPEGs
    if im.width * im.height > MAX_DECODE_PIXELS:
        raise ImageReadError(
            path,
            f"image too large ({full_w}x{full_h} = {full_w * full_h / 1e6:.0f} MP; "
            f"at most {MAX_DECODE_PIXELS / 1e6:.0f} MP can be decoded)",
        )
    try:
        im.load()  # raises on truncated data: LOAD_TRUNCATED_IMAGES stays False
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(path, f"corrupt or truncated image data ({e})") from e
    return drafted[1] if drafted else None


def _fit_long_side(size: tuple[int, int], max_long_side: int) -> tuple[int, int]:
    long_side = max(size)
    if long_side <= max_long_side:
        return size
    s = max_long_side / long_side
    return max(1, round(size[0] * s)), max(1, round(size[1] * s))


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "I" or im.mode.startswith("I;16"):
        # 16-bit greyscale (Pillow reads a 16-bit PGM as "I", a PNG or TIFF as "I;16"): keep
        # the top 8 bits; convert("RGB") would clip to white.
        im = im.point(lambda v: v / 256).convert("L")
    return im.convert("RGB")


def _read_exif(im: Image.Image) -> tuple[dict, dict]:
    """(IFD0 tags, Exif sub-IFD tags); both empty when EXIF is absent or broken."""
    try:
        exif = im.getexif()
        return dict(exif), dict(exif.get_ifd(ExifTags.IFD.Exif))
    except Exception:  # EXIF is optional metadata: a malformed block must not reject the photo
        return {}, {}


def _orientation(ifd0: dict) -> int:
    value = ifd0.get(_TAG.Orientation, 1)
    return value if value in _ORIENTATION_TRANSPOSE else 1


def _pending_orientation(im: Image.Image, orientation: int) -> int:
    """The orientation left to apply to what Pillow decodes: its TIFF reader applies the
    file's orientation itself and reports the viewed size, so a TIFF has none left."""
    return 1 if isinstance(im, TiffImagePlugin.TiffImageFile) else orientation


def _viewed_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    w, h = stored
    return (h, w) if orientation in _ORIENTATIONS_SWAPPING_AXES else (w, h)


def _focal_length_px(exif_ifd: dict, stored: tuple[int, int], focal_mm: float | None) -> float | None:
    """Focal length in full-resolution pixels, from EXIF, or None."""
    f35 = _positive(exif_ifd.get(_TAG.FocalLengthIn35mmFilm))
    if f35:
        # A 35 mm frame is 36 mm wide along its long side.
        return f35 / 36.0 * max(stored)
    x_res = _positive(exif_ifd.get(_TAG.FocalPlaneXResolution))
    mm_per_unit = _MM_PER_UNIT.get(exif_ifd.get(_TAG.FocalPlaneResolutionUnit, 2))
    if not (focal_mm and x_res and mm_per_unit):
        return None
    # FocalPlaneXResolution counts sensor pixels of the camera's own output
    # (ExifImageWidth wide); a resized copy scales with its stored width.
    exif_width = _positive(exif_ifd.get(_TAG.ExifImageWidth)) or stored[0]
    return focal_mm * (x_res / mm_per_unit) * (stored[0] / exif_width)


def _checked_focal(focal_px: float | None, stored: tuple[int, int], ifd0: dict,
                   exif_ifd: dict) -> tuple[float | None, str]:
    """(the focal to use or None, its focal_source) for an EXIF focal of `focal_px`."""
    if focal_px is None:
        return None, FOCAL_CALIBRATED
    problem = _exif_focal_problem(focal_px, stored, ifd0, exif_ifd)
    if problem:
        return None, f"{FOCAL_REJECTED}: {problem}"
    return focal_px, FOCAL_FROM_EXIF


def _exif_focal_problem(focal_px: float, stored: tuple[int, int], ifd0: dict, exif_ifd: dict) -> str | None:
    """Why an EXIF focal of `focal_px` (full-resolution pixels of the `stored` (w, h) grid)
    cannot be trusted, or None. Checks the range, and signs that the file is not the camera's
    frame: another aspect ratio than the EXIF pixel dimensions (a crop, after which the
    35 mm-equivalent focal is off by the crop factor), or an editor's Software tag with another
    size than the EXIF dimensions (possibly a crop of the same aspect ratio)."""
    long_side = max(stored)
    factor = focal_px / long_side
    if not MIN_FOCAL_FACTOR <= factor <= MAX_FOCAL_FACTOR:
        times = f"{factor:.0f}" if factor >= 10 else f"{factor:.2g}"
        return (f"focal {focal_px:.0f} px is {times}x the long side ({long_side} px), outside "
                f"{MIN_FOCAL_FACTOR}x-{MAX_FOCAL_FACTOR:.0f}x (11-900 mm full-frame equivalent)")
    exif_size = (_positive(exif_ifd.get(_TAG.ExifImageWidth)), _positive(exif_ifd.get(_TAG.ExifImageHeight)))
    if not all(exif_size):
        return None  # nothing to compare the stored size with
    exif_w, exif_h = int(exif_size[0]), int(exif_size[1])
    # Cameras write the dimensions before or after rotating: compare sizes regardless of orientation.
    stored_aspect, exif_aspect = max(stored) / min(stored), max(exif_w, exif_h) / min(exif_w, exif_h)
    if abs(stored_aspect / exif_aspect - 1) > ASPECT_TOLERANCE + 1 / min(stored):
        return (f"cropped: stored {stored[0]}x{stored[1]} (aspect {stored_aspect:.2f}) against EXIF "
                f"{exif_w}x{exif_h} (aspect {exif_aspect:.2f}), focal {focal_px:.0f} px")
    software = _text(ifd0.get(_TAG.Software))
    editor = software and next((e for e in EDITORS if e in software.lower()), None)
    if editor and sorted(stored) != sorted((exif_w, exif_h)):
        return (f"edited ({software!r}) to {stored[0]}x{stored[1]} from EXIF {exif_w}x{exif_h}: "
                f"possibly cropped, focal {focal_px:.0f} px")
    return None


def _positive(value) -> float | None:
    """A finite positive number from an EXIF value, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _text(value) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip("\x00 \t\r\n") or None
