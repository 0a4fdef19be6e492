"""The Finetune tab's handlers on a real Services: SQLite, the small demo collection, the tiny
CLIP as the base model and real (short) finetunes in the job manager's thread."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from mmdemo.data.images import ImageLimits, ingest_image_bytes
from mmdemo.data.store import Store
from mmdemo.retrieval.models import ModelChoice
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.text import md
from mmdemo.training.jobs import JobSnapshot
from mmdemo.training.run import TrainConfig, TrainingError
from mmdemo.ui.finetune import handlers as h
from mmdemo.ui.finetune import view as v
from mmdemo.ui.finetune.handlers import Knobs
from mmdemo.ui.finetune.view import METRICS_COLUMNS, RUNS_COLUMNS
from mmdemo.ui.results import is_skip
from tests.conftest import make_image_bytes

WAIT = 300.0  # upper bound for a background run to end; a safety net, not a speed check


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("finetune-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny"}
    ).with_overrides(demo_pairs=48)
    services = Services.create(settings)
    yield services
    services.jobs.cancel()
    active = services.jobs.active_job_id()
    if active:
        services.jobs.wait(active, WAIT)
    services.close()


def short(**changes: object) -> Knobs:
    """The tab's default knobs made short: one epoch, small batches."""
    return h.default_knobs()._replace(**{"epochs": 1, "batch_size": 8, **changes})


def latest_job(services: Services) -> JobSnapshot:
    snap = services.jobs.status()
    assert snap is not None
    return services.jobs.wait(snap.job_id, WAIT)


def add_pair(
    services: Services, collection: str, colour: tuple, caption: str, split: str = "train"
) -> None:
    found = services.store.get_or_create_collection(collection)
    settings = services.settings
    stored = ingest_image_bytes(
        make_image_bytes(colour), settings.images_dir, ImageLimits.from_settings(settings)
    )
    services.store.add_pair(found.id, stored.as_row(), caption, split=split)


def snapshot(state: str = "running", **progress: object) -> JobSnapshot:
    return JobSnapshot(
        job_id="job1",
        kind="finetune",
        description="finetune on 'shapes'",
        state=state,
        started_at=time.time() - 5,
        finished_at=None if state == "running" else time.time(),
        message="" if state == "running" else f"The job {state}.",
        progress=dict(progress),
    )


# -- a real finetune -------------------------------------------------------------------------------
@pytest.mark.slow
def test_start_trains_in_the_background_and_the_view_shows_the_result(services):
    knobs = short()
    action = h.start_finetune(services, DEMO_COLLECTION, knobs)
    assert action.message == "Started a finetune on “demo\\-shapes”."
    assert "demo\\-shapes" in action.view.status  # the view follows the new job at once
    # While it runs, Start is off and Cancel on (on every page: the tick draws it).
    assert action.view.start["interactive"] is False and action.view.cancel["interactive"]
    done = latest_job(services)
    assert done.state == "finished", done.message
    name, total = done.progress["run_name"], done.progress["total_steps"]
    assert total >= 2 and done.progress["step"] == total

    view = h.poll(services, action.view.seen, DEMO_COLLECTION, knobs)
    assert f"**Finished** · run {v.run_label(name)}" in view.status
    assert f"step **{total} / {total}**" in view.status
    assert "text→image recall@1" in view.status  # the run's summary
    assert 'data-state="finished"' in view.bar and "width:100.0%" in view.bar
    assert 'data-by="steps"' in view.bar  # one epoch fits in the budget: the steps decide
    assert list(view.loss.columns) == ["step", "loss"]
    assert len(view.loss) == len(done.progress["loss_history"]) >= 1
    assert view.cancel["interactive"] is False and view.start["interactive"] is True
    # The run measured the speed: the plan of the next run says so at once.
    assert "at the measured speed" in view.plan and v.run_label(name) in view.plan
    assert view.plan == h.plan_line(services, DEMO_COLLECTION, knobs)

    metrics = json.loads((services.settings.runs_dir / name / "metrics.json").read_text())
    assert view.metrics_title.startswith(f"**Run {v.run_label(name)}** · finished")
    table = view.metrics.set_index("metric")
    assert list(view.metrics.columns) == METRICS_COLUMNS
    assert list(table.index[:5]) == ["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10"]
    before, after = metrics["base"]["t2i"]["recall@1"], metrics["finetuned"]["t2i"]["recall@1"]
    assert table.loc["recall@1", "t→i base"] == f"{before:.3f}"
    assert table.loc["recall@1", "t→i finetuned"] == f"{after:.3f}"
    i2t_before, i2t_after = (
        metrics["base"]["i2t"]["ndcg@10"],
        metrics["finetuned"]["i2t"]["ndcg@10"],
    )
    assert table.loc["ndcg@10", "Δ i→t"] == v._delta(i2t_before, i2t_after)

    row = view.runs.iloc[0]
    assert list(view.runs.columns) == RUNS_COLUMNS
    assert (row["run"], row["status"], row["collection"]) == (name, "finished", DEMO_COLLECTION)
    assert row["base model"] == "tiny-clip" and row["duration"] != "running"
    assert row["t→i R@1"] == f"{before:.3f} → {after:.3f}"

    again = h.poll(services, view.seen, DEMO_COLLECTION, knobs)  # nothing changed: nothing sent
    assert all(is_skip(value) for value in again[:-1]) and again.seen == view.seen
    assert h.show_run(services, name)[1].equals(view.metrics)  # picking it in the list


@pytest.mark.slow
def test_a_second_start_is_refused_and_cancel_keeps_the_run(services):
    long = short(epochs=200, max_minutes=30)
    first = h.start_finetune(services, DEMO_COLLECTION, long)
    assert first.message.startswith("Started")
    job = services.jobs.active_job_id()
    deadline = time.monotonic() + WAIT
    while not services.jobs.status(job).progress.get("loss_history"):  # a few steps in
        assert time.monotonic() < deadline and services.jobs.status(job).running
        time.sleep(0.05)

    view = h.poll(services, first.view.seen)
    assert "**Training**" in view.status and "ETA" in view.status and "loss" in view.status
    assert 'data-state="running"' in view.bar
    assert first.view.cancel["interactive"] is True and is_skip(view.cancel)  # drawn once
    assert first.view.start["interactive"] is False and is_skip(view.start)
    reloaded = h.refresh(services)  # a reloaded page (or another browser) draws it off too
    assert reloaded.start["interactive"] is False and reloaded.cancel["interactive"] is True
    runs_before = len(services.store.list_runs())

    second = h.start_finetune(services, DEMO_COLLECTION, short())  # e.g. another browser
    assert "already running" in second.message and "cancel it" in second.message
    assert services.jobs.active_job_id() == job
    assert len(services.store.list_runs()) == runs_before

    cancelled = h.cancel_finetune(services)
    assert cancelled.message.startswith("Cancelling")
    assert "**Cancelling**" in cancelled.view.status or "Cancelled" in cancelled.view.status
    snap = services.jobs.wait(job, WAIT)
    assert snap.state == "cancelled" and "Cancelled after" in snap.message
    assert cancelled.view.cancel["interactive"] is False  # asked once
    # Start stays off until the run has really stopped (it may have, by the time this drew).
    still_running = "**Cancelling**" in cancelled.view.status
    assert cancelled.view.start["interactive"] is not still_running
    view = h.poll(services, cancelled.view.seen)
    assert "**Cancelled**" in view.status and 'data-state="cancelled"' in view.bar
    assert view.start["interactive"] is True
    name = snap.progress["run_name"]
    row = view.runs.set_index("run").loc[name]
    assert row["status"] == "cancelled"
    assert (Path(services.store.get_run(name).path) / "model").is_dir()  # the run is kept
    table = view.metrics.set_index("metric")  # measured before training, never after
    assert table.loc["recall@1", "t→i base"] != "–"
    assert table.loc["recall@1", "t→i finetuned"] == "–" and table.loc["recall@1", "Δ t→i"] == ""
    assert h.cancel_finetune(services).message == "Nothing is running."


