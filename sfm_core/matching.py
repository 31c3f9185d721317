"""Descriptor matching in torch: mutual nearest neighbours with Lowe's ratio test.

Batched on whatever device the descriptors are on, so the same code runs on a GPU. Each
descriptor's few nearest are shortlisted on the all-pairs similarity rounded to bfloat16
(fast on GPUs and on CPUs with bfloat16 instructions), then rescored in float32, so the
matches are those of an exact search unless bfloat16's rounding (about 0.4 % of a
similarity) pushes a true nearest out of the shortlist. CPUs without bfloat16 instructions
compute the same rounded similarity from a float32 product (oneDNN would emulate the
bfloat16 one at twice float32's cost): the matches hardly depend on the CPU (sums in another
order round differently in about 1e-5 of the similarities).
"""
import numpy as np
import torch

SHORTLIST = 3  # candidates per descriptor rescored exactly: the ratio test needs 2


def normalise_descriptors(descriptors: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(N, D) uint8 or float -> (N, D) float32 unit rows on `device`."""
    tensor = torch.as_tensor(np.asarray(descriptors, dtype=np.float32), device=device)
    return torch.nn.functional.normalize(tensor, dim=1)


def has_fast_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 products run natively: GPUs, and CPUs with AVX512-BF16 or AMX.
    (oneDNN reports bfloat16 support on any AVX512 CPU, where it emulates it.)"""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def rounded_similarity(queries: torch.Tensor, database: torch.Tensor) -> torch.Tensor:
    """(N, M) bfloat16: the cosine similarities of bfloat16-rounded unit rows, rounded to bfloat16.

    queries (N, D) and database (M, D) are bfloat16. Natively a bfloat16 product; elsewhere
    the same values from a float32 product of the rounded rows (accumulated in float32, as a
    bfloat16 product is).
    """
    if has_fast_bfloat16(queries.device):
        return queries @ database.T
    return (queries.float() @ database.float().T).to(torch.bfloat16)


def match_mutual_nearest(desc1: torch.Tensor, desc2: torch.Tensor, ratio: float = 0.8) -> np.ndarray:
    """Match unit descriptors desc1 (N, D) against desc2 (M, D), float32.

    Returns (K, 2) uint32 index pairs (i into desc1, j into desc2) that are each other's
    nearest neighbour and pass the ratio test on Euclidean distances.
    """
    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros((0, 2), np.uint32)
    # One similarity serves both directions: its rows shortlist desc1's nearest, its columns desc2's.
    similarity = rounded_similarity(desc1.to(torch.bfloat16), desc2.to(torch.bfloat16))  # (N, M)
    shortlist12 = similarity.topk(min(SHORTLIST, len(desc2)), dim=1).indices  # (N, S)
    two_nearest12, similarity12 = _two_nearest(desc1, desc2, shortlist12)  # (N, 2) each
    # (topk along dim 0 is 3x slower than a transposed copy's along dim 1 on the CPU)
    shortlist21 = similarity.T.contiguous().topk(min(SHORTLIST, len(desc1)), dim=1).indices  # (M, S)
    nearest21 = _two_nearest(desc2, desc1, shortlist21)[0][:, 0]
    # For unit vectors |a - b|^2 = 2 - 2 a.b
    distances = torch.sqrt(torch.clamp(2 - 2 * similarity12, min=0))
    passes_ratio = distances[:, 0] < ratio * distances[:, 1]
    nearest12 = two_nearest12[:, 0]
    mutual = nearest21[nearest12] == torch.arange(len(desc1), device=desc1.device)
    rows = torch.nonzero(passes_ratio & mutual)[:, 0]
    return torch.stack([rows, nearest12[rows]], dim=1).cpu().numpy().astype(np.uint32)


def _two_nearest(queries: torch.Tensor, database: torch.Tensor,
                 shortlist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, 2) into database of each query's two most similar rows, and their exact
    similarities (N, 2), best first: the (N, S) shortlist rescored in float32."""
    exact = (queries[:, None, :] * database[shortlist]).sum(-1)  # (N, S)
    similarity, order = exact.topk(2, dim=1)
    return shortlist.gather(1, order), similarity


class MutualNearestMatcher:
    """SIFT's matcher: mutual nearest neighbours with the ratio test, on `device`.
    (The learned kinds' matchers, in sfm_core/learned_matching.py, have the same interface.)"""

    def __init__(self, ratio: float = 0.8, device: str = "cpu"):
        self.ratio, self.device = ratio, device

    def prepare(self, features) -> torch.Tensor:
        """One image's Features -> its (N, D) unit descriptors on the device, reused by its pairs."""
        return normalise_descriptors(features.descriptors, self.device)

    def __call__(self, prepared1: torch.Tensor, prepared2: torch.Tensor) -> np.ndarray:
        """(K, 2) uint32 keypoint index pairs (into image 1, image 2)."""
        return match_mutual_nearest(prepared1, prepared2, self.ratio)
