"""Feature extraction workers. A light module (no Prefect): each spawned process imports only
what extraction needs.

SIFT (pycolmap) holds the GIL, so threads do not help: it is spread over processes. The
learned extractors (torch) run in this process on torch's own threads (a process per core
would oversubscribe them) or on the GPU, while a thread decodes the next photos.
"""
import contextlib
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from sfm_core.features import Features, SiftExtractor
from storage.images import ImageReadError, LoadedImage, load_image

# Below this many photos per extra process, starting it costs more than it saves.
IMAGES_PER_PROCESS = 8
# Photos decoded ahead of a learned extractor: enough to hide decoding, few enough to bound memory.
PREFETCH = 4
_extractor = None  # one per process


@contextlib.contextmanager
def extracted_features(kind: str, jobs: list[tuple], workers: int, max_features: int, device: str = "cpu"):
    """Yields an iterator over the features of each job (uri, max_image_size,
    storage_options), in order: Features, or the reason the photo cannot be read. Other
    errors (a lost connection) are raised: the task retries them.

    SIFT: on `workers` processes (this one when workers <= 1). Learned kinds: in this
    process on `device`, with the photos decoded on a thread ahead of the extractor.
    """
    if kind != "sift":
        _start(kind, max_features, device)
        yield _prefetched(jobs)
    elif workers <= 1:
        _start(kind, max_features, device)
        yield map(_extract_one, jobs)
    else:
        # spawn: a forked copy of a process running torch's thread pool can hang.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start, initargs=(kind, max_features, device)) as pool:
            yield pool.map(_extract_one, jobs)


def _extract_one(job: tuple) -> Features | str:
    return _extract(_load(job))


def _load(job: tuple) -> LoadedImage | str:
    uri, max_image_size, storage_options = job
    try:
        return load_image(uri, max_image_size, storage_options)
    except ImageReadError as error:
        return error.reason


def _extract(image: LoadedImage | str) -> Features | str:
    return image if isinstance(image, str) else _extractor(image.pixels, image.scale_xy)


def _prefetched(jobs: list[tuple]) -> Iterator[Features | str]:
    """A thread decodes up to PREFETCH photos ahead while the extractor works on the current
    one (decoding and torch both release the GIL)."""
    with ThreadPoolExecutor(1) as loader:
        pending = deque()
        for job in jobs:
            pending.append(loader.submit(_load, job))
            if len(pending) > PREFETCH:
                yield _extract(pending.popleft().result())
        while pending:
            yield _extract(pending.popleft().result())


def _start(kind: str, max_features: int, device: str) -> None:
    global _extractor
    if kind == "sift":  # SIFT's processes need not load the learned models
        _extractor = SiftExtractor(max_features)
        return
    from sfm_core.learned_features import make_extractor
    _extractor = make_extractor(kind, max_features, device)
