"""Tables that name images and captions: ``metadata.jsonl``, ``metadata.csv``, any CSV/TSV/JSONL.

Parsing never stops at a bad row: a line that is not UTF-8, not JSON or not a CSV record goes to
``Table.bad`` with its line number, and the good rows are kept. Columns are found by name,
case-insensitively, from the lists below unless the user names them.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from mmdemo.data.importers.errors import ImportFailed, ItemSkipped

IMAGE_COLUMNS = ("file_name", "image", "image_path", "path", "filepath", "file", "filename")
CAPTION_COLUMNS = (
    "caption",
    "text",
    "captions",
    "description",
    "title",
    "alt",
    "label",
    "prompt",
    "sentence",
)
SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test"}
SPLIT_ALIASES |= dict.fromkeys(("eval", "evaluation", "validation", "valid", "val", "dev"), "eval")
METADATA_NAMES = ("metadata.jsonl", "metadata.csv")
TABLE_SUFFIXES: dict[str, str | None] = {".csv": ",", ".tsv": "\t", ".jsonl": None}
"""Table file suffix → CSV delimiter (``None``: JSON Lines)."""
BOM = b"\xef\xbb\xbf"


@dataclass
class Table:
    label: str
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[str, dict]] = field(default_factory=list)
    """``(where, row)``, ``where`` being e.g. ``"metadata.jsonl line 3"``."""
    bad: list[tuple[str, str]] = field(default_factory=list)
    """``(where, reason)`` for rows that could not be read."""


def _has_undecodable(text: str) -> bool:
    return any(0xDC80 <= ord(ch) <= 0xDCFF for ch in text)


def parse_table(data: bytes, label: str, delimiter: str | None) -> Table:
    """Parse JSON Lines (``delimiter=None``) or CSV/TSV with a header row."""
    table = Table(label)
    data = data.removeprefix(BOM)
    if delimiter is None:
        for number, raw in enumerate(data.split(b"\n"), 1):
            raw = raw.strip()
            if not raw:
                continue
            where = f"{label} line {number}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                table.bad.append((where, "not valid UTF-8 text"))
                continue
            except json.JSONDecodeError as exc:
                table.bad.append((where, f"not valid JSON ({exc.msg})"))
                continue
            if not isinstance(row, dict):
                table.bad.append((where, "not a JSON object"))
                continue
            table.columns += [key for key in row if key not in table.columns]
            table.rows.append((where, row))
        return table
    text = data.decode("utf-8", "surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. a field over csv's size limit; the reader recovers
            table.bad.append((f"{label} line {reader.line_num}", f"unreadable row ({exc})"))
            continue
        if header is None:
            header = table.columns = [name.strip() for name in values]
            continue
        if not any(value.strip() for value in values):
            continue
        where = f"{label} line {reader.line_num}"
        if any(_has_undecodable(value) for value in values):
            table.bad.append((where, "not valid UTF-8 text"))
            continue
        table.rows.append((where, dict(zip(header, values, strict=False))))
    return table


def pick_column(
    table: Table, explicit: str | None, candidates: tuple[str, ...], what: str
) -> str | None:
    """The column to use: the one named (raise if missing), else the first known name."""
    by_lower = {name.lower(): name for name in table.columns}
    if explicit:
        if explicit in table.columns:
            return explicit
        if explicit.lower() in by_lower:
            return by_lower[explicit.lower()]
        raise ImportFailed(
            f"{table.label} has no {what} column {explicit!r}; its columns are:"
            f" {', '.join(table.columns) or '(none)'}"
        )
    for name in candidates:
        if name in by_lower:
            return by_lower[name]
    if what == "image":  # Hugging Face imagefolder also accepts "<anything>_file_name"
        suffixed = [name for name in table.columns if name.lower().endswith("_file_name")]
        if suffixed:
            return suffixed[0]
    return None


def require_column(
    table: Table, explicit: str | None, candidates: tuple[str, ...], what: str
) -> str:
    """Like :func:`pick_column`, but a table without such a column fails the import."""
    column = pick_column(table, explicit, candidates, what)
    if column is None:
        raise ImportFailed(
            f"{table.label} has no {what} column (looked for {', '.join(candidates)}; its"
            f" columns are: {', '.join(table.columns) or '(none)'}). Name it with"
            f" {what}_column."
        )
    return column


def normalise_split(value: object) -> str:
    """Map split names people use (validation, val, dev, …) onto train / eval / test."""
    text = str(value).strip()
    return SPLIT_ALIASES.get(text.lower(), text)


def split_from_folders(rel: str) -> str | None:
    """The split named by a folder on the path (``train/``, ``validation/``, …), if any."""
    for part in rel.split("/")[:-1]:
        if part.lower() in SPLIT_ALIASES:
            return SPLIT_ALIASES[part.lower()]
    return None


def caption_value(value: object) -> object:
    """A cell as a caption: the first non-blank text of a list, refuse mappings."""
    if isinstance(value, list):
        texts = [v for v in value if isinstance(v, str) and v.strip()]
        return texts[0] if texts else None
    if isinstance(value, dict):
        raise ItemSkipped("caption is not text")
    return value
