"""Feature extraction spread over processes: pycolmap's SIFT holds the GIL, so threads do not
help. A light module (no Prefect): each spawned process imports only what extraction needs."""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from sfm_core.features import Features, SiftExtractor
from storage.images import ImageReadError, load_image

# Below this many photos per extra process, starting it costs more than it saves.
IMAGES_PER_PROCESS = 8
_extractor: SiftExtractor | None = None  # one per process


def feature_pool(workers: int, max_features: int):
    """A pool whose map(extract_one, jobs) yields results in order: `workers` processes, or
    this process when workers <= 1."""
    if workers <= 1:
        _start(max_features)
        return _InProcess()
    # spawn: a forked copy of a process running torch's thread pool can hang.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start, initargs=(max_features,))


def extract_one(job: tuple) -> Features | str:
    """Features of one photo, job = (uri, max_image_size, storage_options), or the reason it
    cannot be read. Other errors (a lost connection) are raised: the task retries them."""
    uri, max_image_size, storage_options = job
    try:
        image = load_image(uri, max_image_size, storage_options)
    except ImageReadError as error:
        return error.reason
    return _extractor(image.pixels, image.scale_xy)


def _start(max_features: int) -> None:
    global _extractor
    _extractor = SiftExtractor(max_features)


class _InProcess:
    """The pool's interface, in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, jobs):
        return map(fn, jobs)
