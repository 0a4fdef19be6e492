"""The exporter: a collection becomes a folder that ``datasets.load_dataset`` reads back."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mmdemo import export
from mmdemo.export import (
    ExportError,
    export_collection,
    is_mmdemo_export,
    read_card_metadata,
    render_dataset_card,
)
from mmdemo.images import image_path
from mmdemo.ingest import ImportReport, ingest_item
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

    assert pq.ParquetFile(out / "pairs" / "train.parquet").metadata.num_row_groups == 2
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
    assert {f["split"]: f["path"] for f in configs["pairs"]["data_files"]} == {
        "train": "pairs/train.parquet",
        "eval": "pairs/eval.parquet",
    }
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
            "triplets": {"train": "triplets/train.parquet"},
            "also_positive": {"train": "also_positive/train.parquet"},
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
    assert "default" not in front["configs"][1]
    assert 'load_dataset("someone/birds", "pairs")' in card
    assert "triplets` config is empty" in card


def test_empty_triplets_config_still_loads(store, settings, tmp_path):
    coll = store.create_collection("plain")
    report = ImportReport(collection="plain")
    for i, color in enumerate(COLORS[:3]):
        data = make_image_bytes(color)
        ingest_item(store, settings, coll.id, report, str(i), data, f"caption {i}", "test")
    out = tmp_path / "plain-export"
    summary = export_collection(store, settings, "plain", out)
    assert summary.pairs == {"test": 3} and summary.negatives == 0

    pairs = _load(out, "pairs", tmp_path)
    assert list(pairs) == ["test"] and pairs["test"].num_rows == 3
    for config, column in (("triplets", "negative"), ("also_positive", "also_positive")):
        # datasets 5.2 refuses to build an empty split eagerly; streaming reads it.
        empty = datasets.load_dataset(str(out), config, streaming=True)["train"]
        assert isinstance(empty.features[column], datasets.Image)
        assert isinstance(empty.features["positive"], datasets.Image)
        assert list(empty) == []
    assert "No hard negatives are labeled yet" in (out / "README.md").read_text()


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
