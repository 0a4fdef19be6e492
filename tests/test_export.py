"""The exporter: a collection becomes a folder that ``datasets.load_dataset`` reads back."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mmdemo.data import export
from mmdemo.data.export import (
    CONFIG_NAMES,
    ExportError,
    card_config_names,
    export_collection,
    is_mmdemo_export,
    read_card_metadata,
    render_dataset_card,
)
from mmdemo.data.images import image_path
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.store import Pair, Store
from tests.conftest import make_image_bytes

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200),
          (200, 30, 200), (120, 120, 120)]  # fmt: skip


def build_labeled_collection(store, settings, name: str = "demo") -> dict:  # noqa: ANN001
    """Six live pairs (4 train, 2 eval), one deleted pair and five labels of every kind."""
    coll = store.create_collection(name)
    report = ImportReport(collection=name)
    pairs = []
    for i, color in enumerate(COLORS):
        split = "eval" if i in (4, 5) else "train"
        data = make_image_bytes(color, size=(40 + i, 32), fmt="JPEG" if i == 2 else "PNG")
        pair = ingest_item(
            store, settings, coll.id, report, f"img{i}", data, f"picture number {i}", split,
            author="ann" if i % 2 else "bob",
        )  # fmt: skip
        pairs.append(pair)
    # An image that is no pair of this collection, used as a negative.
    other = store.create_collection(f"{name}-other")
    stray = ingest_item(
        store, settings, other.id, report, "stray", make_image_bytes((9, 9, 9)), "stray image"
    )
    store.add_label(pairs[0].id, "negative", negative_sha256=pairs[1].image_sha256, author="ann")
    store.add_label(pairs[0].id, "negative", negative_caption="a blue square", author="bob")
    store.add_label(pairs[1].id, "negative", negative_sha256=stray.image_sha256, author="cy")
    store.add_label(pairs[4].id, "negative", negative_sha256=pairs[5].image_sha256, author="ann")
    store.add_label(pairs[2].id, "also-positive", negative_sha256=pairs[3].image_sha256)
    store.add_label(pairs[3].id, "also-positive", negative_caption="yellow thing", author="bob")
    # A label on a deleted pair must not be exported.
    store.add_label(pairs[6].id, "negative", negative_sha256=pairs[0].image_sha256)
    store.delete_pair(pairs[6].id)
    return {"collection": coll, "pairs": pairs[:6], "stray": stray, "report": report}


def _add_pairs(store: Store, settings, name: str, splits: list[str]) -> list[Pair]:  # noqa: ANN001
    """A new collection ``name`` with one pair per entry of ``splits`` (authors alternate)."""
    coll = store.create_collection(name)
    report = ImportReport(collection=name)
    return [
        ingest_item(
            store,
            settings,
            coll.id,
            report,
            f"{name}{i}",
            make_image_bytes(COLORS[i], (30 + i, 20)),
            f"{name} picture {i}",
            split,
            author=("ann", "bob", None)[i % 3],
        )  # fmt: skip
        for i, split in enumerate(splits)
    ]


def build_unlabeled(store: Store, settings, name: str) -> dict:  # noqa: ANN001
    """Three pairs (train and test) and no labels at all."""
    _add_pairs(store, settings, name, ["train", "train", "test"])
    return {"pairs": {"train": 2, "test": 1}}


def build_image_negatives(store: Store, settings, name: str) -> dict:  # noqa: ANN001
    """Four pairs (train and eval) with two image negatives and nothing else."""
    pairs = _add_pairs(store, settings, name, ["train", "train", "train", "eval"])
    store.add_label(pairs[0].id, "negative", negative_sha256=pairs[1].image_sha256, author="cy")
    store.add_label(pairs[3].id, "negative", negative_sha256=pairs[2].image_sha256)
    return {"pairs": {"train": 3, "eval": 1}, "triplets": {"train": 1, "eval": 1}}


def build_everything(store: Store, settings, name: str) -> dict:  # noqa: ANN001
    """Six pairs in all three splits; caption and image negatives; image and caption
    also-positives."""
    pairs = _add_pairs(store, settings, name, ["train", "train", "eval", "eval", "test", "test"])
    sha = [p.image_sha256 for p in pairs]
    store.add_label(pairs[0].id, "negative", negative_caption="a green blob", author="ann")
    store.add_label(pairs[2].id, "negative", negative_sha256=sha[3], author="bob")
    store.add_label(pairs[4].id, "negative", negative_caption="nothing like it")
    store.add_label(pairs[1].id, "also-positive", negative_sha256=sha[0], author="cy")
    store.add_label(pairs[5].id, "also-positive", negative_caption="a purple patch", author="ann")
    return {
        "pairs": {"train": 2, "eval": 2, "test": 2},
        "triplets": {"train": 1, "eval": 1, "test": 1},
        "also_positive": {"train": 1, "test": 1},
    }


COLLECTIONS = {
    "unlabeled": build_unlabeled,
    "image-negatives": build_image_negatives,
    "everything": build_everything,
}
"""Collections whose exports declare different configs; each builder returns the rows per
declared config and split."""


def usage_snippet(card: str) -> str:
    """The Python block under the card's ``## Usage`` heading."""
    usage = card.split("## Usage", 1)[1]
    return usage.split("```python\n", 1)[1].split("```", 1)[0]


