"""Running it as a service, for real: deployments/prefect.yaml applied with `prefect deploy --all`
to a `prefect server start` (SQLite), a run triggered with `prefect deployment run` and
executed by a process worker; and `serve` with a cron schedule, whose runs the server
schedules and whose triggered run the serving process executes."""
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pycolmap
import pytest

from local_prefect import RUN_S, api_client, prefect_server, stop, tail, wait_for, write_small_scene

DEPLOYMENTS = Path(__file__).resolve().parents[1] / "deployments"
POOL = "landmark-sfm"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-deploy-home"), ui=False) as (api, env):
        yield api, env


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_small_scene(tmp_path_factory.mktemp("deploy-scene"))


def prefect_cli(env: dict, *args: str, cwd: Path = DEPLOYMENTS, timeout: float = 300) -> subprocess.CompletedProcess:
    """The `prefect` command of this interpreter, as an operator would type it."""
    result = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stdout + result.stderr, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def scheduled_runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import (DeploymentFilter, DeploymentFilterId, FlowRunFilter,
                                                FlowRunFilterState, FlowRunFilterStateType)
    from prefect.client.schemas.objects import StateType
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))


def wait_until_final(api: str, run_id, timeout_s: float = RUN_S):
    def final():
        with api_client(api) as client:
            run = client.read_flow_run(run_id)
        return run if run.state is not None and run.state.is_final() else None
    return wait_for(final, timeout_s, f"flow run {run_id} to finish", interval_s=2)


def assert_reconstructed(out: Path) -> None:
    model = pycolmap.Reconstruction(str(out / "sparse" / "0"))
    report = json.loads((out / "report.json").read_text())
    assert model.num_reg_images() == report["totals"]["registered"] >= 6
    assert report["totals"]["images"] == 8 and report["totals"]["left_out"] == 1


def test_prefect_deploy_all_then_a_triggered_run_reconstructs(server, photos, tmp_path):
    api, env = server
    prefect_cli(env, "work-pool", "create", "--type", "process", POOL)
    deployed = prefect_cli(env, "--no-prompt", "deploy", "--all")
    assert "reconstruct/nightly" in deployed.stdout

    with api_client(api) as client:
        deployment = client.read_deployment_by_name("reconstruct/nightly")
        assert deployment.work_pool_name == POOL and deployment.entrypoint == "flows.reconstruct.reconstruct"
        assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
        assert {"source", "out", "device", "max_image_size", "max_features"} <= set(deployment.parameters)
        # The server's scheduler turns the cron schedule into runs ahead of time.
        upcoming = wait_for(lambda: scheduled_runs(client, deployment.id), 180, "scheduled runs of reconstruct/nightly")
    now = datetime.now(timezone.utc)
    assert all(r.expected_start_time > now and (r.expected_start_time.hour, r.expected_start_time.minute) == (2, 0)
               for r in upcoming)

    out = tmp_path / "out"
    triggered = prefect_cli(env, "deployment", "run", "reconstruct/nightly",
                            "--param", f"source={photos}", "--param", f"out={out}")
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", triggered.stdout).group(1)
    # The worker takes the run that is due, runs it to the end, and stops.
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once"],
                                  cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run = wait_until_final(api, run_id)
        worker.wait(120)
    finally:
        stop(worker)
    assert run.state.is_completed(), f"{run.state}\n{tail(worker_log)}"
    assert run.parameters["source"] == str(photos)
    assert_reconstructed(out)


def test_serve_schedules_runs_and_runs_a_triggered_one(server, photos, tmp_path):
    api, env = server
    out = tmp_path / "served-out"
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as log:
        served = subprocess.Popen(
            [sys.executable, "-m", "flows.serve", str(photos), "--out", str(out), "--cron", "30 3 * * *",
             "--name", "served-test"],
            cwd=tmp_path, env={**env, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        from prefect.exceptions import ObjectNotFound

        def deployment():
            if served.poll() is not None:
                pytest.fail(f"serve exited with {served.returncode}:\n{tail(serve_log)}")
            with api_client(api) as client:
                try:
                    return client.read_deployment_by_name("reconstruct/served-test")
                except ObjectNotFound:
                    return None
        served_deployment = wait_for(deployment, 180, "the served deployment")
        assert served_deployment.parameters["source"] == str(photos)
        assert [s.schedule.cron for s in served_deployment.schedules] == ["30 3 * * *"]

        with api_client(api) as client:
            upcoming = wait_for(lambda: scheduled_runs(client, served_deployment.id), 180, "scheduled runs of the served deployment")
            assert all((r.expected_start_time.hour, r.expected_start_time.minute) == (3, 30) for r in upcoming)
            run = client.create_flow_run_from_deployment(served_deployment.id)
        run = wait_until_final(api, run.id)
        assert run.state.is_completed(), f"{run.state}\n{tail(serve_log)}"
        assert_reconstructed(out)
    finally:
        stop(served)


@pytest.mark.parametrize("case", ["no server", "bad cron", "no source"])
def test_serve_refuses_in_one_line(case, photos, tmp_path):
    """Without PREFECT_API_URL the schedule would live in a temporary server; a bad cron or a
    missing folder would only fail at night: each is a one-line error before anything starts."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path / "home")  # a fresh profile: no API URL from ~/.prefect
    args, expected = {"no server": ([str(photos)], "PREFECT_API_URL"),
                      "bad cron": ([str(photos), "--cron", "every night"], "bad schedule"),
                      "no source": ([str(tmp_path / "nowhere")], "does not exist")}[case]
    if case != "no server":
        env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # never reached: the check comes first
    result = subprocess.run([sys.executable, "-m", "flows.serve", *args, "--out", str(tmp_path / "out")],
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and expected in result.stderr, result.stderr
