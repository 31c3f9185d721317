"""How much of the verified view graph retrieval keeps: for runs whose pairs were matched
exhaustively, the fraction of their verified pairs that retrieval's candidates (each photo's
k most similar photos) would have matched too.

    python benchmarks/retrieval_recall.py OUT [OUT ...] [--neighbours 5 10 20]

OUT: the output folder of a `landmark-sfm run` over fewer photos than `exhaustive_below`
(every pair matched, so its pairs.parquet holds every pair that verifies). A pair that
verifies when matched exhaustively verifies when retrieval proposes it (the same features,
matcher and RANSAC), so the fraction needs no second matching run. The issue's bar: at least
0.8 at the neighbours the pipeline uses (flows/settings.py retrieval_neighbours).
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)


def recall(out: Path, neighbours: list[int]) -> dict:
    from flows.layout import OutputLayout
    from flows.settings import Settings
    from flows.stage_io import usable_rows
    from sfm_core.retrieval import candidate_pairs
    from storage.feature_store import FeatureStore
    from storage.pair_table import read_pairs

    layout = OutputLayout(out)
    report = json.loads(layout.report.read_text())
    rows = usable_rows(layout)
    matched = report["stages"]["matching"]["pairs_matched"]
    if matched != len(rows) * (len(rows) - 1) // 2:
        raise SystemExit(f"{out}: {matched} pairs matched, not all {len(rows) * (len(rows) - 1) // 2}: "
                         "run it on a collection small enough to be matched exhaustively")
    settings = Settings(**{k: v for k, v in report["settings"].items() if k in Settings.__dataclass_fields__})
    store = FeatureStore(str(layout.features), settings.features)
    descriptors = [store.read(r.sha256).descriptors for r in rows]
    verified = {(p.index1, p.index2) for p in read_pairs(str(layout.pairs), [r.image_id for r in rows])}
    row = {"run": out.name, "images": len(rows), "pairs": matched, "verified": len(verified)}
    for k in neighbours:
        candidates = {tuple(pair) for pair in candidate_pairs(descriptors, k, exhaustive_below=0).tolist()}
        kept = len(verified & candidates)
        row[f"k={k}"] = {"candidates": len(candidates), "verified_kept": kept,
                         "fraction": round(kept / len(verified), 3) if verified else None}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path, help="output folders of exhaustively matched runs")
    parser.add_argument("--neighbours", nargs="+", type=int, default=[5, 10, 20])
    args = parser.parse_args()
    rows = [recall(out, args.neighbours) for out in args.outputs]
    for row in rows:
        print(json.dumps(row), flush=True)
    print("\n| run | images | verified pairs | " + " | ".join(f"k={k}: candidates, verified kept"
                                                           for k in args.neighbours) + " |")
    print("|---|---|---|" + "---|" * len(args.neighbours))
    for row in rows:
        cells = [f"{row[f'k={k}']['candidates']}, {row[f'k={k}']['fraction']}" for k in args.neighbours]
        print(f"| {row['run']} | {row['images']} | {row['verified']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