def _load(folder: Path, config: str, tmp_path: Path) -> datasets.DatasetDict:
    return datasets.load_dataset(str(folder), config, cache_dir=str(tmp_path / "hf-cache"))


def test_export_loads_with_datasets(store, settings, tmp_path, monkeypatch):
    built = build_labeled_collection(store, settings)
    monkeypatch.setattr(export, "ROW_GROUP_SIZE", 3)  # several row groups per file
    calls = []
    out = tmp_path / "export"
    summary = export_collection(
        store, settings, "demo", out, progress=lambda d, t, m: calls.append((d, t))
    )

    assert summary.pairs == {"train": 4, "eval": 2}
    assert (summary.image_negatives, summary.caption_negatives) == (3, 1)
    assert summary.also_positives == 2
    assert summary.authors == 3
    assert summary.skipped == []
    assert calls[-1] == (12, 12) and len(calls) == 12
    assert not out.with_name("export.partial").exists()
    assert is_mmdemo_export(out)

    (train_file,) = (out / "pairs").glob("train-*.parquet")
    assert pq.ParquetFile(train_file).metadata.num_row_groups == 2
    pairs = _load(out, "pairs", tmp_path)
    assert set(pairs) == {"train", "eval"}
    assert pairs["train"].column_names[:2] == ["image", "caption"]
    assert {"pair_id", "image_sha256", "author", "created_at", "updated_at"} <= set(
        pairs["train"].column_names
    )
    by_sha = {p.image_sha256: p for p in built["pairs"]}
    for split in ("train", "eval"):
        for row in pairs[split]:
            assert isinstance(row["image"], Image.Image)
            pair = by_sha[row["image_sha256"]]
            assert (row["caption"], row["pair_id"], pair.split) == (pair.caption, pair.id, split)
            info = store.image_info(pair.image_sha256)
            assert row["image"].size == (info["width"], info["height"])
            assert row["created_at"].timestamp() == pytest.approx(pair.created_at, abs=0.01)
    jpeg_row = next(r for r in pairs["train"] if r["caption"] == "picture number 2")
    assert jpeg_row["image"].format == "JPEG"

    default = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    assert default["train"].num_rows == 4

    trip = _load(out, "triplets", tmp_path)
    assert trip["train"].column_names[:3] == ["anchor", "positive", "negative"]
    assert (trip["train"].num_rows, trip["eval"].num_rows) == (3, 1)
    rows = list(trip["train"])
    caption_rows = [r for r in rows if r["negative_caption"] is not None]
    assert len(caption_rows) == 1
    assert caption_rows[0]["negative"] is None
    assert caption_rows[0]["negative_caption"] == "a blue square"
    assert caption_rows[0]["anchor"] == "picture number 0"
    assert caption_rows[0]["author"] == "bob"
    for row in rows:
        assert isinstance(row["positive"], Image.Image)
        assert row["split"] == "train"
        if row["negative_caption"] is None:
            assert isinstance(row["negative"], Image.Image)
    assert {r["negative_sha256"] for r in rows} == {
        built["pairs"][1].image_sha256,
        built["stray"].image_sha256,
        None,
    }
    assert list(trip["eval"])[0]["negative_sha256"] == built["pairs"][5].image_sha256

    also = _load(out, "also_positive", tmp_path)["train"]
    assert also.num_rows == 2
    image_row = next(r for r in also if r["also_positive_caption"] is None)
    assert isinstance(image_row["also_positive"], Image.Image)
    assert image_row["also_positive_sha256"] == built["pairs"][3].image_sha256


