"""The data checks on a real Services: planted copies found, distinct images left alone, leaks,
the fix and its undo, captions, small images, outliers, caches, and the ``check`` command."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.bench_check import distinct_image, edited, plant, score
from mmdemo.cli import main
from mmdemo.data.caption_checks import caption_groups, near_duplicate_words
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.splits import undo_split_change
from mmdemo.retrieval import phash
from mmdemo.retrieval.checks import (
    CheckOptions,
    check_collection,
    eval_leaks,
    fix_leakage,
    hash_cache_of,
    leak_target,
    outliers,
    with_current_splits,
)
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from tests.conftest import make_image_bytes

LEAK_KEYS = {"pair_ids", "captions", "splits", "similarity"}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    """60 demo scenes and 20 generated images (all distinct), and 16 planted edited copies
    (resize 90 %, JPEG 70, light crop, all three) imported into eval."""
    home = tmp_path_factory.mktemp("checks-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "60"}
    )
    services = Services.create(settings)
    truth = plant(services, distinct=20, planted=16, seed=3)
    yield services, truth
    services.close()


def _add(services: Services, collection: str, items: list[tuple[bytes, str, str]]) -> list[int]:
    coll = services.store.get_or_create_collection(collection)
    report = ImportReport(coll.name)
    for n, (data, caption, split) in enumerate(items):
        ingest_item(
            services.store, services.settings, coll.id, report, f"{n}.png", data, caption, split
        )
    assert not report.rejected, report.rejected
    return report.added_pair_ids


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def test_planted_copies_found_and_distinct_images_not_flagged(planted):
    services, truth = planted
    for options in (CheckOptions(), CheckOptions(use_embeddings=False)):
        report = check_collection(services, DEMO_COLLECTION, "base", options)
        result = score(list(report.duplicates), truth)
        assert result["false_alarms"] == 0, result
        assert result["recall"] >= 0.9, result
    assert report.model is None  # hashes only
    assert report.pairs == 60 + 20 + len(truth)


def test_cross_split_duplicates_have_exactly_the_documented_shape(planted):
    services, truth = planted
    report = check_collection(services, DEMO_COLLECTION, "base", CheckOptions())
    leaks = report.as_json()["cross_split_duplicates"]
    assert leaks, "the planted copies sit in eval, most originals in train"
    copies = set(truth)
    for entry in leaks:
        assert set(entry) == LEAK_KEYS
        assert isinstance(entry["pair_ids"], list) and len(entry["pair_ids"]) >= 2
        assert len(entry["captions"]) == len(entry["splits"]) == len(entry["pair_ids"])
        assert "train" in entry["splits"] and {"eval", "test"} & set(entry["splits"])
        assert isinstance(entry["similarity"], float) and 0.0 < entry["similarity"] <= 1.0
        assert copies & set(entry["pair_ids"])
        pairs = {p.id: p for p in services.store.get_pairs(entry["pair_ids"])}
        assert entry["captions"] == [pairs[i].caption for i in entry["pair_ids"]]
    json.dumps(report.as_json())  # plain data


def test_fix_moves_each_leaking_group_into_one_split_and_undo_puts_them_back(planted):
    services, _ = planted
    collection = services.store.collection(DEMO_COLLECTION)
    report = check_collection(services, DEMO_COLLECTION, None, CheckOptions(use_embeddings=False))
    assert report.leaks
    before = {p.id: p.split for p in services.store.list_pairs(collection.id)}
    change = fix_leakage(services.store, collection.id, report.leaks)
    after = with_current_splits(services.store, report)
    assert not after.leaks
    for group in after.duplicates:
        assert len(set(group.splits)) == 1
    assert change.changed == sum(
        sum(s != leak_target(g.splits) for s in g.splits) for g in report.leaks
    )
    undo_split_change(services.store, change)
    assert {p.id: p.split for p in services.store.list_pairs(collection.id)} == before
    assert with_current_splits(services.store, report).leaks == report.leaks


def test_leak_target_is_the_majority_and_a_tie_goes_to_train():
    assert leak_target(["eval", "train"]) == "train"
    assert leak_target(["eval", "eval", "train"]) == "eval"
    assert leak_target(["train", "test", "train"]) == "train"


def test_hashes_are_cached_on_disk_and_the_eval_leak_warning_is_memoised(planted):
    services, _ = planted
    collection = services.store.collection(DEMO_COLLECTION)
    cache = hash_cache_of(services)
    check_collection(services, DEMO_COLLECTION, None, CheckOptions(use_embeddings=False))
    computed = cache.computed
    check_collection(services, DEMO_COLLECTION, None, CheckOptions(use_embeddings=False))
    assert cache.computed == computed
    fresh = phash.HashCache(services.settings)  # a new process reads them back from disk
    shas = [p.image_sha256 for p in services.store.list_pairs(collection.id)]
    assert np.array_equal(fresh.hashes(shas), cache.hashes(shas)) and fresh.computed == 0
    first = eval_leaks(services, collection.id, max_new_hashes=0)  # every hash is cached
    assert first and all(g.crosses_splits for g in first)
    assert eval_leaks(services, collection.id) is first


def _scene(top: str, bottom: str) -> Image.Image:
    img = Image.new("RGB", (128, 128), "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse((40, 10, 88, 58), top)
    draw.rectangle((40, 70, 88, 118), bottom)
    return img


@pytest.fixture
def services(settings: Settings):
    services = Services.create(settings, demo=False)
    yield services
    services.close()


def edited_image(img: Image.Image, edit: str) -> Image.Image:
    return Image.open(io.BytesIO(edited(img, edit, random.Random(0)))).convert("RGB")


def test_colour_swapped_scene_is_no_copy_but_its_resized_jpeg_is(services: Services):
    """Red-on-blue and blue-on-red are the same in grey: the colour hashes tell them apart."""
    red, blue = "#d72323", "#234be1"
    original = _scene(red, blue)
    _add(
        services,
        "swap",
        [
            (_png(original), "a red circle above a blue square", "train"),
            (_png(_scene(blue, red)), "a blue circle above a red square", "eval"),
        ],
    )
    options = CheckOptions(use_embeddings=False)
    report = check_collection(services, "swap", None, options)
    assert report.duplicates == () and report.near_duplicate_captions == ()
    copy = edited(edited_image(original, "resize"), "jpeg", random.Random(0))
    (pid,) = _add(services, "swap", [(copy, "the same scene, resized and re-encoded", "test")])
    report = check_collection(services, "swap", None, options)
    (group,) = report.duplicates
    assert pid in group.pair_ids and group.splits == ("train", "test") and not group.exact
    assert report.as_json()["cross_split_duplicates"][0]["pair_ids"] == list(group.pair_ids)


def test_distinct_generated_images_are_never_grouped(services: Services):
    rng = random.Random(11)
    items = [(_png(distinct_image(rng, i)), f"pattern {i}", "train") for i in range(40)]
    _add(services, "patterns", items)
    report = check_collection(services, "patterns", None, CheckOptions(use_embeddings=False))
    assert report.duplicates == ()


def test_captions_identical_across_splits_and_near_duplicates(services: Services):
    captions = [
        ("a dog on the beach", "train"),
        ("A dog on the  beach", "eval"),  # identical (case, spaces): a leak
        ("a red circle above a blue square", "train"),
        ("a blue circle above a red square", "train"),  # swapped words: different
        ("a red circle above a blue circle", "train"),  # another word: different
        ("A red cirlce above a blue square!", "eval"),  # typo + punctuation: near
        ("a cat on a sofa", "train"),
        ("the cat on the sofa", "test"),  # articles only: near
    ]
    rng = random.Random(5)
    _add(
        services,
        "captions",
        [(_png(distinct_image(rng, i)), c, split) for i, (c, split) in enumerate(captions)],
    )
    report = check_collection(services, "captions", None, CheckOptions(use_embeddings=False))
    (identical,) = report.identical_captions
    assert identical.captions == ("a dog on the beach", "A dog on the beach")
    assert identical.splits == ("train", "eval")
    near = sorted(g.captions for g in report.near_duplicate_captions)
    assert near == [
        ("a cat on a sofa", "the cat on the sofa"),
        ("a red circle above a blue square", "A red cirlce above a blue square!"),
    ]
    assert not near_duplicate_words(["red", "circle"], ["green", "circle"])
    assert near_duplicate_words(["square", "circle"], ["sqaure", "circle"])


def test_caption_groups_scale_without_comparing_every_pair():
    """Prefix filtering keeps 3,000 distinct captions fast (and finds the one typo)."""
    rng = random.Random(0)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)) for _ in range(400)
    ]
    pairs = []
    for i in range(3000):
        text = " ".join(rng.choice(words) for _ in range(7))
        pairs.append(type("P", (), {"id": i, "caption": text, "split": "train"})())
    pairs.append(type("P", (), {"id": i, "caption": text, "split": "train"})())
    pairs.append(
        type(
            "P",
            (),
            {
                "id": 9999,
                "caption": pairs[0].caption[:3]
                + pairs[0].caption[4]
                + pairs[0].caption[3]
                + pairs[0].caption[5:],
                "split": "eval",
            },
        )()
    )
    identical, near = caption_groups(pairs)
    assert identical == []
    assert [g.pair_ids for g in near] == [(0, 9999)]


def test_small_images_and_outliers(services: Services):
    rng = random.Random(2)
    items = [(_png(distinct_image(rng, i)), f"pattern {i}", "train") for i in range(6)]
    items.append((make_image_bytes((10, 200, 10), size=(40, 30)), "a tiny swatch", "train"))
    ids = _add(services, "small", items)
    report = check_collection(services, "small", None, CheckOptions(use_embeddings=False))
    (small,) = report.small_images
    assert small.pair_id == ids[-1] and small.detail == "40×30 px"
    assert report.as_json()["small_images"][0]["pair_id"] == ids[-1]
    # Outliers: 40 vectors around one direction and one far away.
    gen = np.random.default_rng(0)
    matrix = np.tile(np.eye(8, dtype=np.float32)[0], (41, 1)) + 0.05 * gen.normal(size=(41, 8))
    matrix[40] = np.eye(8, dtype=np.float32)[3]
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    fake = [
        type("P", (), {"id": i, "caption": f"c{i}", "split": "train", "image_sha256": "x"})()
        for i in range(41)
    ]
    found = outliers(fake, matrix)
    assert [o.pair_id for o in found] == [40] and found[0].z < -3
    same = np.tile(np.eye(8, dtype=np.float32)[0], (41, 1))
    assert outliers(fake, same) == []


def run_cli(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    return code, json.loads(lines[-1]) if code == 0 else {}, captured.err


def test_check_command_prints_json_and_fixes_leakage(capsys, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MMDEMO_BASE_MODEL", "tiny")
    home = tmp_path / "home"
    settings = Settings.from_env({"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny"})
    services = Services.create(settings, demo=False)
    original = _scene("#1e9e3c", "#f0cd14")
    _add(
        services,
        "cli",
        [
            (_png(original), "a green circle above a yellow square", "train"),
            (edited(original, "jpeg", random.Random(1)), "the same, re-encoded", "eval"),
            (_png(_scene("#8732af", "#fa7d14")), "a purple circle above an orange square", "eval"),
        ],
    )
    services.close()
    code, report, err = run_cli(capsys, "--home", str(home), "check", "--collection", "cli")
    assert code == 0, err
    assert report["counts"]["cross_split_duplicates"] == 1
    (leak,) = report["cross_split_duplicates"]
    assert set(leak) == LEAK_KEYS and leak["splits"] == ["train", "eval"]
    assert report["model"] is not None and "fixed" not in report
    code, fixed, err = run_cli(
        capsys,
        "--home",
        str(home),
        "check",
        "--collection",
        "cli",
        "--hashes-only",
        "--fix-leakage",
    )
    assert code == 0, err
    assert fixed["fixed"]["changed"] == 1 and fixed["model"] is None
    code, again, _ = run_cli(
        capsys, "--home", str(home), "check", "--collection", "cli", "--hashes-only"
    )
    assert again["cross_split_duplicates"] == [] and again["counts"]["duplicate_groups"] == 1
    code, _, err = run_cli(capsys, "--home", str(home), "check", "--collection", "nope")
    assert code == 1 and "nope" in err


def test_eval_leaks_does_not_hash_a_big_collection_on_a_view(services: Services):
    rng = random.Random(9)
    _add(services, "unhashed", [(_png(distinct_image(rng, i)), f"p {i}", "eval") for i in range(3)])
    collection = services.store.collection("unhashed")
    assert eval_leaks(services, collection.id, max_new_hashes=2) is None
    assert hash_cache_of(services).computed == 0
    assert eval_leaks(services, collection.id, max_new_hashes=3) == ()
