"""How the pipeline scales: synthetic collections of 100, 300 and 1000 photos (plus
distractors), reconstructed in chunks, side by side with pycolmap's hierarchical and global
mappers on the same photos (exhaustive matching) up to --colmap-up-to photos, and with every
photo in one chunk up to --one-chunk-up-to photos (is the merged model as accurate?).

    python benchmarks/scale.py --sizes 100 300 1000 --distractors 15 --chunk-size 80

Each method runs in a child process of its own, one after the other; a sampler adds up the
resident memory of that process, everything it starts (Dask workers) and the Prefect server
the benchmark starts for the runs (unless PREFECT_API_URL names one), every half second: the
peak is of all of them together. Collections are rendered once into
--workdir and reused by later runs. Prints one table, and the ratio of the largest size's
wall time to the smallest's.
"""
import argparse
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flows  # noqa: E402,F401  (environment defaults before Prefect and pycolmap load)


class PeakMemory:
    """Peak of the summed resident memory of processes `pids` and all their descendants, sampled."""

    def __init__(self, pids: list[int], interval_s: float = 0.5):
        self.roots, self.interval_s, self.peak_mb = [psutil.Process(pid) for pid in pids], interval_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            total = 0
            for process in [p for root in self.roots for p in (root, *root.children(recursive=True))]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # ended between the listing and the reading
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            self._stop.wait(self.interval_s)


def collection(workdir: Path, size: int, distractors: int) -> Path:
    """The rendered collection of `size` photos and `distractors` distractors (made once)."""
    from flows.synth import make_collection

    root = workdir / f"collection-{size}-{distractors}"
    if not (root / "distractors.txt").exists():
        shutil.rmtree(root, ignore_errors=True)
        made = make_collection(str(root), size, distractors, seed=0)
        print(f"rendered {size} + {distractors} photos in {made['seconds']} s", flush=True)
    return root


def _accuracy(models: list, root: Path) -> dict:
    """Registered fraction and AUC@5 of the largest model against the exact cameras, and the
    distractors registered in any model."""
    from sfm_core.evaluation import evaluate_poses
    from storage.colmap_model import poses_by_name, read_model

    truth = poses_by_name(read_model(root / "gt"))
    distractors = set((root / "distractors.txt").read_text().split())
    largest = max(models, key=lambda m: m.num_reg_images(), default=None)
    if largest is None:
        return {"registered": 0.0, "auc@5": 0.0, "distractors_registered": 0, "models": 0}
    accuracy = evaluate_poses(poses_by_name(largest), truth)
    registered_anywhere = {m.image(i).name for m in models for i in m.reg_image_ids()}
    return {"registered": accuracy["registered"] / len(truth), "auc@5": accuracy["auc@5"],
            "distractors_registered": len(distractors & registered_anywhere), "models": len(models),
            "reproj_px": largest.compute_mean_reprojection_error()}


def run_ours(root: str, out: str, chunk_size: int, fresh: bool = True) -> dict:
    from flows.reconstruct import reconstruct
    from storage.colmap_model import model_dirs, read_model

    if fresh:
        shutil.rmtree(out, ignore_errors=True)  # a left-over output would be reused, not timed
    started = time.perf_counter()
    report = reconstruct(str(Path(root) / "images"), out, chunk_size=chunk_size)
    seconds = time.perf_counter() - started
    models = [read_model(folder) for folder in model_dirs(Path(out) / "sparse")]
    stages = {name: stage["seconds"] for name, stage in report["stages"].items()}
    return {"seconds": seconds, "chunks": report["totals"]["chunks"], "stages": stages,
            **_accuracy(models, Path(root))}


def run_colmap(root: str, out: str, mappers: tuple[str, ...]) -> dict:
    """{mapper: row}: extraction and matching are shared, and counted in each mapper's time."""
    from benchmarks.colmap_reference import run_colmap as colmap

    result = colmap(str(Path(root) / "images"), mappers, out)
    shared = result["seconds"]["extract"] + result["seconds"]["match"]
    return {mapper: {"seconds": shared + result["seconds"][mapper], "chunks": None,
                     "stages": {"extract": result["seconds"]["extract"], "match": result["seconds"]["match"],
                                mapper: result["seconds"][mapper]},
                     **_accuracy(result["all_models"][mapper], Path(root))} for mapper in mappers}


