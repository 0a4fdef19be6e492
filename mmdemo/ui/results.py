"""Pieces the Compare, Label and Curate tabs share: loading label candidates, captions of result
thumbnails, the metrics and per-query tables, and adapters from ``gr.Progress`` to the domain's
callbacks. No component is built here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mmdemo.data.store import Pair, StoreError
from mmdemo.retrieval.compare import (
    CompareError,
    ModelRef,
    display_path,
    ensure_corpus,
    load,
    metric_rows,
    resolve_model,
)
from mmdemo.retrieval.embeddings import ProgressFn
from mmdemo.retrieval.evaluation import EvaluationError
from mmdemo.retrieval.models import ModelLoadError
from mmdemo.retrieval.negatives import Candidate, LabelTask, label_candidates
from mmdemo.retrieval.search import Hit
from mmdemo.services import Services
from mmdemo.text import html_text, shorten

TABLE_COLUMNS = ["Δ rank", "A", "B", "query", "pair"]
TABLE_ENDS = 20
"""With more eval queries than twice this, the table shows this many most improved and most
regressed."""
FAILURES = (CompareError, ModelLoadError, StoreError, EvaluationError, ValueError, TypeError)
"""Errors a handler turns into a message for the person (anything else is a bug)."""
TILE_CAPTION_CHARS = 120
"""A tile shows the start of a caption (all of it on hover): enough for a glance."""


def is_skip(value: Any) -> bool:
    """Whether an output is ``gr.skip()`` (leave the component as it is)."""
    return isinstance(value, dict) and value == {"__type__": "update"}


def say_progress(progress: Any, text: str) -> None:
    """Show ``text`` on the progress bar (``progress`` is a ``gr.Progress`` or ``None``)."""
    if progress is not None:
        progress(0.0, desc=text)


def image_progress(progress: Any, what: str) -> ProgressFn | None:
    """Adapt a ``gr.Progress`` to the embedding cache's ``progress(done, total)``."""
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress((done, total), desc=what, unit="images")

    return report


# -- captions and tables ---------------------------------------------------------------------------
def load_candidates(
    services: Services, model_key: str | None, pair_id: int, k: int, progress: Any = None
) -> tuple[Pair, ModelRef, LabelTask, list[tuple[str, str]]]:
    """The model's top-``k`` candidates for a pair's caption (its own image left out), with the
    gallery items that show them; what the Label tab and Curate's look-alikes both display.

    Raises one of :data:`FAILURES` for the handler to turn into a message.
    """
    store = services.store
    pair = store.get_pair(pair_id)
    ref = resolve_model(store, services.model, model_key)
    say_progress(progress, f"Loading {ref.label}…")
    loaded = load(services, ref)
    ensure_corpus(
        services,
        loaded,
        pair.collection_id,
        pair.split,
        image_progress(progress, f"Encoding images ({ref.label})"),
    )
    task = label_candidates(
        store,
        services.settings,
        services.embeddings,
        loaded.model,
        loaded.fingerprint,
        pair.id,
        k=k,
    )
    return pair, ref, task, candidate_gallery(services, task.candidates)


def hit_caption(hit: Hit, label: str | None) -> str:
    """Rank, similarity and marks (✓ ground truth, ✗ hard negative, + also correct), then the
    caption; the gallery shows the start and the whole text on hover."""
    marks = " ✓" if hit.positive else ""
    if label == "negative":
        marks += " ✗"
    elif label == "also-positive":
        marks += " +"
    return f"#{hit.rank} {hit.score:.3f}{marks} · {hit.caption}"


def candidate_caption(index: int, candidate: Candidate) -> str:
    """Key and similarity, marks (⚠ maybe correct, ✗ hard negative, + also correct), then the
    candidate's own caption (the start on the tile, more on hover; the list has all of it)."""
    return f"[{index + 1}] {candidate.score:.3f}{_marks(candidate)} · " + shorten(
        candidate.caption, TILE_CAPTION_CHARS
    )


def _marks(candidate: Candidate) -> str:
    marks = " ⚠" if candidate.possible_false_negative else ""
    if candidate.label == "negative":
        marks += " ✗"
    elif candidate.label == "also-positive":
        marks += " +"
    return marks


def candidate_gallery(services: Services, candidates: Sequence[Candidate]) -> list[tuple[str, str]]:
    """Gallery items (thumbnail path, caption with key, score and marks) for candidates."""
    store, settings = services.store, services.settings
    return [
        (str(display_path(store, settings, c.image_sha256)), candidate_caption(i, c))
        for i, c in enumerate(candidates)
    ]


LABEL_WORDS = {"negative": "✗ hard negative", "also-positive": "+ also correct"}
LABEL_KINDS = {"negative": "hard negative", "also-positive": "also correct"}

