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

from flows.artifacts import (StageProgress, artifact_key, image_rows, publish_run_artifacts, render_top_view,
                             run_artifacts)
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


def _manifest_row(name: str, status: str = "ok", focal: float | None = None, camera: str | None = None):
    from storage.manifest import ManifestRow
    return ManifestRow(image_id=None if status != "ok" else hash(name) % 1000, name=name, uri=f"file:///p/{name}",
                       sha256=None, bytes=120_000, width=320, height=240, focal_length_px=focal, focal_source=None,
                       exif_focal_mm=None, camera_make=camera and camera.split()[0],
                       camera_model=camera and camera.split(maxsplit=1)[1], status=status)


def _finished_report(images: int, left_out: int) -> dict:
    ba = {"status": "ran", "seconds": 1.5, "key": "k" * 64, "solver": "ceres", "points": 900,
          "observations_filtered": 12, "points_retriangulated": 30, "images_reposed": 0, "images_dropped": 0,
          "cameras_without_distortion": 0, "chunks": [{"chunk": 0, "models": []}]}
    return {"source": "/photos", "output": "/srv/sfm/statue", "settings": {"chunk_size": 100, "min_inliers": 15},
            "stages": {"ingest": {"status": "ran", "seconds": 0.2, "files": images + left_out, "images": images,
                                  "left_out": left_out},
                       "matching": {"status": "ran", "seconds": 3.0, "pairs_matched": 3, "pairs_verified": 0},
                       "bundle-adjustment": ba, "export": {"status": "ran", "seconds": 0.1, "models": []}},
            "totals": {"images": images, "left_out": left_out, "registered": 0, "points": 0, "seconds": 4.8,
                       "models": 0, "chunks": 0, "unconnected": images, "mean_reprojection_error_px": None}}


def test_empty_tables_and_columns_say_why(tmp_path):
    """No file left out, no verified pair, no chunk, no model, no EXIF: each says so in words
    instead of a table of one blank row or a blank column."""
    rows = [_manifest_row(f"{i}.jpg") for i in range(3)]
    artifacts = {a.what: a for a in run_artifacts(_finished_report(3, 0), OutputLayout(tmp_path), rows, [], None)}
    assert artifacts["left-out"].table is None
    assert "No file was left out: all 3 files are used." in artifacts["left-out"].markdown
    assert "No file was left out" in artifacts["summary"].markdown
    for what, words in (("pairs", "none of the 3 matched pairs"), ("chunks", "No chunk was planned"),
                        ("models", "No model was reconstructed")):
        assert artifacts[what].table is None and words in artifacts[what].markdown, what
        assert words in artifacts[what].description, f"the {what} card says why before anyone opens it"
    images = artifacts["images"]
    assert "focal px (EXIF)" not in images.table[0] and images.table[0]["registered in"] == "no"
    assert "focal px (EXIF): no EXIF focal length in any photo" in images.description
    assert "No EXIF camera make or model in any photo used." in artifacts["cameras"].markdown
    # One photo with a focal length: the column is back, blank where there is none.
    rows[1] = rows[2] = _manifest_row("1.jpg", focal=400.0, camera="samsung Galaxy S21")
    artifacts = {a.what: a for a in run_artifacts(_finished_report(3, 0), OutputLayout(tmp_path), rows, [], None)}
    assert [row["focal px (EXIF)"] for row in artifacts["images"].table] == [None, 400.0, 400.0]
    assert "focal px" not in artifacts["images"].description
    assert artifacts["cameras"].table == [{"camera": "samsung Galaxy S21", "size": "320x240", "photos": 2}]


