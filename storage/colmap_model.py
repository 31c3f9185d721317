"""Reading COLMAP models (text or binary) and evaluating one against another."""
from pathlib import Path

import numpy as np
import pycolmap

from sfm_core.evaluation import Pose, evaluate_poses
from storage.atomic import atomic_path


def read_model(path) -> pycolmap.Reconstruction:
    """Read the COLMAP text or binary model in directory `path`."""
    if not Path(path).is_dir():
        raise FileNotFoundError(f"COLMAP model directory does not exist: {path}")
    try:
        return pycolmap.Reconstruction(str(path))
    except ValueError as error:
        # pycolmap's message lists the files it looked for, over several lines.
        raise FileNotFoundError(f"no COLMAP model (text or binary) in {path}") from error


def poses_by_name(rec: pycolmap.Reconstruction) -> dict[str, Pose]:
    """World-to-camera (R (3, 3), t (3,)) of every registered image, keyed by file name."""
    poses = {}
    for image in rec.images.values():
        if image.has_pose:
            cam_from_world = image.cam_from_world()
            poses[image.name] = (
                np.asarray(cam_from_world.rotation.matrix(), dtype=float),
                np.asarray(cam_from_world.translation, dtype=float),
            )
    return poses


def evaluate_model_dirs(model_dir, truth_dir) -> dict:
    """evaluate_poses of the model in `model_dir` against the one in `truth_dir`."""
    return evaluate_poses(poses_by_name(read_model(model_dir)), poses_by_name(read_model(truth_dir)))


def write_model(rec: pycolmap.Reconstruction, path) -> None:
    """Write rec as a COLMAP binary model into directory `path`, atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(str(path)) as tmp:
        Path(tmp).mkdir()
        rec.write_binary(tmp)


def model_dirs(path) -> list[Path]:
    """Numbered model folders under `path` (0, 1, ...), in order."""
    folder = Path(path)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
