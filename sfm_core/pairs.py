"""Which image pairs to match."""
import itertools


def exhaustive_pairs(num_frames: int) -> list[tuple[int, int]]:
    """All pairs (i, j), i < j. Retrieval replaces this for large collections."""
    return list(itertools.combinations(range(num_frames), 2))
