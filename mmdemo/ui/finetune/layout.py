"""The Finetune tab: knobs, Start / Cancel, live progress and loss curve, before/after metrics
and the past runs.

The layout and the wiring live here; the handlers (plain functions, tested directly) live in
:mod:`mmdemo.ui.finetune.handlers`, their pure formatting in :mod:`mmdemo.ui.finetune.view`.
The live view is polled by the app's one top-level ``gr.Timer`` (``shared.timer``); the tick
only reads the job manager's snapshot and skips what did not change. The job itself runs in the
job manager's thread, so a closed or reloaded page never stops it, and any page shows the running
(else the latest) job: that is how a reload re-attaches.

State flows one way: the tab reads the browser's current collection (``shared.collection``) when
the page loads and when the tab is shown; only a person picking a collection in the tab's
dropdown writes it back. Nothing listens to ``shared.collection`` changing.
"""

from __future__ import annotations

import gradio as gr

from mmdemo.services import Services
from mmdemo.ui.common import Shared
from mmdemo.ui.finetune import handlers as h
from mmdemo.ui.finetune import rounds as r
from mmdemo.ui.finetune import sigmoid as sg
from mmdemo.ui.finetune import view as v
from mmdemo.ui.finetune.handlers import LOSS_CHOICES, SAMPLER_CHOICES, FinetuneView, Knobs
from mmdemo.ui.finetune.view import LOSS_COLUMNS, METRICS_COLUMNS, RUNS_COLUMNS

INTRO = (
    "Finetune the base model on a collection's **train** split, measured before and after on"
    " its **eval** split with the same evaluator. The run goes on in the background: you may"
    " close or reload this page and come back to it."
)


