"""The command line: last stdout line is JSON, failures exit non-zero with one line on stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmdemo.cli import main
from mmdemo.settings import PROJECT_ROOT
from tests.conftest import make_image_bytes


def run_cli(capsys, *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    payload = json.loads(lines[-1]) if code == 0 and lines else None
    return code, payload, captured.err


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("MMDEMO_BASE_MODEL", "tiny")
    monkeypatch.setenv("MMDEMO_DEMO_PAIRS", "40")
    return tmp_path / "home"


def make_imagefolder_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        rows = []
        colours = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (200, 200, 30)]
        for i, colour in enumerate(colours):
            name = f"img{i}.png"
            archive.writestr(name, make_image_bytes(colour))
            split = "eval" if i == 3 else "train"
            rows.append({"file_name": name, "caption": f"a swatch number {i}", "split": split})
        archive.writestr("broken.png", b"not really a png")
        rows.append({"file_name": "broken.png", "caption": "broken"})
        archive.writestr("metadata.jsonl", "\n".join(json.dumps(r) for r in rows))
    return path


def test_import_collections_export_round_trip(capsys, home: Path, tmp_path: Path):
    source = make_imagefolder_zip(tmp_path / "pairs.zip")
    code, report, err = run_cli(
        capsys, "--home", str(home), "import", str(source), "--collection", "swatches"
    )
    assert code == 0, err
    assert report["added"] == 4 and report["duplicates"] == 0
    assert [r["item"] for r in report["rejected"]] == ["broken.png"]
    assert "not an image" in report["rejected"][0]["reason"]

    code, again, _ = run_cli(
        capsys, "--home", str(home), "import", str(source), "--collection", "swatches"
    )
    assert code == 0 and again["added"] == 0 and again["duplicates"] == 4

    code, listing, _ = run_cli(capsys, "--home", str(home), "collections")
    assert code == 0
    (swatches,) = [c for c in listing["collections"] if c["name"] == "swatches"]
    assert swatches["pairs"] == 4 and swatches["splits"]["eval"] == 1

    out = tmp_path / "export"
    code, summary, err = run_cli(
        capsys, "--home", str(home), "export", "--collection", "swatches", "--out", str(out)
    )
    assert code == 0, err
    assert (out / "README.md").is_file()
    code, back, err = run_cli(
        capsys, "--home", str(home), "import", str(out), "--collection", "swatches-again"
    )
    assert code == 0, err
    assert back["added"] == 4 and back["rejected"] == []


def test_failures_exit_nonzero_with_one_line_reason(capsys, home: Path, tmp_path: Path):
    code, _, err = run_cli(
        capsys, "--home", str(home), "import", str(tmp_path / "missing"), "--collection", "x"
    )
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "not found" in err
    code, _, err = run_cli(
        capsys, "--home", str(home), "export", "--collection", "nope", "--out", str(tmp_path / "o")
    )
    assert code == 1 and "nope" in err
    code, _, err = run_cli(capsys, "--home", str(home), "push", "--run", "r", "--repo", "bad name")
    assert code == 1 and len(err.strip().splitlines()) == 1


def test_eval_and_search_on_the_demo_collection_of_a_fresh_home(capsys, home: Path):
    """`eval` on an empty home makes the demo collection first (progress on stderr), as the
    app does; `search` then finds it made."""
    assert not home.exists()
    code, metrics, err = run_cli(
        capsys, "--home", str(home), "eval", "--collection", "demo-shapes", "--model", "base"
    )
    assert code == 0, err
    assert "demo: creating 'demo-shapes'" in err and "demo: 40/40" in err
    assert metrics["collection"] == "demo-shapes"
    for direction in ("t2i", "i2t"):
        assert set(metrics[direction]) >= {"recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"}
        assert 0.0 <= metrics[direction]["recall@1"] <= metrics[direction]["recall@10"] <= 1.0
    code, hits, err = run_cli(
        capsys,
        "--home",
        str(home),
        "search",
        "--collection",
        "demo-shapes",
        "--query",
        "a red circle above a blue square",
        "-k",
        "5",
    )
    assert code == 0, err
    assert "demo:" not in err  # made once
    assert len(hits) == 5 and {"pair_id", "score", "caption"} <= set(hits[0])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_python_dash_m_entry_point(tmp_path: Path):
    """The real `python -m mmdemo` process: JSON on the last stdout line, exit codes."""
    env = {**os.environ, "MMDEMO_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    ok = subprocess.run(
        [sys.executable, "-m", "mmdemo", "collections"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1]) == {"collections": []}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mmdemo",
            "export",
            "--collection",
            "nope",
            "--out",
            str(tmp_path / "x"),
        ],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip().startswith("mmdemo export:")


def test_read_only_commands_leave_a_running_run_alone(capsys, home: Path):
    """`eval`/`search` beside an app that is training must not mark its run interrupted."""
    from mmdemo.services import Services
    from mmdemo.settings import Settings

    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_DEMO_PAIRS": "40", "MMDEMO_BASE_MODEL": "tiny"}
    )
    services = Services.create(settings)
    services.store.create_run("busy", None, "tiny", str(home / "runs" / "busy"), status="running")
    code, _, err = run_cli(capsys, "--home", str(home), "eval", "--collection", "demo-shapes")
    assert code == 0, err
    assert services.store.get_run("busy").status == "running"
    services.close()


def test_split_command_on_a_fresh_home(capsys, home: Path):
    """`split` builds the demo collection on a fresh home, prints a JSON summary, and is
    deterministic: the same seed again changes nothing."""
    argv = ["--home", str(home), "split", "--collection", "demo-shapes"]
    code, summary, err = run_cli(capsys, *argv, "--eval", "0.25", "--test", "0.1", "--seed", "1")
    assert code == 0, err
    assert summary["collection"] == "demo-shapes" and summary["pairs"] == 40
    assert summary["after"] == {"train": 26, "eval": 10, "test": 4}
    assert summary["groups"] == 40 and summary["crossing_groups"] == 0
    assert summary["eval_share"] == 0.25 and summary["seed"] == 1
    assert "eval 10 · test 4 · train 26" in err
    code, again, err = run_cli(capsys, *argv, "--eval", "0.25", "--test", "0.1", "--seed", "1")
    assert code == 0, err
    assert again["changed"] == 0 and again["after"] == summary["after"]
    code, listing, _ = run_cli(capsys, "--home", str(home), "collections")
    assert listing["collections"][0]["splits"] == summary["after"]


def test_split_command_failures_are_one_line(capsys, home: Path):
    code, _, err = run_cli(capsys, "--home", str(home), "split", "--collection", "nope")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "nope" in err
    code, _, err = run_cli(
        capsys,
        "--home",
        str(home),
        "split",
        "--collection",
        "demo-shapes",
        "--eval",
        "0.7",
        "--test",
        "0.3",
    )
    assert code == 1 and err.strip().splitlines()[-1].startswith("mmdemo split:")
    assert "must leave pairs for training" in err


@pytest.mark.parametrize("command", ["export", "import"])
def test_commands_naming_the_demo_make_it_first(capsys, home: Path, tmp_path: Path, command):
    """`export` and `import` (as every command with --collection) name the demo on a fresh home:
    it is made first, then the command does its work on it."""
    if command == "export":
        out = tmp_path / "exported"
        argv = ["export", "--collection", "demo-shapes", "--out", str(out)]
    else:
        argv = ["import", str(make_imagefolder_zip(tmp_path / "p.zip")), "--collection"]
        argv.append("demo-shapes")
    code, result, err = run_cli(capsys, "--home", str(home), *argv)
    assert code == 0, err
    assert "demo: 40/40" in err
    code, listing, _ = run_cli(capsys, "--home", str(home), "collections")
    (demo,) = listing["collections"]
    assert demo["name"] == "demo-shapes"
    if command == "export":
        assert (out / "README.md").is_file()
    else:
        assert result["added"] == 4 and demo["pairs"] == 44


def test_other_collections_are_not_made_and_the_demo_only_when_named(capsys, home: Path):
    code, _, err = run_cli(capsys, "--home", str(home), "eval", "--collection", "demo-shape")
    assert code == 1 and "demo-shape" in err and "demo:" not in err
    code, listing, _ = run_cli(capsys, "--home", str(home), "collections")
    assert code == 0 and listing == {"collections": []}
