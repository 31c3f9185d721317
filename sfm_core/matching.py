"""Descriptor matching in torch: mutual nearest neighbours with Lowe's ratio test.

Batched on whatever device the descriptors are on, so the same code runs on a GPU. The
all-pairs similarity is computed in bfloat16 where the device multiplies it fast (4-5x
float32 on this project's CPUs, and on GPUs), which only shortlists each descriptor's few
nearest; the shortlist is rescored in float32, so the matches are those of an exact search
unless bfloat16's rounding (about 0.4 % of a similarity) pushes a true nearest out of it.
"""
import numpy as np
import torch

SHORTLIST = 3  # candidates per descriptor rescored exactly: the ratio test needs 2


def normalise_descriptors(descriptors: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(N, D) uint8 or float -> (N, D) float32 unit rows on `device`."""
    tensor = torch.as_tensor(np.asarray(descriptors, dtype=np.float32), device=device)
    return torch.nn.functional.normalize(tensor, dim=1)


def fast_matmul_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the device has fast bfloat16 products (GPUs; CPUs with oneDNN support), else float32."""
    if device.type == "cuda" or (device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return torch.bfloat16
    return torch.float32


def match_mutual_nearest(desc1: torch.Tensor, desc2: torch.Tensor, ratio: float = 0.8) -> np.ndarray:
    """Match unit descriptors desc1 (N, D) against desc2 (M, D), float32.

    Returns (K, 2) uint32 index pairs (i into desc1, j into desc2) that are each other's
    nearest neighbour and pass the ratio test on Euclidean distances.
    """
    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros((0, 2), np.uint32)
    dtype = fast_matmul_dtype(desc1.device)
    low1, low2 = desc1.to(dtype), desc2.to(dtype)
    two_nearest12, similarity12 = _two_nearest(desc1, desc2, low1, low2)  # (N, 2) each
    nearest21 = _two_nearest(desc2, desc1, low2, low1)[0][:, 0]
    # For unit vectors |a - b|^2 = 2 - 2 a.b
    distances = torch.sqrt(torch.clamp(2 - 2 * similarity12, min=0))
    passes_ratio = distances[:, 0] < ratio * distances[:, 1]
    nearest12 = two_nearest12[:, 0]
    mutual = nearest21[nearest12] == torch.arange(len(desc1), device=desc1.device)
    rows = torch.nonzero(passes_ratio & mutual)[:, 0]
    return torch.stack([rows, nearest12[rows]], dim=1).cpu().numpy().astype(np.uint32)


def _two_nearest(queries: torch.Tensor, database: torch.Tensor, low_queries: torch.Tensor,
                 low_database: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, 2) into database of each query's two most similar rows, and their exact
    similarities (N, 2), best first: a low-precision shortlist rescored in float32."""
    shortlist = (low_queries @ low_database.T).topk(min(SHORTLIST, len(database)), dim=1).indices  # (N, S)
    exact = (queries[:, None, :] * database[shortlist]).sum(-1)  # (N, S)
    similarity, order = exact.topk(2, dim=1)
    return shortlist.gather(1, order), similarity
