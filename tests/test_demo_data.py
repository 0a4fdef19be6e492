"""The synthetic shapes scenes, their hard negatives and the built-in demo collection."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mmdemo.data import demo as demo_data
from mmdemo.data.demo import (
    COLORS,
    DEMO_AUTHOR,
    flip_relation,
    generate_demo_scenes,
    hard_negative_captions,
    parse_caption,
    swap_attributes,
    swap_shapes,
)
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.data.store import Store
from mmdemo.settings import Settings
from tests.conftest import make_image_bytes

PALETTE = np.array(list(COLORS.values()), dtype=float)


@pytest.fixture(scope="module")
def scenes() -> list[demo_data.DemoScene]:
    return generate_demo_scenes(540, seed=0)


def _colour_masks(image: Image.Image) -> dict[str, np.ndarray]:
    """Pixels whose nearest palette colour is close enough to count as that shape's colour."""
    pixels = np.asarray(image.convert("RGB"), dtype=float)
    distance = np.linalg.norm(pixels[:, :, None, :] - PALETTE[None, None], axis=-1)
    nearest = distance.argmin(-1)
    close = distance.min(-1) < 40
    return {name: close & (nearest == i) for i, name in enumerate(COLORS)}


def test_same_seed_same_bytes_other_seed_other_scenes():
    first = generate_demo_scenes(24, seed=0)
    again = generate_demo_scenes(24, seed=0)
    other = generate_demo_scenes(24, seed=1)
    assert [(s.caption, s.image_bytes, s.split) for s in first] == [
        (s.caption, s.image_bytes, s.split) for s in again
    ]
    assert [s.image_bytes for s in first] != [s.image_bytes for s in other]
    assert generate_demo_scenes(0) == []


def test_scenes_are_well_formed(scenes: list[demo_data.DemoScene]):
    assert len(scenes) == 540  # the default: every configuration once
    assert sum(s.split == "eval" for s in scenes) == 65
    assert {s.split for s in scenes} == {"train", "eval"}
    captions = [s.caption for s in scenes]
    assert len(set(captions)) == len(captions)
    # No two captions describe the same configuration ("A below B" and "B above A").
    keys = {demo_data._canonical(parse_caption(c)) for c in captions}
    assert len(keys) == len(captions)
    # Each scene is said one way ("A above B", never "B below A").
    assert {s.attrs["relation"] for s in scenes} == set(demo_data.CAPTION_RELATIONS)
    for scene in scenes[:40]:
        assert parse_caption(scene.caption).as_dict() == scene.attrs
        assert scene.attrs["color1"] != scene.attrs["color2"]
        with Image.open(io.BytesIO(scene.image_bytes)) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (128, 128)


def test_pictures_match_their_captions(scenes: list[demo_data.DemoScene]):
    """Each named colour is where the relation says, in a shape that fills its box as it should,
    at full size and still after the tiny model's 32×32 resize."""
    fill_ranges = {"circle": (0.70, 0.86), "square": (0.93, 1.01), "triangle": (0.38, 0.60)}
    for scene in scenes[:60]:
        attrs = scene.attrs
        image = Image.open(io.BytesIO(scene.image_bytes))
        masks = _colour_masks(image)
        centres = {}
        for colour, shape in (
            (attrs["color1"], attrs["shape1"]),
            (attrs["color2"], attrs["shape2"]),
        ):
            ys, xs = np.nonzero(masks[colour])
            assert len(xs) > 300, (scene.caption, colour)
            box_area = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
            low, high = fill_ranges[shape]
            assert low <= len(xs) / box_area <= high, (scene.caption, shape, len(xs) / box_area)
            centres[colour] = (xs.mean(), ys.mean())
        (x1, y1), (x2, y2) = centres[attrs["color1"]], centres[attrs["color2"]]
        expected = {
            "above": y1 < y2 and abs(y2 - y1) > abs(x2 - x1),
            "below": y1 > y2 and abs(y2 - y1) > abs(x2 - x1),
            "to the left of": x1 < x2 and abs(x2 - x1) > abs(y2 - y1),
            "to the right of": x1 > x2 and abs(x2 - x1) > abs(y2 - y1),
        }
        assert expected[attrs["relation"]], scene.caption
        small = _colour_masks(image.resize((32, 32), Image.Resampling.BICUBIC))
        assert small[attrs["color1"]].sum() >= 20 and small[attrs["color2"]].sum() >= 20


