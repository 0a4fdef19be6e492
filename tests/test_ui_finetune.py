"""The Finetune tab's handlers on a real Services: SQLite, the small demo collection, the tiny
CLIP as the base model and real (short) finetunes in the job manager's thread."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from mmdemo.images import ImageLimits, ingest_image_bytes
from mmdemo.jobs import JobSnapshot
from mmdemo.models import ModelChoice
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.store import Store
from mmdemo.training import TrainConfig, TrainingError
from mmdemo.ui import finetune_handlers as h
from mmdemo.ui import finetune_view as v
from mmdemo.ui.finetune_handlers import Knobs
from mmdemo.ui.finetune_view import METRICS_COLUMNS, RUNS_COLUMNS
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


def add_pair(services: Services, collection: str, colour: tuple, caption: str) -> None:
    found = services.store.get_or_create_collection(collection)
    settings = services.settings
    stored = ingest_image_bytes(
        make_image_bytes(colour), settings.images_dir, ImageLimits.from_settings(settings)
    )
    services.store.add_pair(found.id, stored.as_row(), caption, split="train")


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
    action = h.start_finetune(services, DEMO_COLLECTION, short())
    assert "Started a finetune on **demo-shapes**" in action.message
    assert "demo-shapes" in action.view.status  # the view follows the new job at once
    done = latest_job(services)
    assert done.state == "finished", done.message
    name, total = done.progress["run_name"], done.progress["total_steps"]
    assert total >= 2 and done.progress["step"] == total

    view = h.poll(services, action.view.seen)
    assert "**Finished** · run `" + name + "`" in view.status
    assert f"step **{total} / {total}**" in view.status
    assert "text→image recall@1" in view.status  # the run's summary
    assert 'data-state="finished"' in view.bar and "width:100.0%" in view.bar
    assert list(view.loss.columns) == ["step", "loss"]
    assert len(view.loss) == len(done.progress["loss_history"]) >= 1
    assert view.cancel["interactive"] is False

    metrics = json.loads((services.settings.runs_dir / name / "metrics.json").read_text())
    assert view.metrics_title.startswith(f"**Run `{name}`** · finished")
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

    again = h.poll(services, view.seen)  # nothing changed: the tick sends nothing
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
    view = h.poll(services, cancelled.view.seen)
    assert "**Cancelled**" in view.status and 'data-state="cancelled"' in view.bar
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
    assert "at least 2 train pairs" in h.collection_view(services, "one pair")[1]
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
        assert expected in action.message and action.message.startswith("⚠️")
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
        "**Training** · run `shapes-1` · finetune on 'shapes'",
        "step **3 / 12**",
        "epoch 0.25",
        "loss 2.5000",
        "lr 1.00e-03",
        "40.0 samples/s",
        "ETA 1:35",
        "elapsed",
        "Training.",
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
    assert "⚠️ The job failed." in v.format_status(failed)
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
    assert title == "**Run `done`** · finished · Finished 4 steps."
    assert frame.set_index("metric").loc["recall@1", "i→t finetuned"] == "0.500"
    title, frame = h.show_run(services, "going")
    assert "no metrics" in title and frame.empty
    assert h.show_run(services, "nope")[0].startswith("⚠️ No run named")

    view = h.refresh(services)  # no job in this process: the latest run's metrics
    assert view.status == v.NO_JOB and view.metrics_title.startswith("**Run `going`**")
    assert all(is_skip(v) for v in h.poll(services, view.seen)[:-1])


def test_the_tab_sits_between_label_and_compare():
    from mmdemo.ui.app import TABS

    assert [label for label, _, _ in TABS] == ["Curate", "Label", "Finetune", "Compare", "Publish"]