CANDIDATES_CSS = """
table.mm-candidates { width: 100%; border-collapse: collapse; font-size: 0.86rem; }
table.mm-candidates th, table.mm-candidates td {
  padding: 3px 6px; border-bottom: 1px solid var(--border-color-primary);
  text-align: left; vertical-align: top; }
table.mm-candidates td.mm-caption { overflow-wrap: anywhere; }
table.mm-candidates td.mm-num { white-space: nowrap; font-variant-numeric: tabular-nums; }
table.mm-candidates tbody tr { cursor: pointer; }
table.mm-candidates tr.mm-selected td { background: var(--color-accent-soft); }
"""


def candidates_html(
    candidates: Sequence[Candidate],
    selected: int | None = None,
    pair_id: int | None = None,
    version: int = 0,
) -> str:
    """Every candidate in a numbered table: key, full caption, pair, score, ⚠ flag and label;
    the ``selected`` row (an index) marked ``mm-selected``.

    Nothing is cut, so candidates whose tiles look alike can be told apart. User text goes
    through :func:`mmdemo.text.html_text`. Each row carries its key, pair, flag, label and
    tile caption (:func:`candidate_caption`) as ``data-`` attributes, which the Label tab's page
    script reads to show a selection at once and to put a label's mark on the tile without the
    gallery being sent again; ``version`` makes every render differ from the one before, so the
    page redraws it even when only the script had moved the mark.
    """
    if not candidates:
        return ""
    rows = []
    for index, c in enumerate(candidates):
        flag = "⚠ maybe correct" if c.possible_false_negative else ""
        words = LABEL_WORDS.get(c.label or "", "")
        attributes = f' data-key="{index + 1}" data-pair="{c.pair_id}"'
        attributes += f' data-tile="{html_text(candidate_caption(index, c))}"'
        attributes += ' data-flag="1"' * c.possible_false_negative
        if c.label:
            attributes += f' data-label="{html_text(LABEL_KINDS.get(c.label, c.label))}"'
        if index == selected:
            attributes += ' class="mm-selected"'
        rows.append(
            f"<tr{attributes}>"
            f'<td class="mm-num"><b>{index + 1}</b></td>'
            f'<td class="mm-caption">{html_text(c.caption)}</td>'
            f'<td class="mm-num">{c.pair_id}</td><td class="mm-num">{c.score:.3f}</td>'
            f"<td>{flag}</td><td>{words}</td></tr>"
        )
    shown = f' data-pair="{pair_id}"' if pair_id is not None else ""
    return (
        f'<table class="mm-candidates"{shown} data-v="{version}"><thead><tr><th>key</th>'
        "<th>caption</th><th>pair</th><th>score</th><th></th><th>label</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _fmt_delta(value: float | None) -> str:
    if value is None:
        return ""
    if abs(value) < 5e-4:
        return "±0"
    arrow = "▲" if value > 0 else "▼"
    return f"**{value:+.3f}** {arrow}"


def metrics_markdown(
    a: dict | None,
    b: dict | None,
    label_a: str,
    label_b: str | None,
    n_eval: int,
    probe: dict | None,
) -> str:
    """Both models' eval metrics side by side with deltas (one column when B is absent)."""
    if a is None:
        return (
            "**No eval split yet:** move some pairs to the *eval* split in the Curate tab to "
            "measure the models."
        )
    lines = [f"**Eval split** ({n_eval:,} pairs) · **A** = {label_a}"]
    if label_b is not None:
        lines[0] += f" · **B** = {label_b}"
    lines.append("")
    if b is None:
        lines += ["| metric | text → image | image → text |", "|---|---:|---:|"]
        for row in metric_rows(a, None):
            lines.append(f"| {row['metric']} | {_fmt(row['t2i_a'])} | {_fmt(row['i2t_a'])} |")
    else:
        lines += [
            "| metric | t→i A | t→i B | Δ | i→t A | i→t B | Δ |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in metric_rows(a, b):
            lines.append(
                f"| {row['metric']} | {_fmt(row['t2i_a'])} | {_fmt(row['t2i_b'])} | "
                f"{_fmt_delta(row['t2i_delta'])} | {_fmt(row['i2t_a'])} | {_fmt(row['i2t_b'])} | "
                f"{_fmt_delta(row['i2t_delta'])} |"
            )
    if probe is not None:
        pa = probe["a"]
        text = (
            f"\n**Attribute binding** (does the model prefer an image's own caption to the one "
            f"with its colours swapped? chance 50%): A {pa['accuracy']:.0%} of {pa['n']}"
        )
        if label_b is not None:
            pb = probe["b"]
            text += f" · B {pb['accuracy']:.0%} ({probe['delta'] * 100:+.0f} points)"
        lines.append(text)
    return "\n".join(lines)


def table_frame(rows: list[dict], ends: int = TABLE_ENDS) -> pd.DataFrame:
    """The eval queries by change of their positive's rank, most improved first; with many
    queries only the ``ends`` most improved and most regressed."""
    if len(rows) > 2 * ends:
        rows = rows[:ends] + rows[-ends:]
    data = [
        (
            f"{r['delta']:+d}" if r["delta"] else "0",
            r["rank_a"],
            r["rank_b"],
            r["query"],
            r["pair_id"],
        )
        for r in rows
    ]
    return pd.DataFrame(data, columns=TABLE_COLUMNS)
