"""The schedule of a run fit to its time budget: the plan, its refits, the speed meter and the
speed of past runs (plain arithmetic; the real finetunes are in tests/test_training.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmdemo.training.run import TrainConfig
from mmdemo.training.schedule import (
    FILL,
    SCHEDULE_FILE,
    Plan,
    Speed,
    SpeedMeter,
    past_speed,
    probe_seconds,
    read_schedule,
    speed_key,
    speed_window,
    write_schedule,
)


def test_the_learning_rate_follows_transformers_linear_schedule():
    from transformers import get_linear_schedule_with_warmup

    plan = Plan(budget_s=None, warmup_ratio=0.1).start(250)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    reference = get_linear_schedule_with_warmup(optimizer, math.ceil(250 * 0.1), 250)
    for step in range(0, 260):
        assert plan.lr_factor(step) == pytest.approx(reference.lr_lambdas[0](step), abs=1e-12)
    assert plan.warmup_steps == 25 and plan.lr_factor(250) == 0.0
    assert Plan(None, 0.0).start(10).lr_factor(0) == 1.0  # no warm-up: the peak at once


def test_a_plan_that_fits_is_left_alone():
    plan = Plan(budget_s=100.0, warmup_ratio=0.1).start(1000)
    # 1,000 steps at 20 steps/s end at 50 s: the steps decide, whatever the measurement says.
    assert not plan.fit(20.0, 100, 5.0)
    assert not plan.fit(12.0, 500, 30.0)
    assert (plan.total_steps, plan.decided_by, plan.refits) == (1000, "steps", 0)
    assert not Plan(budget_s=None).start(5).fit(0.001, 1, 1.0)  # no budget


def test_a_plan_that_does_not_fit_is_shortened_to_end_inside_the_budget():
    plan = Plan(budget_s=100.0, warmup_ratio=0.1).start(4720)
    assert plan.fit(10.0, 50, 5.0)  # 4,720 steps would take ~470 s
    expected = 50 + math.floor(10.0 * (FILL * 100.0 - 5.0))
    assert plan.total_steps == expected == 920 and plan.decided_by == "budget"
    assert plan.predicted_end(10.0, 50, 5.0) == pytest.approx(FILL * 100.0)
    assert plan.warmup_steps == math.ceil(920 * 0.1) and plan.lr_factor(920) == 0.0
    assert not plan.fit(10.0, 400, 40.0)  # on course: left alone
    assert not plan.fit(11.0, 400, 40.0)  # a little faster or slower: still inside the band
    # The machine got slower: shortened, so that the plan still ends inside the budget.
    assert plan.fit(5.0, 600, 80.0)
    assert plan.total_steps == 600 + math.floor(5.0 * (FILL * 100.0 - 80.0)) == 660
    # The stall passed and the run is well ahead (would end at 66 s): lengthened again.
    assert plan.fit(10.0, 600, 60.0)
    assert plan.total_steps == 600 + math.floor(10.0 * (FILL * 100.0 - 60.0)) == 920
    assert plan.fit(1.0, 650, 97.0) and plan.total_steps == 650  # out of time: ends now
    assert not plan.fit(100.0, 650, 97.0)  # ends at 97 s: inside the band
    assert plan.refits == 4


def test_a_plan_made_from_a_slower_past_run_is_lengthened_when_this_run_is_faster():
    plan = Plan(budget_s=60.0).start(3000, Speed(10.0, "earlier"))
    assert plan.decided_by == "budget" and plan.total_steps == math.floor(10.0 * (FILL * 60.0))
    assert plan.speed_from == "earlier" and plan.refits == 0 and plan.steps_per_s == 10.0
    assert plan.fit(100.0, 20, 2.0)  # this machine is much faster: all steps fit
    assert plan.total_steps == 3000 and plan.decided_by == "steps"
    faster_past = Plan(budget_s=60.0).start(3000, Speed(100.0, "fast"))
    assert faster_past.total_steps == 3000 and faster_past.decided_by == "steps"


def test_the_speed_meter_leaves_out_the_first_step_and_notices_a_slowdown():
    meter = SpeedMeter(window_s=2.0)
    assert meter.rate() is None
    meter.add(1, 3.0)  # the first step: one-time costs, not counted
    for step in range(2, 22):
        meter.add(step, 3.0 + (step - 1) * 0.1)  # 10 steps/s
    assert meter.measured(21, 5.0) == (20, pytest.approx(2.0))
    assert meter.overall() == pytest.approx(10.0) and meter.rate() == pytest.approx(10.0)
    for step in range(22, 27):
        meter.add(step, 5.0 + (step - 21) * 1.0)  # now 1 step/s
    assert meter.rate() < meter.overall()
    assert meter.rate() == pytest.approx(1.0, rel=0.6)
    assert probe_seconds(120.0) == 5.0 and probe_seconds(6.0) == 0.5
    assert speed_window(120.0) == pytest.approx(18.0) and speed_window(1e4) == 60.0
    assert speed_window(6.0) == pytest.approx(0.9) and speed_window(1.0) == 0.5


def test_past_runs_give_their_speed_to_the_next_run_of_the_same_kind(settings, store):
    collection = store.create_collection("c")
    config = TrainConfig(batch_size=32, loss="mnrl")
    key = speed_key("tiny", config, "fp32")
    for name, rate, batch in (("old", 20.0, 32), ("other-batch", 5.0, 8), ("new", 30.0, 32)):
        path = settings.runs_dir / name
        path.mkdir(parents=True)
        run_key = speed_key("tiny", TrainConfig(batch_size=batch), "fp32")
        plan = Plan(120.0).start(100)
        write_schedule(path, run_key, plan, {"steps_per_s": rate, "steps": 100})
        store.create_run(name, collection.id, "tiny", str(path))
    assert past_speed(store, key) == Speed(30.0, "new")  # the newest of the same kind
    assert past_speed(store, speed_key("tiny", TrainConfig(batch_size=8), "fp32")) == Speed(
        5.0, "other-batch"
    )
    assert past_speed(store, speed_key("tiny", config, "bf16")) is None
    assert past_speed(store, speed_key("other-model", config, "fp32")) is None
    data = read_schedule(settings.runs_dir / "new")
    assert data["plan"]["requested_steps"] == 100 and data["batch_size"] == 32
    (settings.runs_dir / "new" / SCHEDULE_FILE).write_text("{not json")
    assert read_schedule(settings.runs_dir / "new") is None
    assert past_speed(store, key) == Speed(20.0, "old")  # an unreadable file is skipped
    assert json.loads((settings.runs_dir / "old" / SCHEDULE_FILE).read_text())["loss"] == "mnrl"


def test_a_plan_ahead_of_the_budget_waits_when_told_not_to_grow():
    plan = Plan(budget_s=100.0).start(4720, Speed(10.0, None))
    assert plan.total_steps == 920
    assert not plan.fit(20.0, 100, 5.0, grow=False)  # ahead, but a refit was just made
    assert plan.fit(20.0, 100, 5.0) and plan.total_steps == 100 + math.floor(20.0 * 87.0)
    assert plan.fit(5.0, 300, 20.0, grow=False)  # behind: shortened whatever ``grow`` says
