"""Import a Hugging Face dataset (local or from the Hub) into a collection.

Sources: a ``save_to_disk`` folder, parquet file(s) or a folder of them, a dataset folder with a
card, an mmdemo export (pairs *and* its hard-negative labels come back) or a Hub id
``owner/name``. Rows are streamed, never materialised, and images are read as raw bytes
(``Image(decode=False)``) so each one is decoded once, by :func:`mmdemo.data.ingest.ingest_item`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets import load_dataset, load_from_disk
from huggingface_hub import constants as hub_constants
from PIL import Image as PILImage

from mmdemo.data.export import CONFIG_NAMES, card_config_names, is_mmdemo_export, read_card_metadata
from mmdemo.data.images import ImageLimits, ImageRejected, ingest_image_bytes
from mmdemo.data.importers.errors import ImportFailed
from mmdemo.data.importers.files import max_image_file_bytes
from mmdemo.data.importers.tables import SPLIT_ALIASES
from mmdemo.data.ingest import CaptionRejected, ImportReport, ProgressFn, clean_caption, ingest_item
from mmdemo.data.store import SPLITS, Pair, Store, StoreError
from mmdemo.settings import Settings

IMAGE_COLUMN_NAMES = (
    "image", "img", "images", "picture", "photo", "jpg", "jpeg", "png", "webp",
    "file_name", "filename", "image_path", "image_file", "img_path", "filepath", "file_path",
    "path",
)  # fmt: skip
CAPTION_COLUMN_NAMES = (
    "caption", "captions", "text", "texts", "sentence", "sentences", "description",
    "prompt", "alt_text", "alt", "title", "txt", "query",
)  # fmt: skip
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_BATCH = 32
_AnyDataset = datasets.Dataset | datasets.IterableDataset


class HFImportFailed(ImportFailed):
    """A dataset that cannot be imported at all; ``str(exc)`` says why and what to do.

    A subclass of the importers' :class:`ImportFailed`, so callers catch one exception type.
    """


@dataclass
class HFImportReport(ImportReport):
    """:class:`ImportReport` plus notes (remapped splits, labels already present)."""

    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {**super().as_json(), "notes": list(self.notes)}

    def summary(self) -> str:
        text = super().summary()
        return text + (" " + " ".join(self.notes) if self.notes else "")


def map_split(name: str | None) -> tuple[str, bool]:
    """mmdemo split for a source split name, and whether the name was recognised."""
    if name is None:
        return "train", True
    target = SPLIT_ALIASES.get(name.strip().lower())
    return (target, True) if target else ("train", False)


@dataclass
class _Source:
    label: str
    splits: dict[str | None, datasets.Dataset | datasets.IterableDataset]
    local_root: Path | None


class _Run:
    """Shared state of one import: the report, the collection and the progress counter."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        collection: str,
        author: str | None,
        progress: ProgressFn | None,
        label: str,
    ):
        self.store: Store = store
        self.settings: Settings = settings
        self.collection = store.get_or_create_collection(collection)
        self.report = HFImportReport(collection=self.collection.name)
        self.author: str | None = author
        self.progress: ProgressFn | None = progress
        self.label: str = label
        self.max_bytes = max_image_file_bytes(settings)
        self.done = 0
        self.total: int | None = None

    def tick(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, message)


# -- opening sources ---------------------------------------------------------------------------
def _load_failed(what: str, exc: Exception, remote: bool) -> HFImportFailed:
    text = f"Could not load {what}: {type(exc).__name__}: {exc}."
    if remote:
        text += (
            " There is no local file or folder of that name either. Check the dataset id and"
            " your network connection; private or gated datasets need HF_TOKEN."
        )
        if hub_constants.HF_HUB_OFFLINE:
            text += " Offline mode is on (HF_HUB_OFFLINE=1), so the Hub cannot be reached."
    return HFImportFailed(text)


def _as_splits(loaded: object) -> dict:
    if isinstance(loaded, datasets.DatasetDict | datasets.IterableDatasetDict):
        return dict(loaded)
    return {None: loaded}


