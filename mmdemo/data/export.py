"""Export a collection as a folder in Hugging Face Hub dataset layout.

The folder loads with ``datasets.load_dataset(folder, config)`` and can be pushed to the Hub as is:

- ``pairs`` (default): one parquet per non-empty split, the image bytes embedded;
- ``triplets``: the hand-labeled hard negatives (an image or a caption) of each anchor caption;
- ``also_positive``: images (or captions) labeled as also correct for a caption.

Only configs and splits that have rows are written and declared: ``datasets`` 5.2 cannot load
an empty split without ``streaming=True``, so a collection without labels has no ``triplets``
config, and a collection without pairs is an :class:`ExportError`. A dataset card
(``README.md``) declares the configs and describes the data. The card is rendered from a plain
dict by :func:`render_dataset_card` so the publisher can reuse it. The export is written to a
``.partial`` sibling folder and renamed into place at the end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from mmdemo import __version__
from mmdemo.data.agreement import consensus
from mmdemo.data.images import image_path
from mmdemo.data.store import SPLITS, NegativeLabel, Pair, Store
from mmdemo.settings import Settings
from mmdemo.text import md

ProgressFn = Callable[[int, int | None, str], None]

CONFIG_NAMES = ("pairs", "triplets", "also_positive")
ROW_GROUP_SIZE = 100
"""Rows per parquet row group; small because every row carries image bytes."""

_TIMESTAMP = datasets.Value("timestamp[ms, tz=UTC]")

PAIRS_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "pair_id": datasets.Value("int64"),
        "image_sha256": datasets.Value("string"),
        "author": datasets.Value("string"),
        "created_at": _TIMESTAMP,
        "updated_at": _TIMESTAMP,
    }
)
TRIPLETS_FEATURES = datasets.Features(
    {
        "anchor": datasets.Value("string"),
        "positive": datasets.Image(),
        "negative": datasets.Image(),
        "negative_caption": datasets.Value("string"),
        "anchor_pair_id": datasets.Value("int64"),
        "positive_sha256": datasets.Value("string"),
        "negative_sha256": datasets.Value("string"),
        "author": datasets.Value("string"),
        "created_at": _TIMESTAMP,
        "split": datasets.Value("string"),
    }
)
ALSO_POSITIVE_FEATURES = datasets.Features(
    {
        "anchor": datasets.Value("string"),
        "positive": datasets.Image(),
        "also_positive": datasets.Image(),
        "also_positive_caption": datasets.Value("string"),
        "anchor_pair_id": datasets.Value("int64"),
        "positive_sha256": datasets.Value("string"),
        "also_positive_sha256": datasets.Value("string"),
        "author": datasets.Value("string"),
        "created_at": _TIMESTAMP,
        "split": datasets.Value("string"),
    }
)

COLUMN_DOCS: dict[str, dict[str, str]] = {
    "pairs": {
        "image": "the image (normalised original, bytes embedded)",
        "caption": "its caption",
        "pair_id": "id of the pair in the mmdemo store that exported it",
        "image_sha256": "SHA-256 of the image bytes (the image's identity)",
        "author": "who added the pair (may be empty)",
        "created_at / updated_at": "when the pair was added / last edited (UTC)",
    },
    "triplets": {
        "anchor": "the caption",
        "positive": "the image that belongs to the caption",
        "negative": "a hard-negative image for the caption (empty for caption negatives)",
        "negative_caption": "a hard-negative caption for the positive image (empty otherwise)",
        "anchor_pair_id": "`pair_id` of the anchor pair in the `pairs` config",
        "positive_sha256 / negative_sha256": "SHA-256 of the positive / negative image",
        "author": "who labeled the negative",
        "created_at": "when it was labeled (UTC)",
        "split": "the split of the anchor pair",
    },
    "also_positive": {
        "anchor": "the caption",
        "positive": "the image that belongs to the caption",
        "also_positive": "another image labeled as also correct for the caption",
        "also_positive_caption": "or another caption labeled as also correct for the image",
        "anchor_pair_id": "`pair_id` of the anchor pair in the `pairs` config",
        "positive_sha256 / also_positive_sha256": "SHA-256 of the images",
        "author": "who labeled it",
        "created_at": "when it was labeled (UTC)",
        "split": "the split of the anchor pair",
    },
}


class ExportError(Exception):
    """An export that cannot be written; ``str(exc)`` says why."""


@dataclass
class ExportSummary:
    """What an export wrote. ``as_json()`` is the CLI's last stdout line."""

    collection: str
    out_dir: Path
    pairs: dict[str, int] = field(default_factory=dict)
    image_negatives: int = 0
    caption_negatives: int = 0
    also_positives: int = 0
    authors: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def negatives(self) -> int:
        return self.image_negatives + self.caption_negatives

    def as_json(self) -> dict:
        return {
            "collection": self.collection,
            "out_dir": str(self.out_dir),
            "pairs": dict(self.pairs),
            "negatives": self.negatives,
            "caption_negatives": self.caption_negatives,
            "also_positives": self.also_positives,
            "authors": self.authors,
            "skipped": [{"item": i, "reason": r} for i, r in self.skipped],
            "files": list(self.files),
        }

    def summary(self) -> str:
        """One sentence for people."""
        total = sum(self.pairs.values())
        text = (
            f"Exported {total} pair{'s' if total != 1 else ''} and {self.negatives} hard"
            f" negative{'s' if self.negatives != 1 else ''} to {self.out_dir}"
        )
        if self.skipped:
            text += f" (skipped {len(self.skipped)} with missing image files)"
        return text + "."


