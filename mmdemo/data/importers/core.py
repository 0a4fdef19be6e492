"""Plan an import from a source, then run it one atomic item at a time."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from mmdemo.data.importers.errors import ImportFailed, ItemSkipped
from mmdemo.data.importers.files import (
    IMAGE_EXTENSIONS,
    FolderTree,
    ZipTree,
    max_image_file_bytes,
    read_file_capped,
    safe_relative_path,
)
from mmdemo.data.importers.tables import (
    BOM,
    CAPTION_COLUMNS,
    IMAGE_COLUMNS,
    METADATA_NAMES,
    TABLE_SUFFIXES,
    Table,
    caption_value,
    normalise_split,
    parse_table,
    pick_column,
    require_column,
    split_from_folders,
)
from mmdemo.data.ingest import CaptionRejected, ImportReport, ProgressFn, clean_caption, ingest_item
from mmdemo.data.safe_zip import SafeZip, ZipRejected
from mmdemo.data.store import SPLITS, Store
from mmdemo.settings import Settings

Tree = FolderTree | ZipTree
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
BUNDLE_SUFFIXES = {".zip", ".parquet", *TABLE_SUFFIXES}


@dataclass
class _Entry:
    """One planned item: where its image is, its caption, or why it is refused already."""

    name: str
    rel: str | None = None
    caption: object = None
    split: str = "train"
    problem: str | None = None
    caption_file: str | None = None


@dataclass(frozen=True)
class Options:
    """What the user asked for: column names and a split (``None``: find out)."""

    image_column: str | None
    caption_column: str | None
    split: str | None


def _table_entries(table: Table, base: str, opts: Options, covered: set[str]) -> list[_Entry]:
    """Entries for the rows of a table whose image paths are relative to ``base``."""
    entries = [_Entry(where, problem=reason) for where, reason in table.bad]
    if not table.rows:
        return entries
    image_col = require_column(table, opts.image_column, IMAGE_COLUMNS, "image")
    caption_col = require_column(table, opts.caption_column, CAPTION_COLUMNS, "caption")
    split_col = pick_column(table, None, ("split",), "split")
    for where, row in table.rows:
        raw_path = row.get(image_col)
        try:
            rel = safe_relative_path(base, raw_path)
        except ItemSkipped as exc:
            entries.append(_Entry(f"{where} ({raw_path})", problem=str(exc)))
            continue
        covered.add(rel)
        try:
            caption = caption_value(row.get(caption_col))
        except ItemSkipped as exc:
            entries.append(_Entry(rel, problem=str(exc)))
            continue
        value = row.get(split_col) if split_col else None
        if value is not None and str(value).strip():
            split = normalise_split(value)
        else:
            split = opts.split or split_from_folders(rel) or "train"
        entries.append(_Entry(rel, rel, caption, split))
    return entries


def _folder_entries(tree: Tree, settings: Settings, opts: Options) -> list[_Entry]:
    """Entries for an imagefolder layout: metadata tables first, then ``<name>.txt`` sidecars."""
    files = tree.walk()
    file_set = set(files)
    entries: list[_Entry] = []
    metadata = [f for f in files if posixpath.basename(f).lower() in METADATA_NAMES]
    if not metadata and (opts.image_column or opts.caption_column):
        raise ImportFailed(
            f"{tree.label} has no metadata.jsonl or metadata.csv, so the named columns cannot"
            " be found"
        )
    covered: set[str] = set()
    for meta in metadata:
        try:
            data = tree.read(meta, settings.max_zip_total_bytes)
        except ItemSkipped as exc:
            raise ImportFailed(f"cannot read {meta}: {exc}") from exc
        table = parse_table(data, meta, None if meta.lower().endswith(".jsonl") else ",")
        if not table.rows and not table.bad:
            raise ImportFailed(f"{meta} has no rows")
        entries += _table_entries(table, posixpath.dirname(meta), opts, covered)
    entries += [_Entry(name, problem=why) for name, why in tree.problems if name not in covered]
    for rel in files:
        if rel in covered or posixpath.splitext(rel)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        sidecar = posixpath.splitext(rel)[0] + ".txt"
        if sidecar in file_set:
            split = opts.split or split_from_folders(rel) or "train"
            entries.append(_Entry(rel, rel, None, split, caption_file=sidecar))
            continue
        how = f"{posixpath.basename(sidecar)} next to it"
        if metadata:
            reason = f"no caption: not listed in the metadata file and no {how}"
        else:
            reason = f"no caption: add metadata.jsonl or metadata.csv (file_name, caption) or {how}"
        entries.append(_Entry(rel, problem=reason))
    return entries


def _run(
    store: Store,
    settings: Settings,
    collection: str,
    tree: Tree,
    entries: list[_Entry],
    author: str | None,
    progress: ProgressFn | None,
) -> ImportReport:
    """Ingest planned entries one by one; the collection is created only now."""
    if not entries:
        raise ImportFailed(f"{tree.label} holds no images to import")
    coll = store.get_or_create_collection(collection)
    report = ImportReport(coll.name)
    image_cap = max_image_file_bytes(settings)
    caption_cap = settings.max_caption_chars * 4 + 4096
    for done, entry in enumerate(entries, 1):
        try:
            if entry.problem is not None:
                raise ItemSkipped(entry.problem)
            caption = entry.caption
            if entry.caption_file is not None:
                caption = tree.read(entry.caption_file, caption_cap).removeprefix(BOM)
            clean_caption(caption, settings.max_caption_chars)  # refuse before reading the image
            data = tree.read(entry.rel, image_cap)
        except (ItemSkipped, CaptionRejected) as exc:
            report.reject(entry.name, str(exc))
        else:
            source = f"{tree.label}:{entry.rel}"
            ingest_item(
                store,
                settings,
                coll.id,
                report,
                entry.name,
                data,
                caption,
                entry.split,
                author,
                source,
            )
        if progress is not None:
            progress(done, len(entries), entry.name)
    return report


def looks_like_hf_dataset(path: Path) -> bool:
    """A ``.parquet`` file, a ``save_to_disk`` folder, or a folder of parquet files."""
    if path.is_file():
        return path.suffix.lower() == ".parquet"
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    if any((path / name).is_file() for name in markers):
        return True
    if any((path / name).is_file() for name in METADATA_NAMES):
        return False
    return any(next(path.glob(p), None) for p in ("*.parquet", "*/*.parquet", "*/*/*.parquet"))


def check_split(split: str | None) -> str | None:
    if split is None or not str(split).strip():
        return None
    value = normalise_split(split)
    if value not in SPLITS:
        raise ImportFailed(f"unknown split {split!r}: use train, eval (validation) or test")
    return value


def import_source(
    store: Store,
    settings: Settings,
    collection: str,
    source: Path | str,
    *,
    caption_column: str | None = None,
    image_column: str | None = None,
    split: str | None = None,
    author: str | None = None,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import a folder, zip, CSV/TSV/JSONL table or Hugging Face dataset into ``collection``.

    A pair's split is its row's ``split`` column when present, else ``split``, else the folder
    it sits in (``train/``, ``validation/``, …), else ``train``. Raises :class:`ImportFailed`
    when the source as a whole cannot be used; bad items are listed in ``report.rejected``.
    """
    split = check_split(split)
    path = Path(source).expanduser()
    hub_id = isinstance(source, str) and (
        source.startswith("hf://")
        or (
            not path.exists()
            and bool(_HUB_ID.match(source))
            and path.suffix.lower() not in BUNDLE_SUFFIXES
        )
    )
    if hub_id or (path.exists() and looks_like_hf_dataset(path)):
        try:
            from mmdemo.data.hf_import import import_hf_dataset
        except ModuleNotFoundError as exc:
            if exc.name != "mmdemo.data.hf_import":
                raise
            raise ImportFailed("Hugging Face dataset import is not available") from exc
        return import_hf_dataset(
            store,
            settings,
            collection,
            source,
            caption_column=caption_column,
            image_column=image_column,
            split=split,
            author=author,
            progress=progress,
        )
    opts = Options(image_column, caption_column, split)
    return import_path(
        store, settings, collection, path, path.suffix.lower(), opts, author, progress
    )


