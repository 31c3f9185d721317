"""`landmark-sfm demo`: render the project's own scene, reconstruct it, check it against
the exact cameras. Needs nothing but the installed packages (textures from scikit-image)."""
import time
from pathlib import Path

from flows.cli import format_summary
from flows.reconstruct import reconstruct
from sfm_core.synthetic import render_scene
from storage.colmap_model import evaluate_model_dirs
from storage.synthetic_io import load_package_textures, write_scene


def run_demo(out: str, n_cameras: int = 30) -> tuple[dict, dict, str]:
    """Returns the run's report, its accuracy against the exact cameras, and a summary to print."""
    root = Path(out)
    scene_dir = root / "scene"
    started = time.perf_counter()
    write_scene(render_scene(load_package_textures(), n_cameras=n_cameras), scene_dir)
    rendered = time.perf_counter() - started
    report = reconstruct(str(scene_dir / "images"), str(root / "reconstruction"))
    accuracy = evaluate_model_dirs(root / "reconstruction" / "sparse" / "0", scene_dir / "gt")
    summary = (f"demo scene: {n_cameras} images rendered in {rendered:.1f} s into {scene_dir}\n"
               + format_summary(report, accuracy))
    return report, accuracy, summary