def _open_source(source: str | Path | Sequence[str | Path], config: str | None) -> _Source:
    if isinstance(source, list | tuple):
        files = [str(Path(p).expanduser()) for p in source]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise HFImportFailed(f"Parquet file(s) not found: {', '.join(missing)}")
        try:
            loaded = load_dataset("parquet", data_files=files, streaming=True)
        except Exception as exc:
            raise _load_failed("the parquet files", exc, remote=False) from exc
        return _Source(f"parquet:{Path(files[0]).name}", _as_splits(loaded), Path(files[0]).parent)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".parquet":
            raise HFImportFailed(
                f"{path} is not a parquet file; import folders, zips, CSV and JSONL files with"
                " the general importer."
            )
        return _open_source([path], config)
    if path.is_dir():
        try:
            if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
                loaded = load_from_disk(str(path))
            else:
                loaded = load_dataset(str(path), config, streaming=True)
        except Exception as exc:
            raise _load_failed(f"the dataset in {path}", exc, remote=False) from exc
        return _Source(f"dataset:{path.name}", _as_splits(loaded), path.resolve())
    text = str(source).strip().removeprefix("hf://").removeprefix("datasets/")
    if not _HUB_ID.fullmatch(text):
        raise HFImportFailed(
            f"{text!r} is neither a local file or folder nor a Hub dataset id (owner/name)."
        )
    try:
        loaded = load_dataset(text, config, streaming=True)
    except Exception as exc:
        raise _load_failed(f"{text!r} from the Hugging Face Hub", exc, remote=True) from exc
    return _Source(f"hf:{text}", _as_splits(loaded), None)


def _choose_splits(
    src: _Source, split: str | None, notes: list[str]
) -> list[tuple[str | None, datasets.Dataset | datasets.IterableDataset, str]]:
    """``(source split, dataset, mmdemo split)`` for every split to import."""
    if split is None:
        chosen = []
        for name, ds in src.splits.items():
            target, known = map_split(name)
            if not known:
                notes.append(f"Source split {name!r} went into train.")
            chosen.append((name, ds, target))
        return chosen
    target, known = map_split(split)
    if split in src.splits:
        if not known:
            notes.append(f"Source split {split!r} went into train.")
        return [(split, src.splits[split], target)]
    if known:
        if len(src.splits) == 1:
            ((name, ds),) = src.splits.items()
            return [(name, ds, target)]
        same = [name for name in src.splits if map_split(name) == (target, True)]
        if len(same) == 1:
            return [(same[0], src.splits[same[0]], target)]
    available = ", ".join(str(s) for s in src.splits)
    raise HFImportFailed(f"No split {split!r} in {src.label}; available splits: {available}.")


# -- columns and values ------------------------------------------------------------------------
def _columns(ds: datasets.Dataset | datasets.IterableDataset) -> list[str]:
    if ds.features is not None:
        return list(ds.features)
    return list(ds.column_names or [])


