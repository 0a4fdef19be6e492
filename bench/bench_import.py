"""Import throughput against bare Pillow, and what the pre-resized training copies buy.

Makes N photo-sized JPEGs (1600×1200, smooth colour fields, shapes and sensor-like noise) plus a
``metadata.jsonl`` once into a cached temp folder, then in one run times:

(a) bare Pillow: open + convert RGB + resize to the training size (shorter side) for every file,
    once before and once after (b), averaged;
(b) ``import_source`` of the folder into a fresh MMDEMO_HOME (validate, hash, store the original,
    write the training copy and the thumbnail, record the pair in SQLite);
(c) reading a 256-image training batch from the pre-resized copies vs decoding and resizing the
    stored originals.

``ratio`` = bare_pillow_s / import_s, i.e. import throughput as a fraction of bare decoding
(target ≥ 0.7). ``bare_pillow_draft_s`` is bare Pillow using JPEG draft mode too, for reference.
Prints one JSON object. Run: ``.venv/bin/python -m bench.bench_import [--n 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw

from mmdemo.data.images import image_path, train_path
from mmdemo.data.importers import import_source
from mmdemo.data.store import Store
from mmdemo.settings import Settings

WIDTH, HEIGHT = 1600, 1200
_DATA_VERSION = "v1"


def _photo(rng: np.random.Generator, noise: np.ndarray) -> Image.Image:
    """A JPEG-friendly stand-in for a photo: smooth fields, a few shapes, sensor noise."""
    field = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    img = Image.fromarray(field, "RGB").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = int(rng.integers(0, WIDTH - 200)), int(rng.integers(0, HEIGHT - 200))
        w, h = int(rng.integers(60, 400)), int(rng.integers(60, 400))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=colour)
    dy, dx = int(rng.integers(0, 64)), int(rng.integers(0, 64))
    pixels = np.asarray(img, dtype=np.int16) + noise[dy : dy + HEIGHT, dx : dx + WIDTH]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_dataset(n: int, root: Path | None = None) -> Path:
    """Create (once) and return a folder of ``n`` JPEGs with a ``metadata.jsonl``."""
    base = root or Path(tempfile.gettempdir()) / "mmdemo-bench-import"
    folder = base / f"n{n}-{_DATA_VERSION}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    noise = rng.normal(0, 6, (HEIGHT + 64, WIDTH + 64, 3)).astype(np.int16)
    words = ["red", "blue", "green", "tall", "small", "bright", "dark", "round", "square"]
    pick = random.Random(5)
    lines = []
    for i in range(n):
        name = f"photo_{i:05d}.jpg"
        _photo(rng, noise).save(folder / name, format="JPEG", quality=90)
        caption = f"photo {i}: a {pick.choice(words)} {pick.choice(words)} scene"
        lines.append(json.dumps({"file_name": name, "caption": caption}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / ".complete").write_text("ok")
    return folder


def _resize_shorter(img: Image.Image, side: int) -> Image.Image:
    width, height = img.size
    scale = side / min(width, height)
    return img.resize((round(width * scale), round(height * scale)), Image.Resampling.BICUBIC)


def bare_pillow(paths: list[Path], side: int, draft: bool = False) -> float:
    """Seconds to open, convert to RGB and resize every file (the baseline)."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            if draft:
                width, height = img.size
                scale = side / min(width, height)
                img.draft("RGB", (round(width * scale), round(height * scale)))
            _resize_shorter(img.convert("RGB"), side)
    return time.perf_counter() - start


def load_batch(paths: list[Path], side: int, resize: bool) -> float:
    """Seconds to load a batch as RGB arrays, resizing only when ``resize``."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        if resize:
            rgb = _resize_shorter(rgb, side)
        np.asarray(rgb)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of photos")
    parser.add_argument("--batch", type=int, default=256, help="training batch size")
    parser.add_argument("--data", type=Path, default=None, help="where to cache the photos")
    args = parser.parse_args(argv)

    gen_start = time.perf_counter()
    folder = make_dataset(args.n, args.data)
    generate_s = time.perf_counter() - gen_start
    paths = sorted(folder.glob("*.jpg"))[: args.n]

    with tempfile.TemporaryDirectory(prefix="mmdemo-bench-home-") as home:
        settings = Settings.from_env({"MMDEMO_HOME": home, "MMDEMO_BASE_MODEL": "tiny"})
        settings.ensure_dirs()
        side = settings.train_image_size
        # The baselines run before and after the import and are averaged, so that a load
        # change on a shared machine during the run does not favour either side.
        bare_runs = [bare_pillow(paths, side)]
        draft_runs = [bare_pillow(paths, side, draft=True)]
        store = Store(settings.db_path)
        try:
            start = time.perf_counter()
            report = import_source(store, settings, "bench", folder)
            import_s = time.perf_counter() - start
            pairs = store.list_pairs(store.collection("bench").id, limit=args.batch)
            infos = [store.image_info(p.image_sha256) for p in pairs]
        finally:
            store.close()
        draft_runs.append(bare_pillow(paths, side, draft=True))
        bare_runs.append(bare_pillow(paths, side))
        bare_s, bare_draft_s = sum(bare_runs) / 2, sum(draft_runs) / 2
        originals = [image_path(settings.images_dir, i["sha256"], i["ext"]) for i in infos]
        copies = [train_path(settings.images_dir, i["sha256"]) for i in infos]
        originals_s = load_batch(originals, side, resize=True)
        copies_s = load_batch(copies, side, resize=False)

    result = {
        "n": args.n,
        "image_size": [WIDTH, HEIGHT],
        "bare_pillow_s": round(bare_s, 3),
        "bare_pillow_runs_s": [round(t, 3) for t in bare_runs],
        "bare_pillow_draft_s": round(bare_draft_s, 3),
        "import_s": round(import_s, 3),
        "ratio": round(bare_s / import_s, 3),
        "ratio_target": 0.7,
        "ratio_vs_draft": round(bare_draft_s / import_s, 3),
        "import_images_per_s": round(args.n / import_s, 1),
        "bare_images_per_s": round(args.n / bare_s, 1),
        "added": report.added,
        "rejected": len(report.rejected),
        "batch": {
            "images": len(copies),
            "train_copies_s": round(copies_s, 3),
            "decode_resize_originals_s": round(originals_s, 3),
            "speedup": round(originals_s / copies_s, 2),
        },
        "generate_s": round(generate_s, 1),
        "pillow": PIL.__version__,
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
