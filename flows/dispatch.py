"""Where the chunks run: a Dask cluster through prefect_dask, or in the flow's own process.

- `dask_address` given: the chunks go to that scheduler (a GPU cluster started with
  dask-cuda, dask-jobqueue or dask-kubernetes; see the README's operator section).
- several chunks, no address: a LocalCluster sized to this machine, one single-threaded
  worker process per core (the geometry libraries use their own threads), at most one per chunk.
- one chunk, no address: no cluster; starting one would cost more than it gives.

GPU work is submitted with the resource annotation {"GPU": 1} when the device is a GPU and
the cluster's workers declare that resource (`dask worker --resources GPU=1`), so a CPU-only
cluster still runs it.
"""
import contextlib
import logging
import os

import dask
from prefect.client.orchestration import get_client
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from flows.environment import DEFAULTS as ENVIRONMENT_DEFAULTS


def chunk_task_runner(dask_address: str | None, num_chunks: int):
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    if num_chunks > 1:
        workers = max(1, min(num_chunks, os.cpu_count() or 1))
        # The workers report their task runs to this process's Prefect API: without
        # PREFECT_API_URL each would start a temporary server of its own.
        # They also take this project's environment defaults (quiet COLMAP logs, no analytics).
        env = {**{key: os.environ[key] for key in ENVIRONMENT_DEFAULTS if key in os.environ},
               "PREFECT_API_URL": str(get_client(sync_client=True).api_url).rstrip("/")}
        logging.getLogger("distributed").setLevel(logging.WARNING)  # the cluster's chatter, not ours
        return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                              "dashboard_address": None, "env": env})
    return ThreadPoolTaskRunner(max_workers=1)


def workers_declare_gpu(task_runner) -> bool:
    if not isinstance(task_runner, DaskTaskRunner):
        return False
    workers = task_runner.client.scheduler_info().get("workers", {}).values()
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)


def gpu_annotation(device: str, task_runner):
    """Context under which a chunk's tasks are submitted."""
    if device.startswith("cuda") and workers_declare_gpu(task_runner):
        return dask.annotate(resources={"GPU": 1})
    return contextlib.nullcontext()
