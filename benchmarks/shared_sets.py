"""The pipeline on every photo set in ../shared/data with its defaults, against each set's
truth: the README's accuracy table, in one run.

    python benchmarks/shared_sets.py [--sets fountain_p11 pipes ...] [--workdir DIR] [run options as JSON]

Each set runs from an empty output folder; prints one row per set as it finishes, then the table.
"""
import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_set(folder: Path, out: Path, options: dict) -> dict:
    import pycolmap
    from flows.reconstruct import reconstruct
    from storage.colmap_model import evaluate_model_dirs

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    report = reconstruct(str(folder / "images"), str(out), **options)
    seconds = time.perf_counter() - started
    truth = next((folder / name for name in ("gt", "reference") if (folder / name).is_dir()), None)
    row = {"set": folder.name, "truth": truth.name if truth else "none", "images": report["totals"]["images"],
           "registered": report["totals"]["registered"], "models": report["totals"]["models"],
           "reproj_px": report["totals"]["mean_reprojection_error_px"], "seconds": round(seconds, 1),
           "verdict": report["verdict"]["status"]}
    if truth and (out / "sparse" / "0").is_dir():
        accuracy = evaluate_model_dirs(out / "sparse" / "0", truth)
        row.update({k: accuracy[k] for k in ("auc@3", "auc@5", "auc@10")},
                   registered=f"{accuracy['registered']}/{accuracy['reference_images']}")
        row["track_length"] = round(pycolmap.Reconstruction(str(out / "sparse" / "0")).compute_mean_track_length(), 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="*", default=None, help="default: every set in --data")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--options", type=json.loads, default={}, help='flow options, e.g. \'{"bundle_adjuster": "theseus"}\'')
    args = parser.parse_args()
    data = Path(args.data)
    names = args.sets or sorted(p.name for p in data.iterdir() if (p / "images").is_dir())
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="shared-sets-"))
    rows = []
    for name in names:
        rows.append(run_set(data / name, workdir / name, args.options))
        print(json.dumps(rows[-1]), flush=True)
    columns = ["set", "truth", "registered", "auc@3", "auc@5", "auc@10", "reproj_px", "track_length", "verdict",
               "seconds"]
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row.get(c), float) and c.startswith("auc")
                                else str(row.get(c, "")) for c in columns) + " |")


if __name__ == "__main__":
    main()
