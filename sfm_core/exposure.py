"""Dark photos (night-time, under-exposed) brightened before their features are detected.

SIFT keeps an extremum of the difference of Gaussians only above a fixed contrast, and the
learned detectors were trained on daylight photos: a photo whose brightness spans a tenth of
the range gives a handful of features, or none. Stretching its brightness range first gives
them back. Photos exposed as most are come back untouched, so their features do not change.
"""
import numpy as np

# A photo whose brightness, from its 0.5th to its 99.5th percentile, spans less than this
# (of [0, 1]) is stretched. Night-time copies span 0.04-0.18; the shared photo sets 0.55-0.96.
MIN_BRIGHTNESS_RANGE = 0.35
# The largest gain: beyond it, sensor noise and JPEG blocks are all that is left to find.
MAX_GAIN = 16.0


def stretch_dark(image: np.ndarray) -> np.ndarray:
    """image: (H, W) grey or (H, W, C) colour, float32 in [0, 1]. Where its brightness spans
    less than MIN_BRIGHTNESS_RANGE, a copy with that span stretched linearly onto [0, 1] (gain
    at most MAX_GAIN, clipped); otherwise `image` itself, unchanged."""
    grey = image if image.ndim == 2 else image.mean(axis=-1)
    low, high = np.percentile(grey[::2, ::2], (0.5, 99.5))  # every other pixel: the same figure, faster
    if high - low >= MIN_BRIGHTNESS_RANGE:
        return image
    gain = min(1.0 / max(float(high - low), 1e-6), MAX_GAIN)
    return np.clip((image - np.float32(low)) * np.float32(gain), 0.0, 1.0).astype(np.float32, copy=False)