def test_table_cells_stay_short(tmp_path):
    """The stages table has no free-text column: each stage's counts are rows of their own,
    and a left-out file's row in the images table names only the kind of its reason."""
    rows = [_manifest_row("a.jpg"), _manifest_row("b.jpg"),
            _manifest_row("c.jpg", "duplicate of a-photo-with-a-rather-long-file-name-from-a-phone.jpg")]
    artifacts = {a.what: a for a in run_artifacts(_finished_report(2, 1), OutputLayout(tmp_path), rows, [], None)}
    stages = artifacts["stages"].table
    assert stages[2] == {"stage": "bundle-adjustment", "status": "ran", "seconds": 1.5}
    counts = artifacts["stage-counts"].table
    assert {"stage": "bundle-adjustment", "count": "points retriangulated", "value": 30} in counts
    assert {"stage": "matching", "count": "pairs verified", "value": 0} in counts
    assert not any(row["count"] in ("key", "chunks", "models", "status") for row in counts)
    assert artifacts["images"].table[2]["status"] == "left out: duplicate"
    assert artifacts["left-out"].table == [{"name": "c.jpg", "reason": rows[2].status}]
    for artifact in artifacts.values():
        for row in artifact.table or []:
            assert all(len(str(value)) <= 40 for name, value in row.items() if name not in ("name", "reason")), row


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
    assert {key(w) for w in ("summary", "images", "cameras", "left-out", "pairs", "chunks", "models", "stages",
                             "stage-counts")} <= set(by_key)
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
    counts = json.loads(by_key[key("stage-counts")].data)
    assert {"stage": "bundle-adjustment", "count": "points", "value": report["stages"]["bundle-adjustment"]["points"]} in counts
    chunks = json.loads(by_key[key("chunks")].data)
    assert [(row["chunk"], row["images"], row["status"]) for row in chunks] == [
        ("chunk-0", report["stages"]["chunking"]["chunk_sizes"][0], "done")]
    assert chunks[0]["registered"] == report["totals"]["registered"] and chunks[0]["points"] > 0


CHUNK_STAGE_NAMES = ("tracks", "cameras", "triangulation", "bundle-adjustment")


def _subflow_and_task_runs(api: str, run):
    """The run's `reconstruct-chunks` subflow run and its task runs by name, once the server
    has recorded all four stages of every chunk (task runs arrive as events, a little late)."""
    from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterParentFlowRunId,
                                                TaskRunFilter, TaskRunFilterFlowRunId)
    with api_client(api) as client:
        subflow, = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["reconstruct-chunks"])),
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id])))

        def stages_recorded():
            runs = {t.name: t for t in client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[subflow.id])))}
            return runs if all(f"{s}-chunk-0" in runs and runs[f"{s}-chunk-0"].state.is_completed()
                               for s in CHUNK_STAGE_NAMES) else None
        return subflow, wait_for(stages_recorded, 60, "the chunk stages' task runs")


def test_chunk_stages_are_a_chain_side_by_side_in_the_subflow(finished_run):
    """Each chunk's four stages belong to the subflow run, none inside another (no parent task
    run: the graph would draw cameras inside tracks), and each stage's one upstream edge is the
    stage before it, so the graph draws the chain."""
    api, run, out, report = finished_run
    subflow, task_runs = _subflow_and_task_runs(api, run)
    with urllib.request.urlopen(f"{api}/flow_runs/{subflow.id}/graph-v2", timeout=30) as response:
        nodes = dict((node_id, node) for node_id, node in json.load(response)["nodes"])
    for chunk in range(report["totals"]["chunks"]):
        previous = None
        for stage in CHUNK_STAGE_NAMES:
            task_run = task_runs[f"{stage}-chunk-{chunk}"]
            assert task_run.flow_run_id == subflow.id
            assert not task_run.task_inputs.get("__parents__"), f"{task_run.name} is drawn inside another task run"
            upstream = {i.id for inputs in task_run.task_inputs.values() for i in inputs if hasattr(i, "id")}
            assert upstream == ({previous.id} if previous else set()), f"{task_run.name}: upstream {upstream}"
            node = nodes[str(task_run.id)]
            assert node["encapsulating"] == [], f"the graph draws {task_run.name} inside another node"
            assert {edge["id"] for edge in node["parents"]} == ({str(previous.id)} if previous else set())
            previous = task_run


