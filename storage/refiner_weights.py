"""Track refiner weights on disk: one plain file (torch.save of tensors, numbers and strings,
readable with weights_only=True) holding a format name and version, what the model is, the
settings it was trained with, and its weights; a training checkpoint adds the optimiser and
where training stands."""
import hashlib
from pathlib import Path

import torch

from sfm_core.learned_refiner import WEIGHTS_FORMAT, WEIGHTS_VERSION, LearnedRefiner
from storage.atomic import atomic_path


class WeightsError(Exception):
    """A weights file that cannot be used; the message names it and says why."""


def save_weights(path: str | Path, model: LearnedRefiner, training: dict, extra: dict | None = None) -> None:
    """Publish atomically: a reader never sees half a file. `training`: the settings and
    figures of the training; `extra`: what a checkpoint adds (optimizer, progress)."""
    payload = {"format": WEIGHTS_FORMAT, "version": WEIGHTS_VERSION, "model": model.describe(),
               "training": training, "state_dict": model.state_dict(), **(extra or {})}
    with atomic_path(str(path)) as tmp:
        torch.save(payload, tmp)


def load_payload(path: str | Path) -> dict:
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"refiner weights {path}: no such file") from None
    except Exception as error:  # a truncated or foreign file: pickle, zip or torch errors
        raise WeightsError(f"refiner weights {path}: not a weights file ({type(error).__name__}: {error})") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(f"refiner weights {path}: not a {WEIGHTS_FORMAT} file")
    if payload.get("version") != WEIGHTS_VERSION:
        raise WeightsError(f"refiner weights {path}: version {payload.get('version')}, this code reads "
                           f"version {WEIGHTS_VERSION}")
    return payload


def load_weights(path: str | Path) -> LearnedRefiner:
    """The trained refiner, in evaluation mode."""
    payload = load_payload(path)
    model = LearnedRefiner.from_description(payload["model"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def file_sha256(path: str | Path) -> str:
    """The content of a weights file: runs with other weights are other runs."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
