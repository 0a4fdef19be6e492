"""Rounds (issue 13): a finetune that starts from an earlier run, recall@1 over runs, and the
collection encoded with the new model in the background once a run finishes.

Real short finetunes of the tiny CLIP on the small demo collection; nothing faked."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from mmdemo.cli import main
from mmdemo.hub.cards import ModelCardInfo, render_model_card
from mmdemo.retrieval.compare import load, resolve_model, search_command
from mmdemo.retrieval.models import model_fingerprint
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.training.jobs import BackgroundWork
from mmdemo.training.rounds import lineage, round_points, start_choices, started_from
from mmdemo.training.run import TrainConfig, TrainingError, run_training
from mmdemo.ui.finetune import handlers as h
from mmdemo.ui.finetune import rounds as r
from mmdemo.ui.finetune import view as v
from mmdemo.ui.results import is_skip
from tests.conftest import plain

WAIT = 300.0  # upper bound for a background run to end; a safety net, not a speed check
SHORT = TrainConfig(epochs=1, batch_size=8, max_minutes=5)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("rounds-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny"}
    ).with_overrides(demo_pairs=48)
    services = Services.create(settings)
    yield services
    services.jobs.cancel()
    active = services.jobs.active_job_id()
    if active:
        services.jobs.wait(active, WAIT)
    services.background.wait(WAIT)
    services.close()


def short_knobs() -> h.Knobs:
    return h.default_knobs()._replace(epochs=1, batch_size=8)


def finish(services: Services) -> str:
    """Wait for the latest job and its background encode; the run's name."""
    snap = services.jobs.status()
    assert snap is not None
    done = services.jobs.wait(snap.job_id, WAIT)
    assert done.state == "finished", done.message
    assert services.background.wait(WAIT)
    return done.progress["run_name"]


def collection_id(services: Services) -> int:
    return services.store.collection(DEMO_COLLECTION).id


# -- start from run X -----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_round_starts_from_the_first_runs_weights_and_trains(services):
    store, settings, base = services.store, services.settings, services.model.spec
    first = run_training(store, settings, DEMO_COLLECTION, SHORT, "round-1", base_model=base)
    assert first.status == "finished", first.message
    second = run_training(
        store, settings, DEMO_COLLECTION, SHORT, "round-2", base_model=None, start_from="round-1"
    )
    assert second.status == "finished", second.message
    assert second.steps > 0

    # Before training, round 2 measures exactly what round 1 ended with: its weights.
    start, after_first = second.metrics["start"], first.metrics["finetuned"]
    for direction in ("t2i", "i2t"):
        for metric, value in after_first[direction].items():
            assert start[direction][metric] == pytest.approx(value, abs=1e-6), metric
    # The baseline stays the real base model (measured again on the same eval split).
    assert second.metrics["base"]["t2i"] == pytest.approx(first.metrics["base"]["t2i"])
    assert "from the start run" in second.message

    # Recorded: the run keeps the real base model id; its config says where it started.
    run = store.get_run("round-2")
    assert run.base_model == base == store.get_run("round-1").base_model
    config = json.loads((Path(run.path) / "config.json").read_text())
    assert config["start_from"]["run"] == "round-1"
    assert config["start_from"]["round"] == 2 and config["start_from"]["lineage"] == ["round-1"]
    assert Path(config["start_from"]["model_dir"]) == Path(first.model_path)
    assert json.loads(run.config_json)["start_from"]["run"] == "round-1"
    assert started_from(run) == "round-1" and lineage(run) == ("round-1",)
    # Compare (and Label) name a later round's model with where it started; the base stays base.
    ref = resolve_model(store, services.model, "run:round-2")
    assert ref.label == "Run: round-2 (from round-1)"
    assert resolve_model(store, services.model, "run:round-1").label == "Run: round-1"

    third = run_training(store, settings, DEMO_COLLECTION, SHORT, "round-3", start_from="round-2")
    assert third.status == "finished", third.message
    assert lineage(store.get_run("round-3")) == ("round-1", "round-2")

    # The picker: base, then the finished runs of the collection, newest first.
    choices = start_choices(store, collection_id(services))
    assert [value for _, value in choices][:4] == [None, "round-3", "round-2", "round-1"]
    assert choices[1][0] == "round-3 (round 3, from round-2)"

    # Recall@1 over rounds: the base model, then the runs in the order they were made.
    points = round_points(store, collection_id(services), base)
    named = [p for p in points if p.run in ("round-1", "round-2", "round-3")]
    assert points[0].run is None and points[0].order == 0
    assert points[0].t2i == pytest.approx(third.metrics["base"]["t2i"]["recall@1"])
    assert [(p.run, p.parent, p.round) for p in named] == [
        ("round-1", None, 1),
        ("round-2", "round-1", 2),
        ("round-3", "round-2", 3),
    ]
    assert named[1].t2i == pytest.approx(second.metrics["finetuned"]["t2i"]["recall@1"])
    assert [p.order for p in points] == list(range(len(points)))
    assert round_points(store, collection_id(services), "another/base") == []

    # The runs table and a run's headline show the lineage.
    table = v.runs_frame(services).set_index("run")
    assert table.loc["round-2", "started from"] == "round-1"
    assert table.loc["round-1", "started from"] == "base model"
    title, _ = h.show_run(services, "round-2")
    assert "started from run" in title and "round\\-1" in title