def build_finetune(services: Services, shared: Shared) -> None:
    """Lay out the Finetune tab inside the current ``gr.Tab`` and wire its events."""
    d = h.default_knobs(services.model.is_tiny)
    gr.Markdown(INTRO)
    gr.Markdown(h.device_markdown(services), elem_id="mm-ft-device")

    with gr.Row(equal_height=True):
        collection = gr.Dropdown(
            label="Collection", elem_id="mm-ft-collection", scale=2, min_width=220
        )
        with gr.Column(scale=3):
            summary = gr.Markdown(elem_id="mm-ft-summary")
            make_split_btn = gr.Button(
                h.MAKE_SPLIT_LABEL,
                size="sm",
                visible=False,
                elem_id="mm-ft-make-split",
            )

    with gr.Row():
        epochs = gr.Number(d.epochs, label="Epochs", minimum=0, elem_id="mm-ft-epochs")
        minutes = gr.Number(
            d.max_minutes,
            label="Time budget (minutes)",
            minimum=0,
            info="Training stops at the next step once it is spent.",
            elem_id="mm-ft-minutes",
        )
        batch = gr.Number(
            d.batch_size, label="Batch size", minimum=2, precision=0, elem_id="mm-ft-batch"
        )
        lr = gr.Number(d.lr, label="Learning rate", minimum=0, elem_id="mm-ft-lr")
    with gr.Row(equal_height=True):
        loss = gr.Dropdown(LOSS_CHOICES, value=d.loss, label="Loss", elem_id="mm-ft-loss", scale=2)
        mini_batch = gr.Number(
            d.mini_batch_size,
            label="Mini-batch size",
            info="Pieces of a batch for the cached loss.",
            minimum=1,
            precision=0,
            visible=h.uses_mini_batches(d.loss),
            elem_id="mm-ft-mini-batch",
        )
        sigmoid_start = gr.Textbox(
            label=sg.SIGMOID_START_LABEL,
            interactive=False,
            visible=d.loss == "sigmoid",
            elem_id="mm-ft-sigmoid-start",
            scale=2,
        )
        hard = gr.Checkbox(
            d.use_hard_negatives,
            label="Use hard negatives",
            info="The ones labeled in the Label and Compare tabs.",
            elem_id="mm-ft-hard",
        )
        matryoshka = gr.Checkbox(
            d.matryoshka,
            label="Matryoshka",
            info="Also train truncated embeddings.",
            elem_id="mm-ft-matryoshka",
        )
    with gr.Accordion("Advanced", open=False, elem_id="mm-ft-advanced"), gr.Row():
        warmup = gr.Slider(
            0, 0.5, value=d.warmup_ratio, step=0.05, label="Warm-up (share of the steps)"
        )
        seed = gr.Number(d.seed, label="Seed", precision=0, elem_id="mm-ft-seed")
        dims = gr.Textbox(
            d.matryoshka_dims,
            label="Matryoshka dimensions",
            placeholder="empty: full, ½, ¼, ⅛",
            elem_id="mm-ft-dims",
        )
        sampler = gr.Dropdown(
            SAMPLER_CHOICES,
            value=d.sampler,
            label="Batches",
            info="auto: no duplicate captions in a batch when there are enough of them",
        )
        scale = gr.Number(
            d.scale, label="Loss scale (1 / temperature)", minimum=0, elem_id="mm-ft-scale"
        )

    start_from = gr.Dropdown(
        [("Base model", "base")],
        value="base",
        label="Start from",
        info=r.START_FROM_INFO,
        elem_id="mm-ft-start-from",
    )
    plan = gr.Markdown(elem_id="mm-ft-plan")
    with gr.Row():
        start_btn = gr.Button("Start finetune", variant="primary", elem_id="mm-ft-start")
        cancel_btn = gr.Button("Cancel", variant="stop", interactive=False, elem_id="mm-ft-cancel")
    message = gr.Markdown(elem_id="mm-ft-message")

    with gr.Row():
        with gr.Column(scale=5):
            status = gr.Markdown(v.NO_JOB, elem_id="mm-ft-status")
            bar = gr.HTML(v.progress_html(None), elem_id="mm-ft-bar")
        with gr.Column(scale=4):
            curve = gr.LinePlot(
                x=LOSS_COLUMNS[0],
                y=LOSS_COLUMNS[1],
                label="Training loss",
                x_title="step",
                y_title="loss",
                height=240,
                elem_id="mm-ft-loss-curve",
            )
    # Full width: seven columns do not fit beside the loss curve.
    metrics_title = gr.Markdown(v.NO_METRICS, elem_id="mm-ft-metrics-title")
    metrics = gr.Dataframe(
        headers=METRICS_COLUMNS,
        interactive=False,
        show_label=False,
        elem_id="mm-ft-metrics",
    )
    with gr.Row():
        with gr.Column(scale=3):
            rounds_plot = r.build_rounds_plot()
        with gr.Column(scale=2):
            rounds_lineage = r.build_lineage()
    with gr.Row(equal_height=True):
        gr.Markdown("### Past runs · click one to see its metrics")
        refresh_btn = gr.Button("↻ Runs", size="sm", scale=0, min_width=80)
    runs = gr.Dataframe(
        headers=RUNS_COLUMNS,
        interactive=False,
        show_label=False,
        wrap=True,
        max_height=320,
        elem_id="mm-ft-runs",
    )
    seen = gr.State(None)

    # -- wiring ------------------------------------------------------------------------------
    view = {
        "status": status,
        "bar": bar,
        "loss": curve,
        "metrics_title": metrics_title,
        "metrics": metrics,
        "runs": runs,
        "start": start_btn,
        "cancel": cancel_btn,
        "plan": plan,
        "seen": seen,
        "start_from": start_from,
        "rounds": rounds_plot,
        "lineage": rounds_lineage,
    }
    view_outputs = [view[name] for name in FinetuneView._fields]
    knobs = [epochs, minutes, batch, lr, warmup, seed, loss, mini_batch, matryoshka, dims]
    knobs += [hard, sampler, scale]
    assert len(knobs) == len(Knobs._fields)

    collection_outputs = [collection, summary, make_split_btn, plan]

    def on_show(name: str | None, *values: object) -> tuple:
        return tuple(h.collection_view(services, name, Knobs(*values)))

    # Read (never written) when the page loads and whenever the tab is shown: fresh counts.
    shared.demo.load(
        on_show, [shared.collection, *knobs], collection_outputs, show_progress="hidden"
    )
    shared.tabs["finetune"].select(
        on_show, [shared.collection, *knobs], collection_outputs, show_progress="hidden"
    )

    rounds_outputs = [start_from, rounds_plot, rounds_lineage]

    def on_rounds(name: str | None, current: str | None) -> tuple:
        return tuple(r.rounds_view(services, name, current))

    # The picker and the plot, fresh when the page loads, the tab is shown or a collection picked.
    for event, source in (
        (shared.demo.load, shared.collection),
        (shared.tabs["finetune"].select, shared.collection),
        (collection.input, collection),
    ):
        event(on_rounds, [source, start_from], rounds_outputs, show_progress="hidden")

    def on_pick(name: str | None, *values: object) -> tuple:
        return tuple(h.pick_collection(services, name, Knobs(*values)))

    # A person's pick becomes the browser's current collection (for the other tabs).
    collection.input(
        on_pick,
        [collection, *knobs],
        [summary, make_split_btn, plan, shared.collection],
        show_progress="hidden",
    )

    def on_knobs(name: str | None, *values: object) -> str:
        return h.plan_line(services, name, Knobs(*values))

    for knob in (epochs, minutes, batch, loss, hard):
        knob.change(
            on_knobs,
            [collection, *knobs],
            [plan],
            show_progress="hidden",
            trigger_mode="always_last",
        )
    loss.change(lambda name: gr.update(visible=h.uses_mini_batches(name)), [loss], [mini_batch])
    loss.change(
        lambda name: gr.update(**sg.sigmoid_box(services, name)),
        [loss],
        [sigmoid_start],
        show_progress="minimal",
    )

    def on_make_split(name: str | None, profile: gr.OAuthProfile | None) -> tuple:
        return tuple(h.make_eval_split(services, name, profile))

    make_split_btn.click(
        on_make_split, [collection], [message, summary, make_split_btn], show_progress="hidden"
    ).then(on_knobs, [collection, *knobs], [plan], show_progress="hidden")

    shared.demo.load(lambda: tuple(h.refresh(services)), None, view_outputs)

    def on_tick(last: dict | None, name: str | None, *values: object) -> tuple:
        return tuple(h.poll(services, last, name, Knobs(*values)))

    shared.timer.tick(
        on_tick,
        [seen, collection, *knobs],
        view_outputs,
        show_progress="hidden",
        concurrency_limit=None,  # a cheap read of the job's snapshot; never waits behind others
    )
    refresh_btn.click(lambda: v.runs_frame(services), None, [runs], show_progress="hidden")

    def on_start(
        name: str | None,
        epochs_: float | None,
        minutes_: float | None,
        batch_: float | None,
        lr_: float | None,
        warmup_: float | None,
        seed_: float | None,
        loss_: str,
        mini_batch_: float | None,
        matryoshka_: bool,
        dims_: str,
        hard_: bool,
        sampler_: str,
        scale_: float | None,
        start_from_: str | None,
        profile: gr.OAuthProfile | None,
    ) -> tuple:
        values = Knobs(
            epochs_,
            minutes_,
            batch_,
            lr_,
            warmup_,
            seed_,
            loss_,
            mini_batch_,
            matryoshka_,
            dims_,
            hard_,
            sampler_,
            scale_,
        )
        action = h.start_finetune(services, name, values, profile, start_from_)
        return (action.message, *action.view)

    def on_cancel(profile: gr.OAuthProfile | None) -> tuple:
        action = h.cancel_finetune(services, profile)
        return (action.message, *action.view)

    start_btn.click(
        on_start,
        [collection, *knobs, start_from],
        [message, *view_outputs],
        concurrency_id="finetune",
        concurrency_limit=1,
    )
    cancel_btn.click(on_cancel, None, [message, *view_outputs])

    def on_select_run(evt: gr.SelectData) -> tuple:
        row = evt.row_value or []
        return h.show_run(services, row[0] if row else None)

    runs.select(on_select_run, None, [metrics_title, metrics])
