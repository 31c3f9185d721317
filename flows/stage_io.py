"""What the stages share: the run's logger, the usable photos, their cameras, fresh folders."""
import logging
import shutil
from pathlib import Path

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from flows.layout import OutputLayout
from flows.settings import Settings
from sfm_core.cameras import cameras_for_images
from storage.manifest import read_manifest


def stage_logger():
    """The run's logger inside Prefect (shown in the UI); a plain one when called as task.fn()."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("landmark_sfm")


def usable_rows(layout: OutputLayout):
    """Manifest rows of the photos to reconstruct; frame f of every stage is usable_rows[f]."""
    return [r for r in read_manifest(str(layout.manifest)) if r.status == "ok"]


def initial_cameras(rows, settings: Settings):
    """The distinct initial cameras of `rows` (ids 1..K) and the camera index of each row."""
    return cameras_for_images(
        [(r.width, r.height) for r in rows], [(r.camera_make, r.camera_model) for r in rows],
        [r.focal_length_px for r in rows], settings.camera_model)


def fresh(folder: Path) -> Path:
    """Empty a stage's model folder: a re-run with fewer groups must not leave old ones behind."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder
