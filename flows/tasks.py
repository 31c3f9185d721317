"""The collection-wide stages as Prefect tasks: each reads its inputs from the output folder,
calls sfm_core, writes its outputs, and returns a small report for report.json. The stages of
one chunk are in flows/chunk_tasks.py."""
import contextlib
import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace

import numpy as np
import pycolmap
import torch

from flows.artifacts import StageProgress
from flows.checkpointing import stage_task
from flows.feature_workers import IMAGES_PER_PROCESS, extracted_features
from flows.layout import OutputLayout
from flows.settings import Settings
from flows.stage_io import (count_focal_sources, fresh, initial_cameras, refinement_settings, stage_logger,
                            usable_rows)
from flows.verdicts import model_grades
from sfm_core.bundle_adjustment import BUNDLE_ADJUSTERS
from sfm_core.chunking import plan_chunks
from sfm_core.colours import mean_colours, observation_colours
from sfm_core.fold_join import NamedPair, join_sides
from sfm_core.learned_features import empty_features
from sfm_core.learned_matching import make_matcher
from sfm_core.merge import (MAX_CENTER_ERROR_REL, MAX_ROTATION_DEG, images_in_several, merge_models,
                            shared_images_detected_only)
from sfm_core.retrieval import candidate_pairs, matches_every_pair, transitive_candidates
from sfm_core.superimposition import split_model, superimposition
from sfm_core.verification import verification_options, verify_pair
from storage.chunk_table import read_chunks, write_chunks
from storage.colmap_model import model_dirs, read_model, write_model
from storage.feature_store import FeatureStore
from storage.images import ImageReadError, load_image
from storage.manifest import build_manifest, write_manifest
from storage.pair_table import read_pairs, write_pairs
from storage.sources import list_image_files


class NoUsableImages(Exception):
    """Nothing in the source can be reconstructed."""


def _colour_points(models: list[pycolmap.Reconstruction], uris: dict[str, str], max_image_size: int,
                   storage_options: dict | None) -> list[str]:
    """Set every point's colour to the mean of its observations' bilinear samples
    (sfm_core.colours), each registered photo decoded once by storage.images at most
    `max_image_size` px (the observations, full-resolution COLMAP pixel coordinates, are
    scaled to it). Decoding runs on a thread per core (Pillow releases the GIL). Returns one
    "name: reason" per photo that could not be decoded: its observations give no colour."""
    observed = {}  # photo name -> [(model index, point ids (N,), xy (N, 2))]
    for index, rec in enumerate(models):
        for image_id in rec.reg_image_ids():
            image = rec.image(image_id)
            points = image.get_observation_points2D()
            observed.setdefault(image.name, []).append(
                (index, np.array([p.point3D_id for p in points], np.int64),
                 np.array([p.xy for p in points], np.float64).reshape(-1, 2)))

    def decode(name: str):
        try:
            return load_image(uris[name], max_image_size, storage_options)
        except ImageReadError as error:
            return f"{name}: {error.reason}"

    samples = [([], []) for _ in models]  # per model: point ids, colours of all its observations
    failed = []
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for name, image in zip(observed, pool.map(decode, observed)):
            if isinstance(image, str):
                failed.append(image)
                continue
            for index, point_ids, xy in observed[name]:
                samples[index][0].append(point_ids)
                samples[index][1].append(observation_colours(image.pixels, xy, image.scale_xy))
    for rec, (point_ids, colours) in zip(models, samples):
        if point_ids:
            for point_id, colour in zip(*mean_colours(np.concatenate(point_ids), np.concatenate(colours))):
                rec.point3D(int(point_id)).color = colour
    return failed


