"""Chunked reconstruction end to end: a synthetic collection with distractors cut into chunks,
the chunks run on a real Dask cluster, merged into one model; and a Dask worker killed in the
middle of a chunk."""
import os
import signal
import sys
from pathlib import Path

import cloudpickle
import pycolmap
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from conftest import without_chunk_checkpoints
from flows.reconstruct import reconstruct
from flows.synth import make_collection
from storage.colmap_model import evaluate_model_dirs, model_dirs

# The plugin below travels to the Dask workers by value: they cannot import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCENE, DISTRACTORS, CHUNK_SIZE = 30, 3, 16
PER_CHUNK = ("tracks", "cameras", "triangulation", "bundle-adjustment")


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collection")
    make_collection(str(root), SCENE, DISTRACTORS, seed=0)
    return root


@pytest.fixture(scope="module")
def chunked_run(collection, tmp_path_factory, prefect_api):
    """The collection reconstructed in chunks of at most 16 on the flow's own local Dask cluster."""
    out = tmp_path_factory.mktemp("chunked")
    return out, reconstruct(str(collection / "images"), str(out), chunk_size=CHUNK_SIZE)


def registered_names(out: Path) -> list[set[str]]:
    return [{image.name for image in pycolmap.Reconstruction(str(folder)).images.values() if image.has_pose}
            for folder in model_dirs(out / "sparse")]


@pytest.mark.slow
def test_chunks_are_reconstructed_side_by_side_and_merged(collection, chunked_run):
    out, report = chunked_run
    chunks = pq.read_table(out / "chunks.parquet").to_pylist()
    assert report["totals"]["chunks"] == len(chunks) >= 3
    assert all(row["num_images"] <= CHUNK_SIZE for row in chunks)
    # Every chunk went through every per-chunk stage, each reported per chunk.
    for stage in PER_CHUNK:
        assert sorted(r["chunk"] for r in report["stages"][stage]["chunks"]) == [row["chunk"] for row in chunks]
    # The distractors have no verified pair: reported, in no chunk and in no model.
    distractors = set((collection / "distractors.txt").read_text().split())
    assert set(report["stages"]["chunking"]["unconnected_images"]) == distractors
    assert not distractors & {name for row in chunks for name in row["image_names"]}
    assert all(not distractors & names for names in registered_names(out))
    # One merged model of the whole scene, as accurate as the exact cameras allow.
    assert report["stages"]["merge"]["chunk_models"] == len(chunks)
    accuracy = evaluate_model_dirs(out / "sparse" / "0", collection / "gt")
    assert accuracy["registered"] == SCENE
    assert accuracy["auc@5"] >= 0.9
    assert report["totals"]["mean_reprojection_error_px"] <= 1.0


@pytest.mark.slow
def test_task_runs_are_named_by_stage_and_chunk(chunked_run):
    from prefect.client.orchestration import get_client

    _, report = chunked_run
    with get_client(sync_client=True) as client:
        names = {run.name for run in client.read_task_runs()}
    for chunk in range(report["totals"]["chunks"]):
        assert {f"{stage}-chunk-{chunk}" for stage in PER_CHUNK} <= names
    assert {"ingest", "features", "matching", "chunking", "merge", "export"} <= names


class KillWorkerOnce(WorkerPlugin):
    """SIGKILLs the worker process that starts the first task whose key begins with `prefix`;
    `marker` (a file) records it and keeps it to once across the cluster and its restarts."""

    def __init__(self, prefix: str, marker: str):
        self.prefix, self.marker = prefix, marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith(self.prefix) and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(key))
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_chunk_is_replaced(collection, chunked_run, tmp_path):
    from prefect.client.orchestration import get_client

    done, first = chunked_run
    out = without_chunk_checkpoints(done, tmp_path / "out")
    marker = tmp_path / "killed"
    with get_client(sync_client=True) as client:
        api = str(client.api_url).rstrip("/")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"PREFECT_API_URL": api}) as cluster, Client(cluster) as client:
        client.register_plugin(KillWorkerOnce("initialize_cameras", str(marker)))
        report = reconstruct(str(collection / "images"), str(out), chunk_size=CHUNK_SIZE,
                             dask_address=cluster.scheduler_address)

    assert marker.read_text().startswith("initialize_cameras"), "no worker was killed"
    assert report["stages"]["chunking"]["status"] == "reused"
    for stage in PER_CHUNK:
        assert len(report["stages"][stage]["chunks"]) == first["totals"]["chunks"]
    assert report["totals"]["registered"] == first["totals"]["registered"] == SCENE
    agreement = evaluate_model_dirs(out / "sparse" / "0", done / "sparse" / "0")
    assert agreement["registered"] == SCENE and agreement["auc@3"] >= 0.99
