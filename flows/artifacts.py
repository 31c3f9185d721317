"""What a person watching a run in the Prefect UI sees without reading its logs.

publish_run_artifacts(report, layout), called once at the end of the flow, attaches to the
flow run:
- a markdown summary: photos found, used, left out (with the reasons), registered, points,
  reprojection error, seconds, a preview picture of the model (a top view of its points
  and camera centres, an inline base64 PNG, so it shows with no network), and where the
  outputs are;
- tables: the images (status, size, which model registered them), their cameras, the files left out with
  their reasons, the verified pairs, the chunks, the models, the stages with their seconds and
  each stage's counts (one count a row: the UI cuts long cells at the column's edge).

An empty table is published as a markdown artifact under the same key saying why it is empty
(so a re-run's page never keeps the previous run's rows), and a column with no value in any
row is left out, its table's description saying why.

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
from dataclasses import dataclass
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

        An item counts when the loop asks for the next one, so track() must be the iterable
        the loop exhausts: `track(zip(rows, results))`, not `zip(rows, track(results))`
        (zip stops on `rows` without asking for more, and the last item never counts).
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


def stage_rows(report: dict) -> list[dict]:
    """One row per stage: its status and seconds."""
    return [{"stage": name, "status": stage.get("status"), "seconds": _fmt(stage.get("seconds"), 2)}
            for name, stage in report["stages"].items()]


def stage_count_rows(report: dict) -> list[dict]:
    """One row per count of each stage ("matching", "pairs verified", 12): one per row, so
    no cell outgrows its column. Lists and tables of a stage (its chunks, its models) have
    tables of their own."""
    return [{"stage": name, "count": key.replace("_", " "), "value": value}
            for name, stage in report["stages"].items() for key, value in stage.items()
            if key not in ("status", "seconds", "key") and not isinstance(value, (dict, list))]


def without_empty_columns(rows: list[dict], why: dict[str, str] | None = None) -> tuple[list[dict], list[str]]:
    """The rows without the columns that have no value in any row, and a note on each column
    left out: "focal px (EXIF): no EXIF focal length in any photo" (`why` by column, or
    "no value in any row")."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    empty = [c for c in columns if all(row.get(c) in (None, "") for row in rows)]
    if not rows or not empty:
        return rows, []
    return ([{c: v for c, v in row.items() if c not in empty} for row in rows],
            [f"{c}: {(why or {}).get(c, 'no value in any row')}" for c in empty])


def _fmt(value, digits: int = 3):
    return None if value is None else round(float(value), digits)


def image_rows(rows) -> list[dict]:
    """One table row per input file (manifest rows, as flows.outcomes resolved them at the end
    of the run): what ingest made of it, where its focal length comes from and which model
    registered it (an undetermined pose or a photo left out for contradictions said as such).
    Cells stay short: the reasons are in the manifest, report.json and the run's log."""
    # A left-out file's status is the kind of reason only: the left-out table has it in full.
    # The camera has a table of its own (camera_rows) and the file size stays in the manifest:
    # with them, a phone's photos made the table wider than the UI's box.
    return [{"name": r.name, "status": "ok" if r.status == "ok" else f"left out: {reason_kind(r.status)}",
             "registered in": _registered_cell(r),
             "size": f"{r.width}x{r.height}" if r.width and r.height else None,
             "focal px (EXIF)": _fmt(r.focal_length_px, 1),
             "focal source": r.focal_source and r.focal_source.split(":")[0]}
            for r in rows]


def _registered_cell(row) -> str:
    """"sparse/<m>" from a row's result; "undetermined" where its pose is not (the model is in
    the manifest: a longer cell cut the table's last column in the UI's box); "no" for a usable
    photo in no model ("no, left out" where the cameras stage left it out); "" for a file that
    is not used."""
    if row.status != "ok":
        return ""
    result = row.result or ""
    if result.startswith("sparse/"):
        return "undetermined" if ", pose undetermined" in result else result
    return "no, left out" if result.startswith("left out") else "no"


