"""A dry run of a real finished run is something a stranger on the Hub can use as published.

One real finetune of the tiny CLIP on a small demo collection (with labels, duplicate eval
captions and a caption full of Markdown), one dry-run push; then the files are read and used the
way someone on the Hub would: no server path in any file, every declared dataset config loads,
the card's usage snippet runs, and its evaluation snippet gives exactly the card's numbers. Only
the Hub's network is faked (``hf_hub_download`` reads the local folder).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import io
import logging
import re
import tempfile
from pathlib import Path

import pytest

from mmdemo.data.demo import DEMO_COLLECTION, ensure_demo_collection
from mmdemo.data.splits import make_splits
from mmdemo.data.store import Store
from mmdemo.hub.cards import _cell, split_front_matter
from mmdemo.hub.publish import push_command
from mmdemo.settings import Settings
from mmdemo.training.run import default_config, run_training

MODEL_REPO = "alice/shapes-clip"
DATASET_REPO = "alice/shapes"
HOSTILE = "a `code` | [link](x) caption with a ``` fence"
TABLE_ROW = re.compile(r"^\| (text → image|image → text) \| (\S+) \| (\S+) \| (\S+) \|", re.M)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, tiny_clip_dir: Path) -> dict:
    root = tmp_path_factory.mktemp("published")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(root / "home"), "MMDEMO_DEMO_PAIRS": "60", "MMDEMO_BASE_MODEL": "tiny"}
    )
    settings.ensure_dirs()
    store = Store(settings.db_path, settings.max_caption_chars)
    try:
        demo = ensure_demo_collection(store, settings)
        make_splits(store, demo.id, eval_share=0.3, seed=1)
        train = store.list_pairs(demo.id, split="train")
        evals = store.list_pairs(demo.id, split="eval")
        # Two eval pairs with one caption: identical captions are relevant to each other's images.
        store.update_pair(evals[1].id, caption=evals[0].caption)
        store.update_pair(evals[2].id, caption=HOSTILE)
        store.add_label(train[0].id, "negative", negative_sha256=train[1].image_sha256)
        store.add_label(train[0].id, "negative", negative_caption="a purple moon", author="bob")
        store.add_label(train[2].id, "also-positive", negative_sha256=train[3].image_sha256)
        config = dataclasses.replace(default_config(True), epochs=2)
        warnings = _Collect()
        logging.getLogger("sentence_transformers").addHandler(warnings)
        try:
            result = run_training(
                store,
                settings,
                DEMO_COLLECTION,
                config,
                run_name="run-1",
                base_model=str(tiny_clip_dir),
            )
        finally:
            logging.getLogger("sentence_transformers").removeHandler(warnings)
        assert result.status == "finished", result.message
    finally:
        store.close()
    out = root / "dry"
    push_command(settings, "run-1", MODEL_REPO, DATASET_REPO, None, False, out)
    return {
        "settings": settings,
        "out": out,
        "tiny": tiny_clip_dir,
        "root": root,
        "log": warnings.messages,
    }


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_saving_the_run_logs_no_card_error(published: dict):
    """sentence-transformers encodes its card's usage examples on save: they must be encodable."""
    assert not [m for m in published["log"] if "usage snippet" in m or "modalities" in m]


def _card(published: dict) -> str:
    return (published["out"] / "model" / "README.md").read_text(encoding="utf-8")


def _python_block_after(card: str, heading: str) -> str:
    start = card.index(heading)
    match = re.search(r"^(`{3,})python\n(.*?)^\1$", card[start:], re.S | re.M)
    assert match, f"no python block after {heading!r}"
    return match.group(2)


