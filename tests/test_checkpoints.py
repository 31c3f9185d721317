"""Checkpointed stages: re-runs reuse, new photos cost only their own features, a killed run resumes."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.reconstruct import STAGES, reconstruct
from sfm_core.synthetic import render_scene
from storage.checkpoints import CheckpointStore, make_key
from storage.colmap_model import evaluate_model_dirs
from storage.synthetic_io import load_package_textures, write_scene



@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """23 rendered views: the collection is the first 20, three more arrive later."""
    root = tmp_path_factory.mktemp("scene")
    write_scene(render_scene(load_package_textures(), n_cameras=23, image_size=(400, 300), arc_deg=200), root)
    first = root / "first20"
    first.mkdir()
    for path in sorted((root / "images").iterdir())[:20]:
        shutil.copy2(path, first / path.name)
    return root


def test_checkpoint_keys_and_commits(tmp_path):
    store = CheckpointStore(tmp_path)
    key = make_key("features", "upstream", {"max_features": 4096})
    assert key != make_key("features", "upstream", {"max_features": 2048})
    assert store.find("features", key) is None
    store.commit("features", key, {"computed": 3})
    assert store.find("features", key) == {"computed": 3}
    assert store.find("features", make_key("other")) is None


@pytest.mark.slow
def test_rerun_reuses_and_new_photos_cost_only_their_features(scene, tmp_path, prefect_api):
    collection = tmp_path / "photos"
    shutil.copytree(scene / "first20", collection)
    out = tmp_path / "out"
    first = reconstruct(str(collection), str(out))
    assert all(first["stages"][s]["status"] == "ran" for s in STAGES)

    again = reconstruct(str(collection), str(out))
    assert [s for s in STAGES if again["stages"][s]["status"] != "reused"] == []
    # Prefect's own cache answered with the same keys: the UI shows the stages as Cached.
    outer_stages = ("ingest", "features", "matching", "chunking", "merge", "export")
    assert _final_task_states(again["flow_run_id"], outer_stages) == dict.fromkeys(outer_stages, "Cached")
    assert again["totals"]["registered"] == first["totals"]["registered"] == 20

    for path in sorted((scene / "images").iterdir())[20:]:
        shutil.copy2(path, collection / path.name)
    grown = reconstruct(str(collection), str(out))
    assert grown["stages"]["features"]["computed"] == 3
    assert grown["stages"]["features"]["reused"] == 20
    assert grown["totals"]["registered"] == 23


def _final_task_states(flow_run_id: str, names: tuple[str, ...], timeout_s: float = 30.0) -> dict[str, str | None]:
    """The named task runs' states once each has reached a final one: the API records a task
    run's last state a moment after the flow returns (sooner or later as its database is busy)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            states = {run.name: run.state for run in runs}
            if all(states.get(n) is not None and states[n].is_final() for n in names) or time.monotonic() > deadline:
                return {n: states[n].name if states.get(n) is not None else None for n in names}
            time.sleep(0.5)


def _start_run(source: Path, out: Path) -> subprocess.Popen:
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value())
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(source), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.slow
def test_killed_run_resumes_and_matches_an_uninterrupted_one(scene, tmp_path, prefect_api):
    source, out = scene / "first20", tmp_path / "killed"
    run = _start_run(source, out)
    try:
        # Kill it in the middle of the matching stage: features are committed, matching is not.
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "features.json").exists():
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "features never finished"
            time.sleep(0.2)
        time.sleep(1.0)
        assert not (out / "checkpoints" / "matching.json").exists()
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()

    resumed = reconstruct(str(source), str(out))
    assert resumed["stages"]["ingest"]["status"] == "reused"
    assert resumed["stages"]["features"]["status"] == "reused"
    assert all(resumed["stages"][s]["status"] == "ran" for s in STAGES[2:])

    reference = tmp_path / "uninterrupted"
    reconstruct(str(source), str(reference))
    assert resumed["totals"]["registered"] == 20
    agreement = evaluate_model_dirs(out / "sparse" / "0", reference / "sparse" / "0")
    assert agreement["registered"] == 20 and agreement["auc@3"] == 1.0
    assert json.loads((out / "report.json").read_text())["totals"]["registered"] == 20
