"""What a person sees in the Prefect UI: a real `prefect server start` (SQLite), a real run of
the flow against it, and the run's pages opened in headless Chromium (Debian's `chromium`,
driven through the DevTools protocol so the test can click and wait like a person)."""
import base64
import contextlib
import io
import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.artifacts import StageProgress, artifact_key, publish_run_artifacts, render_top_view
from flows.layout import OutputLayout
from local_prefect import RUN_S, api_client, prefect_server, stop, wait_for, write_small_scene

CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


# --- headless Chromium ------------------------------------------------------------------------

class Browser:
    """Headless Chromium driven through the DevTools protocol (one page)."""

    def __init__(self, profile: Path, timeout_s: float = 60):
        from websockets.sync.client import connect
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile.parent / "chromium.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                 "--window-size=1400,1800", "about:blank"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            port_file = profile / "DevToolsActivePort"
            wait_for(lambda: port_file.exists() and port_file.read_text().strip(), timeout_s, "chromium to start",
                     interval_s=0.2)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                pages = [t for t in json.load(response) if t["type"] == "page"]
            self.socket = connect(pages[0]["webSocketDebuggerUrl"], max_size=2 ** 27, open_timeout=timeout_s)
        except BaseException:
            stop(self.process)
            raise
        self._id = 0

    def call(self, method: str, timeout_s: float = 60, **params) -> dict:
        self._id += 1
        self.socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            message = json.loads(self.socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait(self, expression: str, timeout_s: float, what: str):
        return wait_for(lambda: self.evaluate(expression), timeout_s, what, interval_s=0.5)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        try:
            self.socket.close()
        finally:
            stop(self.process, grace_s=10)


def click_by_text(selector: str, text: str) -> str:
    """JavaScript: click the first `selector` element whose text contains `text`; true if found."""
    return (f"(() => {{ const e = [...document.querySelectorAll({json.dumps(selector)})]"
            f".find(e => e.textContent.includes({json.dumps(text)})); if (e) e.click(); return !!e; }})()")


# --- tests without a server -------------------------------------------------------------------

def test_top_view_shows_points_and_cameras():
    rng = np.random.default_rng(0)
    # A wall along x, seen by cameras on an arc in front of it; the photos' up is +z.
    xyz = np.stack([rng.uniform(-5, 5, 2000), rng.normal(0, 0.05, 2000), rng.uniform(0, 3, 2000)], axis=1)
    rgb = np.tile(np.array([[40, 200, 90]], np.uint8), (2000, 1))
    angles = np.linspace(-0.6, 0.6, 7)
    centres = np.stack([8 * np.sin(angles), -8 * np.cos(angles), np.full(7, 1.5)], axis=1)
    directions = -centres / np.linalg.norm(centres, axis=1, keepdims=True)
    ups = np.tile([0.0, 0.0, 1.0], (7, 1))
    picture = np.asarray(Image.open(io.BytesIO(render_top_view(xyz, rgb, centres, directions, ups))).convert("RGB"))
    height, width, _ = picture.shape
    assert max(height, width) == 640 and min(height, width) >= 64
    green = (picture[..., 1] > 150) & (picture[..., 0] < 100)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 100)
    assert green.sum() > 500, "the points are drawn in their colours"
    assert red.sum() > 7 * 20, "every camera is drawn"
    # Seen from above, the wall is a thin line: its pixels span one axis, not the other.
    rows, cols = np.nonzero(green)
    assert min(np.ptp(rows), np.ptp(cols)) < 0.1 * max(np.ptp(rows), np.ptp(cols))


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_on_a_terminal_and_nothing_published_outside_a_run(tmp_path):
    terminal = _Terminal()
    for _ in StageProgress("features", 4, unit="images", stream=terminal).track(range(4)):
        pass
    assert "features" in terminal.getvalue() and "4/4 images" in terminal.getvalue()
    assert terminal.getvalue().endswith("\n")
    quiet = io.StringIO()  # not a terminal: no bar
    with StageProgress("matching", 3, stream=quiet) as progress:
        progress.advance(3)
    assert quiet.getvalue() == "" and progress.percent == 100.0
    # Outside a Prefect run there is no run to attach artifacts to: nothing happens, no server starts.
    publish_run_artifacts({"totals": {}}, OutputLayout(tmp_path))
    assert artifact_key(Path("/srv/sfm/notre-dame"), "summary") == "sfm-notre-dame-summary"


# --- the real thing ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ui_server(tmp_path_factory):
    with prefect_server(tmp_path_factory.mktemp("prefect-ui-home"), ui=True) as (api, env):
        yield api, env


@pytest.fixture(scope="module")
def finished_run(ui_server, tmp_path_factory):
    """The flow run on 8 photos and a text file, through the command line, against the server."""
    api, env = ui_server
    root = tmp_path_factory.mktemp("ui-run")
    images = write_small_scene(root / "scene")
    out = root / "out"
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(images), "--out", str(out)],
                            env=env, capture_output=True, text=True, timeout=RUN_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    with api_client(api) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["reconstruct"])))
    assert len(runs) == 1 and runs[0].state.is_completed()
    return api, runs[0], out, json.loads((out / "report.json").read_text())