# -- the dataset card -------------------------------------------------------------------------
def read_card_metadata(folder: Path) -> dict:
    """The YAML front matter of ``folder/README.md`` as a dict (empty when absent or invalid)."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return {}
    text = card.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def card_config_names(metadata: dict) -> list[str]:
    configs = metadata.get("configs") or []
    return [c.get("config_name") for c in configs if isinstance(c, dict)]


def is_mmdemo_export(folder: Path) -> bool:
    """Whether ``folder`` holds an export written by :func:`export_collection`.

    A card with a ``pairs`` config and the ``mmdemo`` tag (label configs are optional), or a
    ``pairs`` and a ``triplets`` config (older exports always declared both).
    """
    metadata = read_card_metadata(folder)
    names = card_config_names(metadata)
    tags = metadata.get("tags")
    tagged = isinstance(tags, list) and "mmdemo" in tags
    return "pairs" in names and (tagged or "triplets" in names)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "1M<n<10M"


_USAGE = {
    "pairs": ("pairs", "image, caption, ..."),
    "triplets": ("triplets", "anchor, positive, negative, ..."),
    "also_positive": ("also", "anchor, positive, also_positive, ..."),
}
"""Per config: the variable the usage snippet loads it into, and the comment on its columns."""


def render_dataset_card(info: dict) -> str:
    """Render the dataset card (YAML front matter + Markdown) from plain data.

    ``info`` keys: ``pretty_name``, ``collection``, ``configs`` (``{config: {split: path}}``;
    a config without files is left out of the card), ``splits`` (pairs per split),
    ``triplets``/``also_positive`` (rows per split), ``image_negatives``, ``caption_negatives``,
    ``also_positives``, ``authors``; optional ``repo_id`` (for the usage snippet), ``license``
    (default ``other``), ``generated_at``.
    """
    declared = {name: files for name, files in info["configs"].items() if files}
    configs = []
    for name, files in declared.items():
        entry: dict = {
            "config_name": name,
            "data_files": [{"split": s, "path": p} for s, p in files.items()],
        }
        if name == "pairs":
            entry["default"] = True
        configs.append(entry)
    total = sum(info["splits"].values())
    front = {
        "pretty_name": info["pretty_name"],
        "license": info.get("license", "other"),
        "task_categories": [
            "feature-extraction",
            "sentence-similarity",
            "image-to-text",
            "text-to-image",
        ],
        "tags": ["mmdemo", "clip", "hard-negatives", "image-text-pairs"],
        "size_categories": [_size_category(total)],
        "configs": configs,
    }
    where = info.get("repo_id") or "path/to/this/folder"
    negatives = info["image_negatives"] + info["caption_negatives"]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {md(info['pretty_name'])}",
        "",
        f"Image–caption pairs of the mmdemo collection “{md(info['collection'])}”"
        + (", with hand-labeled hard negatives," if negatives else "")
        + " for finetuning and evaluating CLIP-style embedding models.",
        "",
        "## Splits",
        "",
        "| split | pairs | negatives | also-positives |",
        "|---|---:|---:|---:|",
    ]
    for split in SPLITS:
        pairs = info["splits"].get(split, 0)
        trip = info.get("triplets", {}).get(split, 0)
        also = info.get("also_positive", {}).get(split, 0)
        if pairs or trip or also:
            lines.append(f"| {split} | {pairs} | {trip} | {also} |")
    lines.append(f"| **total** | {total} | {negatives} | {info['also_positives']} |")
    lines += [
        "",
        "## Labeling",
        "",
        f"- hard negatives: {negatives} ({info['image_negatives']} image and"
        f" {info['caption_negatives']} caption negatives)",
        f"- also-positives (images or captions that also fit a pair): {info['also_positives']}",
        f"- distinct labelers (pair and label authors): {info['authors']}",
    ]
    lines += ["", "## Configs", ""]
    lines.append(
        "This dataset has the config"
        + ("s " if len(declared) > 1 else " ")
        + ", ".join(f"`{name}`" + (" (default)" if name == "pairs" else "") for name in declared)
        + "; each loads with `load_dataset` as shown under Usage. A config has a split only"
        " where it has rows (see the table above)."
    )
    if "triplets" not in declared:
        lines += [
            "",
            "No hard negatives are labeled yet, so there is no `triplets` config; an export"
            " made after labeling adds it.",
        ]
    if "also_positive" not in declared:
        lines += [
            "",
            "No also-positives are labeled yet, so there is no `also_positive` config.",
        ]
    lines += ["", "## Usage", "", "```python", "from datasets import load_dataset", ""]
    lines += [
        f'{_USAGE[name][0]} = load_dataset("{where}", "{name}")  # {_USAGE[name][1]}'
        for name in declared
        if name in _USAGE
    ]
    lines.append("```")
    if "triplets" in declared:
        lines += [
            "",
            "`triplets` has the column order sentence-transformers expects (anchor, positive,"
            " negative). Rows with a caption negative have `negative` empty and"
            " `negative_caption` set.",
        ]
    lines += ["", "## Columns"]
    for config, docs in COLUMN_DOCS.items():
        if config not in declared:
            continue
        lines += ["", f"### `{config}`", ""]
        lines += [f"- `{col}`: {text}" for col, text in docs.items()]
    lines += [
        "",
        "## License",
        "",
        "The license is not set yet (`other`): the owner of these images and captions should"
        " choose one before sharing.",
        "",
        f"_Written by mmdemo {__version__}"
        + (f" on {info['generated_at']}" if info.get("generated_at") else "")
        + "._",
        "",
    ]
    return "\n".join(lines)


# -- writing parquet ------------------------------------------------------------------------
class _ParquetSink:
    """Writes rows to one parquet file in small row groups; ``close()`` returns the row count."""

    def __init__(self, path: Path, features: datasets.Features):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = features.arrow_schema
        self.writer = pq.ParquetWriter(path, self.schema)
        self.buffer: list[dict] = []
        self.rows = 0

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        if len(self.buffer) >= ROW_GROUP_SIZE:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
            self.rows += len(self.buffer)
            self.buffer = []

    def close(self) -> int:
        self.flush()
        self.writer.close()
        return self.rows

    def content_named(self, root: Path) -> str:
        """Rename the closed file to ``<name>-<12 hex of its SHA-256>.parquet``; return its path
        relative to ``root``.

        ``datasets`` caches a local folder's configs by the folder's name and the card's
        ``configs``, not by the files' content: two exports with the same layout (a re-export
        after more labeling, or another collection exported to a folder of the same name) would
        load each other's cached rows. A content-named file makes every different export a
        different config.
        """
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        target = self.path.with_name(f"{self.path.stem}-{digest}{self.path.suffix}")
        self.path.rename(target)
        return target.relative_to(root).as_posix()


def _timestamp(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, tz=dt.UTC)


class ImageReader:
    """Reads stored originals as the ``{"bytes", "path"}`` image cells an export embeds; the
    published card's evaluation decodes these same cells (``published_pairs``)."""

    def __init__(self, store: Store, settings: Settings):
        self.store = store
        self.images_dir = settings.images_dir

    def cell(self, sha256: str) -> dict | None:
        info = self.store.image_info(sha256)
        if info is None:
            return None
        path = image_path(self.images_dir, sha256, info["ext"])
        try:
            data = path.read_bytes()
        except OSError:
            return None
        return {"bytes": data, "path": path.name}