def test_progress_artifacts_end_at_their_totals(finished_run):
    """features, matching (on the run) and chunks (on the subflow run): 100 %, "N of N"."""
    api, run, out, report = finished_run
    subflow, _ = _subflow_and_task_runs(api, run)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType
    with api_client(api) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id, subflow.id]), type=ArtifactFilterType(any_=["progress"])))
    final = {a.description.split(":")[0]: (float(a.data), a.description.split(" (")[0]) for a in artifacts}
    stages = report["stages"]
    assert final == {
        "features": (100.0, f"features: {stages['features']['computed']} of {stages['features']['computed']} images"),
        "matching": (100.0, f"matching: {stages['matching']['pairs_matched']} of {stages['matching']['pairs_matched']} pairs"),
        "chunks": (100.0, f"chunks: {report['totals']['chunks']} of {report['totals']['chunks']} chunks")}
    assert stages["features"]["computed"] == 8


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

        # Every table fits its columns: no cell is cut at its own edge or the table's box. The
        # check itself must see a cut: a table of one long cell, as the stages table had.
        with api_client(api) as client:
            from prefect.client.schemas.actions import ArtifactCreate
            too_wide = client.create_artifact(ArtifactCreate(type="table", key="cut-check", data=[
                {"stage": "bundle-adjustment", "details": ", ".join(f"count number {i} {i * 37}" for i in range(40))}]))
            # The images table of photos with EXIF: all its columns, a phone's long file names.
            from storage.manifest import ManifestRow
            exif_rows = [ManifestRow(image_id=i + 1, name=f"IMG_20240517_{i:06d}_HDR.jpg", uri=f"file:///p/{i}.jpg",
                                     sha256=None, bytes=4_812_345, width=4032, height=3024, focal_length_px=3218.4,
                                     focal_source="exif_rejected: cropped", exif_focal_mm=4.3, camera_make="samsung",
                                     camera_model="Galaxy S21 Ultra 5G", status="ok",
                                     result="sparse/0, pose undetermined: 14 observations") for i in range(3)]
            with_exif = client.create_artifact(ArtifactCreate(type="table", key="images-with-exif",
                                                              data=image_rows(exif_rows)))
        for what, artifact_id, first_cell in [
                ("cut-check", too_wide.id, "bundle-adjustment"), ("images-with-exif", with_exif.id, "IMG_20240517"),
                *[(what, _artifact_id(api, artifact_key(out, what)), first_cell) for what, first_cell in (
                    ("stages", "bundle-adjustment"), ("stage-counts", "bundle-adjustment"), ("images", "notes.jpg"),
                    ("chunks", "chunk-0"))]]:
            browser.open(f"{ui}/artifacts/artifact/{artifact_id}")
            browser.wait(f"[...document.querySelectorAll('td')].some(td => td.innerText.includes({json.dumps(first_cell)}))",
                         60, f"the {what} table")
            browser.screenshot(tmp_path / f"{what}.png")
            cut = browser.evaluate(CUT_CELLS)
            assert (cut != []) if what == "cut-check" else (cut == []), f"the {what} table cuts {cut}"

        # The chunk subflow's graph: the four stages side by side (look at the screenshot).
        subflow, _ = _subflow_and_task_runs(api, run)
        browser.open(f"{ui}/runs/flow-run/{subflow.id}")
        browser.wait("!!document.querySelector('canvas')", 60, "the subflow's graph")
        time.sleep(3)  # the graph lays itself out
        browser.screenshot(tmp_path / "chunk-graph.png")
    except BaseException:
        with contextlib.suppress(Exception):  # keep the first error, not one of the screenshot
            browser.screenshot(tmp_path / "failure.png")
        print(f"screenshots and chromium's log in {tmp_path}")
        raise
    finally:
        browser.close()


# JavaScript: the text of the table cells cut at their own edge or at the edge of the box
# that holds their table (the UI scrolls or clips a table wider than its box).
CUT_CELLS = """[...document.querySelectorAll('td, th')].filter(c => {
    const box = c.closest('table').parentElement.getBoundingClientRect();
    return c.scrollWidth > c.clientWidth + 1 || c.getBoundingClientRect().right > box.right + 1;
}).map(c => c.innerText)"""


def _artifact_id(api: str, key: str):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    with api_client(api) as client:
        artifact, = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return artifact.id


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