def test_dataset_card(store, settings, tmp_path):
    build_labeled_collection(store, settings)
    out = tmp_path / "export"
    export_collection(store, settings, "demo", out)
    meta = read_card_metadata(out)
    assert meta["license"] == "other"
    assert {"mmdemo", "clip", "hard-negatives"} <= set(meta["tags"])
    assert "sentence-similarity" in meta["task_categories"]
    configs = {c["config_name"]: c for c in meta["configs"]}
    assert set(configs) == {"pairs", "triplets", "also_positive"}
    assert configs["pairs"]["default"] is True
    paths = {f["split"]: f["path"] for f in configs["pairs"]["data_files"]}
    assert set(paths) == {"train", "eval"}
    assert all(re.fullmatch(rf"pairs/{s}-[0-9a-f]{{12}}\.parquet", p) for s, p in paths.items())
    for entry in meta["configs"]:
        for data_file in entry["data_files"]:
            assert (out / data_file["path"]).is_file()
    body = (out / "README.md").read_text(encoding="utf-8")
    assert "| train | 4 | 3 | 2 |" in body
    assert "| eval | 2 | 1 | 0 |" in body
    assert "hard negatives: 4 (3 image and 1 caption negatives)" in body
    assert "distinct labelers (pair and label authors): 3" in body
    assert 'load_dataset("path/to/this/folder", "triplets")' in body
    assert "`negative_caption`" in body


def test_render_dataset_card_is_pure_and_parses():
    info = {
        "pretty_name": "mmdemo: birds",
        "collection": "birds",
        "repo_id": "someone/birds",
        "configs": {
            "pairs": {"train": "pairs/train.parquet", "test": "pairs/test.parquet"},
            "triplets": {},
            "also_positive": {},
        },
        "splits": {"train": 1500, "test": 20},
        "triplets": {},
        "also_positive": {},
        "image_negatives": 0,
        "caption_negatives": 0,
        "also_positives": 0,
        "authors": 1,
    }
    card = render_dataset_card(info)
    assert card == render_dataset_card(info)
    front = yaml.safe_load(card.split("---")[1])
    assert front["pretty_name"] == "mmdemo: birds"
    assert front["size_categories"] == ["1K<n<10K"]
    assert front["configs"][0]["data_files"][1] == {"split": "test", "path": "pairs/test.parquet"}
    assert [c["config_name"] for c in front["configs"]] == ["pairs"]
    assert 'load_dataset("someone/birds", "pairs")' in card
    assert "there is no `triplets` config" in card
    assert "there is no `also_positive` config" in card
    assert '"triplets")' not in card and "### `triplets`" not in card

    info["configs"]["triplets"] = {"eval": "triplets/eval.parquet"}
    front = yaml.safe_load(render_dataset_card(info).split("---")[1])
    assert front["configs"][1] == {
        "config_name": "triplets",
        "data_files": [{"split": "eval", "path": "triplets/eval.parquet"}],
    }


@pytest.mark.parametrize("name", list(COLLECTIONS))
def test_every_declared_config_loads_without_streaming(
    name, store, settings, tmp_path, monkeypatch
):
    expected = COLLECTIONS[name](store, settings, name)
    out = tmp_path / "export"
    export_collection(store, settings, name, out)
    assert is_mmdemo_export(out)
    declared = card_config_names(read_card_metadata(out))
    assert declared == [c for c in CONFIG_NAMES if c in expected]
    for config in declared:
        loaded = _load(out, config, tmp_path)
        assert {split: ds.num_rows for split, ds in loaded.items()} == expected[config]
    for config in set(CONFIG_NAMES) - set(declared):
        assert not (out / config).exists()
        with pytest.raises(ValueError, match=f"'{config}' not found"):
            _load(out, config, tmp_path)

    # The card's usage snippet runs as written (the placeholder id is the folder) and loads
    # exactly the declared configs.
    card = (out / "README.md").read_text(encoding="utf-8")
    snippet = usage_snippet(card)
    assert "path/to/this/folder" in snippet
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "snippet-cache")
    namespace: dict = {}
    exec(snippet.replace("path/to/this/folder", str(out)), namespace)  # noqa: S102
    loaded = {k: v for k, v in namespace.items() if isinstance(v, datasets.DatasetDict)}
    assert sorted(loaded) == sorted({"also_positive": "also"}.get(c, c) for c in declared)
    for config in declared:
        dd = loaded[{"also_positive": "also"}.get(config, config)]
        assert {split: ds.num_rows for split, ds in dd.items()} == expected[config]
        assert f"### `{config}`" in card
    if "triplets" not in declared:
        assert "No hard negatives are labeled yet, so there is no `triplets` config" in card
    assert "streaming=True" not in card