def _write_pairs(
    tmp: Path, pairs: list[Pair], images: ImageReader, summary: ExportSummary, tick: Callable
) -> tuple[dict[str, str], set[int]]:
    files: dict[str, str] = {}
    written: set[int] = set()
    for split in SPLITS:
        chunk = [p for p in pairs if p.split == split]
        if not chunk:
            continue
        rel = f"pairs/{split}.parquet"
        sink = _ParquetSink(tmp / rel, PAIRS_FEATURES)
        for pair in chunk:
            cell = images.cell(pair.image_sha256)
            if cell is None:
                summary.skipped.append((f"pair {pair.id}", "image file missing from the store"))
            else:
                sink.add(
                    {
                        "image": cell,
                        "caption": pair.caption,
                        "pair_id": pair.id,
                        "image_sha256": pair.image_sha256,
                        "author": pair.author,
                        "created_at": _timestamp(pair.created_at),
                        "updated_at": _timestamp(pair.updated_at),
                    }
                )
                written.add(pair.id)
            tick(f"pairs/{split}: pair {pair.id}")
        if sink.close():
            files[split] = sink.content_named(tmp)
        else:
            (tmp / rel).unlink()
    return files, written


def _label_row(config: str, label: NegativeLabel, anchor: Pair, images: ImageReader) -> dict:
    other = images.cell(label.negative_sha256) if label.negative_sha256 else None
    if label.negative_sha256 and other is None:
        raise FileNotFoundError(label.negative_sha256)
    target = "negative" if config == "triplets" else "also_positive"
    return {
        "anchor": anchor.caption,
        "positive": images.cell(anchor.image_sha256),
        target: other,
        f"{target}_caption": label.negative_caption,
        "anchor_pair_id": anchor.id,
        "positive_sha256": anchor.image_sha256,
        f"{target}_sha256": label.negative_sha256,
        "author": label.author,
        "created_at": _timestamp(label.created_at),
        "split": anchor.split,
    }


