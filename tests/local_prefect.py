"""A real Prefect server for the service tests (test_ui, test_deployment): `prefect server
start` on a free loopback port with a SQLite database of its own, and helpers around it."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

SERVER_START_S = 240  # 20-45 s on 2 idle cores; much more when they are busy
RUN_S = 420  # one run of the flow on the small scene: about 10 s on 2 idle cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen, grace_s: float = 30) -> None:
    """Stop a process started in its own session, and whatever it started, by its group id."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    except ProcessLookupError:
        pass


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def check_fastapi() -> None:
    """Prefect 3.8.8's client sends `"limit": null` (read_flow_runs, the workers query of
    `prefect deploy`, ...); FastAPI 0.151 and later answer 422 instead of using the default."""
    from importlib.metadata import version
    major, minor = (int(x) for x in version("fastapi").split(".")[:2])
    assert (major, minor) < (0, 151), (
        f"fastapi {version('fastapi')} breaks Prefect 3.8.8's API (422 on null limit/offset): "
        "pyproject.toml must pin fastapi<0.151")


@contextmanager
def prefect_server(home: Path, ui: bool):
    """`prefect server start` on a free loopback port with its SQLite database in `home`.
    Yields (api_url, env): env is what a client process needs to talk to it."""
    check_fastapi()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_API")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api, PREFECT_UI_API_URL=api,
               PREFECT_UI_URL=f"http://127.0.0.1:{port}", PREFECT_UI_ENABLED="true" if ui else "false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}")
    log = home / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                   "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"prefect server exited with {server.returncode}:\n{tail(log)}")
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prefect server not up after {SERVER_START_S} s:\n{tail(log)}")
            time.sleep(1)
        yield api, env
    finally:
        stop(server)


@contextmanager
def api_client(api: str):
    """A synchronous Prefect client of the server at `api`."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings(updates={PREFECT_API_URL: api}):
        with get_client(sync_client=True) as client:
            yield client


def wait_for(check, timeout_s: float, what: str, interval_s: float = 1.0):
    """Poll check() until it returns something truthy; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def write_small_scene(root: Path) -> Path:
    """8 rendered photos of the landmark (320x240) and one text file posing as a photo."""
    from sfm_core.synthetic import render_scene
    from storage.synthetic_io import load_package_textures, write_scene
    write_scene(render_scene(load_package_textures(), n_cameras=8, image_size=(320, 240), arc_deg=120), root)
    (root / "images" / "notes.jpg").write_text("not a photo, just text with a .jpg name\n")
    return root / "images"