def import_path(
    store: Store,
    settings: Settings,
    collection: str,
    path: Path,
    kind: str,
    opts: Options,
    author: str | None,
    progress: ProgressFn | None,
) -> ImportReport:
    if not path.exists():
        raise ImportFailed(f"{path} not found")
    path = path.resolve()  # the source itself may be a link the user chose; nothing inside may
    if path.is_dir():
        tree = FolderTree(path)
        entries = _folder_entries(tree, settings, opts)
        return _run(store, settings, collection, tree, entries, author, progress)
    if kind == ".zip":
        try:
            archive = SafeZip(
                path,
                settings.max_zip_entries,
                settings.max_zip_total_bytes,
                max_image_file_bytes(settings),
            )
        except ZipRejected as exc:
            raise ImportFailed(f"{path.name}: {exc}") from exc
        with archive:
            tree = ZipTree(archive)
            entries = _folder_entries(tree, settings, opts)
            return _run(store, settings, collection, tree, entries, author, progress)
    if kind in TABLE_SUFFIXES:
        tree = FolderTree(path.parent)
        try:
            data = read_file_capped(path, settings.max_zip_total_bytes)
        except ItemSkipped as exc:
            raise ImportFailed(f"cannot read {path.name}: {exc}") from exc
        table = parse_table(data, path.name, TABLE_SUFFIXES[kind])
        if not table.rows and not table.bad:
            raise ImportFailed(f"{path.name} has no rows")
        entries = _table_entries(table, "", opts, set())
        return _run(store, settings, collection, tree, entries, author, progress)
    raise ImportFailed(
        f"cannot import {path.name!r}: give a folder, a .zip, a .csv/.tsv/.jsonl table,"
        " a .parquet file or a Hugging Face dataset"
    )