def test_a_collection_without_pairs_is_refused(store, settings, tmp_path):
    store.create_collection("nothing")
    out = tmp_path / "export"
    with pytest.raises(ExportError, match="'nothing' has no pairs to export"):
        export_collection(store, settings, "nothing", out)

    pairs = _add_pairs(store, settings, "lost", ["train", "eval"])
    for pair in pairs:
        info = store.image_info(pair.image_sha256)
        image_path(settings.images_dir, pair.image_sha256, info["ext"]).unlink()
    with pytest.raises(ExportError, match="'lost' has no pairs to export: the image files"):
        export_collection(store, settings, "lost", out)
    assert not out.exists() and not out.with_name("export.partial").exists()


def test_older_exports_and_foreign_cards_are_told_apart(tmp_path):
    def card(front: dict) -> Path:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        text = "---\n" + yaml.safe_dump(front) + "---\n# x\n"
        (folder / "README.md").write_text(text, encoding="utf-8")
        return folder

    pairs = {"config_name": "pairs", "data_files": [{"split": "train", "path": "p.parquet"}]}
    triplets = {"config_name": "triplets", "data_files": [{"split": "train", "path": "t.parquet"}]}
    assert is_mmdemo_export(card({"tags": ["mmdemo"], "configs": [pairs]}))
    assert is_mmdemo_export(card({"tags": ["clip"], "configs": [pairs, triplets]}))
    assert not is_mmdemo_export(card({"tags": ["clip"], "configs": [pairs]}))
    assert not is_mmdemo_export(card({"tags": ["mmdemo"], "configs": [triplets]}))


def test_export_refuses_a_foreign_folder_and_replaces_an_old_export(store, settings, tmp_path):
    build_labeled_collection(store, settings)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a previous mmdemo export"):
        export_collection(store, settings, "demo", foreign)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]

    out = tmp_path / "export"
    export_collection(store, settings, "demo", out)
    (out / "pairs" / "stale.parquet").write_bytes(b"old")
    store.delete_pair(store.list_pairs(store.collection("demo").id, split="eval")[0].id)
    again = export_collection(store, settings, "demo", out)
    assert again.pairs == {"train": 4, "eval": 1}
    assert not (out / "pairs" / "stale.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("export")) == ["export"]

    empty = tmp_path / "empty"
    empty.mkdir()
    export_collection(store, settings, "demo", empty)
    assert is_mmdemo_export(empty)


def test_missing_image_file_is_skipped_not_fatal(store, settings, tmp_path):
    built = build_labeled_collection(store, settings)
    lost = built["pairs"][4]  # an eval anchor with one negative label
    info = store.image_info(lost.image_sha256)
    image_path(settings.images_dir, lost.image_sha256, info["ext"]).unlink()
    summary = export_collection(store, settings, "demo", tmp_path / "export")
    assert summary.pairs == {"train": 4, "eval": 1}
    assert ("pair " + str(lost.id), "image file missing from the store") in summary.skipped
    assert summary.image_negatives == 2
    assert any(item.startswith("label ") for item, _ in summary.skipped)


def test_exports_to_folders_of_the_same_name_load_their_own_rows(store, settings, tmp_path):
    """datasets caches a local folder by its name and card, not its content: content-named files
    keep two different exports (or a re-export after more labeling) from loading stale rows."""
    import datasets

    build_labeled_collection(store, settings)
    first = tmp_path / "a" / "export"
    export_collection(store, settings, "demo", first)
    demo = store.collection("demo")
    pair = store.list_pairs(demo.id, split="train")[0]
    store.update_pair(pair.id, caption="an edited caption after the first export")
    second = tmp_path / "b" / "export"
    export_collection(store, settings, "demo", second)
    # The default cache, as a person loading both folders would have it.
    loaded_first = datasets.load_dataset(str(first), "pairs", split="train")
    loaded_second = datasets.load_dataset(str(second), "pairs", split="train")
    assert "an edited caption after the first export" not in loaded_first["caption"]
    assert "an edited caption after the first export" in loaded_second["caption"]
