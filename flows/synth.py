"""`landmark-sfm synth`: a landmark-like photo collection with exact cameras, rendered by the
project itself (textures from photos shipped in scikit-image; nothing downloaded).

Writes `<out>/images/` (the scene's photos `img_<k>.jpg` and the unrelated ones
`distractor_<k>.jpg`), `<out>/gt/` (the exact cameras of the scene's photos, a COLMAP text
model: PINHOLE, world-to-camera poses) and `<out>/distractors.txt` (their names). The scene's photos carry EXIF as a phone writes it (a
model per image size, the 35 mm-equivalent focal length in whole millimetres). The demo,
the chunking tests and benchmarks/scale.py use it.

Nuisances of real collections (`nuisances`, `synth --nuisances`):
- "no-exif": no EXIF at all; the focal lengths still vary from photo to photo, as do the
  image sizes (a few sizes for many cameras).
- "crops": every photo is a window of its camera's frame (CROP_KEPT of its width, anywhere in
  it) resized to a standard size, keeping the frame's EXIF (one of CAMERA_MODELS, the frame's
  4x larger pixel dimensions): read as the stored photo's, its focal length is 0.56-0.95 of
  the true one. The truth in gt/ is the stored photo's camera (principal point off-centre).
- "symmetric": the landmark is a building whose two halves look alike (SYMMETRIC_BOXES: each
  wall carries the texture of its twin half a turn about the vertical), a doppelganger; only
  the roofs and the ground tell the sides apart.
- "zoom": ZOOM_SHARE of the photos are details (a carving, a window) shot with a long lens
  (ZOOM_HFOV_DEG across) from where their camera stood, aimed at a wall of the building that
  faces it; their EXIF gives the zoomed focal length (none with no-exif; with crops, the crop
  applies on top). The truth in gt/ is the zoomed camera.
- "night": NIGHT_SHARE of the photos are taken at night (night_copy: darkened, shadows crushed,
  tinted by sodium street lamps, sensor noise); same cameras.
Zoom and night are drawn per photo, independently (a photo may be both); `<out>/nuisances.json`
({"zoom": [names], "night": [names]}, the requested ones) says which photos carry them.
"""
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from sfm_core.synthetic import COLLECTION_IMAGE_SIZES, NIGHT_SHARE, NUISANCES, ONE_CAMERA, ZOOM_SHARE, build_landmark, \
    collection_cameras, cropped_camera, night_copy, render_distractor, render_view, zoomed_camera
from storage.synthetic_io import cameras_reconstruction, load_package_textures, write_jpeg

_landmark = None  # each rendering process builds the landmark once
# Camera models named in the EXIF of cropped photos: dozens, as in a real collection.
CAMERA_MODELS = tuple(f"phone {k:02d}" for k in range(31))
_FRAME_SCALE = 4  # a cropped photo's camera frame is this many times its stored size


def _init_worker(seed: int, symmetric: bool) -> None:
    global _landmark
    _landmark = build_landmark(load_package_textures(), seed=seed, symmetric=symmetric)


def _render_photo(intrinsics, pose, path: str, exif: dict | None, night_seed: int | None = None) -> None:
    """exif: write_jpeg's focal_px, frame_size and model; None for a photo without EXIF.
    night_seed: the seed of the photo's night_copy; None for a day photo."""
    image = render_view(_landmark, intrinsics, pose)
    if night_seed is not None:
        image = night_copy(image, np.random.default_rng(night_seed))
    write_jpeg(image, path, **(exif or {}))


def _some_photos(n: int, share: float, rng: np.random.Generator) -> list[int]:
    """Sorted indices of ceil(share * n) of n photos, at random: at least one of a few photos."""
    return sorted(int(k) for k in rng.choice(n, int(np.ceil(share * n)), replace=False))


def _per_photo_nuisances(landmark, intrinsics, poses, nuisances, seed: int) -> tuple[list, list, dict, list]:
    """Zoom and night, where requested: (intrinsics and poses, the zoomed photos' replaced,
    {nuisance: photo indices} of the requested ones, each photo's night_copy seed or None).

    Their own rng (seed + 3), drawn in the same order whatever is requested, leaves the other
    nuisances' draws as they were and a seed's night photos the same with or without zoom."""
    rng = np.random.default_rng(seed + 3)
    n = len(intrinsics)
    drawn = {"zoom": _some_photos(n, ZOOM_SHARE, rng), "night": _some_photos(n, NIGHT_SHARE, rng)}
    night_seeds = rng.integers(2**32, size=n)
    chosen = {nuisance: photos for nuisance, photos in drawn.items() if nuisance in nuisances}
    intrinsics, poses = list(intrinsics), list(poses)
    for k in chosen.get("zoom", []):
        intrinsics[k], poses[k] = zoomed_camera(landmark, intrinsics[k], poses[k], rng)
    night = set(chosen.get("night", []))
    return intrinsics, poses, chosen, [int(night_seeds[k]) if k in night else None for k in range(n)]


