"""Where the chunks run: the GPU resource annotation follows what the cluster's workers declare."""
import dask
import pytest
from distributed import LocalCluster
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.dispatch import chunk_task_runner, gpu_annotation, workers_declare_gpu


@pytest.fixture(scope="module")
def clusters():
    """Two one-worker clusters in this process: one whose worker declares a GPU, one without."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      resources={"GPU": 1}) as gpu, \
         LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cpu:
        yield gpu.scheduler_address, cpu.scheduler_address


@pytest.mark.parametrize("device, cluster, annotated", [
    ("cuda", "gpu", True), ("cuda:1", "gpu", True), ("cpu", "gpu", False), ("cuda", "cpu", False)])
def test_gpu_work_is_annotated_only_where_workers_declare_a_gpu(clusters, device, cluster, annotated):
    address = clusters[0] if cluster == "gpu" else clusters[1]
    with DaskTaskRunner(address=address) as runner:
        assert workers_declare_gpu(runner) == (cluster == "gpu")
        with gpu_annotation(device, runner):
            annotations = dask.get_annotations()
    assert annotations == ({"resources": {"GPU": 1}} if annotated else {})


def test_one_chunk_runs_in_the_flow_and_an_address_is_used(clusters):
    assert isinstance(chunk_task_runner(None, 1), ThreadPoolTaskRunner)
    runner = chunk_task_runner(clusters[1], 1)
    assert isinstance(runner, DaskTaskRunner) and runner.address == clusters[1]