def _write_labels(
    tmp: Path,
    config: str,
    features: datasets.Features,
    labels: Iterable[NegativeLabel],
    anchors: dict[int, Pair],
    images: ImageReader,
    summary: ExportSummary,
    tick: Callable,
) -> tuple[dict[str, str], dict[str, int]]:
    by_split: dict[str, list[NegativeLabel]] = {s: [] for s in SPLITS}
    for label in labels:
        anchor = anchors.get(label.pair_id)
        if anchor is None:
            summary.skipped.append((f"label {label.id}", "its pair was not exported"))
            tick(f"{config}: label {label.id}")
            continue
        by_split[anchor.split].append(label)
    files: dict[str, str] = {}
    counts: dict[str, int] = {}
    for split, chunk in by_split.items():
        if not chunk:
            continue
        rel = f"{config}/{split}.parquet"
        sink = _ParquetSink(tmp / rel, features)
        for label in chunk:
            try:
                sink.add(_label_row(config, label, anchors[label.pair_id], images))
            except FileNotFoundError:
                summary.skipped.append((f"label {label.id}", "image file missing from the store"))
            tick(f"{config}/{split}: label {label.id}")
        counts[split] = sink.close()
        if counts[split]:
            files[split] = sink.content_named(tmp)
        else:
            (tmp / rel).unlink()
    # No rows, no file: the config is then left out of the card (an empty split does not load).
    return files, counts


