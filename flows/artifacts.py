"""What a person watching a run in the Prefect UI sees without reading its logs.

publish_run_artifacts(report, layout), called once at the end of the flow, attaches to the
flow run:
- a markdown summary: photos found, used, left out (with the reasons), registered, points,
  reprojection error, seconds, a preview picture of the model (a top view of its points
  and camera centres, an inline base64 PNG, so it shows with no network), and where the
  outputs are;
- tables: the images (status, size, which model registered them), the files left out with
  their reasons, the verified pairs, the models, and the stages with their seconds.

StageProgress, used inside the long stages' loops, keeps a progress artifact of the run
up to date as images finish and, in a terminal, draws a progress bar.

Artifacts never make a run fail: a failure to publish one is a warning in the run's log.
Outside a Prefect run (a task called as task.fn() in a unit test) nothing is published.
"""
import base64
import io
import logging
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from flows.layout import OutputLayout

MAX_TABLE_ROWS = 1000  # the UI pages tables, but each row travels in the artifact's JSON
MAX_LISTED_LEFT_OUT = 20  # files left out named in the summary itself
PREVIEW_SIZE = 640  # long side of the preview picture, in pixels
PREVIEW_BACKGROUND = (24, 26, 31)
CAMERA_COLOUR = (255, 64, 64)


def _logger():
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("landmark_sfm")


def in_prefect_run() -> bool:
    """True inside a flow or task run (where artifacts have a run to attach to)."""
    from prefect.context import FlowRunContext, TaskRunContext
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(output: str | Path, what: str) -> str:
    """The key of an artifact of the runs writing to `output` (a folder or a URI), from its
    last two names ('/srv/sfm/notre-dame' -> 'sfm-notre-dame-summary'): the UI's Artifacts
    page lists the latest of each key, so each output keeps its own summary and tables with
    their history. Keys allow lowercase letters, digits and dashes."""
    text = str(output)
    parts = text.partition("://")[2].rstrip("/").split("/")[-2:] if "://" in text else Path(text).resolve().parts[-2:]
    slug = re.sub(r"[^a-z0-9]+", "-", "-".join(p for p in parts if p != "/").lower()).strip("-")
    return f"{slug[-48:].strip('-') or 'sfm'}-{what}"


def reason_kind(status: str) -> str:
    """The kind of a manifest status, for counting: 'duplicate', 'empty file', 'not an image'..."""
    if status.startswith("duplicate of"):
        return "duplicate"
    return re.split(r"[:(]", status, maxsplit=1)[0].strip() or status


# --- progress -----------------------------------------------------------------------------

class StageProgress:
    """Progress of one stage: a progress artifact on the run, and a bar on a terminal.

        with StageProgress("features", len(rows), unit="images") as progress:
            for row in rows:
                ...
                progress.advance()

    or, for a loop, `for row in StageProgress("features", len(rows)).track(rows): ...`.

    The artifact is updated at most every `interval` seconds and once at the end; the bar is
    drawn only when `stream` (stderr by default) is a terminal. Outside a Prefect run only the
    bar is drawn.
    """

    def __init__(self, stage: str, total: int, unit: str = "images", interval: float = 1.0, stream=None):
        self.stage, self.total, self.unit, self.interval = stage, max(int(total), 0), unit, interval
        self.done = 0
        self.started = self._last_update = time.monotonic()
        self._stream = sys.stderr if stream is None else stream
        self._bar = bool(getattr(self._stream, "isatty", lambda: False)())
        self._artifact_id = None
        self._published = 0  # the count the artifact shows
        self._drawn_at = 0.0
        if in_prefect_run():
            try:
                from prefect.artifacts import create_progress_artifact
                self._artifact_id = create_progress_artifact(self.percent, description=self.description(), _sync=True)
            except Exception as error:  # noqa: BLE001 - progress must never stop a stage
                _logger().warning("progress of %s not published: %s", stage, error)
        self._draw()

    @property
    def percent(self) -> float:
        return 100.0 if self.total == 0 else round(100.0 * min(self.done, self.total) / self.total, 1)

    def description(self) -> str:
        return f"{self.stage}: {self.done} of {self.total} {self.unit} ({time.monotonic() - self.started:.0f} s)"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.done >= self.total or now - self._last_update >= self.interval:
            self._last_update = now
            self._publish()
        if self.done >= self.total or now - self._drawn_at >= 0.1:
            self._drawn_at = now
            self._draw()

    def track(self, items):
        """Yield the items, advancing after each one (a `continue` counts too); close at the end.

            for row in StageProgress("features", len(rows)).track(rows):
        """
        try:
            for item in items:
                yield item
                self.advance()
        finally:
            self.close()

    def close(self) -> None:
        """Publish the final count and end the bar's line."""
        self._publish()
        if self._bar:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
            self._bar = False

    def __enter__(self) -> "StageProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _publish(self) -> None:
        if self._artifact_id is None or self._published == self.done:
            return
        try:
            from prefect.artifacts import update_progress_artifact
            update_progress_artifact(self._artifact_id, self.percent, description=self.description(), _sync=True)
            self._published = self.done
        except Exception as error:  # noqa: BLE001
            _logger().warning("progress of %s not updated: %s", self.stage, error)
            self._artifact_id = None

    def _draw(self) -> None:
        if not self._bar:
            return
        width = 30
        filled = int(width * self.percent / 100)
        self._stream.write(f"\r{self.stage:<18} [{'#' * filled}{'.' * (width - filled)}] "
                           f"{self.done}/{self.total} {self.unit} {time.monotonic() - self.started:5.0f} s")
        self._stream.flush()


# --- the preview picture ------------------------------------------------------------------

def _model_arrays(rec):
    """Points (N, 3) float64, their colours (N, 3) uint8, camera centres (C, 3) and viewing
    directions (C, 3), and the world 'up' of the photos (3,) (from the cameras' -y axes)."""
    points = list(rec.points3D.values())
    xyz = np.array([p.xyz for p in points], np.float64).reshape(-1, 3)
    rgb = np.array([p.color for p in points], np.uint8).reshape(-1, 3)
    centres, directions, ups = [], [], []
    for image in rec.images.values():
        if not image.has_pose:
            continue
        rotation = image.cam_from_world().rotation.matrix()  # world-to-camera
        centres.append(image.projection_center())
        directions.append(rotation[2])  # camera +z in world coordinates
        ups.append(-rotation[1])  # image up (-y) in world coordinates
    return (xyz, rgb, np.array(centres, np.float64).reshape(-1, 3),
            np.array(directions, np.float64).reshape(-1, 3), np.array(ups, np.float64).reshape(-1, 3))


def _top_view_axes(xyz: np.ndarray, centres: np.ndarray, ups: np.ndarray) -> np.ndarray:
    """(3, 3) rows: screen right, screen up, world up. World up is the photos' mean up
    direction (people hold cameras upright); without one, the direction the scene is thinnest in."""
    everything = np.vstack([xyz, centres])
    centred = everything - everything.mean(axis=0)
    up = ups.sum(axis=0)
    if np.linalg.norm(up) < 0.3 * max(len(ups), 1):
        up = np.linalg.svd(centred, full_matrices=False)[2][-1] if len(centred) >= 3 else np.array([0.0, 0.0, 1.0])
    up = up / np.linalg.norm(up)
    flat = centred - np.outer(centred @ up, up)
    if len(flat) >= 2 and np.linalg.norm(flat) > 0:
        right = np.linalg.svd(flat, full_matrices=False)[2][0]
    else:
        right = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    right = right - (right @ up) * up
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(up, right), up])