def camera_rows(rows) -> list[dict]:
    """One table row per camera (EXIF make and model) and photo size among the used photos,
    with how many photos it took; most photos first."""
    counts = Counter((" ".join(x for x in (r.camera_make, r.camera_model) if x), f"{r.width}x{r.height}")
                     for r in rows if r.status == "ok" and (r.camera_make or r.camera_model))
    return [{"camera": camera, "size": size, "photos": n} for (camera, size), n in counts.most_common()]


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
    from flows.stage_io import cameras_stage_findings  # imports torch: only when the summary is made

    # Photos the cameras stage left out because only contradicted pairs linked them, and chunk
    # models the merge refused (their shared photos disagreed).
    contradicted = cameras_stage_findings(stages, "left_out_for_contradictions")
    refusals = stages.get("merge", {}).get("refusals", [])
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
        f" ({totals['models']} model{'s' if totals['models'] != 1 else ''})"
        + (f"; {totals['undetermined']} more with an undetermined pose" if totals.get("undetermined") else "") + " |",
        f"| verdict | **{report.get('verdict', {}).get('status', '-')}** (see *Verdict*) |",
        f"| contradictions | {len(contradicted)} photo(s) left out, {stages.get('cameras', {}).get('pairs_breaking_loops', 0)}"
        f" pair(s) dropped for breaking rotation loops, {len(refusals)} chunk model(s) kept apart at the merge,"
        f" {_folds_line(stages.get('merge', {}).get('folds', []))} |",
        "| focal lengths | " + ", ".join(f"{n} {kind}" for kind, n in totals.get("focal_sources", {}).items() if n)
        + " |",
        f"| 3D points | {totals['points']} |",
        f"| mean reprojection error | {'-' if error is None else f'{error:.3f} px'} |",
        f"| time | {totals['seconds']:.1f} s |",
        "",
    ]
    verdict = report.get("verdict", {})
    lines += ["## Verdict", "", f"`sparse/0` grades itself **{verdict.get('status', '-')}**"
              + (":" if verdict.get("reasons") else
                 ": its poses determined, its points seen with parallax, its focal lengths plausible.")]
    lines += [f"- {reason}" for reason in verdict.get("reasons", [])] + [""]
    lines += ["## Left out", ""]
    if left_out:
        lines += [f"- `{r.name}`: {r.status}" for r in left_out[:MAX_LISTED_LEFT_OUT]]
        if len(left_out) > MAX_LISTED_LEFT_OUT:
            lines.append(f"- ... and {len(left_out) - MAX_LISTED_LEFT_OUT} more: see the *left out* table")
    else:
        lines.append(f"No file was left out: all {len(rows)} files are used.")
    lines += [f"- `{name}` (for contradictions): {why}" for name, why in sorted(contradicted.items())[:MAX_LISTED_LEFT_OUT]]
    lines += [f"- chunk model `{r['chunk_model']}` kept apart from the model of `{r['merged_into_model_of']}`: "
              f"{r['shared_images']} shared photos disagree by {r['rotation_error_deg']:.2f} deg / "
              f"{r['center_error_rel']:.4f} of the extent" for r in refusals]
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


@dataclass(frozen=True)
class RunArtifact:
    """One artifact of a run: a table (`table`, rows of equal keys) or markdown (`markdown`),
    published under the key artifact_key(output, what)."""
    what: str  # "summary", "images", "left-out", ...: the key's last part
    description: str
    table: list[dict] | None = None
    markdown: str | None = None


def _folds_line(folds: list[dict]) -> str:
    """The summary's words on the folded chunk models the merge found (stages.merge.folds)."""
    joined = sum(fold["outcome"] == "joined" for fold in folds)
    return f"{len(folds)} folded model(s): {joined} joined the right way round, {len(folds) - joined} split in two"


def _table_or_why_empty(what: str, rows: list[dict], description: str, empty: str,
                        why_column_empty: dict[str, str] | None = None) -> RunArtifact:
    """A table of `rows`, its empty columns left out and named in its description; without
    rows, a markdown artifact saying `empty` (the UI would draw a table of one blank row)."""
    if not rows:
        return RunArtifact(what, f"{description}: {empty}", markdown=f"# {what.replace('-', ' ')}\n\n{empty}\n")
    rows, notes = without_empty_columns(rows, why_column_empty)
    if notes:
        description += ". Columns left out: " + "; ".join(notes)
    return RunArtifact(what, description, table=rows[:MAX_TABLE_ROWS])


