"""Recall and precision of the duplicate check on planted near-duplicates.

A fresh home gets the demo collection (two-shape scenes: many distinct images that share a
layout, colour-swapped hard negatives among them) plus ``--distinct`` generated images of varied
content (gradients, stripes, blobs, noise, rectangles). Then ``--planted`` of those images, chosen
at random, get one edited copy each, imported into eval as new pairs, cycling through four edits:

- ``resize``: 90 % of the width and height;
- ``jpeg``: re-encoded as JPEG quality 70;
- ``crop``: 2–6 % cut from each side;
- ``all``: the crop, then the resize, then JPEG quality 70.

The check runs twice, with the base model's image embeddings (the tiny CLIP offline) and with
hashes only. A planted copy counts as found when it lands in one group with its original; every
other pair of images grouped together is a false alarm (no two distinct images are copies).
Prints one JSON object (``recall``, ``precision``, ``false_alarms``, per edit, and timings).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub from a benchmark

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from itertools import combinations  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from mmdemo.data.images import image_path  # noqa: E402
from mmdemo.data.ingest import ImportReport, ingest_item  # noqa: E402
from mmdemo.data.store import Store  # noqa: E402
from mmdemo.retrieval.checks import CheckOptions, check_collection  # noqa: E402
from mmdemo.services import DEMO_COLLECTION, Services  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402

EDITS = ("resize", "jpeg", "crop", "all")


def distinct_image(rng: random.Random, index: int) -> Image.Image:
    """One generated image of varied content (five kinds, random colours and geometry)."""
    w, h = rng.choice([(160, 120), (128, 128), (120, 160), (200, 150)])
    kind = index % 5
    colour = tuple(rng.randrange(256) for _ in range(3))
    other = tuple(rng.randrange(256) for _ in range(3))
    if kind == 0:  # a two-colour gradient at a random angle
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        t = (np.cos(angle) * x / w + np.sin(angle) * y / h + 1) / 2
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        a, b = np.array(colour, np.float32), np.array(other, np.float32)
        return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))
    img = Image.new("RGB", (w, h), colour)
    draw = ImageDraw.Draw(img)
    if kind == 1:  # stripes
        step = rng.randint(6, 24)
        for x in range(-h, w + h, step * 2):
            draw.polygon([(x, 0), (x + step, 0), (x + step + h // 2, h), (x + h // 2, h)], other)
    elif kind == 2:  # blobs
        for _ in range(rng.randint(3, 9)):
            r = rng.randint(8, 40)
            cx, cy = rng.randrange(w), rng.randrange(h)
            fill = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill)
    elif kind == 3:  # smooth noise
        coarse = np.random.default_rng(rng.randrange(2**32)).integers(
            0, 256, (6, 8, 3), dtype=np.uint8
        )
        return Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
    else:  # rectangles
        for _ in range(rng.randint(2, 6)):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            x1, y1 = x0 + rng.randint(10, w // 2), y0 + rng.randint(10, h // 2)
            draw.rectangle((x0, y0, x1, y1), tuple(rng.randrange(256) for _ in range(3)))
    return img


def edited(img: Image.Image, edit: str, rng: random.Random) -> bytes:
    """The planted copy of ``img`` as encoded bytes."""
    out = img.convert("RGB")
    if edit in ("crop", "all"):
        w, h = out.size
        cut = [rng.uniform(0.02, 0.06) for _ in range(4)]
        out = out.crop(
            (
                round(w * cut[0]),
                round(h * cut[1]),
                w - round(w * cut[2]),
                h - round(h * cut[3]),
            )
        )
    if edit in ("resize", "all"):
        out = out.resize(
            (round(out.width * 0.9), round(out.height * 0.9)), Image.Resampling.BICUBIC
        )
    buffer = io.BytesIO()
    if edit in ("jpeg", "all"):
        out.save(buffer, format="JPEG", quality=70)
    else:
        out.save(buffer, format="PNG")
    return buffer.getvalue()


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def plant(services: Services, distinct: int, planted: int, seed: int) -> dict[int, tuple[int, str]]:
    """Add the generated images and the planted copies; ``{copy pair id: (original, edit)}``."""
    store, settings = services.store, services.settings
    collection = store.collection(DEMO_COLLECTION)
    rng = random.Random(seed)
    report = ImportReport(collection.name)
    for i in range(distinct):
        img = distinct_image(rng, i)
        ingest_item(
            store,
            settings,
            collection.id,
            report,
            f"gen-{i}.png",
            _png(img),
            f"pattern {i}",
            "train",
        )
    pairs = store.list_pairs(collection.id)
    chosen = rng.sample(pairs, min(planted, len(pairs)))
    truth: dict[int, tuple[int, str]] = {}
    for n, pair in enumerate(chosen):
        edit = EDITS[n % len(EDITS)]
        info = store.image_info(pair.image_sha256)
        with Image.open(image_path(settings.images_dir, pair.image_sha256, info["ext"])) as img:
            data = edited(img, edit, rng)
        before = len(report.added_pair_ids)
        ingest_item(
            store,
            settings,
            collection.id,
            report,
            f"copy-{n}.{'jpg' if edit in ('jpeg', 'all') else 'png'}",
            data,
            f"planted copy {n} of pair {pair.id}",
            "eval",
        )
        if len(report.added_pair_ids) > before:
            truth[report.added_pair_ids[-1]] = (pair.id, edit)
    return truth


def score(groups: list, truth: dict[int, tuple[int, str]]) -> dict:
    """Recall per edit and overall, precision over every grouped pair of images."""
    linked: set[frozenset[int]] = set()
    for group in groups:
        linked.update(frozenset(p) for p in combinations(group.pair_ids, 2))
    wanted = {frozenset((copy, original)): edit for copy, (original, edit) in truth.items()}
    found = {key: edit for key, edit in wanted.items() if key in linked}
    false = [sorted(key) for key in linked if key not in wanted]
    by_edit = {
        edit: round(
            sum(1 for e in found.values() if e == edit)
            / max(1, sum(1 for e in wanted.values() if e == edit)),
            4,
        )
        for edit in EDITS
    }
    return {
        "planted": len(wanted),
        "found": len(found),
        "recall": round(len(found) / max(1, len(wanted)), 4),
        "precision": round(len(found) / max(1, len(found) + len(false)), 4),
        "false_alarms": len(false),
        "false_alarm_examples": false[:5],
        "recall_by_edit": by_edit,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-pairs", type=int, default=540)
    parser.add_argument("--distinct", type=int, default=200, help="generated distinct images")
    parser.add_argument("--planted", type=int, default=200, help="near-duplicates to plant")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-check-") as home:
        settings = Settings.from_env(
            {
                "MMDEMO_HOME": str(Path(home)),
                "MMDEMO_BASE_MODEL": "tiny",
                "MMDEMO_DEMO_PAIRS": str(args.demo_pairs),
            }
        )
        services = Services.create(settings)
        try:
            truth = plant(services, args.distinct, args.planted, args.seed)
            pairs = Store.count_pairs(services.store, services.store.collection(DEMO_COLLECTION).id)
            result: dict = {
                "pairs": pairs,
                "distinct_images": pairs - len(truth),
                "edits": list(EDITS),
            }
            for name, options in (
                ("with_embeddings", CheckOptions()),
                ("hashes_only", CheckOptions(use_embeddings=False)),
            ):
                start = time.perf_counter()
                report = check_collection(services, DEMO_COLLECTION, "base", options)
                seconds = time.perf_counter() - start
                leaks = report.as_json()["cross_split_duplicates"]
                result[name] = {
                    **score(list(report.duplicates), truth),
                    "cross_split_duplicates": len(leaks),
                    "seconds": round(seconds, 2),
                }
            start = time.perf_counter()
            check_collection(services, DEMO_COLLECTION, "base", CheckOptions())
            result["second_run_seconds"] = round(time.perf_counter() - start, 2)
        finally:
            services.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