def render_top_view(xyz: np.ndarray, rgb: np.ndarray, centres: np.ndarray, directions: np.ndarray,
                    ups: np.ndarray, size: int = PREVIEW_SIZE) -> bytes:
    """A PNG of the model seen from above: points (N, 3) in their colours rgb (N, 3) uint8,
    higher points over lower ones, and the camera centres (C, 3) as red dots with a stroke
    along their viewing directions (C, 3). ups (C, 3): the photos' up directions in world
    coordinates. The frame holds 98% of the points and every camera."""
    axes = _top_view_axes(xyz, centres, ups)
    p2, c2 = xyz @ axes[:2].T, centres @ axes[:2].T
    heights = xyz @ axes[2]
    parts = [c2]
    if len(p2):
        parts.append(np.percentile(p2, [1, 99], axis=0))
    box = np.vstack(parts)
    low, high = box.min(axis=0), box.max(axis=0)
    extent = max(float((high - low).max()), 1e-9)
    low, high = low - 0.06 * extent, high + 0.06 * extent
    span = high - low
    scale = (size - 1) / float(span.max())
    width, height = (np.maximum(np.round(span * scale).astype(int) + 1, 64)).tolist()

    def to_pixels(uv):
        return np.stack([(uv[:, 0] - low[0]) * scale, (high[1] - uv[:, 1]) * scale], axis=1)

    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = PREVIEW_BACKGROUND
    if len(p2):
        order = np.argsort(heights)  # draw low points first: the top view shows the highest
        px = np.round(to_pixels(p2[order])).astype(int)
        colours = rgb[order]
        if not colours.any():  # an uncoloured model: shade by height
            shade = np.interp(heights[order], [heights.min(), heights.max() + 1e-12], [90, 230]).astype(np.uint8)
            colours = np.repeat(shade[:, None], 3, axis=1)
        dot = 2 if len(px) > 20000 else 3  # dots of dot x dot pixels: bigger when few
        for dy in range(dot):
            for dx in range(dot):
                x, y = px[:, 0] + dx, px[:, 1] + dy
                keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
                canvas[y[keep], x[keep]] = colours[keep]
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    stroke = 0.05 * float(span.max()) * scale
    for (x, y), direction in zip(to_pixels(c2), directions @ axes[:2].T):
        norm = np.linalg.norm(direction)
        if norm > 1e-9:
            dx, dy = direction / norm * stroke * min(norm * 1.5, 1.0)
            draw.line([(x, y), (x + dx, y - dy)], fill=CAMERA_COLOUR, width=2)
        draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=CAMERA_COLOUR, outline=(255, 255, 255))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def preview_png(model_dir: Path, rec=None) -> bytes | None:
    """The top view of the COLMAP model in `model_dir` (or of `rec`, already read from it);
    None when there is no model."""
    if rec is None:
        if not (Path(model_dir) / "images.bin").exists() and not (Path(model_dir) / "images.txt").exists():
            return None
        import pycolmap
        rec = pycolmap.Reconstruction(str(model_dir))
    xyz, rgb, centres, directions, ups = _model_arrays(rec)
    if len(centres) == 0:
        return None
    return render_top_view(xyz, rgb, centres, directions, ups)


def markdown_image(png: bytes, alt: str) -> str:
    """An inline markdown image: the Prefect UI shows it with no network access."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


# --- the run's artifacts ------------------------------------------------------------------

def _read_models(layout: OutputLayout) -> list:
    """The exported models sparse/0, sparse/1, ... (pycolmap Reconstructions), in order."""
    import pycolmap
    models = []
    index = 0
    while (layout.sparse / str(index)).is_dir():
        models.append(pycolmap.Reconstruction(str(layout.sparse / str(index))))
        index += 1
    return models


def output_uris(report: dict, layout: OutputLayout) -> list[tuple[str, str]]:
    """(what, where) of the run's outputs that exist: file:// URIs of the output folder, or,
    when report["output"] is a remote URI (s3://, gs://) mirrored by `layout`, URIs under it."""
    outputs = [("output folder", layout.root), ("model (COLMAP, binary)", layout.sparse / "0"),
               ("points (PLY)", layout.ply), ("manifest", layout.manifest), ("verified pairs", layout.pairs),
               ("report", layout.report)]
    base = str(report.get("output") or "")
    remote = "://" in base and not base.startswith("file://")
    found = []
    for what, path in outputs:
        if not path.exists():
            continue
        if remote:
            relative = Path(path).relative_to(layout.root).as_posix()
            found.append((what, base.rstrip("/") + ("/" + relative if relative != "." else "")))
        else:
            found.append((what, Path(path).resolve().as_uri()))
    return found


def _stage_details(stage: dict) -> str:
    return ", ".join(f"{key} {value}" for key, value in stage.items()
                     if key not in ("status", "seconds", "models", "key") and not isinstance(value, (dict, list)))


def _fmt(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def image_rows(rows, models) -> list[dict]:
    """One table row per input file: what ingest made of it and which model registered it."""
    model_of = {}
    for index, rec in enumerate(models):
        for image in rec.images.values():
            if image.has_pose:
                model_of.setdefault(image.name, f"sparse/{index}")
    return [{"name": r.name, "status": r.status,
             "registered in": model_of.get(r.name, "no" if r.status == "ok" else ""),
             "width": r.width, "height": r.height,
             "MB": None if r.bytes is None else round(r.bytes / 1e6, 2),
             "focal px (EXIF)": _fmt(r.focal_length_px, 1),
             "camera": " ".join(x for x in (r.camera_make, r.camera_model) if x) or None}
            for r in rows]


def pair_rows(layout: OutputLayout, rows) -> tuple[list[dict], int]:
    """The verified pairs, most inliers first (at most MAX_TABLE_ROWS), and how many there are."""
    if not layout.pairs.exists():
        return [], 0
    import pyarrow.parquet as pq
    table = pq.read_table(str(layout.pairs), columns=["image_id1", "image_id2", "num_matches",
                                                        "num_inliers", "configuration"]).to_pylist()
    name_of = {r.image_id: r.name for r in rows if r.image_id is not None}
    table.sort(key=lambda p: -p["num_inliers"])
    return [{"image 1": name_of.get(p["image_id1"], str(p["image_id1"])),
             "image 2": name_of.get(p["image_id2"], str(p["image_id2"])),
             "matches": p["num_matches"], "inliers": p["num_inliers"],
             "configuration": p["configuration"]} for p in table[:MAX_TABLE_ROWS]], len(table)


def chunk_rows(report: dict, layout: OutputLayout) -> list[dict]:
    """One table row per planned chunk: its images and anchor, and what came of it."""
    if not layout.chunks.exists():
        return []
    import pyarrow.parquet as pq
    stages = report["stages"]
    per_chunk = {}
    for stage in ("tracks", "cameras", "triangulation", "bundle-adjustment"):
        for entry in stages.get(stage, {}).get("chunks", []):
            row = per_chunk.setdefault(entry["chunk"], {"seconds": 0.0, "stages": 0})
            row["seconds"] += entry.get("seconds") or 0.0
            row["stages"] += 1
            if stage == "bundle-adjustment":
                models = entry.get("models", [])
                row.update(registered=entry.get("registered"), points=entry.get("points"),
                           error=models[0]["mean_reprojection_error_px"] if models else None)
    rows = []
    for plan in pq.read_table(str(layout.chunks), columns=["chunk", "num_images", "anchor_name"]).to_pylist():
        done = per_chunk.get(plan["chunk"], {"stages": 0})
        rows.append({"chunk": f"chunk-{plan['chunk']}", "images": plan["num_images"], "anchor": plan["anchor_name"],
                     "registered": done.get("registered"), "points": done.get("points"),
                     "mean reprojection error px": done.get("error"),
                     "seconds": _fmt(done.get("seconds"), 1),
                     "status": "done" if done["stages"] == 4 else f"failed after {done['stages']} of 4 stages"})
    return rows[:MAX_TABLE_ROWS]


def summary_markdown(report: dict, layout: OutputLayout, rows, preview: bytes | None) -> str:
    totals, stages = report["totals"], report["stages"]
    left_out = [r for r in rows if r.status != "ok"]
    kinds = Counter(reason_kind(r.status) for r in left_out)
    files = stages.get("ingest", {}).get("files", totals["images"] + totals["left_out"])
    error = totals.get("mean_reprojection_error_px")
    lines = [
        "# Reconstruction summary",
        "",
        f"Photos from `{report['source']}`.",
        "",
        "| photos | |",
        "|---|---|",
        f"| found | **{files}** |",
        f"| used | **{totals['images']}** |",
        f"| left out | **{totals['left_out']}**"
        + (" (" + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()) + ")" if kinds else "") + " |",
        f"| not connected | {totals.get('unconnected', 0)} (no verified pair with any other photo) |",
        f"| chunks | {totals.get('chunks', 1)} (see the *chunks* table) |",
        f"| registered | **{totals['registered']}** of {totals['images']} in `sparse/0`"
        f" ({totals['models']} model{'s' if totals['models'] != 1 else ''}) |",
        f"| 3D points | {totals['points']} |",
        f"| mean reprojection error | {'-' if error is None else f'{error:.3f} px'} |",
        f"| time | {totals['seconds']:.1f} s |",
        "",
    ]
    if left_out:
        lines += ["## Left out", ""]
        lines += [f"- `{r.name}`: {r.status}" for r in left_out[:MAX_LISTED_LEFT_OUT]]
        if len(left_out) > MAX_LISTED_LEFT_OUT:
            lines.append(f"- ... and {len(left_out) - MAX_LISTED_LEFT_OUT} more: see the *left out* table")
        lines.append("")
    lines += ["## The model, seen from above", ""]
    if preview is None:
        lines += ["No model was reconstructed.", ""]
    else:
        lines += [markdown_image(preview, f"top view of sparse/0: {totals['points']} points, "
                                          f"{totals['registered']} cameras"), "",
                  "Points in their colours; cameras as red dots, each with a stroke along its viewing direction.", ""]
    lines += ["## Outputs", "", "| what | where |", "|---|---|"]
    lines += [f"| {what} | `{where}` |" for what, where in output_uris(report, layout)]
    return "\n".join(lines) + "\n"


def publish_run_artifacts(report: dict, layout: OutputLayout) -> None:
    """Attach the summary and the tables of a finished run (report as written to report.json)
    to the current Prefect run. A failure is a warning, never the run's failure."""
    logger = _logger()
    if not in_prefect_run():
        logger.debug("not in a Prefect run: no artifacts published")
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from storage.manifest import read_manifest

    def publish(what: str, create) -> None:
        try:
            create()
        except Exception as error:  # noqa: BLE001 - the reconstruction is done and written
            logger.warning("artifact %s not published: %s", what, error)

    rows = read_manifest(str(layout.manifest)) if layout.manifest.exists() else []
    try:
        models = _read_models(layout)
    except Exception as error:  # noqa: BLE001
        logger.warning("models not read for the artifacts: %s", error)
        models = []
    totals = report["totals"]
    key = lambda what: artifact_key(report.get("output") or layout.root, what)  # noqa: E731

    preview = None
    if models:
        try:
            preview = preview_png(layout.sparse / "0", models[0])
        except Exception as error:  # noqa: BLE001
            logger.warning("preview picture not drawn: %s", error)
    publish("summary", lambda: create_markdown_artifact(
        summary_markdown(report, layout, rows, preview), key=key("summary"),
        description=f"{totals['images'] + totals['left_out']} photos in, {totals['left_out']} left out, "
                    f"{totals['registered']} registered, {totals['points']} points; outputs in {report.get('output') or layout.root.resolve()}",
        _sync=True))

    images = image_rows(rows, models)
    publish("images", lambda: create_table_artifact(
        images[:MAX_TABLE_ROWS], key=key("images"),
        description=f"ingest: {len(rows)} files, {totals['images']} used, {totals['left_out']} left out"
                    + (f" (first {MAX_TABLE_ROWS} shown)" if len(images) > MAX_TABLE_ROWS else ""), _sync=True))
    left_out = [{"name": r.name, "reason": r.status} for r in rows if r.status != "ok"]
    publish("left out", lambda: create_table_artifact(
        left_out[:MAX_TABLE_ROWS] or [{"name": "", "reason": "no file was left out"}], key=key("left-out"),
        description=f"ingest: {len(left_out)} file{'' if len(left_out) == 1 else 's'} left out, with the reason",
        _sync=True))

    pairs, verified = pair_rows(layout, rows)
    matched = report["stages"].get("matching", {}).get("pairs_matched")
    publish("pairs", lambda: create_table_artifact(
        pairs or [{"image 1": "", "image 2": "", "matches": 0, "inliers": 0, "configuration": "no verified pair"}],
        key=key("pairs"),
        description=f"matching: {verified} verified pairs of {matched} matched"
                    + (f", the {MAX_TABLE_ROWS} with most inliers shown" if verified > MAX_TABLE_ROWS else ""),
        _sync=True))

    chunks = chunk_rows(report, layout)
    publish("chunks", lambda: create_table_artifact(
        chunks or [{"chunk": None, "images": 0, "status": "no chunk"}], key=key("chunks"),
        description=f"chunks: {len(chunks)} of at most {report['settings']['chunk_size']} images, "
                    f"reconstructed side by side and merged", _sync=True))

    model_rows = [{"model": m["model"], "images registered": m["registered"], "points": m["points"],
                   "mean reprojection error px": m["mean_reprojection_error_px"],
                   "mean track length": m["mean_track_length"]}
                  for m in report["stages"].get("export", {}).get("models", [])]
    publish("models", lambda: create_table_artifact(
        model_rows or [{"model": "none", "images registered": 0, "points": 0}], key=key("models"),
        description=f"export: {len(model_rows)} model(s), largest first", _sync=True))

    stage_rows = [{"stage": name, "status": stage.get("status"), "seconds": _fmt(stage.get("seconds"), 2),
                   "details": _stage_details(stage)} for name, stage in report["stages"].items()]
    publish("stages", lambda: create_table_artifact(
        stage_rows, key=key("stages"), description=f"stages: {totals['seconds']:.1f} s in all", _sync=True))
    logger.info("artifacts: summary, images, left out, pairs, chunks, models, stages published")