# -- the export -------------------------------------------------------------------------------
def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is not a folder.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_mmdemo_export(out_dir):
        raise ExportError(
            f"{out_dir} is not empty and is not a previous mmdemo export; refusing to overwrite"
            " it. Choose an empty or new folder."
        )


def _replace_folder(tmp: Path, out_dir: Path) -> None:
    """Move the finished export into place; an older export is removed only afterwards."""
    old = out_dir.with_name(out_dir.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except BaseException:
        if old.exists() and not out_dir.exists():
            old.rename(out_dir)
        raise
    if old.exists():
        shutil.rmtree(old)


def export_collection(
    store: Store,
    settings: Settings,
    collection: str,
    out_dir: Path,
    progress: ProgressFn | None = None,
) -> ExportSummary:
    """Write ``collection`` to ``out_dir`` in Hub dataset layout (see the module docstring).

    Raises :class:`ExportError` when the collection has no pairs (or none whose image file is
    still in the store) or ``out_dir`` holds something other than an mmdemo export, and
    :class:`mmdemo.data.store.StoreError` for an unknown collection.
    """
    found = store.collection(collection)
    out_dir = Path(out_dir).expanduser().resolve()
    pairs = store.list_pairs(found.id)
    if not pairs:
        raise ExportError(f"Collection {found.name!r} has no pairs to export.")
    _check_target(out_dir)
    # One decision per candidate when several people labeled it (also-correct wins).
    labels = consensus(store.labels_for_collection(found.id))
    negatives = [lab for lab in labels if lab.kind == "negative"]
    also = [lab for lab in labels if lab.kind == "also-positive"]
    summary = ExportSummary(collection=found.name, out_dir=out_dir)
    total = len(pairs) + len(labels)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, message)

    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        images = ImageReader(store, settings)
        pair_files, written = _write_pairs(tmp, pairs, images, summary, tick)
        if not pair_files:
            raise ExportError(
                f"Collection {found.name!r} has no pairs to export: the image files of all"
                f" {len(pairs)} of its pairs are missing from the store."
            )
        anchors = {p.id: p for p in pairs if p.id in written}
        trip_files, trip_counts = _write_labels(
            tmp, "triplets", TRIPLETS_FEATURES, negatives, anchors, images, summary, tick
        )
        also_files, also_counts = _write_labels(
            tmp, "also_positive", ALSO_POSITIVE_FEATURES, also, anchors, images, summary, tick
        )
        skipped_labels = {item for item, _ in summary.skipped if item.startswith("label ")}
        kept = [lab for lab in labels if f"label {lab.id}" not in skipped_labels]
        summary.pairs = {s: sum(1 for p in anchors.values() if p.split == s) for s in SPLITS}
        summary.pairs = {s: n for s, n in summary.pairs.items() if n}
        summary.image_negatives = sum(
            1 for lab in kept if lab.kind == "negative" and lab.negative_sha256
        )
        summary.caption_negatives = sum(
            1 for lab in kept if lab.kind == "negative" and lab.negative_caption
        )
        summary.also_positives = sum(1 for lab in kept if lab.kind == "also-positive")
        authors = {p.author for p in anchors.values()} | {lab.author for lab in kept}
        summary.authors = len(authors - {None, ""})
        info = {
            "pretty_name": f"mmdemo: {found.name}",
            "collection": found.name,
            "configs": {"pairs": pair_files, "triplets": trip_files, "also_positive": also_files},
            "splits": summary.pairs,
            "triplets": trip_counts,
            "also_positive": also_counts,
            "image_negatives": summary.image_negatives,
            "caption_negatives": summary.caption_negatives,
            "also_positives": summary.also_positives,
            "authors": summary.authors,
            "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        }
        (tmp / "README.md").write_text(render_dataset_card(info), encoding="utf-8")
        summary.files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary
