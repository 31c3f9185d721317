"""A learned fine-track refiner, in the spirit of VGGSfM's fine tracker.

From a patch around a track's position in its query frame (sampled through the keypoints'
affine change, as sfm_core.track_refinement does) and a search window around the coarse
position in another frame, it predicts the sub-pixel offset of the query patch's centre in
the window and a confidence. It keeps the geometric refiner's structure and learns its parts:

    query (M, P, P), window (M, W, W)              pixels, each normalised to zero mean, unit std
    -> features: 3 convolutions, shared            (M, C, P, P), (M, C, W, W)
    -> cost volume: normalised correlation of the features at every placement, beside the
       pixels' own (M, 2, K, K), K = W - P + 1
    -> head: 3 convolutions -> logits (M, K, K)    soft-argmax: the offset (M, 2), sub-pixel
    -> confidence: a small layer on the peak's probability, its spread and the pixels' best
       correlation -> (M,) in [0, 1]

Everything is differentiable: the offsets and confidences feed a Theseus bundle adjustment
in training (sfm_core.refiner_training), and its error flows back into these weights.
"""
import torch
from torch import nn

from sfm_core.track_refinement import PatchGeometry, correlation

WEIGHTS_FORMAT = "landmark-sfm track refiner"
WEIGHTS_VERSION = 1


class LearnedRefiner(nn.Module):
    def __init__(self, geometry: PatchGeometry = PatchGeometry(), channels: int = 16):
        super().__init__()
        self.geometry, self.channels = geometry, channels
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1))
        self.head = nn.Sequential(
            nn.Conv2d(2, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 1, 3, padding=1))
        self.confidence = nn.Linear(3, 1)
        with torch.no_grad():  # start near the geometric refiner: the pixels' correlation decides
            self.head[-1].bias.zero_()

    def forward(self, query: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (M, P, P), window (M, W, W) -> offset (M, 2) (x, y) of the query patch's centre
        from the window's centre, in window pixels, and confidence (M,) in [0, 1]."""
        query, window = _standardise(query), _standardise(window)
        m, k = len(query), window.shape[-1] - query.shape[-1] + 1
        pixel_scores = correlation(query, window)  # (M, K, K)
        feature_scores = _feature_correlation(self.features(query[:, None]), self.features(window[:, None]))
        logits = self.head(torch.stack([pixel_scores, feature_scores], dim=1))[:, 0]  # (M, K, K)
        probability = torch.softmax(logits.reshape(m, -1), dim=1).reshape(m, k, k)
        steps = torch.arange(k, dtype=query.dtype, device=query.device) - (k - 1) / 2
        offset = torch.stack([(probability.sum(dim=1) * steps).sum(dim=1),
                              (probability.sum(dim=2) * steps).sum(dim=1)], dim=1)
        spread = ((probability * ((steps[None, :] - offset[:, 0:1, None]) ** 2
                                  + (steps[:, None] - offset[:, 1:2, None]) ** 2)).flatten(1).sum(dim=1)).sqrt()
        cues = torch.stack([probability.flatten(1).max(dim=1).values, spread, pixel_scores.flatten(1).max(dim=1).values],
                           dim=1)
        return offset, torch.sigmoid(self.confidence(cues))[:, 0]

    def describe(self) -> dict:
        """What a weights file records to rebuild this model."""
        return {"patch_radius": self.geometry.patch_radius, "search_radius": self.geometry.search_radius,
                "max_scale_ratio": self.geometry.max_scale_ratio, "channels": self.channels}

    @classmethod
    def from_description(cls, description: dict) -> "LearnedRefiner":
        geometry = PatchGeometry(description["patch_radius"], description["search_radius"],
                                 description["max_scale_ratio"])
        return cls(geometry, description["channels"])


def _standardise(patches: torch.Tensor) -> torch.Tensor:
    """Each (…, H, W) patch to zero mean and unit standard deviation (flat ones stay zero)."""
    centred = patches - patches.mean(dim=(-2, -1), keepdim=True)
    return centred / centred.flatten(-2).std(dim=-1)[..., None, None].clamp_min(1e-3)


def _feature_correlation(query: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of query features (M, C, P, P) at every placement in window features
    (M, C, W, W): (M, K, K), as one grouped convolution (a sample per group)."""
    m, c, p = query.shape[0], query.shape[1], query.shape[-1]
    products = torch.nn.functional.conv2d(window.reshape(1, m * c, *window.shape[-2:]), query, groups=m)[0]
    placement_norm = (p * p * torch.nn.functional.avg_pool2d((window ** 2).sum(dim=1, keepdim=True), p, stride=1)[:, 0]
                      ).clamp_min(1e-12).sqrt()
    query_norm = query.flatten(1).norm(dim=1)[:, None, None].clamp_min(1e-6)
    return products / (placement_norm.clamp_min(1e-6) * query_norm)
