"""pycolmap's default CPU pipeline on a folder of photos, stage by stage, for side-by-side figures.

SIFT at full resolution, exhaustive matching, then the incremental, global and/or hierarchical
mapper: what COLMAP users run when they follow its documentation.
"""
import shutil
import tempfile
import time
from pathlib import Path

import pycolmap


MAPPERS = {"incremental": pycolmap.incremental_mapping, "global": pycolmap.global_mapping,
           "hierarchical": pycolmap.hierarchical_mapping}


def run_colmap(images: str, mappers: tuple[str, ...] = ("incremental",), workdir: str | None = None) -> dict:
    """Returns {"seconds": {stage: s}, "models": {mapper: largest pycolmap.Reconstruction or None},
    "all_models": {mapper: every reconstruction it found}}."""
    folder = Path(workdir or tempfile.mkdtemp(prefix="colmap-reference-"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    database = str(folder / "database.db")
    seconds, models, all_models = {}, {}, {}
    started = time.perf_counter()
    pycolmap.extract_features(database, images, camera_mode=pycolmap.CameraMode.AUTO)
    seconds["extract"] = time.perf_counter() - started
    started = time.perf_counter()
    pycolmap.match_exhaustive(database)
    seconds["match"] = time.perf_counter() - started
    for mapper in mappers:
        out = folder / mapper
        out.mkdir()
        started = time.perf_counter()
        found = MAPPERS[mapper](database, images, str(out))
        seconds[mapper] = time.perf_counter() - started
        models[mapper] = max(found.values(), key=lambda r: r.num_reg_images(), default=None)
        all_models[mapper] = list(found.values())
    return {"seconds": seconds, "models": models, "all_models": all_models}
