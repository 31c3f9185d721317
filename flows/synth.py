"""`landmark-sfm synth`: a landmark-like photo collection with exact cameras, rendered by the
project itself (textures from photos shipped in scikit-image; nothing downloaded).

Writes `<out>/images/` (the scene's photos `img_<k>.jpg` and the unrelated ones
`distractor_<k>.jpg`), `<out>/gt/` (the exact cameras of the scene's photos, a COLMAP text
model: PINHOLE, world-to-camera poses) and `<out>/distractors.txt` (their names). The scene's photos carry EXIF as a phone writes it (a
model per image size, the 35 mm-equivalent focal length in whole millimetres). The demo,
the chunking tests and benchmarks/scale.py use it.
"""
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from sfm_core.synthetic import COLLECTION_IMAGE_SIZES, build_landmark, collection_cameras, render_distractor, \
    render_view
from storage.synthetic_io import cameras_reconstruction, load_package_textures, write_jpeg

_landmark = None  # each rendering process builds the landmark once


def _init_worker(seed: int) -> None:
    global _landmark
    _landmark = build_landmark(load_package_textures(), seed=seed)


def _render_photo(intrinsics, pose, path: str) -> None:
    write_jpeg(render_view(_landmark, intrinsics, pose), path, focal_px=intrinsics[0])


def _render_distractor(size, seed: int, path: str) -> None:
    write_jpeg(render_distractor(size, seed), path)


def make_collection(out: str, n: int, distractors: int = 0, seed: int = 0, workers: int | None = None) -> dict:
    """Render n photos of the landmark from cameras all around it, and `distractors` photos of
    nothing in it, into `out`. Deterministic for a seed. Returns counts, folders and seconds."""
    started = time.perf_counter()
    root = Path(out)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    width = max(3, len(str(max(n, distractors) - 1)))
    names = [f"img_{k:0{width}d}.jpg" for k in range(n)]
    distractor_names = [f"distractor_{k:0{width}d}.jpg" for k in range(distractors)]
    landmark = build_landmark(load_package_textures(), seed=seed)
    intrinsics, poses = collection_cameras(landmark, n, seed=seed + 1)
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(seed,)) as pool:
        jobs = [pool.submit(_render_photo, k, pose, str(images / name))
                for name, k, pose in zip(names, intrinsics, poses)]
        jobs += [pool.submit(_render_distractor, COLLECTION_IMAGE_SIZES[k % len(COLLECTION_IMAGE_SIZES)],
                             seed * 100_003 + k, str(images / name)) for k, name in enumerate(distractor_names)]
        for job in jobs:
            job.result()  # re-raises a failed rendering
    gt = root / "gt"
    gt.mkdir(exist_ok=True)
    cameras_reconstruction(names, intrinsics, poses).write_text(str(gt))
    (root / "distractors.txt").write_text("".join(f"{name}\n" for name in distractor_names))
    return {"images": n, "distractors": distractors, "folder": str(images), "truth": str(gt),
            "seconds": round(time.perf_counter() - started, 1)}
