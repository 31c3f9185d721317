"""The learned track refiner: its weights file, its training (checkpoint and resume), its use."""
import numpy as np
import pytest
import torch

from flows.train import partial_path, train_refiner
from sfm_core.learned_refiner import LearnedRefiner
from sfm_core.track_refinement import PatchGeometry
from storage.refiner_weights import WeightsError, load_payload, load_weights, save_weights


def test_weights_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    model = LearnedRefiner(PatchGeometry(4, 2), channels=8).eval()
    save_weights(tmp_path / "w.pt", model, {"seed": 3})
    loaded = load_weights(tmp_path / "w.pt")
    assert loaded.geometry == model.geometry and loaded.channels == 8
    query, window = torch.rand(5, 9, 9), torch.rand(5, 13, 13)
    with torch.no_grad():
        for a, b in zip(model(query, window), loaded(query, window)):
            torch.testing.assert_close(a, b)
    assert load_payload(tmp_path / "w.pt")["training"] == {"seed": 3}

    (tmp_path / "junk.pt").write_bytes(b"not a weights file")
    with pytest.raises(WeightsError, match="junk.pt: not a weights file"):
        load_weights(tmp_path / "junk.pt")
    with pytest.raises(WeightsError, match="missing.pt: no such file"):
        load_weights(tmp_path / "missing.pt")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="other.pt: not a landmark-sfm track refiner file"):
        load_weights(tmp_path / "other.pt")


def test_outputs_have_the_refiner_shapes():
    model = LearnedRefiner()
    g = model.geometry
    offset, confidence = model(torch.rand(7, g.patch_size, g.patch_size), torch.rand(7, g.window_size, g.window_size))
    assert offset.shape == (7, 2) and confidence.shape == (7,)
    assert (offset.abs() <= g.search_radius).all() and ((confidence >= 0) & (confidence <= 1)).all()


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few steps of training, interrupted once and resumed: the weights and what was said."""
    out = tmp_path_factory.mktemp("training") / "refiner.pt"
    said = []

    def interrupt_at_the_first_report(line: str) -> None:
        said.append(line)
        if len(said) == 1:
            raise Interrupted(line)

    with pytest.raises(Interrupted):
        train_refiner(str(out), offset_steps=3, end_to_end_steps=2, checkpoint_s=0,
                      report=interrupt_at_the_first_report, evaluation_samples=200, evaluation_problems=2)
    assert partial_path(out).exists() and not out.exists()
    figures = train_refiner(str(out), offset_steps=3, end_to_end_steps=2, resume=True, checkpoint_s=0,
                            report=said.append, evaluation_samples=200, evaluation_problems=2)
    return out, said, figures


@pytest.mark.slow
def test_training_checkpoints_resumes_and_writes_weights_with_its_settings(trained):
    out, said, figures = trained
    # Interrupted at the end of the first stage's last step, before its checkpoint: two steps were kept.
    assert said[0].startswith("offsets: step 3/3")
    assert said[1] == "resuming at offsets step 2 (" + said[1].split("(", 1)[1]
    assert any(line.startswith("end-to-end: step 2/2") for line in said)
    assert out.exists() and not partial_path(out).exists()
    training = load_payload(out)["training"]
    assert training["offset_steps"] == 3 and training["batch"] == 256 and training["seed"] == 0
    for name in ("geometric", "learned"):
        assert np.isfinite(figures[f"{name}_median_offset_error_px"])
        assert np.isfinite(figures[f"{name}_end_to_end_error_px"])
    load_weights(out)


@pytest.mark.slow
def test_the_flow_refines_tracks_with_learned_weights(trained, tmp_path, prefect_api):
    from flows.reconstruct import reconstruct
    from local_prefect import write_small_scene

    out, _, _ = trained
    images = write_small_scene(tmp_path / "scene")  # 8 photos and a text file
    report = reconstruct(str(images), str(tmp_path / "run"), refiner_weights=str(out))
    assert report["settings"]["track_refinement"] == "learned"
    assert report["stages"]["tracks"]["observations_moved"] > 0
    assert report["totals"]["registered"] >= 7
