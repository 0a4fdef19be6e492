"""The README's command-line examples, run as written on a fresh home.

The bash blocks of README.md's "## Command line" section are parsed here (not copied): every line
runs as a real subprocess, each block on its own fresh ``MMDEMO_HOME`` with no demo collection
built beforehand (the torchrun block so tests two processes making it at once).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mmdemo.data.store import Store
from mmdemo.settings import PROJECT_ROOT, Settings

SECTION = "## Command line"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
DEMO_PAIRS = 40
"""A small demo collection, so the examples run fast."""
TORCHRUN_DEMO_PAIRS = DEMO_PAIRS
"""The same small collection under torchrun: each of two processes has fewer training rows than
the default batch of 32, so the run must lower its batch size (DDP drops incomplete batches)."""
_PREFIXES = {
    ".venv/bin/python": [sys.executable],
    ".venv/bin/torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone"],
}


def readme_section(title: str = SECTION) -> str:
    """The text of one ``## `` section of README.md (up to the next ``## `` heading)."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + len(title) + 2)
    return text[start : end if end >= 0 else len(text)]


def bash_blocks(section: str) -> list[list[list[str]]]:
    """Each ```bash block as its commands (argv lists); comments and blank lines dropped,
    lines ending in a backslash joined."""
    blocks = []
    for language, body in _FENCE.findall(section):
        if language != "bash":
            continue
        joined = body.replace("\\\n", " ")
        commands = [shlex.split(line, comments=True) for line in joined.splitlines()]
        blocks.append([argv for argv in commands if argv])
    return blocks


BLOCKS = bash_blocks(readme_section())


def _subcommand(argv: list[str]) -> str:
    return argv[argv.index("mmdemo") + 1]


def _block_id(block: list[list[str]]) -> str:
    return "-".join(dict.fromkeys(Path(argv[0]).name + ":" + _subcommand(argv) for argv in block))


def test_the_section_has_the_examples():
    """The parsing finds the first session and the torchrun example (guards against a silent
    empty parametrisation if the README's layout changes)."""
    assert len(BLOCKS) >= 2
    commands = [_subcommand(argv) for block in BLOCKS for argv in block]
    for name in ("split", "train", "eval", "compare", "search", "export", "push"):
        assert name in commands
    assert any(argv[0].endswith("torchrun") for block in BLOCKS for argv in block)
    for block in BLOCKS:
        for argv in block:
            assert argv[0] in _PREFIXES and "mmdemo" in argv, argv


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = _PREFIXES[argv[0]] + argv[1:]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _json_lines(stdout: str) -> list[object]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith(("{", "["))]


def _check(argv: list[str], results: list, cwd: Path, home: Path, pairs: int, runs: int) -> None:
    """What each kind of command must have done, beyond exiting 0 with JSON last; ``runs`` is
    how many train lines of the block have run so far."""
    command = _subcommand(argv)
    last = results[-1]
    if command == "train":
        torchrun = argv[0].endswith("torchrun")
        nproc = int(argv[argv.index("--nproc_per_node") + 1]) if torchrun else 1
        assert len(results) == nproc, results  # every process prints its result
        assert [r["status"] for r in results] == ["finished"] * nproc
        assert len({r["run"] for r in results}) == 1  # every process trained the same run
        if "--run" in argv:
            assert last["run"] == argv[argv.index("--run") + 1]
        store = Store(Settings.from_env({"MMDEMO_HOME": str(home)}).db_path)
        try:
            assert len(store.list_runs()) == runs  # recorded once, by the main process
            (run,) = [r for r in store.list_runs() if r.name == last["run"]]
            assert run.status == "finished"
            config = json.loads((Path(run.path) / "config.json").read_text())
            assert config["world_size"] == nproc
        finally:
            store.close()
    elif command == "eval":
        for direction in ("t2i", "i2t"):
            assert 0.0 <= last[direction]["recall@1"] <= last[direction]["recall@10"] <= 1.0
    elif command == "split":
        assert last["collection"] == "demo-shapes" and last["pairs"] == pairs
    elif command == "search":
        k = int(argv[argv.index("-k") + 1]) if "-k" in argv else 10
        assert len(last) == k and {"pair_id", "score", "caption"} <= set(last[0])
    elif command == "compare":
        assert set(last["metrics"]) == {"base", "finetuned"} and last["queries"]
    elif command == "export":
        assert (cwd / argv[argv.index("--out") + 1] / "README.md").is_file()
    elif command == "push":
        folder = cwd / argv[argv.index("--dry-run") + 1]
        # Only that the files exist: what the cards say is tested in tests/test_hub.py.
        assert (folder / "model" / "README.md").is_file()
        assert (folder / "dataset" / "README.md").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[_block_id(b) for b in BLOCKS])
def test_readme_command_line_examples_on_a_fresh_home(block: list[list[str]], tmp_path: Path):
    """Every line of the block, in order, on an empty MMDEMO_HOME: exit 0, JSON last line."""
    home = tmp_path / "home"
    torchrun = any(argv[0].endswith("torchrun") for argv in block)
    pairs = TORCHRUN_DEMO_PAIRS if torchrun else DEMO_PAIRS
    env = {
        **os.environ,
        "MMDEMO_HOME": str(home),
        "MMDEMO_DEMO_PAIRS": str(pairs),
        "MMDEMO_BASE_MODEL": "tiny",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    assert not home.exists()
    runs = 0
    for argv in block:
        done = _run(argv, tmp_path, env)
        line = shlex.join(argv)
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
        results = _json_lines(done.stdout)
        assert results, f"{line}: no JSON on stdout\n{done.stdout[-2000:]}"
        assert results[-1] == json.loads(done.stdout.strip().splitlines()[-1])
        runs += _subcommand(argv) == "train"
        _check(argv, results, tmp_path, home, pairs, runs)