def test_start_from_an_unusable_run_is_refused_before_the_run_exists(services):
    store, settings = services.store, services.settings
    with pytest.raises(TrainingError, match="No run named 'missing'"):
        run_training(store, settings, DEMO_COLLECTION, SHORT, "nope", start_from="missing")
    store.create_run("half-done", collection_id(services), services.model.spec, "/nowhere")
    with pytest.raises(TrainingError, match="is queued; start from a finished run"):
        run_training(store, settings, DEMO_COLLECTION, SHORT, "nope", start_from="half-done")
    assert not (settings.runs_dir / "nope").exists()
    with pytest.raises(Exception, match="No run named"):
        store.get_run("nope")


def test_start_from_a_run_of_another_collection_is_refused(services):
    """Its training pairs could be this collection's eval pairs: the metrics would lie."""
    store, settings = services.store, services.settings
    other = store.create_collection("rounds-other")
    store.create_run("other-round", other.id, services.model.spec, "/nowhere")
    with pytest.raises(TrainingError, match="trained on another collection"):
        run_training(store, settings, DEMO_COLLECTION, SHORT, "nope2", start_from="other-round")
    assert not (settings.runs_dir / "nope2").exists()


@pytest.mark.slow
def test_cli_train_start_from(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MMDEMO_BASE_MODEL", "tiny")
    monkeypatch.setenv("MMDEMO_DEMO_PAIRS", "40")
    home = str(tmp_path / "home")
    common = ["--home", home, "train", "--collection", "demo-shapes", "--epochs", "1"]
    assert main([*common, "--batch-size", "8", "--run", "cli-1"]) == 0
    capsys.readouterr()
    code = main([*common, "--batch-size", "8", "--run", "cli-2", "--start-from", "cli-1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    payload = json.loads(out.out.strip().splitlines()[-1])
    assert payload["start_from"] == "cli-1" and payload["status"] == "finished"
    assert payload["metrics"]["start"] and payload["metrics"]["finetuned"]
    config = json.loads((Path(home) / "runs" / "cli-2" / "config.json").read_text())
    assert config["start_from"]["run"] == "cli-1"

    code = main([*common, "--run", "cli-3", "--start-from", "nobody"])
    err = capsys.readouterr().err
    assert code == 1 and "No run named 'nobody' to start from" in err
    code = main([*common, "--run", "cli-4", "--start-from", "cli-1", "--base-model", "tiny"])
    assert code == 1 and "drop --base-model" in capsys.readouterr().err


def test_the_model_card_says_which_run_it_continued_from():
    info = ModelCardInfo(
        repo_id="me/clip-r3",
        run_name="round-3",
        base_model="openai/clip-vit-base-patch32",
        base_model_id="openai/clip-vit-base-patch32",
        lineage=("round-1", "round-2"),
    )
    card = render_model_card(info)
    assert "finetuned from run `round-2` of [openai/clip-vit-base-patch32]" in card
    assert "(round 3: `round-1` → `round-2`)" in card
    assert "base_model: openai/clip-vit-base-patch32" in card  # the real base stays the base
    first = render_model_card(
        ModelCardInfo("me/clip-r1", "round-1", "openai/clip", base_model_id="openai/clip")
    )
    assert "finetuned from [openai/clip]" in first and "(round " not in first


# -- the plot ----------------------------------------------------------------------------------
def test_rounds_frame_and_lineage_text_escape_run_names():
    from mmdemo.training.rounds import RoundPoint

    points = [
        RoundPoint(0, None, None, 0, 0.2, 0.25),
        RoundPoint(1, "<b>one</b>", None, 1, 0.5, 0.45),
        RoundPoint(2, "two*", "<b>one</b>", 2, 0.6, None),
    ]
    frame = r.rounds_frame(points)
    assert list(frame.columns) == r.ROUNDS_COLUMNS
    assert str(frame["recall@1"].dtype) == "float64"
    assert frame["point"].tolist() == [
        "0 · base model",
        "0 · base model",
        "1 · <b>one</b>",
        "1 · <b>one</b>",
        "2 · two*",
    ]
    plot = r.rounds_plot(points)  # the x axis in run order, not alphabetical
    assert plot["sort"] == ["0 · base model", "1 · <b>one</b>", "2 · two*"]
    assert plot["value"].equals(frame)
    assert r.point_label(RoundPoint(12, "x" * 40, None, 1, 0.1, 0.1)) == "12 · " + "x" * 31 + "…"
    assert frame["run"].tolist()[-1] == "two*" and frame["from"].tolist()[-1] == "<b>one</b>"
    assert frame["from"].tolist()[2] == "base model"
    text = r.lineage_markdown(points)
    assert "<b>" not in text and "two\\*" in text
    assert "round 2, from <code>" in text and "text → image 0.600" in text
    assert plain(r.lineage_markdown([])) == plain(r.NO_ROUNDS)
    assert r.rounds_frame([]).empty
    assert r.start_run("base") is None and r.start_run("") is None
    assert r.start_run("run:a b") == "a b"


# -- the tab, and ready when you are --------------------------------------------------------------
@pytest.mark.slow
def test_the_tab_runs_a_second_round_and_the_new_model_is_encoded_in_the_background(services):
    cache = services.embeddings
    view = r.rounds_view(services, DEMO_COLLECTION, "base")
    assert view.start_from["value"] == "base"

    encoded = cache.encoded_items
    # Its own seed: no earlier run of this module trained the same weights (same fingerprint).
    action = h.start_finetune(services, DEMO_COLLECTION, short_knobs()._replace(seed=7))
    assert "Started a finetune" in action.message
    first = finish(services)
    assert any(name == f"encode run {first}" for name in services.background.done)

    # The collection's images are all in the cache under the new model: a query encodes none.
    ref = resolve_model(services.store, services.model, f"run:{first}")
    fingerprint = model_fingerprint(ref.spec)
    shas = {p.image_sha256 for p in services.store.list_pairs(collection_id(services))}
    assert not cache.missing(fingerprint, "image", sorted(shas))
    assert cache.encoded_items - encoded >= len(shas)  # the background encode did it
    assert (ref.spec, None) in services.models  # loaded already, too
    calls, items = cache.encode_calls, cache.encoded_items
    hits = search_command(services, DEMO_COLLECTION, f"run:{first}", "a red circle", k=5)
    assert len(hits) == 5
    assert (cache.encode_calls, cache.encoded_items) == (calls + 1, items + 1)  # the query text
    loaded = load(services, ref)
    assert loaded.fingerprint == fingerprint

    # The tab's picker now offers the run; a second round starts from it.
    view = r.rounds_view(services, DEMO_COLLECTION, "base")
    values = [value for _, value in view.start_from["choices"]]
    assert values[:2] == ["base", f"run:{first}"] and view.start_from["value"] == "base"
    assert view.start_from == r.rounds_view(services, "no-such-collection", "base").start_from
    action = h.start_finetune(services, DEMO_COLLECTION, short_knobs(), None, f"run:{first}")
    seen = action.view.seen
    second = finish(services)
    run = services.store.get_run(second)
    assert started_from(run) == first

    # When the run ends the tick redraws the plot and the picker (choices only: the pick stays).
    ended = h.poll(services, seen, DEMO_COLLECTION, short_knobs())
    assert not is_skip(ended.rounds) and not is_skip(ended.lineage)
    assert "value" not in ended.start_from
    assert [value for _, value in ended.start_from["choices"]][1] == f"run:{second}"
    frame = ended.rounds["value"]
    assert ended.rounds["sort"][0] == "0 · base model"
    sort = ended.rounds["sort"]
    assert [label.split(" · ", 1)[1] for label in sort[-2:]] == [first, second]
    assert [int(label.split(" · ")[0]) for label in sort] == list(range(len(sort)))
    rows = frame[frame["direction"] == "text → image"]
    assert rows["run"].tolist()[-2:] == [first, second]
    assert rows["from"].tolist()[-1] == first
    assert v.run_label(second).replace("<code>", "") in ended.lineage.replace("<code>", "")
    quiet = h.poll(services, ended.seen, DEMO_COLLECTION, short_knobs())
    assert is_skip(quiet.rounds) and is_skip(quiet.start_from)

    # The person's pick is kept while it is still a choice.
    assert r.rounds_view(services, DEMO_COLLECTION, f"run:{first}").start_from["value"] == (
        f"run:{first}"
    )
    assert r.rounds_view(services, DEMO_COLLECTION, "run:gone").start_from["value"] == "base"


def test_start_from_a_run_that_cannot_be_used_is_a_message(services):
    action = h.start_finetune(services, DEMO_COLLECTION, short_knobs(), None, "run:missing")
    assert "No run named" in plain(action.message) and services.jobs.active_job_id() is None


def test_a_cancelled_or_failed_run_is_not_encoded(services):
    before = list(services.background.done)
    services.after_finetune(type("R", (), {"status": "cancelled", "name": "x"})())
    services.after_finetune(type("R", (), {"status": "finished", "name": "gone"})())
    assert services.background.wait(WAIT) and services.background.done == before


# -- the background worker -------------------------------------------------------------------------
def test_background_work_runs_chores_in_order_and_survives_a_failure():
    work = BackgroundWork()
    order: list[int] = []
    gate = threading.Event()
    work.start(lambda: (gate.wait(WAIT), order.append(1)), name="one")
    work.start(lambda: 1 / 0, name="boom")
    work.start(lambda: order.append(3), name="three")
    assert work.busy() and not work.wait(0.01)
    gate.set()
    assert work.wait(WAIT) and not work.busy()
    assert order == [1, 3] and work.done == ["one", "three"] and work.failed == ["boom"]
    time.sleep(0)  # the worker may leave after a quiet spell; a later chore starts it again
    work.start(lambda: order.append(4), name="four")
    assert work.wait(WAIT) and order == [1, 3, 4]


@pytest.mark.slow
def test_a_round_on_zerogpu_starts_from_the_run_and_calls_the_hook(
    store, settings, tiny_clip_dir, monkeypatch
):
    import sys

    from mmdemo.training.jobs import JobManager
    from mmdemo.training.run import TrainingJob
    from mmdemo.training.zerogpu import gpu_runner
    from tests.test_zerogpu import FakeSpaces, _demo

    monkeypatch.setitem(sys.modules, "spaces", FakeSpaces(settings.runs_dir))
    _demo(store, settings)
    config = TrainConfig(epochs=1, batch_size=8, max_minutes=1, augment=False)
    first = run_training(store, settings, "shapes", config, "zero-1", str(tiny_clip_dir))
    assert first.status == "finished", first.message
    space = settings.with_overrides(space_id="me/demo")
    ended: list = []
    job = TrainingJob(
        store,
        space,
        "shapes",
        config,
        "zero-2",
        gpu=gpu_runner(space),
        start_from="zero-1",
        after=ended.append,
    )
    manager = JobManager(store)
    snap = manager.wait(manager.start(job), timeout=WAIT)
    assert snap is not None and snap.state == "finished", snap and snap.message
    assert [r.name for r in ended] == ["zero-2"]  # the hook ran once, with the run's result
    run = store.get_run("zero-2")
    assert started_from(run) == "zero-1" and run.base_model == str(tiny_clip_dir)
    assert snap.result.metrics["start"]["t2i"] == pytest.approx(first.metrics["finetuned"]["t2i"])

    def broken(result: object) -> None:
        raise RuntimeError("the hook broke")

    job = TrainingJob(store, settings, "shapes", config, "zero-3", start_from="zero-2")
    job.after = broken
    snap = manager.wait(manager.start(job), timeout=WAIT)
    assert snap.state == "finished"  # a failing hook never fails the run