def run_artifacts(report: dict, layout: OutputLayout, rows, models, preview: bytes | None) -> list[RunArtifact]:
    """The summary and the tables of a finished run (report as written to report.json; rows:
    its manifest rows; models: its exported models, largest first; preview: the PNG of
    sparse/0 or None)."""
    totals, stages = report["totals"], report["stages"]
    output = report.get("output") or layout.root.resolve()
    artifacts = [RunArtifact(
        "summary", f"{totals['images'] + totals['left_out']} photos in, {totals['left_out']} left out, "
                   f"{totals['registered']} registered, {totals['points']} points; outputs in {output}",
        markdown=summary_markdown(report, layout, rows, preview))]

    images = image_rows(rows)
    artifacts.append(_table_or_why_empty(
        "images", images, f"ingest: {len(rows)} files, {totals['images']} used, {totals['left_out']} left out"
                          + (f" (first {MAX_TABLE_ROWS} shown)" if len(images) > MAX_TABLE_ROWS else ""),
        "no file was found", {"focal px (EXIF)": "no EXIF focal length in any photo",
                              "focal source": "no focal length known for any photo"}))
    artifacts.append(_table_or_why_empty(
        "cameras", camera_rows(rows), "ingest: the cameras of the photos used (EXIF make and model), by photo size",
        "No EXIF camera make or model in any photo used."))
    left_out = [{"name": r.name, "reason": r.status} for r in rows if r.status != "ok"]
    artifacts.append(_table_or_why_empty(
        "left-out", left_out, f"ingest: {len(left_out)} file{'' if len(left_out) == 1 else 's'} left out, with the reason",
        f"No file was left out: all {len(rows)} files are used."))

    pairs, verified = pair_rows(layout, rows)
    matched = stages.get("matching", {}).get("pairs_matched")
    artifacts.append(_table_or_why_empty(
        "pairs", pairs, f"matching: {verified} verified pairs of {matched} matched"
                        + (f", the {MAX_TABLE_ROWS} with most inliers shown" if verified > MAX_TABLE_ROWS else ""),
        f"No pair of photos was verified: none of the {matched} matched pairs kept enough inliers "
        f"(at least {report['settings'].get('min_inliers', '?')})."))

    chunks = chunk_rows(report, layout)
    artifacts.append(_table_or_why_empty(
        "chunks", chunks, f"chunks: {len(chunks)} of at most {report['settings']['chunk_size']} images, "
                          f"reconstructed side by side and merged",
        "No chunk was planned: no photo has a verified pair with another.",
        {"registered": "no chunk was reconstructed", "points": "no chunk was reconstructed",
         "mean reprojection error px": "no chunk was reconstructed"}))

    model_rows = [{"model": m["model"], "images registered": m["registered"], "points": m["points"],
                   "mean reprojection error px": m["mean_reprojection_error_px"],
                   "mean track length": m["mean_track_length"]}
                  for m in stages.get("export", {}).get("models", [])]
    artifacts.append(_table_or_why_empty(
        "models", model_rows, f"export: {len(model_rows)} model(s), largest first",
        "No model was reconstructed: see the chunks table and the run's logs."))

    artifacts.append(_table_or_why_empty("stages", stage_rows(report), f"stages: {totals['seconds']:.1f} s in all",
                                         "No stage ran."))
    artifacts.append(_table_or_why_empty("stage-counts", stage_count_rows(report),
                                         "stages: what each stage counted, one count a row", "No stage counted anything."))
    return artifacts


def publish_run_artifacts(report: dict, layout: OutputLayout) -> None:
    """Attach the summary and the tables of a finished run (report as written to report.json)
    to the current Prefect run. A failure is a warning, never the run's failure."""
    logger = _logger()
    if not in_prefect_run():
        logger.debug("not in a Prefect run: no artifacts published")
        return
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from storage.manifest import read_manifest

    rows = read_manifest(str(layout.manifest)) if layout.manifest.exists() else []
    try:
        models = _read_models(layout)
    except Exception as error:  # noqa: BLE001 - the reconstruction is done and written
        logger.warning("models not read for the artifacts: %s", error)
        models = []
    preview = None
    if models:
        try:
            preview = preview_png(layout.sparse / "0", models[0])
        except Exception as error:  # noqa: BLE001
            logger.warning("preview picture not drawn: %s", error)
    published = []
    for artifact in run_artifacts(report, layout, rows, models, preview):
        key = artifact_key(report.get("output") or layout.root, artifact.what)
        try:
            if artifact.table is not None:
                create_table_artifact(artifact.table, key=key, description=artifact.description, _sync=True)
            else:
                create_markdown_artifact(artifact.markdown, key=key, description=artifact.description, _sync=True)
            published.append(artifact.what)
        except Exception as error:  # noqa: BLE001
            logger.warning("artifact %s not published: %s", artifact.what, error)
    logger.info("artifacts published: %s", ", ".join(published))