def _run(code: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<card snippet>", "exec"), {"__name__": "__card__"})  # noqa: S102
    return out.getvalue()


def _table(card: str) -> dict[tuple[str, str], tuple[str, str]]:
    """``{(direction, metric): (base, finetuned)}`` of the card's evaluation table."""
    section = card[card.index("### Evaluation") : card.index("#### Reproduce")]
    return {(d, m): (b, f) for d, m, b, f in TABLE_ROW.findall(section)}


def test_no_file_names_a_path_of_the_server(published: dict):
    home = str(published["settings"].home).encode()
    forbidden = [home, str(published["root"]).encode(), (tempfile.gettempdir() + "/").encode()]
    files = [p for p in published["out"].rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        data = path.read_bytes()
        leaked = [f.decode() for f in forbidden if f in data]
        assert not leaked, f"{path.relative_to(published['out'])} names {leaked}"
    card = _card(published)
    assert "tiny-clip`" not in card and "models/" not in card
    assert "mmdemo's built-in tiny CLIP" in card


def test_card_metadata_widget_and_examples_use_eval_files_inside_the_repo(published: dict):
    meta, body = split_front_matter(_card(published))
    assert "base_model" not in meta, "the tiny CLIP has no Hub id"
    assert meta["datasets"] == [DATASET_REPO]
    widget = meta["widget"][0]
    model_dir = published["out"] / "model"
    assert all((model_dir / name).is_file() for name in widget["sentences"])
    settings = published["settings"]
    store = Store(settings.db_path)
    try:
        eval_captions = {
            p.caption for p in store.list_pairs(store.collection(DEMO_COLLECTION).id, split="eval")
        }
    finally:
        store.close()
    examples = re.findall(r"^\| !\[[^\]]*\]\((assets/[^)]+)\) \| (.*) \|$", body, re.M)
    assert examples and all((model_dir / path).is_file() for path, _ in examples)
    assert widget["source_sentence"] in eval_captions
    assert 0 < len(examples) <= 4
    assert {caption for _, caption in examples} <= {_cell(c) for c in eval_captions}


def test_every_declared_dataset_config_loads(published: dict):
    from datasets import load_dataset

    folder = published["out"] / "dataset"
    meta, _ = split_front_matter((folder / "README.md").read_text(encoding="utf-8"))
    names = [c["config_name"] for c in meta["configs"]]
    assert names == ["pairs", "triplets", "also_positive"]
    for name in names:
        loaded = load_dataset(str(folder), name)
        assert sum(len(split) for split in loaded.values()) > 0, name
    triplets = load_dataset(str(folder), "triplets", split="train")
    assert set(triplets["negative_caption"]) == {"a purple moon", None}


def test_the_usage_snippet_runs_as_written_once_pushed(published: dict, monkeypatch):
    import huggingface_hub

    model_dir = published["out"] / "model"

    def from_the_pushed_repo(repo_id: str, filename: str, **_: object) -> str:
        assert repo_id == str(model_dir)
        return str(model_dir / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", from_the_pushed_repo)
    code = _python_block_after(_card(published), "### Usage")
    assert f'"{MODEL_REPO}"' in code and not re.search(r"[\"']/", code), "no absolute path"
    printed = _run(code.replace(f'"{MODEL_REPO}"', repr(str(model_dir))))
    assert "tensor(" in printed and printed.count("[") >= 4, printed


def test_the_evaluation_snippet_reproduces_the_card_numbers(published: dict):
    card = _card(published)
    table = _table(card)
    code = _python_block_after(card, "#### Reproduce these numbers")
    assert f'SentenceTransformer("{MODEL_REPO}")' in code
    assert f'load_dataset("{DATASET_REPO}", "pairs", split="eval")' in code
    local = code.replace(f'"{DATASET_REPO}"', repr(str(published["out"] / "dataset")))
    columns = {
        1: str(published["out"] / "model"),  # the published model: the finetuned column
        0: str(published["tiny"]),  # the run's base model: the base column
    }
    checked = 0
    for column, model in columns.items():
        printed = _run(local.replace(f'"{MODEL_REPO}"', repr(model)))
        results = {
            line.split(" ", 1)[0]: ast.literal_eval(line.split(" ", 1)[1])
            for line in printed.splitlines()
            if line.startswith(("t2i ", "i2t "))
        }
        for direction, label in (("t2i", "text → image"), ("i2t", "image → text")):
            for metric in ("accuracy@1", "accuracy@5", "accuracy@10", "mrr@10", "ndcg@10"):
                assert table[(label, metric)][column] == f"{results[direction][metric]:.4f}", (
                    label,
                    metric,
                    column,
                )
                checked += 1
    assert checked == 20
    queries = table[("text → image", "queries")][1]
    images = table[("image → text", "queries")][1]
    assert int(queries) == int(images) - 1, "two eval pairs share one caption"
