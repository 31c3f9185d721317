"""How much of the verified view graph retrieval keeps: for runs whose pairs were matched
exhaustively, the fraction of their verified pairs that retrieval's candidates (each photo's
k most similar photos) would have matched too, alone and then with the pipeline's rounds of
candidates from the verified view graph (`transitive_rounds`, at most k per photo a round).

    python benchmarks/retrieval_recall.py OUT [OUT ...] [--neighbours 5 10 20] [--rounds 2]

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)


def recall(out: Path, neighbours: list[int], rounds: int) -> dict:
    from flows.layout import OutputLayout
    from flows.settings import Settings
    from flows.stage_io import usable_rows
    from sfm_core.retrieval import candidate_pairs, transitive_candidates
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

    def kept(matched: np.ndarray) -> dict:
        found = len(verified & {tuple(pair) for pair in matched.tolist()})
        return {"candidates": len(matched), "verified_kept": found,
                "fraction": round(found / len(verified), 3) if verified else None}

    for k in neighbours:
        matched = candidate_pairs(descriptors, k, exhaustive_below=0)
        row[f"k={k}"] = kept(matched)
        for _ in range(rounds):  # as flows.tasks.match_pairs: a round proposes, what verifies links
            linked = np.array(sorted(verified & {tuple(pair) for pair in matched.tolist()}), np.int64).reshape(-1, 2)
            more = transitive_candidates(linked, matched, len(rows), k)
            matched = np.concatenate([matched, more])
        row[f"k={k} + {rounds} rounds"] = kept(matched)
    return row


def main() -> None:
    from flows.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path, help="output folders of exhaustively matched runs")
    parser.add_argument("--neighbours", nargs="+", type=int, default=[5, 10, 20])
    parser.add_argument("--rounds", type=int, default=Settings.transitive_rounds,
                        help="rounds of candidates from the verified view graph")
    args = parser.parse_args()
    rows = [recall(out, args.neighbours, args.rounds) for out in args.outputs]
    for row in rows:
        print(json.dumps(row), flush=True)
    columns = [f"k={k}{extra}" for k in args.neighbours for extra in ("", f" + {args.rounds} rounds")]
    print("\n| run | images | verified pairs | "
          + " | ".join(f"{c}: candidates, verified kept" for c in columns) + " |")
    print("|---|---|---|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]['candidates']}, {row[c]['fraction']}" for c in columns]
        print(f"| {row['run']} | {row['images']} | {row['verified']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