@stage_task("ingest")
def ingest(layout: OutputLayout, settings: Settings, source: str, storage_options: dict | None = None) -> dict:
    """upstream key: the fingerprint of the source listing (names, sizes, times)."""
    logger = stage_logger()
    files = list_image_files(source, storage_options)
    rows = build_manifest(source, files, storage_options)
    layout.root.mkdir(parents=True, exist_ok=True)
    write_manifest(rows, str(layout.manifest))
    left_out = [r for r in rows if r.status != "ok"]
    for row in left_out:
        logger.warning("left out %s: %s", row.name, row.status)
    usable = len(rows) - len(left_out)
    for row in rows:
        if row.status == "ok" and row.ingest_focal_source.startswith("exif_rejected"):
            logger.warning("EXIF focal length of %s not used (self-calibrated instead): %s", row.name,
                           row.ingest_focal_source.split(": ", 1)[1])
    sources = count_focal_sources(r.ingest_focal_source for r in rows if r.status == "ok")
    logger.done("ingest: %d files, %d usable, %d left out; focal lengths: %s", len(rows), usable, len(left_out),
                ", ".join(f"{n} {kind}" for kind, n in sources.items() if n) or "none")
    if usable < 2:
        raise NoUsableImages(f"{usable} usable image(s) in {source}: at least 2 are needed")
    return {"files": len(rows),
            "images": usable, "left_out": len(left_out)}


