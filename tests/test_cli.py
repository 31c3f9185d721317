"""What a person at a terminal sees from `landmark-sfm`: no C++ log lines of COLMAP or Ceres
unless asked (--verbose), one line per stage with its seconds, a closing summary with the
verdict and the model's path, eval's table, and an example in every --help."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import build_parser, format_summary, main
from local_prefect import prefect_server
from sfm_core.ba_problems import synthetic_reconstruction
from sfm_core.synthetic import render_scene
from storage.synthetic_io import load_package_textures, write_scene

# A glog line: severity, date, time, thread id, file:line]
GLOG_LINE = re.compile(r"^[IWEF]\d{8} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.MULTILINE)
RUN_S = 420  # one small run: about 40 s on 2 idle cores, far more when they are busy
COLLECTION_STAGES = ("ingest", "features", "matching", "chunking", "merge", "export")
CHUNK_STAGES = ("tracks", "cameras", "triangulation", "bundle-adjustment")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One Prefect server for this module's runs: each CLI run would otherwise start its own."""
    with prefect_server(tmp_path_factory.mktemp("prefect"), ui=False) as (api, env):
        # The CLI's own defaults, not the ones this test session set for itself.
        yield {key: value for key, value in env.items() if not key.startswith("GLOG_")}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scene")
    write_scene(render_scene(load_package_textures(), n_cameras=10, image_size=(320, 240), arc_deg=120), root)
    return root / "images"


def landmark_sfm(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], env=env, capture_output=True, text=True,
                          timeout=RUN_S)


@pytest.fixture(scope="module")
def chunked_run(server, photos, tmp_path_factory):
    """A run cut into chunks of 8, so the chunks' stages run in Dask worker processes."""
    out = tmp_path_factory.mktemp("chunked")
    result = landmark_sfm(server, "run", str(photos), "--out", str(out), "--chunk-size", "8")
    assert result.returncode == 0, result.stderr[-4000:]
    return out, result


def test_a_run_prints_no_colmap_log_lines(chunked_run):
    out, result = chunked_run
    assert json.loads((out / "report.json").read_text())["totals"]["chunks"] >= 2  # Dask workers ran chunks
    printed = result.stdout + result.stderr
    assert not GLOG_LINE.findall(printed), "C++ log lines reached the terminal:\n" + "\n".join(
        line for line in printed.splitlines() if GLOG_LINE.match(line))


def test_each_stage_ends_with_one_line_and_its_seconds(chunked_run):
    out, result = chunked_run
    printed = result.stdout + result.stderr
    for stage in COLLECTION_STAGES:
        assert len(re.findall(rf"- {stage}: .*\(\d+\.\d s\)$", printed, re.MULTILINE)) == 1, stage
    chunks = json.loads((out / "report.json").read_text())["totals"]["chunks"]
    for stage in CHUNK_STAGES:  # logged in the Dask workers, one line per chunk
        assert len(re.findall(rf"- {stage} chunk-\d+\b.*\(\d+\.\d s\)$", printed, re.MULTILINE)) == chunks, stage


def test_the_summary_names_the_verdict_and_the_model(chunked_run):
    out, result = chunked_run
    report = json.loads((out / "report.json").read_text())
    lines = result.stdout.splitlines()
    assert f"model: {out.resolve()}/sparse/0" in lines
    assert any(line.startswith(f"verdict: {report['verdict']['status']}") for line in lines)


def test_verbose_brings_the_colmap_log_lines_back(server, photos, tmp_path):
    result = landmark_sfm(server, "run", str(photos), "--out", str(tmp_path / "out"), "--verbose")
    assert result.returncode == 0, result.stderr[-4000:]
    severities = {line[0] for line in GLOG_LINE.findall(result.stdout + result.stderr)}
    assert "I" in severities  # INFO lines too, not only warnings


REPORT = {
    "output": "s3://bucket/runs/tonight",
    "stages": {"ingest": {"seconds": 0.1}, "features": {"seconds": 4.12}},
    "totals": {"images": 9, "left_out": 1, "registered": 9, "models": 1, "points": 1500,
               "mean_reprojection_error_px": 0.41, "seconds": 12.0},
}


def test_summary_of_a_suspect_run_gives_its_reasons():
    report = {**REPORT, "verdict": {"status": "suspect", "reasons": ["mean track length 2.07 < 2.5",
                                                                     "2 of 9 poses not determined"]}}
    lines = format_summary(report).splitlines()
    assert "verdict: suspect (mean track length 2.07 < 2.5; 2 of 9 poses not determined)" in lines
    assert "model: s3://bucket/runs/tonight/sparse/0" in lines


def test_summary_of_a_good_run_and_of_one_without_verdict_or_model():
    assert "verdict: ok" in format_summary({**REPORT, "verdict": {"status": "ok", "reasons": []}}).splitlines()
    older = format_summary({**REPORT, "output": "/data/out", "totals": {**REPORT["totals"], "models": 0}})
    assert not any(line.startswith("verdict:") for line in older.splitlines())
    assert "model: none" in older.splitlines()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A binary model and its reference as text: the same 8 cameras."""
    root = tmp_path_factory.mktemp("models")
    rec = synthetic_reconstruction(8, 60, pixel_noise=0.0, outlier_fraction=0.0)
    (root / "model").mkdir()
    (root / "truth").mkdir()
    rec.write_binary(str(root / "model"))
    rec.write_text(str(root / "truth"))
    return root / "model", root / "truth"


def test_eval_prints_a_table_by_default_and_json_when_asked(models, capsys):
    model, truth = models
    assert main(["eval", str(model), str(truth), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert main(["eval", str(model), str(truth)]) == 0
    table = capsys.readouterr().out
    rows = dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in table.splitlines())
    assert rows["registered"] == f"{metrics['registered']} of {metrics['reference_images']} reference images"
    for threshold in (3, 5, 10, 30):
        assert float(rows[f"pose auc@{threshold}"]) == pytest.approx(metrics[f"auc@{threshold}"], abs=1e-4)
    assert rows["median centre error"].startswith(f"{metrics['median_center_error']:.4g}")
    assert float(rows["median centre error / extent"]) == pytest.approx(metrics["median_center_error_rel"], abs=1e-4)
    values = [line.split("  ")[-1].strip() for line in table.splitlines()]
    columns = {line.index(value) for line, value in zip(table.splitlines(), values)}
    assert len(columns) == 1  # aligned


def test_every_command_has_a_one_line_summary_and_an_example(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in [(None, parser), *commands.items()]:
        with pytest.raises(SystemExit):
            parser.parse_args(["--help"] if name is None else [name, "--help"])
        text = capsys.readouterr().out
        assert re.search(rf"^examples?:\n  landmark-sfm {name or ''}", text, re.MULTILINE), text
        if name is not None:
            assert command.description and "\n" not in command.description


def test_transitive_rounds_reach_the_settings_and_a_bad_count_is_refused(capsys):
    from flows.cli import _flow_kwargs
    parser = build_parser()
    assert _flow_kwargs(parser.parse_args(["run", "photos", "--out", "out"]))["transitive_rounds"] == 2
    assert _flow_kwargs(parser.parse_args(["run", "photos", "--out", "out", "--transitive-rounds", "0"]))[
        "transitive_rounds"] == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "photos", "--out", "out", "--transitive-rounds", "-1"])
    assert "'-1' is not a number of rounds" in capsys.readouterr().err