def test_run_artifacts_are_published(finished_run):
    api, run, out, report = finished_run
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    with api_client(api) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
    by_key = {a.key: a for a in artifacts if a.key}
    key = lambda what: artifact_key(out, what)  # noqa: E731
    assert {key(w) for w in ("summary", "images", "left-out", "pairs", "chunks", "models", "stages")} <= set(by_key)
    summary = by_key[key("summary")]
    assert summary.type == "markdown" and "data:image/png;base64," in summary.data
    assert f"9 photos in, 1 left out, {report['totals']['registered']} registered" in summary.description
    left_out = json.loads(by_key[key("left-out")].data)
    assert left_out == [{"name": "notes.jpg", "reason": "not an image (Pillow cannot identify it)"}]
    images = json.loads(by_key[key("images")].data)
    assert len(images) == 9 and sum(row["registered in"] == "sparse/0" for row in images) == report["totals"]["registered"]
    pairs = json.loads(by_key[key("pairs")].data)
    assert len(pairs) == report["stages"]["matching"]["pairs_verified"] > 0
    stages = json.loads(by_key[key("stages")].data)
    assert [row["stage"] for row in stages] == list(report["stages"])
    chunks = json.loads(by_key[key("chunks")].data)
    assert [(row["chunk"], row["images"], row["status"]) for row in chunks] == [
        ("chunk-0", report["stages"]["chunking"]["chunk_sizes"][0], "done")]
    assert chunks[0]["registered"] == report["totals"]["registered"] and chunks[0]["points"] > 0


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make setup installs it as root: "
                                             "apt-get install chromium)")
def test_a_person_sees_the_run_in_the_ui(finished_run, tmp_path):
    """Open the run's page, its Artifacts tab, then the summary: the numbers, the reasons,
    the picture and the output folder show, rendered by the UI itself."""
    api, run, out, report = finished_run
    ui = api.removesuffix("/api")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        browser.open(f"{ui}/runs/flow-run/{run.id}")
        browser.wait("[...document.querySelectorAll('li.p-tab')].some(e => e.textContent.trim() === 'Artifacts')",
                     120, "the flow run page with its Artifacts tab")
        assert run.name in browser.text() and "Completed" in browser.text()
        browser.wait(click_by_text("li.p-tab", "Artifacts"), 30, "a click on the Artifacts tab")
        summary_key = artifact_key(out, "summary")
        browser.wait(f"document.body.innerText.includes({json.dumps(summary_key)})", 60, "the summary's card")
        # The card says it all in one line, before anyone opens it.
        assert f"9 photos in, 1 left out, {report['totals']['registered']} registered" in browser.text()
        browser.screenshot(tmp_path / "run-artifacts.png")

        browser.wait(click_by_text("a[href^='/artifacts/artifact/']", summary_key), 30, "a click on the summary's card")
        browser.wait("location.pathname.startsWith('/artifacts/artifact/')", 60, "the summary's page")
        image = browser.wait("(() => { const i = document.querySelector('img[src^=\"data:image/png;base64,\"]');"
                             " return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight] : null; })()",
                             60, "the preview picture to be decoded")
        assert max(image) == 640
        browser.screenshot(tmp_path / "summary.png")
        text = browser.text()
        totals = report["totals"]
        assert "Reconstruction summary" in text
        assert "found\t9" in text and "used\t8" in text and "left out\t1 (1 not an image)" in text
        assert f"registered\t{totals['registered']} of 8" in text
        assert "notes.jpg: not an image (Pillow cannot identify it)" in text
        assert (out / "sparse" / "0").resolve().as_uri() in text
        assert (out / "points.ply").resolve().as_uri() in text

        # The left-out table, as the UI draws it.
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
        with api_client(api) as client:
            left_out, = client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[artifact_key(out, "left-out")])))
        browser.open(f"{ui}/artifacts/artifact/{left_out.id}")
        browser.wait("[...document.querySelectorAll('td')].some(td => td.innerText.includes('notes.jpg'))", 60,
                     "the left-out table")
        assert "not an image (Pillow cannot identify it)" in browser.text()
    except BaseException:
        with contextlib.suppress(Exception):  # keep the first error, not one of the screenshot
            browser.screenshot(tmp_path / "failure.png")
        print(f"screenshots and chromium's log in {tmp_path}")
        raise
    finally:
        browser.close()


PROGRESS_FLOW = """
import time
from prefect import flow
from prefect.runtime import flow_run
from flows.artifacts import StageProgress

@flow(name="progress-check")
def counting(n: int) -> str:
    for _ in StageProgress("features", n, unit="images", interval=0.0).track(range(n)):
        time.sleep(0.01)
    return flow_run.id

print(counting(5))
"""


def test_stage_progress_is_a_progress_artifact_of_the_run(ui_server):
    """StageProgress inside a run: one progress artifact, updated to 100 % with a count."""
    api, env = ui_server
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
    result = subprocess.run([sys.executable, "-c", PROGRESS_FLOW], env=env, capture_output=True, text=True,
                            timeout=RUN_S)
    assert result.returncode == 0, result.stderr[-3000:]
    run_id = result.stdout.strip().splitlines()[-1]
    with api_client(api) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]), type=ArtifactFilterType(any_=["progress"])))
    assert len(artifacts) == 1
    assert float(artifacts[0].data) == 100.0 and artifacts[0].description.startswith("features: 5 of 5 images")
