"""Descriptor matching in torch: mutual nearest neighbours with Lowe's ratio test.

Batched on whatever device the descriptors are on, so the same code runs on a GPU.
"""
import numpy as np
import torch


def normalise_descriptors(descriptors: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(N, D) uint8 or float -> (N, D) float32 unit rows on `device`."""
    tensor = torch.as_tensor(np.asarray(descriptors, dtype=np.float32), device=device)
    return torch.nn.functional.normalize(tensor, dim=1)


def match_mutual_nearest(desc1: torch.Tensor, desc2: torch.Tensor, ratio: float = 0.8) -> np.ndarray:
    """Match unit descriptors desc1 (N, D) against desc2 (M, D).

    Returns (K, 2) uint32 index pairs (i into desc1, j into desc2) that are each other's
    nearest neighbour and pass the ratio test on Euclidean distances.
    """
    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros((0, 2), np.uint32)
    similarity = desc1 @ desc2.T  # (N, M)
    best2 = similarity.topk(2, dim=1)
    # For unit vectors |a - b|^2 = 2 - 2 a.b
    distances = torch.sqrt(torch.clamp(2 - 2 * best2.values, min=0))
    passes_ratio = distances[:, 0] < ratio * distances[:, 1]
    nearest12 = best2.indices[:, 0]
    nearest21 = similarity.argmax(dim=0)
    mutual = nearest21[nearest12] == torch.arange(len(desc1), device=desc1.device)
    rows = torch.nonzero(passes_ratio & mutual)[:, 0]
    return torch.stack([rows, nearest12[rows]], dim=1).cpu().numpy().astype(np.uint32)
