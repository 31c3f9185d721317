"""Image retrieval: which image pairs are worth matching, from the images' own local features.

No downloaded weights or vocabularies: a visual vocabulary is learned on the collection
itself (spherical k-means on a sample of its descriptors, RootSIFT or learned), each image becomes one
VLAD vector (residuals to the nearest word summed per word, power- and intra-normalised),
and each image's most similar images become its candidate pairs. Small collections are
matched exhaustively. Retrieval alone misses many pairs that would verify (a third of them
kept on a collection photographed all around a building, `benchmarks/retrieval_recall.py`):
the verified view graph proposes more (transitive_candidates), two photos that verify with a
common third likely seeing the same part of the scene. Everything is batched torch on
`device`, chunked so that memory stays bounded for thousands of images of thousands of features.
"""
import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import scipy.sparse
import torch

from sfm_core.matching import normalise_descriptors

NUM_WORDS = 64  # VLAD dimension is NUM_WORDS * D (the descriptor width)
NUM_NEIGHBOURS = 10
EXHAUSTIVE_BELOW = 30  # below this many images, all pairs
SAMPLE_SIZE = 100_000  # descriptors the vocabulary is learned on
KMEANS_ITERATIONS = 20
CHUNK_ROWS = 1 << 16  # descriptors (or similarity entries / F) processed at once


def candidate_pairs(descriptors: Sequence[np.ndarray], num_neighbours: int = NUM_NEIGHBOURS,
                    exhaustive_below: int = EXHAUSTIVE_BELOW, num_words: int = NUM_WORDS,
                    seed: int = 0, device: str = "cpu") -> np.ndarray:
    """Image pairs to match: all pairs of a small collection, else retrieval's.

    descriptors: one (K_i, D) array per image (uint8 SIFT or float32 learned descriptors, one
    width for all). Returns (P, 2) int64 index pairs,
    i < j, unique, sorted.
    """
    if matches_every_pair(len(descriptors), exhaustive_below):
        return exhaustive_pair_array(len(descriptors))
    vocabulary = learn_vocabulary(descriptors, num_words, seed, device)
    return retrieval_pairs(global_descriptors(descriptors, vocabulary), num_neighbours)


def matches_every_pair(num_images: int, exhaustive_below: int = EXHAUSTIVE_BELOW) -> bool:
    """Whether a collection of num_images is matched exhaustively rather than along retrieval's
    candidates."""
    return num_images < exhaustive_below


def exhaustive_pair_array(num_images: int) -> np.ndarray:
    """(F * (F - 1) / 2, 2) int64: every pair i < j."""
    return np.array(list(itertools.combinations(range(num_images), 2)), np.int64).reshape(-1, 2)


def learn_vocabulary(descriptors: Sequence[np.ndarray], num_words: int = NUM_WORDS, seed: int = 0,
                     device: str = "cpu", sample_size: int = SAMPLE_SIZE,
                     iterations: int = KMEANS_ITERATIONS) -> torch.Tensor:
    """Spherical k-means on a sample of the collection's descriptors.

    descriptors: one (K_i, D) uint8 or float array per image. Returns (W, D) float32 unit rows on
    `device`, W = num_words, or fewer when the collection has fewer descriptors.
    Deterministic for a seed (on one device).
    """
    rng = np.random.default_rng(seed)
    sample = normalise_descriptors(_sample(descriptors, sample_size, rng), device)
    if len(sample) == 0:
        raise ValueError("no descriptors to learn a vocabulary from")
    words = _kmeans_plus_plus(sample, min(num_words, len(sample)), rng)
    for _ in range(iterations):
        assignment = (sample @ words.T).argmax(dim=1)
        sums = torch.zeros_like(words).index_add_(0, assignment, sample)
        counts = torch.bincount(assignment, minlength=len(words))
        # An empty word takes the sample worst served by the current words.
        empty = torch.nonzero(counts == 0)[:, 0]
        if len(empty):
            fit = (sample * words[assignment]).sum(dim=1)
            sums[empty] = sample[fit.argsort()[: len(empty)]]
        words = torch.nn.functional.normalize(sums, dim=1)
    return words


def global_descriptors(descriptors: Sequence[np.ndarray], vocabulary: torch.Tensor) -> torch.Tensor:
    """Centred VLAD of each image: (F, W * D) float32 unit rows on the vocabulary's device.

    descriptors: one (K_i, D) uint8 or float array per image; vocabulary: (W, D) unit rows. Per
    word, the residuals of the descriptors assigned to it are summed, signed-square-rooted
    (so that repeated structures do not dominate) and L2-normalised (intra-normalisation, so
    that no word dominates); the concatenation is L2-normalised, then centred on the
    collection. A row depends on the whole collection. An image without descriptors gets a
    zero row.
    """
    num_words, dim = vocabulary.shape
    out = torch.zeros(len(descriptors), num_words, dim, device=vocabulary.device)
    for first, chunk in _image_chunks(descriptors, CHUNK_ROWS):
        counts = torch.tensor([len(d) for d in chunk], device=vocabulary.device)
        image = torch.repeat_interleave(torch.arange(len(chunk), device=vocabulary.device), counts)
        x = normalise_descriptors(np.concatenate(chunk), vocabulary.device)  # (N, D)
        word = (x @ vocabulary.T).argmax(dim=1)
        residuals = x - vocabulary[word]
        cells = torch.zeros(len(chunk) * num_words, dim, device=vocabulary.device)
        cells.index_add_(0, image * num_words + word, residuals)
        out[first: first + len(chunk)] = cells.view(len(chunk), num_words, dim)
    out = torch.nn.functional.normalize(out.sign() * out.abs().sqrt(), dim=2)
    return _centred(torch.nn.functional.normalize(out.flatten(1), dim=1))