def test_hard_negatives_swap_the_binding():
    caption = "a red circle above a blue square"
    assert swap_attributes(caption) == "a blue circle above a red square"
    assert swap_shapes(caption) == "a red square above a blue circle"
    assert flip_relation(caption) == "a red circle below a blue square"
    assert swap_attributes("an orange triangle to the left of a purple circle") == (
        "a purple triangle to the left of an orange circle"
    )
    assert hard_negative_captions(caption) == [
        "a blue circle above a red square",
        "a red square above a blue circle",
        "a red circle below a blue square",
    ]
    assert swap_shapes("a red circle above a blue circle") is None
    assert hard_negative_captions("a red circle above a blue circle") == [
        "a blue circle above a red circle",
        "a red circle below a blue circle",
    ]
    for text in ("a cat on a mat", "", "a red circle above a red square"):
        assert swap_attributes(text) is None
    assert parse_caption("  A Red circle   above a blue SQUARE ") is not None


def test_every_scene_has_its_colour_swap(scenes: list[demo_data.DemoScene]):
    for scene in scenes:
        swapped = swap_attributes(scene.caption)
        assert swapped is not None and swapped != scene.caption
        assert swap_attributes(swapped) == scene.caption


def test_demo_collection_is_created_once(
    store: Store, settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    small = settings.with_overrides(demo_pairs=30)
    seen: list[tuple[int, int | None]] = []
    collection = demo_data.ensure_demo_collection(
        store, small, progress=lambda done, total, message: seen.append((done, total))
    )
    assert collection.name == "demo-shapes"
    assert seen[-1] == (30, 30)
    stats = store.collection_stats(collection.id)
    assert stats.pairs == 30 and stats.splits["eval"] == round(30 * demo_data.EVAL_FRACTION)
    pairs = store.list_pairs(collection.id)
    assert {p.author for p in pairs} == {DEMO_AUTHOR}
    assert [p.caption for p in pairs] == [s.caption for s in generate_demo_scenes(30)]
    assert [c.name for c in store.list_collections()] == ["demo-shapes"]

    # A second start finds it and generates nothing, even after the user removed a pair.
    store.delete_pair(pairs[0].id)

    def no_generation(*args: object, **kwargs: object) -> list:
        raise AssertionError("the demo was generated again")

    monkeypatch.setattr(demo_data, "generate_demo_scenes", no_generation)
    again = demo_data.ensure_demo_collection(store, small)
    assert again.id == collection.id
    assert store.count_pairs(collection.id) == 29


def test_interrupted_demo_creation_is_redone(store: Store, settings: Settings):
    # A first start stopped half-way left its staging collection with a stray pair.
    leftover = store.create_collection("demo-shapes (being created)")
    report = ImportReport(collection=leftover.name)
    ingest_item(store, settings, leftover.id, report, "x.png", make_image_bytes(), "a stray pair")
    assert report.added == 1
    small = settings.with_overrides(demo_pairs=10)
    collection = demo_data.ensure_demo_collection(store, small)
    assert [c.name for c in store.list_collections()] == ["demo-shapes"]
    captions = [p.caption for p in store.list_pairs(collection.id)]
    assert captions == [s.caption for s in generate_demo_scenes(10)]


def test_two_processes_building_the_demo_at_once_make_one(tmp_path):
    """Two processes on a fresh home (torchrun's ranks) both ask for the demo at the same moment:
    one builds it, the other waits for the lock and finds it; one complete collection results."""
    from tests.processes import run_at_once

    home = tmp_path / "home"
    snippet = f"""
import json
from mmdemo.data import demo as demo_data
from mmdemo.settings import Settings
from mmdemo.data.store import Store

built = []
generate = demo_data.generate_demo_scenes
demo_data.generate_demo_scenes = lambda n, seed=0: built.append(n) or generate(n, seed)
settings = Settings.from_env({{"MMDEMO_HOME": {str(home)!r}, "MMDEMO_DEMO_PAIRS": "30"}})
store = Store(settings.db_path)  # a fresh database, opened by both at once
found = demo_data.ensure_demo_collection(store, settings)
print(json.dumps({{"id": found.id, "built": len(built), "pairs": store.count_pairs(found.id)}}))
"""
    results = run_at_once(snippet, 2, tmp_path / "signals")
    assert sorted(r["built"] for r in results) == [0, 1]  # generated once, not twice
    assert results[0]["id"] == results[1]["id"]
    assert [r["pairs"] for r in results] == [30, 30]  # the waiting one saw it complete
    store = Store(Settings.from_env({"MMDEMO_HOME": str(home)}).db_path)
    try:
        (collection,) = store.list_collections()  # no "(being created)" leftover
        assert collection.name == "demo-shapes" and store.count_pairs(collection.id) == 30
        assert [p.caption for p in store.list_pairs(collection.id)] == [
            s.caption for s in generate_demo_scenes(30)
        ]
    finally:
        store.close()
