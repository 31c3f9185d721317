"""Descriptor matching in torch: mutual nearest neighbours with Lowe's ratio test.

Batched on whatever device the descriptors are on, so the same code runs on a GPU. One
all-pairs similarity per pair of images: each descriptor of the first image finds its two
nearest in the second, and only the matches the ratio test keeps are checked the other way
(their candidates' nearest in the first image, exactly, in float32). Where the device
multiplies bfloat16 fast (GPUs; CPUs with AVX512-BF16 or AMX), the all-pairs product is taken
in bfloat16 and only shortlists each descriptor's few nearest, rescored in float32: the
matches are those of an exact search unless bfloat16's rounding (about 0.4 % of a similarity)
pushes a true nearest out of it. CPUs without those instructions emulate bfloat16 at twice
float32's cost, and so multiply in float32.
"""
import numpy as np
import torch

SHORTLIST = 3  # candidates per descriptor rescored exactly: the ratio test needs 2


def normalise_descriptors(descriptors: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """(N, D) uint8 or float -> (N, D) float32 unit rows on `device`."""
    tensor = torch.as_tensor(np.asarray(descriptors, dtype=np.float32), device=device)
    return torch.nn.functional.normalize(tensor, dim=1)


def fast_matmul_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where the device multiplies it in hardware (GPUs; CPUs with AVX512-BF16 or AMX),
    else float32. (oneDNN's own "bf16 supported" is true on any AVX512 CPU, emulated or not.)"""
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and any(getattr(torch.cpu, check, lambda: False)()
                                    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")):
        return torch.bfloat16
    return torch.float32


def match_mutual_nearest(desc1: torch.Tensor, desc2: torch.Tensor, ratio: float = 0.8) -> np.ndarray:
    """Match unit descriptors desc1 (N, D) against desc2 (M, D), float32.

    Returns (K, 2) uint32 index pairs (i into desc1, j into desc2) that are each other's
    nearest neighbour and pass the ratio test on Euclidean distances.
    """
    if len(desc1) < 2 or len(desc2) < 2:
        return np.zeros((0, 2), np.uint32)
    two_nearest12, similarity12 = _two_nearest(desc1, desc2, fast_matmul_dtype(desc1.device))  # (N, 2) each
    # For unit vectors |a - b|^2 = 2 - 2 a.b
    distances = torch.sqrt(torch.clamp(2 - 2 * similarity12, min=0))
    rows = torch.nonzero(distances[:, 0] < ratio * distances[:, 1])[:, 0]
    nearest12 = two_nearest12[rows, 0]
    # The reverse check, for the columns the ratio test kept only (a few percent of them).
    columns, column_of_row = torch.unique(nearest12, return_inverse=True)
    nearest21 = (desc2[columns] @ desc1.T).argmax(dim=1)
    mutual = nearest21[column_of_row] == rows
    return torch.stack([rows[mutual], nearest12[mutual]], dim=1).cpu().numpy().astype(np.uint32)


def _two_nearest(queries: torch.Tensor, database: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (N, 2) into database of each query's two most similar rows, and their exact
    similarities (N, 2), best first; in bfloat16, a shortlist rescored in float32."""
    if dtype == torch.float32:
        similarity, index = (queries @ database.T).topk(2, dim=1)
        return index, similarity
    shortlist = (queries.to(dtype) @ database.to(dtype).T).topk(min(SHORTLIST, len(database)), dim=1).indices  # (N, S)
    exact = (queries[:, None, :] * database[shortlist]).sum(-1)  # (N, S)
    similarity, order = exact.topk(2, dim=1)
    return shortlist.gather(1, order), similarity
