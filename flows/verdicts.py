"""The export's self-grading of the models (sfm_core.verdict), as report.json carries it."""
import pycolmap

from flows.layout import OutputLayout
from flows.stage_io import stage_logger, usable_rows
from sfm_core.pair_contradictions import PairMatches
from sfm_core.verdict import VerdictRules, grade_model
from storage.feature_store import FeatureStore
from storage.pair_table import read_pairs


def model_grades(layout: OutputLayout, models: list[pycolmap.Reconstruction], features: str,
                 exif_rejected: dict[str, str] | None = None,
                 set_aside: frozenset[frozenset[str]] = frozenset()) -> list[dict]:
    """Per model, for its entry in report.json: "verdict" {"status": "ok" | "suspect",
    "reasons": [...]}, "registered" (its images whose pose is determined: the others are not
    counted as registered), "undetermined" {name: why} and the figures the verdict read.
    exif_rejected: {name: why} of the EXIF focal lengths the cameras stage found contradicted.
    set_aside: pairs (frozensets of two names) the pipeline found wrong before the model was
    made, which a right model contradicts, so the rule on contradicted pairs does not read
    them: those the cameras stage dropped for breaking rotation loops (the learned matchers'
    false matches between cameras facing opposite ways, mostly), and those that folded a
    chunk model before its sides were joined (sfm_core.fold_join)."""
    # Every usable photo counts, those with no verified pair too: a model that leaves out
    # most of the collection does not reconstruct it, whatever the reason.
    rows = usable_rows(layout)
    photos = len(rows)
    # The focal lengths the cameras started from, where EXIF gave them: ingest accepted it and
    # the view graph did not contradict it (a rejected one was not used: leaving it is no sign).
    exif_focals = {r.name: r.focal_length_px for r in rows
                   if r.ingest_focal_source == "exif" and r.focal_length_px and r.name not in (exif_rejected or {})}
    pairs = [p for p in _strong_pairs(layout, rows, features) if frozenset((p.name1, p.name2)) not in set_aside]
    logger = stage_logger()
    grades = []
    for index, rec in enumerate(models):
        verdict = grade_model(rec, photos, exif_focals=exif_focals, pairs=pairs)
        for grade in verdict.images:
            if not grade.determined:
                logger.warning("sparse/%d: pose of %s not determined: %s", index, grade.name, grade.why)
        logger.info("verdict of sparse/%d: %s%s", index, verdict.status,
                    "".join(f"\n  - {reason}" for reason in verdict.reasons))
        grades.append({"verdict": {"status": verdict.status, "reasons": verdict.reasons},
                       "registered": verdict.registered,
                       "undetermined": {g.name: g.why for g in verdict.images if not g.determined},
                       "median_triangulation_angle_deg": verdict.median_triangulation_angle_deg})
    return grades


def _strong_pairs(layout: OutputLayout, rows, features: str) -> list[PairMatches]:
    """The inlier matches of the verified pairs that the rule on contradicted pairs reads."""
    store = FeatureStore(str(layout.features), features)
    keypoints = {}

    def of(frame: int):
        if frame not in keypoints:
            keypoints[frame] = store.read_keypoints(rows[frame].sha256)
        return keypoints[frame]

    strong = [p for p in read_pairs(str(layout.pairs), [r.image_id for r in rows])
              if len(p.inliers) >= VerdictRules.min_pair_inliers]
    return [PairMatches(rows[p.index1].name, rows[p.index2].name, of(p.index1)[p.inliers[:, 0]],
                        of(p.index2)[p.inliers[:, 1]]) for p in strong]
