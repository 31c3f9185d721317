"""The pipeline's settings, with their defaults in one place."""
from dataclasses import asdict, dataclass

from sfm_core.cameras import check_shared_cameras
from sfm_core.learned_features import FEATURE_KINDS

TRACK_KINDS = ("query", "pairs")

# Neighbouring chunks share this many images at least: a Sim(3) needs 3 registered in both,
# and one more leaves room for an image that one of the chunks fails to register.
MIN_CHUNK_OVERLAP = 4
MIN_CHUNK_SIZE = 2 * MIN_CHUNK_OVERLAP


def chunk_overlap_for(chunk_size: int) -> int:
    """Images neighbouring chunks share: a quarter of a chunk, between MIN_CHUNK_OVERLAP and 12."""
    if chunk_size < MIN_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be at least {MIN_CHUNK_SIZE} (chunks share {MIN_CHUNK_OVERLAP} "
                         f"images to be aligned), got {chunk_size}")
    return max(MIN_CHUNK_OVERLAP, min(Settings.chunk_overlap, chunk_size // 4))


# What each feature kind's stored features were computed with, beyond the settings.
_EXTRACTOR_VERSIONS = {"sift": "sift-oriented-stretched", "aliked": "aliked-n16-stretched", "xfeat": "xfeat-stretched"}


@dataclass(frozen=True)
class Settings:
    max_image_size: int = 1024  # long side the features are computed at, as VGGSfM does
    max_features: int = 4096
    # Local features and their matcher: "sift" (mutual nearest neighbours + ratio test),
    # "aliked" (LightGlue) or "xfeat" (LighterGlue).
    features: str = "sift"
    match_ratio: float = 0.8  # Lowe's ratio test
    min_inliers: int = 15  # a verified pair needs this many RANSAC inliers
    retrieval_neighbours: int = 10  # candidate pairs per image from retrieval
    # Then rounds of candidates from the verified view graph (photos that verify with a common
    # third), at most retrieval_neighbours per image a round (sfm_core.retrieval.transitive_candidates)
    transitive_rounds: int = 2
    exhaustive_below: int = 40  # smaller collections match all pairs
    chunk_size: int = 100  # most images reconstructed together (one GPU's worth)
    chunk_overlap: int = 12  # images neighbouring chunks share, to align them
    # "query": each query frame's points followed into its verified neighbours (VGGSfM's tracks,
    # sfm_core.query_tracks); "pairs": the verified matches joined by union-find (0.3.5 and before)
    tracks: str = "query"
    track_refinement: str = "correlation"  # "correlation" (patches from the query frame), "learned" or "none"
    refiner_weights: str | None = None  # the learned refiner's weights file ("learned")
    refiner_sha256: str | None = None  # its content, for the checkpoint keys
    camera_model: str = "SIMPLE_RADIAL"
    # "auto": photos of one size without EXIF share a camera unless the view graph says they
    # are not one camera; "size": they share it untested; "exif": a camera each unless their
    # EXIF names the same camera and focal length (sfm_core.cameras.camera_groups).
    shared_cameras: str = "auto"
    intrinsics: tuple[str, ...] = ()  # known cameras, "MODEL WIDTH HEIGHT PARAMS...": photos of their size use them, fixed
    bundle_adjuster: str = "ceres"
    device: str = "cpu"  # torch device of feature extraction (learned kinds) and matching: "cpu", "cuda", "cuda:1"

    def __post_init__(self):
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"unknown features {self.features!r}: choose one of {', '.join(FEATURE_KINDS)}")
        check_shared_cameras(self.shared_cameras)
        if self.tracks not in TRACK_KINDS:
            raise ValueError(f"unknown tracks {self.tracks!r}: choose one of {', '.join(TRACK_KINDS)}")

    def as_dict(self) -> dict:
        return asdict(self)

    def feature_settings(self) -> dict:
        """What a stored feature set depends on; `kind` names the store's group of each kind."""
        # A new name per kind when extraction changes (orientations kept; dark photos stretched):
        # stores written before are extracted again.
        return {"kind": self.features, "max_image_size": self.max_image_size, "max_features": self.max_features,
                "extractor": _EXTRACTOR_VERSIONS[self.features]}
