"""The README's commands run as written from a fresh clone.

Its fenced blocks marked ```sh are quick and need nothing but `make setup`: each is run here,
line by line, from the repository root. The other blocks (```console: a server, a bucket, a
GPU, your own photos) cannot run here; their `landmark-sfm` commands are still checked
against the command line's parser, so an option renamed in the code fails this test.
"""
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from flows.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_README_LINES = 260  # a newcomer reads it in five minutes
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def command_lines(body: str) -> list[str]:
    """The commands of a block: continuation lines joined, comments and blank lines dropped."""
    joined = body.replace("\\\n", " ")
    lines = [line.split("  #", 1)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def landmark_sfm_arguments(line: str) -> list[str] | None:
    """The arguments after `landmark-sfm` in a command line, or None if it does not call it."""
    words = shlex.split(line)
    for index, word in enumerate(words):
        if word.endswith("landmark-sfm"):
            return words[index + 1:]
    return None


def test_the_readme_is_short():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; measurements go to docs/benchmarks.md"


def test_every_landmark_sfm_command_parses():
    parser = build_parser()
    checked = 0
    for info, body in fenced_blocks(README.read_text(encoding="utf-8")):
        for line in command_lines(body):
            arguments = landmark_sfm_arguments(line)
            if arguments is None or not arguments:
                continue
            try:
                parser.parse_args(arguments)
            except SystemExit as exit_:
                if exit_.code != 0 or "--help" not in arguments:
                    pytest.fail(f"README command does not parse: {line}")
            checked += 1
    assert checked >= 5, "the README shows how to run the pipeline"


@pytest.mark.parametrize("line", [line for info, body in fenced_blocks(README.read_text(encoding="utf-8"))
                                  if info == "sh" for line in command_lines(body)])
def test_quick_readme_commands_run(line, tmp_path):
    if not (ROOT / ".venv" / "bin" / "landmark-sfm").exists():
        pytest.skip("run `make setup` first")
    done = subprocess.run(["bash", "-c", line], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
