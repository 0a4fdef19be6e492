"""State sync (issue 12) on the built-in demo: how long a save takes and how many bytes it writes.

On a temporary home with the demo collection (``--demo-pairs``, default 540) and a folder target:
the first save (every image and row), a save after one label, an idle save (nothing changed), a
save after labeling ``--labels`` pairs at once, and a restore into an empty home. With
``--extra-pairs N`` a second collection of N small generated images is added first, to see what
an idle save costs on a bigger store (every save reads and hashes every row). Prints ONE JSON
object. Not part of ``make bench``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from PIL import Image  # noqa: E402

from mmdemo.data.demo import DEMO_COLLECTION, ensure_demo_collection  # noqa: E402
from mmdemo.data.ingest import ImportReport, ingest_item  # noqa: E402
from mmdemo.data.store import Store  # noqa: E402
from mmdemo.hub.sync import FolderBackend, Syncer, parse_target, restore  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _timed_sync(syncer: Syncer) -> dict:
    started = time.perf_counter()
    report = syncer.sync_once()
    return {
        "seconds": round(time.perf_counter() - started, 4),
        "bytes": report.bytes,
        "files": len(report.files),
        "rows": report.rows,
        "images": report.images,
    }


def _extra_collection(store: Store, settings: Settings, pairs: int) -> None:
    collection = store.create_collection("extra")
    report = ImportReport("extra")
    for index in range(pairs):
        img = Image.new("RGB", (32, 32), (index % 251, (index // 251) % 251, 90))
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        ingest_item(
            store,
            settings,
            collection.id,
            report,
            f"{index}.png",
            buffer.getvalue(),
            f"item {index}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo-pairs", type=int, default=540)
    parser.add_argument("--labels", type=int, default=50)
    parser.add_argument("--extra-pairs", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmdemo-bench-sync-") as tmp:
        root = Path(tmp)
        settings = Settings.from_env(
            {"MMDEMO_HOME": str(root / "home"), "MMDEMO_DEMO_PAIRS": str(args.demo_pairs)}
        )
        settings.ensure_dirs()
        store = Store(settings.db_path)
        demo = ensure_demo_collection(store, settings, name=DEMO_COLLECTION)
        if args.extra_pairs:
            _extra_collection(store, settings, args.extra_pairs)
        target = parse_target(str(root / "target"))
        syncer = Syncer(store, settings, target, FolderBackend(target.folder))
        result: dict = {"pairs": sum(store.count_pairs(c.id) for c in store.list_collections())}
        result["first_save"] = _timed_sync(syncer)
        pairs = store.list_pairs(demo.id)
        store.add_label(pairs[0].id, "negative", negative_sha256=pairs[1].image_sha256, author="a")
        result["one_label"] = _timed_sync(syncer)
        result["idle"] = _timed_sync(syncer)
        for index in range(1, min(args.labels, len(pairs) - 1) + 1):
            store.add_label(
                pairs[index].id,
                "negative",
                negative_sha256=pairs[index - 1].image_sha256,
                author="b",
            )
        result[f"{args.labels}_labels"] = _timed_sync(syncer)
        result["target_bytes"] = _folder_bytes(target.folder)
        other = Settings.from_env({"MMDEMO_HOME": str(root / "other")})
        other.ensure_dirs()
        fresh = Store(other.db_path)
        started = time.perf_counter()
        report = restore(fresh, other, target, FolderBackend(target.folder))
        result["restore"] = {
            "seconds": round(time.perf_counter() - started, 3),
            "files": report.files,
            "images": report.images,
        }
        fresh.close()
        store.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