def in_child(fn, *args, also_measured: tuple[int, ...] = ()):
    """fn(*args) in a child process of its own, with the peak memory of its whole process tree
    and of the processes `also_measured`."""
    with ProcessPoolExecutor(max_workers=1) as pool:
        pid = pool.submit(os.getpid).result()
        with PeakMemory([pid, *also_measured]) as memory:
            result = pool.submit(fn, *args).result()
    return result, memory.peak_mb


@contextmanager
def prefect_server():
    """The pids of the Prefect server the runs report to: one started here, shared by every
    run (each would otherwise start its own), or none when PREFECT_API_URL names a server."""
    if os.environ.get("PREFECT_API_URL"):
        yield ()
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"]))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield (server.server_process.pid,)
    finally:
        del os.environ["PREFECT_API_URL"]
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--distractors", type=int, default=15)
    parser.add_argument("--chunk-size", type=int, default=80)
    parser.add_argument("--colmap-up-to", type=int, default=300, help="run pycolmap at sizes up to this")
    parser.add_argument("--one-chunk-up-to", type=int, default=300,
                        help="at sizes up to this, also reconstruct everything as one chunk, to compare with the merge")
    parser.add_argument("--colmap", nargs="*", default=["hierarchical", "global"], help="pycolmap mappers")
    parser.add_argument("--workdir", default="/tmp/landmark-sfm-scale")
    parser.add_argument("--colmap-only", action="store_true", help="only pycolmap's rows, to add to an earlier run's")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    with prefect_server() as server:
        for size in args.sizes:
            rows += measure_size(size, args, workdir, server)
    print()
    print(format_table(rows))
    ours = {row["size"]: row["seconds"] for row in rows if row["method"] == "landmark-sfm"}
    if len(ours) > 1:
        small, large = min(ours), max(ours)
        print(f"\nlandmark-sfm wall time at {large} / at {small}: {ours[large] / ours[small]:.1f}x "
              f"({large / small:.0f}x the photos)")


def measure_size(size: int, args, workdir: Path, server: tuple[int, ...]) -> list[dict]:
    """Our row and pycolmap's rows at one collection size, each printed as it comes."""
    rows = []
    root = collection(workdir, size, args.distractors)
    if not args.colmap_only:
        row, peak = in_child(run_ours, str(root), str(workdir / f"ours-{size}"), args.chunk_size, also_measured=server)
        rows.append({"size": size, "method": "landmark-sfm", **row, "peak_mb": peak})
        print(format_table(rows[-1:]), flush=True)
    if size <= args.one_chunk_up_to and not args.colmap_only:
        # The same photos in one chunk: a copy of the chunked output reuses its features and
        # matches (their keys do not depend on the chunk size), so only the chunks differ.
        one = workdir / f"ours-{size}-one-chunk"
        shutil.rmtree(one, ignore_errors=True)
        shutil.copytree(workdir / f"ours-{size}", one)
        row, peak = in_child(run_ours, str(root), str(one), max(size + args.distractors, 8), False,
                             also_measured=server)
        rows.append({"size": size, "method": "landmark-sfm one chunk (features, matches reused)", **row,
                     "peak_mb": peak})
        print(format_table(rows[-1:]), flush=True)
    if size <= args.colmap_up_to and args.colmap:
        results, peak = in_child(run_colmap, str(root), str(workdir / f"colmap-{size}"), tuple(args.colmap))
        for mapper, row in results.items():
            rows.append({"size": size, "method": f"colmap {mapper}", **row, "peak_mb": peak})
            print(format_table(rows[-1:]), flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    columns = ["size", "method", "registered", "auc@5", "distractors_registered", "models", "chunks", "reproj_px",
               "seconds", "peak_mb"]
    lines = ["| " + " | ".join(columns) + " | seconds per stage |", "|" + "---|" * (len(columns) + 1)]
    for row in rows:
        cells = [("" if row.get(c) is None else f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]))
                 for c in columns]
        stages = ", ".join(f"{k} {v:.0f}" for k, v in row["stages"].items())
        lines.append("| " + " | ".join(cells) + f" | {stages} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
