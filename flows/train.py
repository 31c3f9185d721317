"""`landmark-sfm train`: train the learned track refiner on data the project makes itself.

Two stages (sfm_core.refiner_training): the offsets of warped photographs, then end to end
through a Theseus bundle adjustment of rendered scenes, with some warped photographs still
mixed in so the first stage is not forgotten. Progress is printed as it goes; a checkpoint
(`<out>.partial`) is written every `checkpoint_s` seconds and at the end of each stage, and
`--resume` continues from it. The weights go to `<out>` (storage.refiner_weights).
"""
import math
import time
from pathlib import Path

import numpy as np
import torch

from sfm_core.learned_refiner import LearnedRefiner
from sfm_core.refiner_training import (PhotoSet, RenderedViews, TrainingSettings, end_to_end_loss, offset_loss,
                                       refine_problem, track_problem, warp_batch)
from sfm_core.synthetic import render_scene
from sfm_core.track_refinement import CorrelationRefiner
from storage.refiner_weights import load_payload, save_weights
from storage.synthetic_io import load_package_textures

STAGES = ("offsets", "end-to-end")


def partial_path(out: str | Path) -> Path:
    return Path(f"{out}.partial")


def train_refiner(out: str, offset_steps: int = 1800, end_to_end_steps: int = 300, resume: bool = False,
                  seed: int = 0, checkpoint_s: float = 60.0, report=print, evaluation_samples: int = 4000,
                  evaluation_problems: int = 20) -> dict:
    """Train and write the weights to `out`; returns the training's figures (evaluated on
    `evaluation_samples` warped photographs and `evaluation_problems` rendered scenes)."""
    settings = TrainingSettings(seed=seed)
    torch.manual_seed(seed)
    model = LearnedRefiner()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    progress = {"stage": STAGES[0], "step": 0, "seconds": 0.0, "history": []}
    if resume and partial_path(out).exists():
        payload = load_payload(partial_path(out))
        model.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["optimizer"])
        progress = payload["progress"]
        report(f"resuming at {progress['stage']} step {progress['step']} ({progress['seconds']:.0f} s done)")
    textures = load_package_textures()
    photos = PhotoSet([_gray(texture) for texture in textures])
    rendered = _rendered_views(textures, seed)
    generator = torch.Generator().manual_seed(seed * 1000 + progress["step"] + STAGES.index(progress["stage"]) * 10**6)
    rng = np.random.default_rng(seed * 1000 + progress["step"])
    steps = {"offsets": offset_steps, "end-to-end": end_to_end_steps}
    started, last_checkpoint = time.perf_counter() - progress["seconds"], time.perf_counter()

    def checkpoint() -> None:
        progress["seconds"] = time.perf_counter() - started
        save_weights(partial_path(out), model, settings.as_dict(),
                     {"optimizer": optimizer.state_dict(), "progress": progress})

    for stage in STAGES[STAGES.index(progress["stage"]):]:
        progress["stage"] = stage
        window = []
        while progress["step"] < steps[stage]:
            _set_learning_rate(optimizer, settings.learning_rate, progress["step"], steps[stage])
            warped = warp_batch(photos, model.geometry, settings, generator,
                                settings.batch if stage == "offsets" else settings.batch // 4)
            loss, error = offset_loss(*model(warped[0], warped[1]), warped[2], settings)
            if stage == "end-to-end":
                problem = track_problem(rendered, model.geometry, settings, rng)
                if problem is not None:
                    loss = loss * 0.5 + end_to_end_loss(model, rendered, problem, rng)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            progress["step"] += 1
            window.append(float(loss.detach()))
            if progress["step"] % 50 == 0 or progress["step"] == steps[stage]:
                elapsed = time.perf_counter() - started
                progress["history"].append({"stage": stage, "step": progress["step"], "loss": float(np.mean(window)),
                                            "seconds": round(elapsed, 1)})
                report(f"{stage}: step {progress['step']}/{steps[stage]}, loss {np.mean(window):.4f}, "
                       f"median offset error {float(error.median()):.3f} px, {elapsed:.0f} s")
                window = []
            if time.perf_counter() - last_checkpoint > checkpoint_s:
                checkpoint()
                last_checkpoint = time.perf_counter()
        if stage != STAGES[-1]:
            progress.update(stage=STAGES[STAGES.index(stage) + 1], step=0)
        checkpoint()
        last_checkpoint = time.perf_counter()
    figures = evaluate(model.eval(), photos, rendered, settings, evaluation_samples, evaluation_problems)
    figures.update(seconds=round(time.perf_counter() - started, 1), offset_steps=offset_steps,
                   end_to_end_steps=end_to_end_steps)
    save_weights(out, model, {**settings.as_dict(), **figures})
    partial_path(out).unlink(missing_ok=True)
    report("evaluation on held-out samples: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return figures


def evaluate(model: LearnedRefiner, photos: PhotoSet, rendered: RenderedViews, settings: TrainingSettings,
             samples: int, problem_count: int) -> dict:
    """The learned refiner against the geometric one on samples neither trained on: median and
    mean offset error on warped photographs; mean end-to-end reprojection error on rendered scenes."""
    generator = torch.Generator().manual_seed(10**9 + settings.seed)
    geometric = CorrelationRefiner(model.geometry)
    figures = {}
    with torch.no_grad():
        query, window, offset = warp_batch(photos, model.geometry, settings, generator, samples)
        for name, refiner in (("geometric", geometric), ("learned", model)):
            error = (refiner(query, window)[0] - offset).norm(dim=1)
            figures[f"{name}_median_offset_error_px"] = round(float(error.median()), 4)
            figures[f"{name}_mean_offset_error_px"] = round(float(error.mean()), 4)
    rng = np.random.default_rng(10**9 + settings.seed)
    problems = [p for p in (track_problem(rendered, model.geometry, settings, rng) for _ in range(problem_count))
                if p is not None]
    for name, refiner in (("geometric", geometric), ("learned", model)):
        losses = []
        for problem in problems:
            generator_state = np.random.default_rng(len(losses))
            with torch.enable_grad():  # the solver's implicit step asks for it; nothing is trained here
                losses.append(float(end_to_end_loss(refiner, rendered, problem, generator_state).detach()))
        figures[f"{name}_end_to_end_error_px"] = round(float(np.mean(losses)), 4)
    coarse = [float((p.xy - p.true_xy)[p.visible].norm(dim=1).mean()) for p in problems]
    figures["coarse_track_error_px"] = round(float(np.mean(coarse)), 4)
    for name, refiner in (("geometric", geometric), ("learned", model)):
        with torch.no_grad():
            errors = [float((refine_problem(refiner, rendered, p)[0] - p.true_xy)[p.visible].norm(dim=1).mean())
                      for p in problems]
        figures[f"{name}_track_error_px"] = round(float(np.mean(errors)), 4)
    return figures


def _rendered_views(textures, seed: int) -> RenderedViews:
    """24 views of the landmark along a 240-degree arc (480 x 360), for the end-to-end stage."""
    scene = render_scene(textures, n_cameras=24, image_size=(480, 360), arc_deg=240, seed=seed + 17)
    intrinsics = torch.tensor([k[:4] for k in scene.intrinsics], dtype=torch.float64)
    poses = torch.tensor(np.array([np.concatenate([R, t[:, None]], axis=1) for R, t in scene.cam_from_world]))
    return RenderedViews(scene.landmark, [_gray(image) for image in scene.images], intrinsics, poses)


def _gray(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32).mean(axis=2) / 255.0)


def _set_learning_rate(optimizer, base: float, step: int, total: int) -> None:
    """Cosine decay over each stage, to a tenth."""
    for group in optimizer.param_groups:
        group["lr"] = base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(total, 1), 1.0))))