@stage_task("features", ("max_image_size", "max_features", "features"))
def extract_features(layout: OutputLayout, settings: Settings, storage_options: dict | None = None) -> dict:
    """The local features (settings.features) of every photo not in the store yet, written to
    the store in the manifest's order as they come: SIFT on one process per core (pycolmap's
    SIFT holds the GIL), the learned kinds in torch on settings.device."""
    logger = stage_logger()
    rows = usable_rows(layout)
    store = FeatureStore(str(layout.features), settings.features)
    stored = settings.feature_settings()
    todo = [row for row in rows if not store.has(row.sha256, stored)]
    failed = 0
    workers = min(os.cpu_count() or 1, max(1, len(todo) // IMAGES_PER_PROCESS))
    jobs = [(row.uri, settings.max_image_size, storage_options) for row in todo]
    with extracted_features(settings.features, jobs, workers, settings.max_features, settings.device) as extracted:
        # track() outermost: zip(todo, track(...)) stops on `todo` before the last advance.
        for row, result in StageProgress("features", len(todo), unit="images").track(zip(todo, extracted)):
            if isinstance(result, str):
                # The probe passed but the full decode did not: go on without this photo.
                logger.warning("no features for %s: %s", row.name, result)
                result, failed = empty_features(settings.features), failed + 1
            store.write(row.sha256, result, stored)
    logger.done("features: %d images computed, %d reused, %d unreadable", len(todo), len(rows) - len(todo), failed)
    return {"computed": len(todo), "reused": len(rows) - len(todo), "unreadable": failed}


@stage_task("matching", ("features", "match_ratio", "min_inliers", "camera_model", "shared_cameras", "intrinsics",
                         "retrieval_neighbours", "exhaustive_below", "transitive_rounds"))
def match_pairs(layout: OutputLayout, settings: Settings) -> dict:
    """Candidate pairs from retrieval (all pairs of a small collection), matched and verified;
    after retrieval's, settings.transitive_rounds rounds of the pairs that the verified view
    graph proposes (two photos that verify with a common third), matched and verified the same way.

    One thread per core takes a pair at a time: matching in torch on settings.device (SIFT:
    mutual nearest neighbours and the ratio test; ALIKED: LightGlue; XFeat: LighterGlue), then
    pycolmap's RANSAC verification (both release the GIL). On the CPU each of those threads
    runs torch on one thread: a 2-thread matching beside 2 verifying threads oversubscribed
    the cores (kitchen's matching and verification: 86 s, against 64 s this way).
    """
    logger = stage_logger()
    rows = usable_rows(layout)
    store = FeatureStore(str(layout.features), settings.features)
    features = [store.read(r.sha256) for r in rows]
    initial = initial_cameras(rows, settings)
    cameras, camera_of_frame = initial.cameras, initial.camera_of_frame
    candidates = candidate_pairs([f.descriptors for f in features], settings.retrieval_neighbours,
                                 settings.exhaustive_below, device=settings.device)

    matcher = make_matcher(settings.features, settings.match_ratio, settings.device)

    # Pairs come sorted by their first image: a few images' prepared inputs at a time suffice.
    @functools.lru_cache(maxsize=64)
    def prepared(frame: int):
        return matcher.prepare(features[frame])

    options = verification_options(settings.min_inliers)

    def match_and_verify(pair: list[int]):
        i, j = pair
        matches = matcher(prepared(i), prepared(j))
        return verify_pair(i, j, features[i].keypoints, features[j].keypoints, matches,
                           cameras[camera_of_frame[i]], cameras[camera_of_frame[j]], options)

    with single_threaded_torch(settings.device == "cpu") as initializer, \
            ThreadPoolExecutor(os.cpu_count() or 1, initializer=initializer) as pool:

        def verify_all(pairs: np.ndarray, progress: str) -> list:
            results = pool.map(match_and_verify, pairs.tolist())
            tracked = StageProgress(progress, len(pairs), unit="pairs").track(results)
            return [pair for pair in tracked if pair is not None]

        verified, matched, rounds = verify_all(candidates, "matching"), candidates, []
        exhaustive = matches_every_pair(len(rows), settings.exhaustive_below)
        for round_number in range(1, 1 + (0 if exhaustive else settings.transitive_rounds)):
            linked = np.array([(p.index1, p.index2) for p in verified], np.int64).reshape(-1, 2)
            more = transitive_candidates(linked, matched, len(rows), settings.retrieval_neighbours)
            if not len(more):
                break
            found = verify_all(more, f"matching through verified neighbours, round {round_number}")
            verified, matched = verified + found, np.concatenate([matched, more])
            rounds.append({"matched": len(more), "verified": len(found)})
    verified.sort(key=lambda p: (p.index1, p.index2))
    write_pairs(str(layout.pairs), verified, [r.image_id for r in rows])
    how = "all pairs" if exhaustive else "retrieval's, then through verified neighbours: " + (
        ", ".join(f"{r['verified']} of {r['matched']}" for r in rounds) or "none")
    logger.done("matching: %d of %d candidate pairs verified (%d images; %s)", len(verified), len(matched),
                len(rows), how)
    return {"pairs_matched": len(matched), "pairs_verified": len(verified), "pairs_from_verified_neighbours": rounds}


@contextlib.contextmanager
def single_threaded_torch(enabled: bool):
    """Yields the initializer of threads that should run torch on one thread; restores the
    process's torch thread count after.

    torch's thread count is set per thread (OpenMP's) as well as process-wide (MKL's): the
    worker threads set theirs, and this stage runs in a Prefect worker thread, not the main one.
    """
    threads = torch.get_num_threads()
    try:
        yield (lambda: torch.set_num_threads(1)) if enabled else None
    finally:
        torch.set_num_threads(threads)


@stage_task("chunking", ("chunk_size", "chunk_overlap"))
def plan_chunk_groups(layout: OutputLayout, settings: Settings) -> dict:
    """The verified view graph cut into overlapping chunks; images with no verified pair left out."""
    logger = stage_logger()
    rows = usable_rows(layout)
    pairs = read_pairs(str(layout.pairs), [r.image_id for r in rows])
    edges = np.array([(p.index1, p.index2) for p in pairs], np.int64).reshape(-1, 2)
    weights = np.array([len(p.inliers) for p in pairs], np.float64)
    plan = plan_chunks(len(rows), edges, weights, settings.chunk_size, settings.chunk_overlap)
    write_chunks(str(layout.chunks), plan.chunks, rows)
    unconnected = [rows[f].name for f in plan.unconnected]
    for name in unconnected:
        logger.warning("left out %s: no verified pair with any other image", name)
    sizes = [len(c.frames) for c in plan.chunks]
    logger.done("chunking: %d chunk(s) of %s images (at most %d), %d image(s) with no verified pair",
                len(sizes), sizes, settings.chunk_size, len(unconnected))
    return {"chunks": len(sizes), "chunk_sizes": sizes, "unconnected": len(unconnected),
            "unconnected_images": unconnected}


def chunk_plan(layout: OutputLayout):
    """The chunks written by the chunking stage (sfm_core.chunking.Chunk, global frames)."""
    rows = usable_rows(layout)
    return read_chunks(str(layout.chunks), rows)


@stage_task("merge", ("bundle_adjuster",))
def merge_chunks(layout: OutputLayout, settings: Settings, chunks: list[int]) -> dict:
    """The models of `chunks` (the indices of the chunks that came through), each folded one
    first joined the right way round or split (_unfold), aligned by Sim(3) on their shared
    images and joined; a global bundle adjustment when chunks were joined."""
    logger = stage_logger()
    chunk_dirs = [layout.chunk_models / f"chunk-{index}" for index in chunks]
    read = [(f"{chunk_dir.name}/{folder.name}", read_model(folder)) for chunk_dir in chunk_dirs
            for folder in model_dirs(chunk_dir)]
    kept = [(label, piece) for label, piece in read if piece.num_reg_images() >= 2]
    kept, folds, split_sides, doppelgangers = _unfold(kept, functools.partial(named_pairs, layout))
    labels, pieces = [label for label, _ in kept], [piece for _, piece in kept]  # "chunk-<k>/<m>" names a piece
    merged = merge_models(shared_images_detected_only(pieces, _detected_keypoints(layout, settings, pieces)))
    out = fresh(layout.stage_models("merged"))
    out.mkdir(parents=True)
    (out / FOLDS_FILE).write_text(json.dumps({"split_sides": split_sides,
                                              "doppelgangers": sorted(map(sorted, doppelgangers))}))
    adjuster, refinement = BUNDLE_ADJUSTERS[settings.bundle_adjuster](), refinement_settings(layout, settings)
    for index, model in enumerate(merged):
        rec = model.reconstruction
        if model.joins:  # a model of one chunk is refined already
            adjuster.adjust(rec, replace(refinement.bundle_adjustment, max_iterations=refinement.merge_max_iterations))
            pycolmap.ObservationManager(rec).filter_all_points3D(
                refinement.filter_thresholds_px[-1], refinement.min_triangulation_angle_deg)
        write_model(rec, out / str(index))
    joins = [join for model in merged for join in model.joins]
    for join in joins:
        logger.info("merge: chunk model %d joined on %d shared images (%s), pose disagreement %.2f deg / %.4f of "
                    "the extent; %d images added, %d points added, %d joined", join.model, join.shared_images,
                    join.alignment, join.rotation_error_deg, join.center_error_rel, join.images_added,
                    join.points_added, join.points_joined)
    refusals = [refusal for model in merged for refusal in model.refusals]
    for refusal in refusals:
        logger.warning("merge: chunk model %s not joined to the model of %s: their %d shared images disagree by "
                       "%.2f deg / %.4f of the extent after alignment (%s; a join needs %.1f deg / %.2f), so at "
                       "least one of them is wrong; it stays a model of its own", labels[refusal.model],
                       labels[refusal.merged_seed], refusal.shared_images, refusal.rotation_error_deg,
                       refusal.center_error_rel, refusal.alignment, MAX_ROTATION_DEG, MAX_CENTER_ERROR_REL)
    sizes = [m.reconstruction.num_reg_images() for m in merged]
    logger.done("merge: %d chunk model(s) into %d model(s) of %s images; %d refused for disagreeing", len(pieces),
                len(merged), sizes, len(refusals))
    return {"chunk_models": len(pieces), "models": len(merged), "registered": sizes, "folds": folds,
            "joins": [asdict(join) for join in joins],
            "refusals": [{**asdict(refusal), "chunk_model": labels[refusal.model],
                          "merged_into_model_of": labels[refusal.merged_seed]} for refusal in refusals]}


@stage_task("export")
def export(layout: OutputLayout, settings: Settings, storage_options: dict | None = None,
           exif_rejected: dict[str, str] | None = None, loop_breaking: list[list[str]] | None = None) -> dict:
    """The merged models, largest first, to sparse/<i> with their points coloured from the
    photos as we decode them (any format ingest reads, EXIF-oriented; COLMAP's own reader
    cannot open WebP and ignores orientation), and the largest to points.ply, each graded.
    exif_rejected: {name: why} of the EXIF focal lengths the cameras stage found contradicted
    (flows.stage_io.cameras_stage_findings), which the verdict does not hold against a model;
    nor does it hold the pairs the pipeline already set aside as wrong: loop_breaking, the pairs
    ([name1, name2]) the cameras stage dropped for breaking rotation loops
    (flows.stage_io.loop_breaking_pairs), and the doppelganger pairs of the folds the merge
    joined (FOLDS_FILE). A model of one split side's photos is suspect, with the reason."""
    logger = stage_logger()
    models = [read_model(folder) for folder in model_dirs(layout.stage_models("merged"))]
    folds = read_folds(layout)
    models = sorted((m for m in models if m.num_reg_images() >= 2), key=lambda m: m.num_reg_images(), reverse=True)
    uncoloured = _colour_points(models, {r.name: r.uri for r in usable_rows(layout)}, settings.max_image_size,
                                storage_options)
    for reason in uncoloured:
        logger.warning("export: no colours from %s", reason)
    fresh(layout.sparse)
    for index, rec in enumerate(models):
        write_model(rec, layout.sparse / str(index))
    if models:
        models[0].export_PLY(str(layout.ply))
    summary = [{"model": f"sparse/{i}", "registered": m.num_reg_images(), "points": m.num_points3D(),
                "mean_reprojection_error_px": round(float(m.compute_mean_reprojection_error()), 4),
                "mean_track_length": round(float(m.compute_mean_track_length()), 3)}
               for i, m in enumerate(models)]
    grades = model_grades(layout, models, settings.features, exif_rejected, pairs_set_aside(folds, loop_breaking))
    summary = [{**entry, **grade} for entry, grade in zip(summary, grades)]
    for entry, rec in zip(summary, models):
        if any({image.name for image in rec.images.values()} <= set(side) for side in folds["split_sides"]):
            entry["verdict"] = {"status": "suspect", "reasons": entry["verdict"]["reasons"] + [
                "one side of a model that had posed two sides onto one (split before the merge: the other side is "
                "another model; see stages.merge.folds)"]}
    logger.done("export: %d model(s) %s, %d photo(s) gave no colours", len(models),
                [s["registered"] for s in summary], len(uncoloured))
    return {"models": summary, "uncoloured_images": len(uncoloured)}


FOLDS_FILE = "folds.json"  # in the merge stage's folder: {"split_sides": [[names], ...], "doppelgangers": [[a, b], ...]}


def read_folds(layout: OutputLayout) -> dict:
    """The merge stage's FOLDS_FILE (empty lists where it wrote none)."""
    path = layout.stage_models("merged") / FOLDS_FILE
    return json.loads(path.read_text()) if path.exists() else {"split_sides": [], "doppelgangers": []}


def pairs_set_aside(folds: dict, loop_breaking: list[list[str]] | None) -> frozenset[frozenset[str]]:
    """The pairs (two names each) that the verdict does not hold against a model: the folds'
    doppelgangers and the pairs that broke rotation loops (see export)."""
    return frozenset(map(frozenset, folds["doppelgangers"] + (loop_breaking or [])))


def _detected_keypoints(layout: OutputLayout, settings: Settings, models: list[pycolmap.Reconstruction]) -> dict[int, int]:
    """{image id: its detected keypoint count} of the images registered in more than one model."""
    shared = images_in_several(models)
    store = FeatureStore(str(layout.features), settings.features)
    return {row.image_id: len(store.read_keypoints(row.sha256)) for row in usable_rows(layout) if row.image_id in shared}


def _unfold(models: list[tuple[str, pycolmap.Reconstruction]], load_pairs) -> tuple[list, list[dict], list, set]:
    """The (label, model) pairs with each folded model (two sides posed onto one:
    sfm_core.superimposition) replaced by one model of its sides joined the right way round
    where the pairs across its seam join them (sfm_core.fold_join), else by its two sides
    ("<label> side 1", "... side 2"). Returns them, what was found ({"chunk_model", "photos",
    "share", "sides": [n1, n2], "undecided": [names of the photos on neither side], "outcome":
    "joined" | "split", and for a join its "seam_pairs", "posed_across", "rotation_error_deg",
    "center_error_rel", "doppelganger_pairs"}), the split sides' photo names, and the
    doppelganger pairs of the joined folds ({frozenset of two names}: the pairs that folded them).
    load_pairs() -> [fold_join.NamedPair]: the verified pairs, read only when a fold is found."""
    logger = stage_logger()
    kept, folds, split_sides, doppelgangers = [], [], [], set()
    pairs = None
    for label, rec in models:
        found = superimposition(rec)
        if not found.folded:
            kept.append((label, rec))
            continue
        pairs = load_pairs() if pairs is None else pairs
        joined = join_sides(rec, found.sides, pairs)
        fold = {"chunk_model": label, "photos": rec.num_reg_images(), "share": round(found.share, 3),
                "sides": [len(side) for side in found.sides], "undecided": found.undecided,
                "outcome": "split" if joined is None else "joined"}
        left_out = (f"; {len(found.undecided)} photo(s) left out, their side not told by what they see"
                    + "".join(f"\n  - {name}" for name in found.undecided[:20]))
        shape = (f"chunk model {label} of {rec.num_reg_images()} photos lays two sides over each other "
                 f"({100 * found.share:.0f} % of each side's own points lie among the other's, none seen from both: "
                 f"a symmetric building folded onto itself)")
        if joined is not None:
            fold.update(seam_pairs=joined.seam_pairs, posed_across=joined.posed_across,
                        rotation_error_deg=round(joined.rotation_error_deg, 3),
                        center_error_rel=round(joined.center_error_rel, 4),
                        doppelganger_pairs=len(joined.doppelgangers))
            logger.warning("merge: %s; its sides of %d and %d photos joined the right way round through %d pair(s) "
                           "across them that the fold contradicted (%d photo(s) posed across, disagreeing by %.2f deg "
                           "/ %.4f of the extent after the alignment); the %d pair(s) across them that fit the fold "
                           "(doppelgangers) are not held against the model by the verdict%s", shape,
                           *fold["sides"], joined.seam_pairs, joined.posed_across, joined.rotation_error_deg,
                           joined.center_error_rel, len(joined.doppelgangers), left_out)
            kept.append((label, joined.model))
            doppelgangers |= joined.doppelgangers
        else:
            logger.warning("merge: %s; no pairs across its sides join them the right way round: two models of %d "
                           "and %d photos%s", shape, *fold["sides"], left_out)
            kept += [(f"{label} side {k + 1}", side) for k, side in enumerate(split_model(rec, found.sides))]
            split_sides += [list(side) for side in found.sides]
        folds.append(fold)
    return kept, folds, split_sides, doppelgangers


def named_pairs(layout: OutputLayout) -> list[NamedPair]:
    """The verified pairs' inliers by photo name (sfm_core.fold_join)."""
    rows = usable_rows(layout)
    return [NamedPair(rows[p.index1].name, rows[p.index2].name, p.inliers)
            for p in read_pairs(str(layout.pairs), [r.image_id for r in rows])]
