"""Importing Hugging Face datasets: save_to_disk folders, parquet, mmdemo exports, Hub ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mmdemo.data import hf_import
from mmdemo.data.export import (
    ALSO_POSITIVE_FEATURES,
    TRIPLETS_FEATURES,
    export_collection,
    is_mmdemo_export,
    read_card_metadata,
)
from mmdemo.data.hf_import import HFImportFailed, import_hf_dataset, map_split
from mmdemo.data.images import image_path
from mmdemo.data.importers import ImportFailed, import_source
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.store import Store
from mmdemo.settings import Settings
from tests.conftest import make_image_bytes
from tests.test_export import COLLECTIONS, build_labeled_collection


def _pairs(store: Store, name: str) -> set[tuple[str, str, str]]:
    coll = store.collection(name)
    return {(p.caption, p.split, p.image_sha256) for p in store.list_pairs(coll.id)}


def _pairs_with_authors(store: Store, name: str) -> set[tuple]:
    coll = store.collection(name)
    return {(p.caption, p.image_sha256, p.split, p.author) for p in store.list_pairs(coll.id)}


def _labels(store: Store, name: str) -> set[tuple]:
    coll = store.collection(name)
    by_id = {p.id: p for p in store.list_pairs(coll.id)}
    return {
        (
            by_id[lab.pair_id].image_sha256,
            lab.negative_sha256,
            lab.negative_caption,
            lab.kind,
            lab.author,
        )
        for lab in store.labels_for_collection(coll.id)
    }


@pytest.fixture
def other_home(tmp_path: Path):
    """A second, empty mmdemo home: importing there proves nothing leaks from the first."""
    settings = Settings.from_env({"MMDEMO_HOME": str(tmp_path / "home2")})
    settings.ensure_dirs()
    store = Store(settings.db_path)
    yield store, settings
    store.close()


def test_export_round_trips_pairs_and_labels(store, settings, tmp_path, other_home):
    build_labeled_collection(store, settings)
    out = tmp_path / "export"
    export_collection(store, settings, "demo", out)
    store2, settings2 = other_home
    calls = []
    report = import_hf_dataset(
        store2, settings2, "copy", out, progress=lambda d, t, m: calls.append((d, t, m))
    )

    assert report.rejected == []
    assert (report.added, report.duplicates, report.negatives_added) == (6, 0, 6)
    assert _pairs(store2, "copy") == _pairs(store, "demo")
    assert _labels(store2, "copy") == _labels(store, "demo")
    pair_authors = {p.caption: p.author for p in store2.list_pairs(store2.collection("copy").id)}
    assert pair_authors["picture number 1"] == "ann"
    assert pair_authors["picture number 0"] == "bob"
    assert [d for d, _, _ in calls] == list(range(1, 13))
    assert {t for _, t, _ in calls} == {12}
    stats = store2.collection_stats(store2.collection("copy").id)
    assert (stats.negatives, stats.caption_negatives, stats.also_positives) == (4, 1, 2)

    # Importing the same export again adds nothing and says so.
    again = import_hf_dataset(store2, settings2, "copy", out)
    assert (again.added, again.duplicates, again.negatives_added) == (0, 6, 0)
    assert "6 labels were already in the collection." in again.notes
    assert _labels(store2, "copy") == _labels(store, "demo")


@pytest.mark.parametrize("via", ["import_hf_dataset", "import_source"])
@pytest.mark.parametrize("name", list(COLLECTIONS))
def test_every_kind_of_export_round_trips(name, via, store, settings, tmp_path, other_home):
    """No labels, image negatives only, or every label kind in three splits: the same pairs,
    splits, authors and labels come back."""
    COLLECTIONS[name](store, settings, name)
    out = tmp_path / "export"
    export_collection(store, settings, name, out)
    store2, settings2 = other_home
    importer = import_hf_dataset if via == "import_hf_dataset" else import_source
    report = importer(store2, settings2, "copy", out)

    assert report.rejected == []
    assert _pairs_with_authors(store2, "copy") == _pairs_with_authors(store, name)
    assert _labels(store2, "copy") == _labels(store, name)
    assert report.negatives_added == len(_labels(store, name))


def _as_older_export(folder: Path) -> None:
    """Rewrite an export without labels as older mmdemo versions wrote it: empty ``triplets`` and
    ``also_positive`` configs declared, each one parquet file without rows."""
    for config, features in (
        ("triplets", TRIPLETS_FEATURES),
        ("also_positive", ALSO_POSITIVE_FEATURES),
    ):
        (folder / config).mkdir()
        pq.ParquetWriter(folder / config / "train.parquet", features.arrow_schema).close()
    meta = read_card_metadata(folder)
    meta["configs"] += [
        {"config_name": c, "data_files": [{"split": "train", "path": f"{c}/train.parquet"}]}
        for c in ("triplets", "also_positive")
    ]
    body = (folder / "README.md").read_text(encoding="utf-8").split("\n---\n", 1)[1]
    card = "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n" + body
    (folder / "README.md").write_text(card, encoding="utf-8")


def test_an_older_export_with_empty_label_configs_still_imports(store, settings, tmp_path):
    COLLECTIONS["unlabeled"](store, settings, "plain")
    out = tmp_path / "old"
    export_collection(store, settings, "plain", out)
    _as_older_export(out)
    assert [c["config_name"] for c in read_card_metadata(out)["configs"]] == [
        "pairs", "triplets", "also_positive"
    ]  # fmt: skip
    assert is_mmdemo_export(out)
    report = import_hf_dataset(store, settings, "plain-copy", out)
    assert (report.added, report.negatives_added, report.rejected) == (3, 0, [])
    assert _pairs(store, "plain-copy") == _pairs(store, "plain")


def test_export_import_of_one_split(store, settings, tmp_path, other_home):
    build_labeled_collection(store, settings)
    out = tmp_path / "export"
    export_collection(store, settings, "demo", out)
    store2, settings2 = other_home
    report = import_hf_dataset(store2, settings2, "evals", out, split="eval", author="zed")
    assert report.added == 2 and report.negatives_added == 1 and report.rejected == []
    assert {s for _, s, _ in _pairs(store2, "evals")} == {"eval"}
    assert {lab[-1] for lab in _labels(store2, "evals")} == {"ann"}


def _rgb_png(color: tuple[int, int, int]) -> bytes:
    return make_image_bytes(color, size=(32, 24), fmt="PNG")


def test_save_to_disk_dataset_with_image_and_text(store, settings, tmp_path):
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    colors = [(10 * i, 100, 200 - 10 * i) for i in range(6)]
    images = [_rgb_png(c) for c in colors]

    def part(rows: range) -> datasets.Dataset:
        return datasets.Dataset.from_dict(
            {
                "image": [{"bytes": images[i], "path": None} for i in rows],
                "text": [f"colour {i}" for i in rows],
            },
            features=features,
        )

    bad = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}], "text": ["broken"]},
        features=features,
    )
    dd = datasets.DatasetDict(
        {
            "train": part(range(3)),
            "validation": part(range(3, 5)),
            "extra": datasets.concatenate_datasets([part(range(5, 6)), bad]),
        }
    )
    folder = tmp_path / "saved"
    dd.save_to_disk(str(folder))

    calls = []
    report = import_hf_dataset(
        store, settings, "colours", folder, progress=lambda d, t, m: calls.append((d, t))
    )
    assert report.added == 6
    assert [r.item for r in report.rejected] == ["dataset:saved[extra]#1"]
    assert "Source split 'extra' went into train." in report.notes
    assert calls == [(i, 7) for i in range(1, 8)]
    got = _pairs(store, "colours")
    expected_sha = {f"colour {i}": hashlib.sha256(images[i]).hexdigest() for i in range(6)}
    assert {(c, sha) for c, _, sha in got} == set(expected_sha.items())
    assert {c: s for c, s, _ in got}["colour 3"] == "eval"
    assert {c: s for c, s, _ in got}["colour 5"] == "train"

    one = import_hf_dataset(store, settings, "only-val", folder, split="validation")
    assert {s for _, s, _ in _pairs(store, "only-val")} == {"eval"} and one.added == 2


def test_parquet_with_explicit_columns_and_a_split(store, settings, tmp_path):
    features = datasets.Features(
        {
            "pic": datasets.Image(),
            "words": datasets.Value("string"),
            "text": datasets.Value("string"),
        }
    )
    images = [_rgb_png((200, 20 * i, 40)) for i in range(3)]
    ds = datasets.Dataset.from_dict(
        {
            "pic": [{"bytes": b, "path": None} for b in images],
            "words": ["a red one", "a redder one", "   "],
            "text": ["decoy"] * 3,
        },
        features=features,
    )
    path = tmp_path / "data.parquet"
    ds.to_parquet(str(path))
    report = import_hf_dataset(
        store, settings, "reds", path, image_column="pic", caption_column="words", split="test"
    )
    assert report.added == 2
    assert [(r.item, r.reason) for r in report.rejected] == [
        ("parquet:data.parquet[train]#2", "blank caption")
    ]
    assert {(c, s) for c, s, _ in _pairs(store, "reds")} == {
        ("a red one", "test"),
        ("a redder one", "test"),
    }


def test_parquet_folder_with_paths_and_caption_lists(store, settings, tmp_path):
    folder = tmp_path / "pq"
    (folder / "imgs").mkdir(parents=True)
    names = []
    for i in range(2):
        (folder / "imgs" / f"{i}.png").write_bytes(_rgb_png((30, 60 * i, 90)))
        names.append(f"imgs/{i}.png")
    outside = tmp_path / "outside.png"
    outside.write_bytes(_rgb_png((1, 1, 1)))
    ds = datasets.Dataset.from_dict(
        {
            "file_name": names + ["imgs/missing.png", "../outside.png"],
            "captions": [["first", "second"], ["x"], ["y"], ["z"]],
        }
    )
    ds.to_parquet(str(folder / "train.parquet"))
    report = import_hf_dataset(store, settings, "paths", folder)
    assert report.added == 2
    assert [r.reason for r in report.rejected] == [
        "image file not found: imgs/missing.png",
        "image path leaves the dataset folder: ../outside.png",
    ]
    assert {c for c, _, _ in _pairs(store, "paths")} == {"first", "x"}


def test_unknown_column_lists_the_available_ones(store, settings, tmp_path):
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": _rgb_png((1, 2, 3)), "path": None}], "label": ["a"]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}),
    )
    path = tmp_path / "d.parquet"
    ds.to_parquet(str(path))
    with pytest.raises(
        HFImportFailed, match=r"No column 'caption'.*available columns: image, label"
    ):
        import_hf_dataset(store, settings, "x", path, caption_column="caption")
    with pytest.raises(HFImportFailed, match="which column .* holds the captions"):
        import_hf_dataset(store, settings, "x", path)
    with pytest.raises(HFImportFailed, match=r"No split 'nope'"):
        import_hf_dataset(store, settings, "x", tmp_path / "d.parquet", split="nope")
    assert store.find_collection("x") is None


def test_hub_id_network_failure_is_a_clear_error(store, settings, monkeypatch):
    seen = {}

    def offline(path, *args, **kwargs):
        seen.update(path=path, kwargs=kwargs)
        raise ConnectionError("Couldn't reach 'someone/pets' on the Hub")

    monkeypatch.setattr(hf_import, "load_dataset", offline)
    with pytest.raises(HFImportFailed) as info:
        import_hf_dataset(store, settings, "pets", "someone/pets")
    message = str(info.value)
    assert "'someone/pets'" in message and "network" in message and "HF_TOKEN" in message
    assert seen["path"] == "someone/pets"
    assert "trust_remote_code" not in seen["kwargs"]
    assert store.find_collection("pets") is None

    with pytest.raises(ImportFailed, match="the Hugging Face Hub"):
        import_hf_dataset(store, settings, "pets", "hf://datasets/someone/pets")
    assert seen["path"] == "someone/pets"

    with pytest.raises(HFImportFailed, match="neither a local file or folder nor a Hub"):
        import_hf_dataset(store, settings, "pets", "no such thing")


def test_map_split():
    assert map_split("validation") == ("eval", True)
    assert map_split("DEV") == ("eval", True)
    assert map_split("test") == ("test", True)
    assert map_split("unlabeled") == ("train", False)
    assert map_split(None) == ("train", True)


def test_single_dataset_and_image_cells_without_bytes(store, settings, tmp_path):
    ds = datasets.Dataset.from_dict({"img": [_rgb_png((90, 80, 70))], "sentence": ["a cat"]})
    ds.cast_column("img", datasets.Image()).save_to_disk(str(tmp_path / "single"))
    report = import_hf_dataset(store, settings, "cats", tmp_path / "single")
    assert report.added == 1 and report.rejected == []
    assert {c for c, _, _ in _pairs(store, "cats")} == {"a cat"}

    # Image() cells that hold only a path (bytes None) are read from the dataset folder.
    folder = tmp_path / "refs"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "dog.png").write_bytes(_rgb_png((10, 80, 170)))
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")})
    table = pa.Table.from_pylist(
        [{"image": {"bytes": None, "path": "data/dog.png"}, "caption": "a dog"}],
        schema=features.arrow_schema,
    )
    pq.write_table(table, folder / "train.parquet")
    report = import_hf_dataset(store, settings, "dogs", folder)
    sha = hashlib.sha256((folder / "data" / "dog.png").read_bytes()).hexdigest()
    assert report.rejected == []
    assert _pairs(store, "dogs") == {("a dog", "train", sha)}


def test_export_without_labels_imports(store, settings, tmp_path):
    coll = store.create_collection("plain")
    for i in range(2):
        data = _rgb_png((50 * i, 0, 0))
        ingest_item(
            store, settings, coll.id, ImportReport(collection="plain"), str(i), data, f"p{i}"
        )
    export_collection(store, settings, "plain", tmp_path / "plain")
    report = import_hf_dataset(store, settings, "plain-copy", tmp_path / "plain")
    assert (report.added, report.negatives_added, report.rejected) == (2, 0, [])
    assert _pairs(store, "plain-copy") == _pairs(store, "plain")


def test_labels_do_not_attach_to_a_pair_with_another_caption(store, settings, tmp_path, other_home):
    built = build_labeled_collection(store, settings)
    export_collection(store, settings, "demo", tmp_path / "export")
    store2, settings2 = other_home
    first = built["pairs"][0]
    info = store.image_info(first.image_sha256)
    data = image_path(settings.images_dir, first.image_sha256, info["ext"]).read_bytes()
    coll = store2.create_collection("copy")
    ingest_item(store2, settings2, coll.id, ImportReport(collection="copy"), "x", data, "renamed")

    report = import_hf_dataset(store2, settings2, "copy", tmp_path / "export")
    assert (report.added, report.duplicates, report.negatives_added) == (5, 1, 4)
    reasons = [r.reason for r in report.rejected]
    assert reasons == ["the collection has this image with another caption"] * 2
    assert store2.labels_for_pair(store2.find_pair_by_image(coll.id, first.image_sha256).id) == []


def test_paths_that_would_read_server_files_are_refused(tmp_path):
    """A remote dataset never reads local files; on a Space a local one stays in its folder."""
    from mmdemo.data.hf_import import image_bytes

    outside = tmp_path / "secret.png"
    outside.write_bytes(make_image_bytes())
    root = tmp_path / "dataset"
    root.mkdir()
    limit = 10_000_000
    assert image_bytes(str(outside), None, limit)[0] is None
    assert image_bytes(f"file://{outside}", None, limit)[0] is None
    assert image_bytes(f"file://{outside}", root, limit)[0] is None
    assert image_bytes("../secret.png", root, limit)[0] is None
    assert image_bytes(str(outside), root, limit, allow_absolute=False)[0] is None
    # Locally a save_to_disk dataset may name the user's own files by absolute path.
    assert image_bytes(str(outside), root, limit)[0] == outside.read_bytes()