def _photo_exif(intrinsics, nuisances, rng: np.random.Generator) -> tuple[tuple, dict | None]:
    """(the stored photo's intrinsics, its EXIF for _render_photo) under `nuisances`."""
    if "no-exif" in nuisances:
        return intrinsics, None
    if "crops" not in nuisances:
        return intrinsics, {"focal_px": intrinsics[0]}
    stored, kept = cropped_camera(intrinsics, rng)
    width, height = intrinsics[4:]
    # The frame's EXIF, as the camera wrote it: its focal length in frame pixels, scaled.
    return stored, {"focal_px": intrinsics[0] * _FRAME_SCALE, "frame_size": (width * _FRAME_SCALE, height * _FRAME_SCALE),
                    "model": CAMERA_MODELS[rng.integers(len(CAMERA_MODELS))]}


def _render_distractor(size, seed: int, path: str) -> None:
    write_jpeg(render_distractor(size, seed), path)


def make_collection(out: str, n: int, distractors: int = 0, seed: int = 0, workers: int | None = None,
                    nuisances: tuple[str, ...] = (), one_camera: bool = False) -> dict:
    """Render n photos of the landmark from cameras all around it, and `distractors` photos of
    nothing in it, into `out`, with `nuisances` (of NUISANCES; see the module docstring); with
    `one_camera`, all taken with one camera (ONE_CAMERA), else each with its own field of view
    and one of a few sizes. Deterministic for a seed. Returns counts, folders and seconds."""
    unknown = set(nuisances) - set(NUISANCES)
    if unknown:
        raise ValueError(f"unknown nuisance(s) {', '.join(sorted(unknown))}: choose from {', '.join(NUISANCES)}")
    if {"no-exif", "crops"} <= set(nuisances):
        raise ValueError("crops keep their EXIF: they cannot be combined with no-exif")
    started = time.perf_counter()
    root = Path(out)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(max(n, distractors) - 1)))
    names = [f"img_{k:0{width}d}.jpg" for k in range(n)]
    distractor_names = [f"distractor_{k:0{width}d}.jpg" for k in range(distractors)]
    symmetric = "symmetric" in nuisances
    landmark = build_landmark(load_package_textures(), seed=seed, symmetric=symmetric)
    intrinsics, poses = collection_cameras(landmark, n, seed=seed + 1, **({"spec": ONE_CAMERA} if one_camera else {}))
    intrinsics, poses, per_photo, night_seeds = _per_photo_nuisances(landmark, intrinsics, poses, nuisances, seed)
    rng = np.random.default_rng(seed + 2)
    intrinsics, exifs = zip(*[_photo_exif(k, nuisances, rng) for k in intrinsics]) if n else ((), ())
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(seed, symmetric)) as pool:
        jobs = [pool.submit(_render_photo, k, pose, str(images / name), exif, night_seed)
                for name, k, pose, exif, night_seed in zip(names, intrinsics, poses, exifs, night_seeds)]
        jobs += [pool.submit(_render_distractor, COLLECTION_IMAGE_SIZES[k % len(COLLECTION_IMAGE_SIZES)],
                             seed * 100_003 + k, str(images / name)) for k, name in enumerate(distractor_names)]
        for job in jobs:
            job.result()  # re-raises a failed rendering
    gt = root / "gt"
    gt.mkdir(exist_ok=True)
    cameras_reconstruction(names, intrinsics, poses).write_text(str(gt))
    (root / "distractors.txt").write_text("".join(f"{name}\n" for name in distractor_names))
    listing = root / "nuisances.json"
    if per_photo:
        listing.write_text(json.dumps({nuisance: [names[k] for k in photos] for nuisance, photos in per_photo.items()},
                                      indent=1) + "\n")
    else:
        listing.unlink(missing_ok=True)  # a listing left by an earlier collection in `out` would mislead
    return {"images": n, "distractors": distractors, "folder": str(images), "truth": str(gt),
            "seconds": round(time.perf_counter() - started, 1)}
