"""The Label tab: walk through the pairs and mark the model's top candidates, by mouse or keys.

Keys (while the tab is shown and no text field has the focus): ``1``–``9`` select a candidate,
``n`` marks it hard negative, ``c`` also correct, ``x`` clears its label, ``s`` or ``→`` skips to
the next pair, ``←`` goes back, ``u`` undoes the last change. They are bound by a small script
that the page runs once on load; it clicks the tab's own buttons, so keys and clicks run the same
handlers (a click on a row of the numbered list selects that candidate too). The layout and the
wiring live here; the handlers live in :mod:`mmdemo.ui.label.handlers`.

State flows one way: the tab reads the browser's current collection (``shared.collection``) as
an input when it is shown and never writes it. Each event sends only the outputs its action
changes (:data:`~mmdemo.ui.label.handlers.LABEL_OUTPUTS`, ``PAIR_OUTPUTS``), as plain values
rather than component updates, quick ones with no progress indicator, all in one queue so they
run in the order they came. A selection is the page's alone: the script shows it at once (the
list's row, the selection line, the gallery's highlight) and sends it with the next label
(:data:`PICK_JS`), together with the pair it showed, so a label goes to what the person saw.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr
from gradio.context import get_render_context

from mmdemo.retrieval.label_order import HARDEST, ORDERS
from mmdemo.services import Services
from mmdemo.ui.common import Shared
from mmdemo.ui.label import handlers as h
from mmdemo.ui.label.handlers import (
    DEFAULT_K,
    LINE_CHARS,
    MAX_K,
    SPLIT_CHOICES,
    LabelState,
    LabelView,
)
from mmdemo.ui.results import CANDIDATES_CSS

KEYS = {
    "n": "mm-label-negative",
    "c": "mm-label-also",
    "x": "mm-label-clear",
    "s": "mm-label-next",
    "ArrowRight": "mm-label-next",
    "ArrowLeft": "mm-label-back",
    "u": "mm-label-undo",
}

KEYS_JS = """
() => {
  if (window.__mmLabelKeys) return;
  window.__mmLabelKeys = true;
  const tiles = () => [...document.querySelectorAll("#mm-label-candidates .thumbnail-item")];
  // A selection shows at once, in the page: the gallery highlights the tile, this marks the
  // list's row and writes the selection line from the row, as selection_html() does on the
  // server, which records the selection and draws both again whenever they change there.
  const bold = (text) => { const b = document.createElement("b"); b.textContent = text; return b; };
  const showSelected = (index) => {
    const list = document.getElementById("mm-label-list");
    if (!list) return;
    list.querySelectorAll("tr.mm-selected").forEach((row) => row.classList.remove("mm-selected"));
    const row = list.querySelector(`tr[data-key="${index + 1}"]`);
    const line = document.querySelector("#mm-label-selection p.mm-sel");
    if (!row) return;
    row.classList.add("mm-selected");
    if (!line) return;
    let caption = row.querySelector("td.mm-caption").textContent;
    if (caption.length > %d) caption = caption.slice(0, %d).trimEnd() + "…";
    const parts = [bold(`Selected [${row.dataset.key}]:`)];
    parts.push(` pair ${row.dataset.pair}, “${caption}”`);
    if (row.dataset.flag) parts.push(" — ⚠ scored almost as high as the positive: maybe correct");
    if (row.dataset.label) parts.push(" · labeled ", bold(row.dataset.label));
    line.replaceChildren(...parts);
  };
  // When the server draws the list (a new pair, a label), the tiles follow it: each tile's
  // caption becomes its row's (a label's mark, without the gallery sent again; only the text
  // of the caption's own text node changes, so the gallery keeps drawing it), and the
  // highlight moves to the row it marks (a click on that tile, which only the page sees).
  let drawn = null;
  new MutationObserver(() => {
    const table = document.querySelector("#mm-label-list table.mm-candidates");
    const key = table ? `${table.dataset.v}:${tiles().length}` : null;
    if (!table || key === drawn) return;
    const items = tiles();
    table.querySelectorAll("tbody tr[data-key]").forEach((row) => {
      const label = items[Number(row.dataset.key) - 1]?.querySelector(".caption-label");
      const text = label && label.childNodes.length === 1 ? label.firstChild : null;
      if (text && text.nodeType === Node.TEXT_NODE && text.data !== row.dataset.tile) {
        text.data = row.dataset.tile;
      }
    });
    const row = table.querySelector("tr.mm-selected");
    const tile = row ? items[Number(row.dataset.key) - 1] : null;
    if (!tile) return;
    drawn = key;
    if (!tile.classList.contains("selected")) tile.click();
  }).observe(document.body, {childList: true, subtree: true});
  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    const tile = target && target.closest("#mm-label-candidates .thumbnail-item");
    if (tile) { showSelected(tiles().indexOf(tile)); return; }
    const row = target && target.closest("#mm-label-list tr[data-key]");
    const item = row ? tiles()[Number(row.dataset.key) - 1] : null;
    if (item) item.click();  // a click on a row of the list selects its candidate
  }, true);
  const buttons = %s;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target && (target.isContentEditable ||
        ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    const panel = document.getElementById("mm-label");
    if (!panel || panel.offsetParent === null) return;  // the Label tab is not shown
    let element = null;
    if (/^[1-9]$/.test(event.key)) {
      element = tiles()[Number(event.key) - 1] || null;
    } else {
      const id = buttons[event.key] || buttons[event.key.toLowerCase()];
      element = id ? document.getElementById(id) : null;
    }
    if (element && !element.disabled && element.offsetParent !== null) {
      event.preventDefault();
      element.click();
    }
  });
}
"""


PICK_JS = """
(...values) => {
  const table = document.querySelector("#mm-label-list table.mm-candidates");
  const row = table ? table.querySelector("tr.mm-selected") : null;
  values[values.length - 2] = row ? Number(row.dataset.key) - 1 : null;
  values[values.length - 1] = table ? Number(table.dataset.pair) : null;
  return values;
}
"""
"""Run in the page before a label is sent: the candidate it shows selected and the pair it
shows go with the label (into the two hidden inputs at the end), so a label goes to what the
person saw, even when keys come faster than the answers."""


def keys_js() -> str:
    """The script that binds the keyboard shortcuts (run once per page load)."""
    import json

    return KEYS_JS % (LINE_CHARS, LINE_CHARS - 1, json.dumps(KEYS))


def as_outputs(view: LabelView, fields: tuple[str, ...] = LabelView._fields) -> tuple:
    """The values of ``fields`` (an event's outputs, in order).

    Values go out plain, never as component updates where it can be helped (Gradio rebuilds a
    component for each update, ~20 ms for the gallery): the page script moves the gallery's
    highlight to the candidate the list marks."""
    values = view._asdict()
    return tuple(values[name] for name in fields)


def build_label(services: Services, shared: Shared) -> None:
    """Lay out the Label tab inside the current ``gr.Tab`` and wire its events."""
    tab = get_render_context()
    state = gr.State(h.initial_state(services))

    with gr.Column(elem_id="mm-label"):
        with gr.Row():
            model = gr.Dropdown(
                label="Candidates from model",
                allow_custom_value=True,
                scale=3,
                elem_id="mm-label-model",
            )
            split = gr.Dropdown(
                list(SPLIT_CHOICES), value="train", label="Pairs of split", scale=1, min_width=110
            )
            k = gr.Slider(2, MAX_K, value=DEFAULT_K, step=1, label="Candidates", scale=1)
            order = gr.Dropdown(
                list(ORDERS),
                value=HARDEST,
                label="Order",
                scale=1,
                min_width=150,
                elem_id="mm-label-order",
            )
            unlabeled = gr.Checkbox(value=True, label="Only unlabeled pairs", scale=1)
            blind = gr.Checkbox(
                value=False,
                label="Blind (hide others' labels)",
                scale=1,
                elem_id="mm-label-blind",
            )
            goto = gr.Textbox(label="Go to pair id", placeholder="e.g. 12", scale=1, min_width=100)
            goto_btn = gr.Button("Go", size="sm", scale=0, min_width=60)
        progress_md = gr.Markdown(elem_id="mm-label-progress")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                pair_md = gr.Markdown("*Open this tab to start labeling.*", elem_id="mm-label-pair")
                positive = gr.Image(
                    type="filepath",
                    interactive=False,
                    height=240,
                    show_label=False,
                    buttons=["fullscreen"],
                )
                caption_labels = gr.Markdown()
            with gr.Column(scale=3):
                candidates = gr.Gallery(
                    label="Top candidates, the positive left out · ⚠ scored almost as high as "
                    "the positive: maybe correct · ✗ hard negative · + also correct",
                    columns=5,
                    height=380,
                    allow_preview=False,
                    object_fit="contain",
                    buttons=[],
                    fit_columns=False,
                    elem_id="mm-label-candidates",
                    elem_classes=["mm-results"],
                )
                selection = gr.HTML(elem_id="mm-label-selection", js_on_load=None, padding=False)
                message = gr.Markdown(elem_id="mm-label-message")
                with gr.Row(equal_height=True):
                    negative_btn = gr.Button(
                        "✗ Hard negative (n)", variant="primary", elem_id="mm-label-negative"
                    )
                    also_btn = gr.Button("+ Also correct (c)", elem_id="mm-label-also")
                    clear_btn = gr.Button("Clear label (x)", elem_id="mm-label-clear")
                with gr.Row(equal_height=True):
                    back_btn = gr.Button("← Previous", elem_id="mm-label-back")
                    next_btn = gr.Button("Skip / next pair (s, →)", elem_id="mm-label-next")
                    undo_btn = gr.Button(
                        "↶ Undo last label (u)", visible=False, elem_id="mm-label-undo"
                    )
                with gr.Row(equal_height=True):
                    negative_caption = gr.Dropdown(
                        label="Hard-negative caption for this image (pick a suggestion or type)",
                        allow_custom_value=True,
                        scale=4,
                        elem_id="mm-label-caption",
                    )
                    caption_btn = gr.Button("Save caption negative", scale=1)
        listing = gr.HTML(
            elem_id="mm-label-list",
            css_template=CANDIDATES_CSS,
            js_on_load=None,
            padding=False,
        )
        with gr.Accordion("Team agreement", open=False, elem_id="mm-label-team"):
            agreement = gr.Markdown(elem_id="mm-label-agreement")
        gr.Markdown(
            "Keys: **1–9** select a candidate · **n** hard negative · **c** also correct · "
            "**x** clear · **s** / **→** next pair · **←** previous · **u** undo",
            elem_id="mm-label-keys",
        )

    picked = gr.Number(visible=False)
    shown = gr.Number(visible=False)
    components = {
        "state": state,
        "model": model,
        "progress": progress_md,
        "pair": pair_md,
        "positive": positive,
        "candidates": candidates,
        "listing": listing,
        "selection": selection,
        "negative_caption": negative_caption,
        "caption_labels": caption_labels,
        "undo": undo_btn,
        "message": message,
        "agreement": agreement,
    }

    def outputs_of(fields: tuple[str, ...]) -> list:
        return [components[name] for name in fields]

    def wired(fields: tuple[str, ...], handler: Callable[..., LabelView]) -> Callable[..., Any]:
        if len(fields) == 1:  # Gradio takes one output's value bare, not in a tuple
            return lambda *values: as_outputs(handler(services, *values), fields)[0]
        return lambda *values: as_outputs(handler(services, *values), fields)

    # Every event of the tab runs in one queue, one at a time, in the order they came: a
    # selection is saved before the label that follows it. Quick actions show no progress.
    quick = {"concurrency_id": "label", "show_progress": "hidden"}
    slow = {"concurrency_id": "label", "show_progress_on": [pair_md]}

    shared.demo.load(
        wired(("state",), h.on_load),
        [state, shared.collection],
        [state],
        **quick,
    )
    shared.demo.load(None, None, None, js=keys_js())

    full = LabelView._fields

    def on_open(
        st: LabelState,
        name: str | None,
        focus: dict | None,
        profile: gr.OAuthProfile | None,
        progress=gr.Progress(),  # noqa: ANN001
    ) -> tuple:
        view = h.open_tab(services, st, name, progress, focus=focus, profile=profile)
        return as_outputs(view, full)

    # The pairs a person chose elsewhere (the embedding map's "open in Label") are an input.
    opening = [state, shared.collection, shared.label_focus]
    if isinstance(tab, gr.Tab):
        tab.select(on_open, opening, outputs_of(full), **slow)
    else:
        shared.demo.load(on_open, opening, outputs_of(full), **slow)

    pair_fields = h.PAIR_OUTPUTS

    def on_options(  # noqa: ANN202
        st,  # noqa: ANN001
        model_,  # noqa: ANN001
        split_,  # noqa: ANN001
        unlabeled_,  # noqa: ANN001
        k_,  # noqa: ANN001
        order_,  # noqa: ANN001
        blind_,  # noqa: ANN001
        profile: gr.OAuthProfile | None,
        progress=gr.Progress(),  # noqa: ANN001
    ):
        view = h.set_options(
            services, st, model_, split_, unlabeled_, k_, progress, order_, blind_, profile
        )
        return as_outputs(view, pair_fields)

    option_inputs = [state, model, split, unlabeled, k, order, blind]
    for control in (model, split, unlabeled, order, blind):
        control.input(on_options, option_inputs, outputs_of(pair_fields), **slow)
    k.release(on_options, option_inputs, outputs_of(pair_fields), **slow)

    # Another pair: its candidates are ranked from cached embeddings (the split's images were
    # encoded when the tab opened), quick enough to need no progress bar. The login is the
    # annotator whose queue is walked.
    def on_next(st: LabelState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(h.next_pair(services, st, profile=profile), pair_fields)

    next_btn.click(on_next, [state], outputs_of(pair_fields), **quick)
    back_btn.click(wired(pair_fields, h.previous_pair), [state], outputs_of(pair_fields), **quick)
    for trigger in (goto_btn.click, goto.submit):
        trigger(wired(pair_fields, h.goto_pair), [state, goto], outputs_of(pair_fields), **quick)

    # A selection is the page's alone (KEYS_JS shows it at once): no event. It goes to the
    # server with the label that follows (PICK_JS).

    # Every label write gets the Space login (Gradio fills an argument typed
    # `gr.OAuthProfile | None`; None off a Space): required there, and saved as the author.
    label_fields = h.LABEL_OUTPUTS

    def on_negative(st: LabelState, pick, pair, profile: gr.OAuthProfile | None) -> tuple:  # noqa: ANN001
        view = h.mark(services, st, "negative", profile=profile, picked=pick, shown=pair)
        return as_outputs(view, label_fields)

    def on_also(st: LabelState, pick, pair, profile: gr.OAuthProfile | None) -> tuple:  # noqa: ANN001
        view = h.mark(services, st, "also-positive", profile=profile, picked=pick, shown=pair)
        return as_outputs(view, label_fields)

    def on_clear(st: LabelState, pick, pair, profile: gr.OAuthProfile | None) -> tuple:  # noqa: ANN001
        return as_outputs(h.clear(services, st, profile, pick, pair), label_fields)

    def on_caption(st: LabelState, text: str, profile: gr.OAuthProfile | None) -> tuple:
        view = h.add_negative_caption(services, st, text, profile=profile)
        return as_outputs(view, label_fields)

    def on_undo(st: LabelState, profile: gr.OAuthProfile | None) -> tuple:
        return as_outputs(h.undo(services, st, profile=profile), label_fields)

    # "multiple": n, n, n pressed quickly label three candidates in turn (the queue keeps them
    # in order and each sees the state the one before left).
    label_outputs = outputs_of(label_fields)
    writes = {**quick, "trigger_mode": "multiple"}
    picks = [state, picked, shown]
    negative_btn.click(on_negative, picks, label_outputs, js=PICK_JS, **writes)
    also_btn.click(on_also, picks, label_outputs, js=PICK_JS, **writes)
    clear_btn.click(on_clear, picks, label_outputs, js=PICK_JS, **writes)
    caption_btn.click(on_caption, [state, negative_caption], label_outputs, **writes)
    undo_btn.click(on_undo, [state], label_outputs, **writes)