@pytest.mark.slow
def test_an_unusable_collection_ends_the_job_with_a_message(services):
    add_pair(services, "one pair", (10, 200, 60), "a single green image")
    assert "at least 2 train pairs" in h.collection_view(services, "one pair").summary
    action = h.start_finetune(services, "one pair", short())
    assert action.message.startswith("Started")
    snap = latest_job(services)
    assert snap.state == "failed" and "1 usable training pair" in snap.message
    view = h.refresh(services)  # e.g. a page opened after it failed
    assert "⚠️ Failed" in view.status and "at least 2" in view.status
    assert 'data-state="failed"' in view.bar
    # The app keeps working: the next start on a good collection runs.
    assert h.start_finetune(services, DEMO_COLLECTION, short()).message.startswith("Started")
    assert latest_job(services).state == "finished"


def test_bad_knobs_and_missing_login_start_nothing(services):
    before = services.jobs.status()
    cases = [
        (DEMO_COLLECTION, short(batch_size=1), "batch size must be at least 2"),
        (DEMO_COLLECTION, short(epochs=None), "Fill in the number of epochs"),
        (DEMO_COLLECTION, short(loss="cached", mini_batch_size=0), "mini-batch size"),
        (DEMO_COLLECTION, short(matryoshka=True, matryoshka_dims="64, x"), "whole numbers"),
        (None, short(), "Choose a collection"),
        ("no such thing", short(), "No collection named 'no such thing'"),
    ]
    for collection, knobs, expected in cases:
        action = h.start_finetune(services, collection, knobs)
        assert md(expected) in action.message and action.message.startswith("⚠️")
    on_space = dataclasses.replace(
        services, settings=services.settings.with_overrides(space_id="alice/mmdemo")
    )
    refused = h.start_finetune(on_space, DEMO_COLLECTION, short())
    assert "Log in with your Hugging Face account" in refused.message
    assert "Log in" in h.cancel_finetune(on_space).message
    after = services.jobs.status()
    assert (after and after.job_id) == (before and before.job_id)  # no job was started


# -- formatting ------------------------------------------------------------------------------------
def test_status_formatter_and_progress_bar():
    assert v.format_status(None) == v.NO_JOB
    training = snapshot(
        phase="training",
        run_name="shapes-1",
        step=3,
        total_steps=12,
        epoch=0.25,
        loss=2.5,
        learning_rate=1e-3,
        samples_per_s=40.0,
        eta_s=95,
        message="Training.",
    )
    text = v.format_status(training)
    for part in (
        "**Training** · run <code>shapes\\-1</code> · finetune on &#x27;shapes&#x27;",
        "step **3 / 12**",
        "epoch 0.25",
        "loss 2.5000",
        "lr 1.00e-03",
        "40.0 samples/s",
        "ETA 1:35",
        "elapsed",
        "Training\\.",
    ):
        assert part in text
    bar = v.progress_html(training)
    assert "width:25.0%" in bar and "3 / 12 steps · 25%" in bar and 'data-step="3"' in bar

    cancelling = dataclasses.replace(training, cancel_requested=True)
    assert v.format_status(cancelling).startswith("**Cancelling**")
    loading = snapshot(phase="loading", message="Loading tiny.")
    assert v.format_status(loading).startswith("**Loading the model**")
    assert "step" not in v.format_status(loading) and "Loading the model…" in v.progress_html(
        loading
    )
    failed = snapshot("failed", phase="failed")
    assert "**⚠️ Failed**" in v.format_status(failed)
    assert "⚠️ The job failed\\." in v.format_status(failed)
    assert "ETA" not in v.format_status(snapshot("finished", phase="finished", eta_s=3))
    assert v.progress_share(snapshot("finished", step=2, total_steps=4)) == 1.0
    history = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0, "learning_rate": 1e-4}]
    frame = v.loss_frame(snapshot(loss_history=history))
    assert frame.to_dict("list") == {"step": [1, 2], "loss": [3.0, 2.0]}
    empty = v.loss_frame(None)
    assert empty.empty and [str(t) for t in empty.dtypes] == ["int64", "float64"]


def test_metrics_table_with_deltas_and_the_binding_probe():
    side = {"recall@1": 0.25, "recall@5": 0.5, "recall@10": 1.0, "mrr@10": 0.4, "ndcg@10": 0.5}
    better = {**side, "recall@1": 0.875}
    metrics = {
        "base": {"t2i": side, "i2t": side},
        "finetuned": {"t2i": better, "i2t": side},
        "probe": {"a": {"accuracy": 0.5, "n": 8}, "b": {"accuracy": 0.75, "n": 8}},
    }
    table = v.metrics_frame(metrics).set_index("metric")
    assert table.loc["recall@1"].tolist() == [
        "0.250",
        "0.875",
        "+0.625 ▲",
        "0.250",
        "0.250",
        "±0",
    ]
    assert table.loc["binding probe"].tolist()[:3] == ["0.500", "0.750", "+0.250 ▲"]
    worse = {"base": {"t2i": better}, "finetuned": {"t2i": side}}
    assert v.metrics_frame(worse).set_index("metric").loc["recall@1", "Δ t→i"] == "-0.625 ▼"
    per_side = {"base": {"t2i": side, "binding": {"accuracy": 0.5}}, "finetuned": None}
    assert v.metrics_frame(per_side).set_index("metric").loc["binding probe"].tolist()[:3] == [
        "0.500",
        "–",
        "",
    ]
    assert (
        v.metrics_frame(None).empty
        and "binding probe" not in v.metrics_frame({"base": {"t2i": side}}).metric.tolist()
    )


def test_knobs_become_a_checked_config():
    config = h.build_config(short(loss="cached-symmetric", mini_batch_size=4, seed=7))
    defaults = TrainConfig()
    assert (config.epochs, config.batch_size, config.loss, config.seed) == (
        1,
        8,
        "cached-symmetric",
        7,
    )
    assert config.mini_batch_size == 4 and config.max_minutes == defaults.max_minutes
    assert h.default_knobs().epochs == defaults.epochs and h.default_knobs().lr == defaults.lr
    auto = h.build_config(short(matryoshka=True, matryoshka_dims=""), lambda: 64)
    assert auto.matryoshka_dims == (64, 32, 16, 8)
    written = h.build_config(short(matryoshka=True, matryoshka_dims="16 64,32"), None)
    assert written.matryoshka_dims == (64, 32, 16)
    assert h.build_config(short(matryoshka_dims="16")).matryoshka_dims == ()  # Matryoshka off
    with pytest.raises(TrainingError, match="warm-up"):
        h.build_config(short(warmup_ratio=None))
    assert h.uses_mini_batches("cached") and not h.uses_mini_batches("symmetric")


# -- past runs -------------------------------------------------------------------------------------
def test_past_runs_table_and_picking_a_run(settings: Settings, store: Store):
    services = Services(
        settings=settings,
        store=store,
        model=ModelChoice(str(settings.models_dir / "tiny-clip"), "tiny-clip", "test", True),
    )
    collection = store.create_collection("shapes")
    metrics = {
        "base": {"t2i": {"recall@1": 0.125}, "i2t": {"recall@1": 0.25}},
        "finetuned": {"t2i": {"recall@1": 0.875}, "i2t": {"recall@1": 0.5}},
    }
    done_dir = settings.runs_dir / "done"
    done_dir.mkdir(parents=True)
    (done_dir / "metrics.json").write_text(json.dumps(metrics))
    store.create_run("done", collection.id, str(settings.models_dir / "tiny-clip"), str(done_dir))
    store.update_run("done", status="finished", message="Finished 4 steps.", finished=True)
    store.create_run("stored-only", None, "owner/clip", str(settings.runs_dir / "gone"))
    store.update_run("stored-only", status="interrupted", metrics_json=json.dumps(metrics))
    store.create_run("going", collection.id, "owner/clip", str(settings.runs_dir / "going"))
    store.update_run("going", status="running")

    table = v.runs_frame(services).set_index("run")
    assert list(table.index) == ["going", "stored-only", "done"]  # newest first
    assert table.loc["done"].tolist()[:3] == ["finished", "shapes", "tiny-clip"]
    assert table.loc["done", "t→i R@1"] == "0.125 → 0.875"
    assert table.loc["stored-only", "collection"] == "–"
    assert table.loc["stored-only", "base model"] == "owner/clip"
    assert table.loc["stored-only", "t→i R@1"] == "0.125 → 0.875"  # the store's copy
    assert table.loc["going", "duration"] == "running" and table.loc["going", "t→i R@1"] == "–"

    title, frame = h.show_run(services, "done")
    assert title == "**Run <code>done</code>** · finished · Finished 4 steps\\."
    assert frame.set_index("metric").loc["recall@1", "i→t finetuned"] == "0.500"
    title, frame = h.show_run(services, "going")
    assert "no metrics" in title and frame.empty
    assert h.show_run(services, "nope")[0].startswith("⚠️ No run named")

    view = h.refresh(services)  # no job in this process: the latest run's metrics
    assert view.status == v.NO_JOB and view.metrics_title.startswith("**Run <code>going</code>**")
    assert all(is_skip(v) for v in h.poll(services, view.seen)[:-1])


def test_the_tab_sits_between_label_and_compare():
    from mmdemo.ui.app import TABS

    assert [label for label, _, _ in TABS] == ["Curate", "Label", "Finetune", "Compare", "Publish"]


# -- the collection: read when shown, written by a person's pick -----------------------------------
def test_the_tab_reads_the_current_collection_and_a_pick_writes_it(services):
    shown = h.collection_view(services, DEMO_COLLECTION)
    assert shown.collection["value"] == DEMO_COLLECTION
    assert DEMO_COLLECTION in shown.collection["choices"]
    # A stale or deleted name (e.g. from another tab's localStorage) falls back to the default.
    assert h.collection_view(services, "deleted elsewhere").collection["value"] == DEMO_COLLECTION
    assert h.collection_view(services, None).collection["value"] == DEMO_COLLECTION
    for n in range(3):
        add_pair(services, "picked", (40 * n, 90, 200 - 40 * n), f"a picked thing {n}")
    pick = h.pick_collection(services, "picked")
    assert pick.current == "picked"  # a person's choice becomes the browser's collection
    assert "**3** train pairs · **0** eval pairs" in pick.summary
    assert is_skip(h.pick_collection(services, "no such").current)  # never a stale name


def test_counts_are_read_from_the_store_every_time_the_tab_is_shown(services):
    for n in range(2):
        add_pair(services, "growing", (200, 20 * n, 90), f"a growing thing {n}")
    add_pair(services, "growing", (0, 0, 0), "a held-out thing", split="eval")
    assert "**2** train pairs · **1** eval pairs" in h.collection_view(services, "growing").summary
    for n in range(2, 5):  # e.g. an import in the Curate tab
        add_pair(services, "growing", (200, 20 * n, 90), f"a growing thing {n}")
    shown = h.collection_view(services, "growing")
    assert "**5** train pairs · **1** eval pairs" in shown.summary  # never the old counts
    assert "80 epochs, 80 steps" in shown.plan  # one batch of 32 an epoch


def test_an_empty_eval_split_offers_to_make_one(services):
    for n in range(20):
        add_pair(services, "all train", (10 * n, 255 - 10 * n, 128), f"an icon number {n}")
    shown = h.collection_view(services, "all train")
    assert "the eval split is empty" in shown.summary
    assert shown.make_split["visible"] is True and h.MAKE_SPLIT_LABEL == "Make an eval split (10 %)"
    made = h.make_eval_split(services, "all train")
    assert made.message.startswith("Made an eval split of “all train”: eval 2")
    assert "**18** train pairs · **2** eval pairs" in made.summary
    assert "empty" not in made.summary and made.make_split["visible"] is False
    assert shown.plan == "" and h.plan_line(services, "all train").startswith("**This run:**")
    assert h.collection_view(services, DEMO_COLLECTION).make_split["visible"] is False
    assert h.make_eval_split(services, "nope").message.startswith("⚠️ No collection named")
    on_space = dataclasses.replace(
        services, settings=services.settings.with_overrides(space_id="alice/mmdemo")
    )
    assert "Log in" in h.make_eval_split(on_space, "all train").message


def test_user_text_in_the_tab_stays_text(services):
    hostile = "<img src=x onerror=alert(1)> *b*"
    add_pair(services, hostile, (1, 2, 3), "one")
    add_pair(services, hostile, (3, 2, 1), "two")
    for text in (
        h.collection_view(services, "<b>gone</b>").summary,
        h.collection_summary(services, "<b>gone</b>"),
        h.make_eval_split(services, hostile).message,
        h.show_run(services, "<b>nope</b>")[0],
        h.start_finetune(services, "<script>x</script>", short()).message,
    ):
        assert "<img" not in text and "<b>" not in text and "<script" not in text, text
    made = h.make_eval_split(services, hostile).message
    assert "&lt;img src=x onerror=alert\\(1\\)&gt; \\*b\\*" in made
    status = v.format_status(
        dataclasses.replace(
            snapshot("failed", run_name="<b>r</b>"),
            description="finetune on '<img src=x>'",
            message="No collection named '<b>x</b>'.",
        )
    )
    assert "<b>" not in status and "<img" not in status and "&lt;b&gt;" in status


def test_the_tab_never_listens_to_the_shared_collection():
    """One way: the tab reads shared.collection when shown, never reacts to it changing."""
    import gradio as gr

    from mmdemo.ui.common import Shared
    from mmdemo.ui.finetune.layout import build_finetune

    settings = Settings.from_env({"MMDEMO_BASE_MODEL": "tiny"})
    services = Services(
        settings=settings,
        store=Store(":memory:"),
        model=ModelChoice("tiny", "tiny-clip", "test", True),
    )
    with gr.Blocks() as demo:
        shared = Shared(
            demo=demo,
            collection=gr.BrowserState(None),
            timer=gr.Timer(2.0),
            label_focus=gr.State(None),
        )
        with gr.Tabs(), gr.Tab("Finetune", id="finetune") as tab:
            shared.tabs["finetune"] = tab
            build_finetune(services, shared)
    state_id = shared.collection._id
    triggers = [(t[0], t[1]) for fn in demo.fns.values() for t in fn.targets]
    assert (state_id, "change") not in triggers
    assert (tab._id, "select") in triggers
    writers = [fn for fn in demo.fns.values() if state_id in [o._id for o in fn.outputs]]
    assert [[t[1] for t in fn.targets] for fn in writers] == [["input"]]  # the dropdown only


# -- what the next run will be, and a budget-decided run's progress -------------------------------
def test_the_plan_says_how_many_epochs_fit_in_the_budget():
    from mmdemo.training.schedule import Estimate, Plan, Speed

    fits = Estimate(17, Plan(120.0, 0.1).start(1360, Speed(34.0, "r-1")), 80.0)
    assert v.plan_markdown(fits) == (
        "**This run:** 80 epochs, 1,360 steps, ≈ 40 s of the 2 min budget at the measured speed"
        " (34.0 steps/s, run <code>r\\-1</code>)."
    )
    tight = Estimate(59, Plan(120.0, 0.1).start(4720, Speed(7.3, None)), 80.0)
    assert tight.plan.total_steps == 805 and tight.plan.decided_by == "budget"
    assert v.plan_markdown(tight) == (
        "**This run:** ≈ 14 of 80 epochs (805 of 4,720 steps) fit in 2 min at the measured speed"
        " (7.3 steps/s); the learning-rate schedule is planned to end inside the budget."
    )
    unknown = v.plan_markdown(Estimate(59, Plan(120.0).start(4720), 80.0))
    assert unknown.startswith("**This run:** 80 epochs, 4,720 steps. Speed not measured yet")
    assert v.budget_text(90) == "1.5 min" and v.budget_text(30) == "30 s"
    quick = v.plan_markdown(Estimate(1, Plan(120.0).start(4, Speed(9.6, None)), 4.0))
    assert quick.startswith("**This run:** 4 epochs, 4 steps, under 1 s of the 2 min budget")


def test_the_bar_shows_the_budget_when_the_budget_decides():
    by_budget = snapshot(
        phase="training",
        step=300,
        total_steps=805,
        planned_by="budget",
        budget_s=120.0,
        elapsed_s=48.0,
    )
    bar = v.progress_html(by_budget)
    assert "width:40.0%" in bar and "300 / 805 steps · 40% of the 2 min budget" in bar
    assert 'data-by="budget"' in bar
    assert "schedule fit to the 2 min budget" in v.format_status(by_budget)
    by_steps = snapshot(phase="training", step=300, total_steps=1200, planned_by="steps")
    assert "300 / 1,200 steps · 25%" in v.progress_html(by_steps)
    assert "budget" not in v.format_status(by_steps)