def _centred(vlad: torch.Tensor) -> torch.Tensor:
    """(F, D) unit rows minus the mean of the non-zero ones, renormalised; zero rows stay zero.

    All VLADs of a collection share a large common component (on the shared photo sets
    mixed together, images of different places have cosine similarity 0.49 on average, of
    the same place 0.58; centred: -0.04 and 0.18). Without it, the similarity says what two
    images share beyond what every image has, which keeps other places and junk out of the
    top-k.
    """
    present = vlad.abs().sum(dim=1, keepdim=True) > 0
    mean = vlad.sum(dim=0, keepdim=True) / present.sum().clamp(min=1)
    return torch.nn.functional.normalize((vlad - mean) * present, dim=1)


def retrieval_pairs(global_desc: torch.Tensor | np.ndarray, k: int = NUM_NEIGHBOURS) -> np.ndarray:
    """Each image paired with its k most similar others (cosine similarity).

    global_desc: (F, D) unit rows. Returns (P, 2) int64 pairs, i < j, unique, sorted; a pair
    is kept when either image has the other among its k nearest.
    """
    desc = torch.as_tensor(global_desc, dtype=torch.float32)
    k = min(k, len(desc) - 1)
    if k <= 0:
        return np.zeros((0, 2), np.int64)
    rows = max(1, CHUNK_ROWS // len(desc))  # bounds the (rows, F) similarity block
    neighbours = []
    for start in range(0, len(desc), rows):
        similarity = desc[start: start + rows] @ desc.T
        block = torch.arange(len(similarity), device=desc.device)
        similarity[block, block + start] = -torch.inf  # not oneself
        neighbours.append(similarity.topk(k, dim=1).indices.cpu())
    nearest = torch.cat(neighbours).numpy()  # (F, k)
    query = np.repeat(np.arange(len(desc)), k)
    pairs = np.sort(np.stack([query, nearest.ravel()], axis=1), axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)


def transitive_candidates(verified: np.ndarray, matched: np.ndarray, num_images: int,
                          per_image: int = NUM_NEIGHBOURS) -> np.ndarray:
    """Pairs not matched yet whose two images both verify with a common third one.

    verified: (V, 2) index pairs that verified; matched: (M, 2) every pair matched so far (the
    verified ones included), either order. A candidate is ranked, for each of its two images, by
    how many verified neighbours they share (then by the other image's index, to be
    deterministic), and kept when it is among the `per_image` best of either image, so the
    candidates grow with the images, not with their square. Returns (P, 2) int64 pairs, i < j,
    unique, sorted.
    """
    if len(verified) == 0 or per_image <= 0:
        return np.zeros((0, 2), np.int64)
    i, j = np.asarray(verified, np.int64).T
    adjacency = scipy.sparse.coo_matrix((np.ones(2 * len(i)), (np.r_[i, j], np.r_[j, i])),
                                        shape=(num_images, num_images)).tocsr()
    adjacency.data[:] = 1.0  # a pair listed twice is one link
    shared = scipy.sparse.triu(adjacency @ adjacency, k=1).tocoo()  # (i, l): common verified neighbours
    pairs = np.stack([shared.row, shared.col], axis=1).astype(np.int64)
    counts = shared.data
    done = np.sort(np.asarray(matched, np.int64).reshape(-1, 2), axis=1)
    fresh = ~np.isin(_pair_keys(pairs, num_images), _pair_keys(done, num_images))
    pairs, counts = pairs[fresh], counts[fresh]
    # Each candidate seen from both its images; each image's best: the most shared, then the
    # other image's index.
    image, other = np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]]
    order = np.lexsort((other, -np.r_[counts, counts], image))
    rank = np.arange(len(order)) - np.searchsorted(image[order], image[order], side="left")
    keep = np.zeros(len(pairs), bool)
    keep[order[rank < per_image] % len(pairs)] = True
    return np.unique(pairs[keep], axis=0)


def _pair_keys(pairs: np.ndarray, num_images: int) -> np.ndarray:
    """(P,) int64 one number per (i, j) pair, for set operations on pairs."""
    return pairs[:, 0] * num_images + pairs[:, 1]


def _sample(descriptors: Sequence[np.ndarray], sample_size: int, rng: np.random.Generator) -> np.ndarray:
    """(<= sample_size, D): the same share of every image, so each image is represented."""
    quota = -(-sample_size // max(len(descriptors), 1))
    picked = [d if len(d) <= quota else d[np.sort(rng.choice(len(d), quota, replace=False))]
              for d in descriptors]
    return np.concatenate(picked) if picked else np.zeros((0, 128), np.uint8)


def _kmeans_plus_plus(points: torch.Tensor, num: int, rng: np.random.Generator) -> torch.Tensor:
    """(num, D) initial words among the (N, D) unit points, spread out as k-means++ does."""
    chosen = [int(rng.integers(len(points)))]
    distance = 2 - 2 * (points @ points[chosen[0]])  # squared distance to the nearest word
    for _ in range(num - 1):
        weights = distance.clamp(min=0).double().cpu().numpy()
        total = weights.sum()
        index = int(rng.choice(len(points), p=weights / total)) if total > 0 else int(rng.integers(len(points)))
        chosen.append(index)
        distance = torch.minimum(distance, 2 - 2 * (points @ points[index]))
    return points[chosen].clone()


def _image_chunks(descriptors: Sequence[np.ndarray], max_rows: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """Consecutive images, about max_rows descriptors at a time: (first image index, arrays)."""
    first, chunk, rows = 0, [], 0
    for index, d in enumerate(descriptors):
        if chunk and rows + len(d) > max_rows:
            yield first, chunk
            first, chunk, rows = index, [], 0
        chunk.append(d)
        rows += len(d)
    if chunk:
        yield first, chunk