def _pick(
    columns: list[str], wanted: str | None, names: Sequence[str], what: str, label: str
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise HFImportFailed(
                f"No column {wanted!r} in {label}; available columns: {', '.join(columns)}."
            )
        return wanted
    lower = {c.lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    raise HFImportFailed(
        f"Could not tell which column of {label} holds the {what}; available columns:"
        f" {', '.join(columns)}. Name it with the {what[:-1]} column option."
    )


def resolve_columns(
    ds: datasets.Dataset | datasets.IterableDataset,
    label: str,
    image_column: str | None = None,
    caption_column: str | None = None,
) -> tuple[str, str]:
    """The ``(image, caption)`` column names: the given ones (checked) or auto-detected."""
    columns = _columns(ds)
    if image_column is None and ds.features is not None:
        image_column = next(
            (c for c, f in ds.features.items() if isinstance(f, datasets.Image)), None
        )
    image = _pick(columns, image_column, IMAGE_COLUMN_NAMES, "images", label)
    caption = _pick(
        [c for c in columns if c != image] if caption_column is None else columns,
        caption_column,
        CAPTION_COLUMN_NAMES,
        "captions",
        label,
    )
    return image, caption


def _raw_images(ds: _AnyDataset, columns: list[str]) -> _AnyDataset:
    """Keep ``columns`` and switch their ``Image()`` features to undecoded bytes."""
    ds = ds.select_columns(columns)
    for col in columns:
        if ds.features is not None and isinstance(ds.features.get(col), datasets.Image):
            ds = ds.cast_column(col, datasets.Image(decode=False))
    return ds


def _rows(ds: _AnyDataset) -> Iterator[dict]:
    for batch in ds.iter(batch_size=_BATCH):
        keys = list(batch)
        for i in range(len(batch[keys[0]]) if keys else 0):
            yield {k: batch[k][i] for k in keys}


_REMOTE_SCHEMES = ("hf://", "https://", "http://")


def _read_path(
    path: str, local_root: Path | None, max_bytes: int, allow_absolute: bool = True
) -> bytes:
    """Bytes of an image a row names by path. Raises ``ValueError`` with the reason.

    ``allow_absolute=False`` (on a shared Space) keeps even a local dataset inside its folder.
    """
    if local_root is None:
        # A remote dataset must not make us read local files (no plain paths, no file://).
        if not path.lower().startswith(_REMOTE_SCHEMES):
            raise ValueError(f"image file not found: {path}")
        from datasets.utils.file_utils import xopen  # a file inside a remote repository

        with xopen(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    else:
        # Absolute paths (save_to_disk keeps them) are the user's own files; relative ones
        # must stay inside the dataset folder.
        if "://" in path:
            raise ValueError(f"image path is a URL, not a file in the dataset: {path}")
        target = (local_root / Path(path).expanduser()).resolve()
        inside = target.is_relative_to(local_root.resolve())
        if not inside and (not allow_absolute or not Path(path).is_absolute()):
            raise ValueError(f"image path leaves the dataset folder: {path}")
        if not target.is_file():
            raise ValueError(f"image file not found: {path}")
        if target.stat().st_size > max_bytes:
            raise ValueError(f"image file too large: {path}")
        data = target.read_bytes()
    if len(data) > max_bytes:
        raise ValueError(f"image file too large: {path}")
    return data


def image_bytes(
    value: object, local_root: Path | None, max_bytes: int, allow_absolute: bool = True
) -> tuple[bytes | None, str]:
    """Raw bytes of an image cell (``{"bytes", "path"}``, bytes, a path or a PIL image).

    Returns ``(bytes, "")`` or ``(None, reason)``.
    """
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), ""
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value), ""
    if isinstance(value, PILImage.Image):  # only when a source could not skip decoding
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue(), ""
    if isinstance(value, str) and value:
        try:
            return _read_path(value, local_root, max_bytes, allow_absolute), ""
        except ValueError as exc:
            return None, str(exc)
        except OSError as exc:
            return None, f"could not read image {value}: {exc}"
    return None, "no image in this row"


def caption_value(value: object) -> object:
    """A caption cell; a list of captions gives its first non-blank one."""
    if isinstance(value, list | tuple):
        return next((v for v in value if isinstance(v, str) and v.strip()), None)
    return value


def _count(ds: datasets.Dataset | datasets.IterableDataset) -> int | None:
    if isinstance(ds, datasets.Dataset):
        return len(ds)
    try:
        return ds.info.splits[str(ds.split)].num_examples or None
    except (AttributeError, KeyError, TypeError):
        return None


# -- importing ---------------------------------------------------------------------------------
def _ingest_rows(
    run: _Run,
    ds: _AnyDataset,
    image_col: str,
    caption_col: str,
    target: str,
    name: str | None,
    local_root: Path | None,
    extra: Sequence[str] = (),
) -> Iterator[tuple[dict, Pair | None]]:
    """Ingest every row of ``ds``; yields each row with its pair (None when rejected)."""
    ds = _raw_images(ds, list(dict.fromkeys([image_col, caption_col, *extra])))
    where = f"{run.label}[{name}]" if name else run.label
    for index, row in enumerate(_rows(ds)):
        item = f"{where}#{index}"
        data, reason = image_bytes(
            row[image_col], local_root, run.max_bytes, allow_absolute=not run.settings.space_id
        )
        pair = None
        if data is None:
            run.report.reject(item, reason)
        else:
            row_author = row.get("author") if "author" in extra else None
            pair = ingest_item(
                run.store,
                run.settings,
                run.collection.id,
                run.report,
                item,
                data,
                caption_value(row[caption_col]),
                split=target,
                author=row_author or run.author,
                source=run.label,
            )
        run.tick(f"{where}: {index + 1} rows")
        yield row, pair


def import_hf_dataset(
    store: Store,
    settings: Settings,
    collection: str,
    source: str | Path | Sequence[str | Path],
    *,
    caption_column: str | None = None,
    image_column: str | None = None,
    split: str | None = None,
    config: str | None = None,
    author: str | None = None,
    progress: ProgressFn | None = None,
) -> HFImportReport:
    """Import ``source`` into ``collection`` (created when missing); see the module docstring.

    ``split`` imports only that split of the source, all of it into the matching mmdemo split.
    Raises :class:`HFImportFailed` when the source cannot be opened or a column is unknown;
    per-row problems are rejections in the returned report.
    """
    if not isinstance(source, list | tuple) and Path(source).expanduser().is_dir():
        folder = Path(source).expanduser()
        if is_mmdemo_export(folder):
            return _import_export(store, settings, collection, folder, split, author, progress)
    src = _open_source(source, config)
    notes: list[str] = []
    chosen = _choose_splits(src, split, notes)
    plans = [
        (name, ds, target, *resolve_columns(ds, src.label, image_column, caption_column))
        for name, ds, target in chosen
    ]
    run = _Run(store, settings, collection, author, progress, src.label)
    run.report.notes.extend(notes)
    counts = [_count(ds) for _, ds, *_ in plans]
    run.total = None if None in counts else sum(counts)
    try:
        for name, ds, target, image_col, caption_col in plans:
            for _ in _ingest_rows(run, ds, image_col, caption_col, target, name, src.local_root):
                pass
    except (OSError, datasets.exceptions.DatasetGenerationError) as exc:
        raise HFImportFailed(
            f"Reading {src.label} failed after {run.report.added} pairs were added"
            f" ({type(exc).__name__}: {exc})."
        ) from exc
    return run.report


# -- mmdemo exports: pairs and their labels ------------------------------------------------------
_LABEL_CONFIGS = (
    ("triplets", "negative", "negative"),
    ("also_positive", "also-positive", "also_positive"),
)


def _parquet_rows(folder: Path, metadata: dict, config: str) -> int:
    for entry in metadata.get("configs") or []:
        if isinstance(entry, dict) and entry.get("config_name") == config:
            return sum(
                pq.ParquetFile(folder / f["path"]).metadata.num_rows
                for f in entry.get("data_files") or []
                if (folder / f["path"]).is_file()
            )
    return 0


def _import_export(
    store: Store,
    settings: Settings,
    collection: str,
    folder: Path,
    split: str | None,
    author: str | None,
    progress: ProgressFn | None,
) -> HFImportReport:
    """Import the pairs of an mmdemo export, then restore its labels onto them.

    The label configs are optional (an export declares only configs with rows); an older
    export's empty ``triplets`` config is read by streaming, which copes with empty splits.
    """
    metadata = read_card_metadata(folder)
    configs = [c for c in card_config_names(metadata) if c in CONFIG_NAMES]
    label = f"export:{folder.name}"
    notes: list[str] = []
    chosen = _choose_splits(_open_export(folder, "pairs", label), split, notes)
    run = _Run(store, settings, collection, author, progress, label)
    run.report.notes.extend(notes)
    run.total = sum(_parquet_rows(folder, metadata, c) for c in configs)
    try:
        pair_map: dict[int, Pair] = {}
        extra = ("pair_id", "author")
        for name, ds, target in chosen:
            for row, pair in _ingest_rows(run, ds, "image", "caption", target, name, None, extra):
                if pair is not None:
                    pair_map[row["pair_id"]] = pair
        # Label rows name their anchor's split in the export, i.e. a source split name.
        wanted = {name for name, _, _ in chosen} if split else set(SPLITS)
        already = 0
        for config, kind, column in _LABEL_CONFIGS:
            if config in configs:
                labels = _open_export(folder, config, run.label)
                already += _restore_labels(run, labels, kind, column, pair_map, wanted)
    except (OSError, datasets.exceptions.DatasetGenerationError) as exc:
        raise HFImportFailed(f"Reading the export in {folder} failed ({exc}).") from exc
    if already:
        run.report.notes.append(f"{already} labels were already in the collection.")
    return run.report


def _open_export(folder: Path, config: str, label: str) -> _Source:
    try:
        loaded = load_dataset(str(folder), config, streaming=True)
    except Exception as exc:
        raise _load_failed(f"the {config} of {folder}", exc, remote=False) from exc
    return _Source(f"{label}/{config}", _as_splits(loaded), None)


def _restore_labels(
    run: _Run,
    src: _Source,
    kind: str,
    column: str,
    pair_map: dict[int, Pair],
    wanted: set[str],
) -> int:
    """Add the labels of one label config; returns how many were already present."""
    columns = ["anchor", column, f"{column}_caption", "anchor_pair_id", "positive_sha256"]
    columns += ["author", "split"]
    limits = ImageLimits.from_settings(run.settings)
    already = 0
    for name, ds in src.splits.items():
        for index, row in enumerate(_rows(_raw_images(ds, columns))):
            item = f"{src.label}[{name}]#{index}"
            run.tick(f"{src.label}: {index + 1} labels")
            if row["split"] not in wanted:
                continue
            anchor = pair_map.get(row["anchor_pair_id"]) or run.store.find_pair_by_image(
                run.collection.id, row["positive_sha256"]
            )
            if anchor is None:
                run.report.reject(item, "the labeled pair is not in the collection")
                continue
            try:
                limit = run.settings.max_caption_chars
                if clean_caption(anchor.caption, limit) != clean_caption(row["anchor"], limit):
                    run.report.reject(item, "the collection has this image with another caption")
                    continue
                sha, text = None, None
                if row[column] is not None:
                    data, reason = image_bytes(row[column], None, run.max_bytes)
                    if data is None:
                        run.report.reject(item, reason)
                        continue
                    stored = ingest_image_bytes(data, run.settings.images_dir, limits)
                    run.store.add_image(stored.as_row())
                    sha = stored.sha256
                else:
                    text = clean_caption(row[f"{column}_caption"], limit)
                present = {
                    (lab.negative_sha256, lab.negative_caption, lab.kind)
                    for lab in run.store.labels_for_pair(anchor.id)
                }
                if (sha, text, kind) in present:
                    already += 1
                    continue
                run.store.add_label(anchor.id, kind, sha, text, row["author"] or run.author)
                run.report.negatives_added += 1
            except (ImageRejected, CaptionRejected, StoreError) as exc:
                run.report.reject(item, str(exc))
    return already
