"""The training schedule of a finetune, fit to its time budget.

A run asks for a number of epochs and gives a time budget. When the epochs' steps fit in the
budget, the steps decide: the learning-rate schedule (linear warm-up, then linear decay to 0, as
``transformers`` does) is planned for exactly those steps, and nothing depends on the machine's
speed, so the same seed gives the same model. When they do not fit, the budget decides: the
schedule is planned for the steps that end at :data:`FILL` of the budget at the measured speed,
so the run still warms up, decays to 0 and finishes every planned step before the budget ends
(before this, such a run was cut off mid-schedule: 875 of 4,720 steps, at a high learning rate).

The speed comes from two places:

- the last run of the same base model, batch size, loss and precision (its ``schedule.json``,
  :func:`past_speed`): it plans the schedule before the first step, and it is what the Finetune
  tab shows before Start (:func:`estimate`);
- the run itself: after a short probe (:data:`PROBE_STEPS` steps and :func:`probe_seconds`,
  the first step left out as it carries one-time costs) the plan is fit to the measured speed
  (:class:`SpeedMeter`: the slower of the speed so far and over a recent window). From then on
  it is refit only when its predicted end leaves the band :data:`REFIT_BELOW`–:data:`REFIT_ABOVE`
  of the budget: shortened when a busy machine makes it fall behind, lengthened again (up to
  the requested steps) when it is well ahead, so a passing stall costs little.

:class:`Plan` is the mutable schedule that the learning-rate scheduler reads at every step and
the progress callback refits; :class:`SpeedMeter` measures steps/s. Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FILL = 0.92
"""A budget-decided schedule aims to end at this share of the budget (the rest is slack)."""
REFIT_ABOVE = 0.98
"""Refit when the planned steps are predicted to end past this share of the budget..."""
REFIT_BELOW = 0.85
"""...or, for a schedule the budget shortened, before this share."""
PROBE_STEPS = 5
"""Steps (after the first) the speed is measured over before the plan is fit to it."""
SCHEDULE_FILE = "schedule.json"
"""The plan and the measured speed of a run, in its folder."""


def probe_seconds(budget_s: float) -> float:
    """How long the in-run probe measures at least: 5% of the budget, within 0.5–5 s."""
    return min(5.0, max(0.5, 0.05 * budget_s))


def speed_window(budget_s: float) -> float:
    """The recent window of :class:`SpeedMeter`: 15% of the budget, within the probe and 60 s
    (long enough that a stall of a few seconds does not read as the new speed)."""
    return min(60.0, max(probe_seconds(budget_s), 0.15 * budget_s))


@dataclass
class Speed:
    """Optimizer steps per second, and where the number comes from (a run's name)."""

    steps_per_s: float
    run: str | None = None
    """The past run that measured it; ``None``: measured by this run."""


@dataclass
class Plan:
    """The schedule of one run: how many steps, decided by what, at which speed.

    ``requested_steps`` is what the epochs ask for; ``total_steps`` what the schedule is planned
    for (never more). ``decided_by`` is ``"steps"`` (all requested steps fit) or ``"budget"``.
    """

    budget_s: float | None
    warmup_ratio: float = 0.0
    requested_steps: int = 0
    total_steps: int = 0
    decided_by: str = "steps"
    steps_per_s: float | None = None
    """The speed the plan was last fit to."""
    speed_from: str | None = None
    """The past run whose speed planned the start (``None``: none was known)."""
    refits: int = 0

    def start(self, requested_steps: int, speed: Speed | None = None) -> Plan:
        """Plan ``requested_steps``, fit to ``speed`` (a past run's) when one is known."""
        self.requested_steps = self.total_steps = max(1, int(requested_steps))
        self.decided_by = "steps"
        if speed is not None and speed.steps_per_s > 0:
            self.speed_from = speed.run
            self.fit(speed.steps_per_s, 0, 0.0)
            self.refits = 0  # the plan a run starts with is not a refit
        return self

    @property
    def warmup_steps(self) -> int:
        """Warm-up steps of the planned schedule (``transformers``' rule for a ratio)."""
        if self.warmup_ratio >= 1:
            return int(self.warmup_ratio)
        return math.ceil(self.total_steps * self.warmup_ratio)

    def lr_factor(self, step: int) -> float:
        """The learning rate at ``step`` as a share of the peak: linear warm-up, linear decay
        to 0 at ``total_steps`` (``get_linear_schedule_with_warmup`` on the current plan)."""
        warmup, total = self.warmup_steps, self.total_steps
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))

    def predicted_end(self, steps_per_s: float, step: int, elapsed: float) -> float:
        """Seconds into training at which the planned steps end, at ``steps_per_s``."""
        return elapsed + (self.total_steps - step) / steps_per_s

    def fit(self, steps_per_s: float, step: int, elapsed: float, grow: bool = True) -> bool:
        """Fit the plan to the speed, ``step`` steps and ``elapsed`` seconds in.

        A plan of all the requested steps is left alone while it is predicted to end before
        :data:`REFIT_ABOVE` of the budget; a shortened one while it ends between
        :data:`REFIT_BELOW` and :data:`REFIT_ABOVE` (or earlier, unless ``grow``). Otherwise the
        plan becomes every requested step if they fit, else the steps that end at :data:`FILL`
        of the budget (never fewer than done). Returns whether the plan changed.
        """
        if self.budget_s is None or steps_per_s <= 0:
            return False
        self.steps_per_s = steps_per_s
        high, low = REFIT_ABOVE * self.budget_s, REFIT_BELOW * self.budget_s

        def ends(total: int) -> float:
            return elapsed + (total - step) / steps_per_s

        now = ends(self.total_steps)
        if now <= high and (self.total_steps >= self.requested_steps or now >= low or not grow):
            return False  # on course
        if ends(self.requested_steps) <= high:
            new = self.requested_steps
        else:
            fits = step + math.floor(steps_per_s * max(0.0, FILL * self.budget_s - elapsed))
            new = min(self.requested_steps, max(step, fits))
        new = max(1, new)
        if new == self.total_steps:
            return False
        self.total_steps = new
        self.decided_by = "steps" if new >= self.requested_steps else "budget"
        self.refits += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SpeedMeter:
    """Steps per second since the first step ended, and over a recent window.

    :meth:`rate` is the slower of the two, so a machine that got busy is noticed quickly.
    """

    window_s: float
    first: tuple[int, float] | None = None
    recent: deque = field(default_factory=deque)

    def add(self, step: int, elapsed: float) -> None:
        if self.first is None:
            self.first = (step, elapsed)
        self.recent.append((step, elapsed))
        while len(self.recent) > 2 and elapsed - self.recent[1][1] >= self.window_s:
            self.recent.popleft()

    def measured(self, step: int, elapsed: float) -> tuple[int, float]:
        """Steps and seconds since the first step ended."""
        if self.first is None:
            return 0, 0.0
        return step - self.first[0], elapsed - self.first[1]

    def overall(self) -> float | None:
        """Steps/s since the first step ended (``None`` before two points)."""
        if self.first is None or not self.recent:
            return None
        step, elapsed = self.recent[-1]
        steps, seconds = self.measured(step, elapsed)
        return steps / seconds if steps > 0 and seconds > 0 else None

    def rate(self) -> float | None:
        """The slower of the overall and the recent speed."""
        overall = self.overall()
        if overall is None or len(self.recent) < 2:
            return overall
        (s0, t0), (s1, t1) = self.recent[0], self.recent[-1]
        recent = (s1 - s0) / (t1 - t0) if s1 > s0 and t1 > t0 else overall
        return min(overall, recent)


# -- the speed of past runs --------------------------------------------------------------------
def speed_key(base_model: str, config: Any, precision: str, world_size: int = 1) -> dict[str, Any]:
    """What a run's speed depends on most: model, batch size, loss, precision, processes."""
    return {
        "base_model": str(base_model),
        "batch_size": int(config.batch_size),
        "loss": str(config.loss),
        "precision": str(precision),
        "world_size": int(world_size),
    }


def write_schedule(path: Path, key: dict[str, Any], plan: Plan, record: dict[str, Any]) -> None:
    """Write a run's ``schedule.json``: its speed key, plan and what happened."""
    data = {**key, "plan": plan.as_dict(), **record}
    (path / SCHEDULE_FILE).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_schedule(path: Path) -> dict[str, Any] | None:
    """A run folder's ``schedule.json``, or ``None`` when it has none (or it is unreadable)."""
    try:
        data = json.loads((Path(path) / SCHEDULE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def past_speed(store: Any, key: dict[str, Any]) -> Speed | None:
    """The speed measured by the newest run with the same :func:`speed_key`, if any."""
    for run in store.list_runs():
        if run.base_model != key["base_model"]:
            continue
        data = read_schedule(Path(run.path))
        if not data or any(data.get(k) != v for k, v in key.items()):
            continue
        rate = data.get("steps_per_s")
        if isinstance(rate, int | float) and rate > 0:
            return Speed(float(rate), run.name)
    return None


# -- what a run will be, before Start -----------------------------------------------------------
@dataclass
class Estimate:
    """What a run with these knobs on this collection will do (for the Finetune tab)."""

    steps_per_epoch: int
    plan: Plan
    epochs: float

    @property
    def planned_epochs(self) -> float:
        """Epochs the planned steps cover."""
        return self.plan.total_steps / max(1, self.steps_per_epoch)

    @property
    def seconds(self) -> float | None:
        """Training seconds at the known speed (``None``: no speed known yet)."""
        rate = self.plan.steps_per_s
        return self.plan.total_steps / rate if rate else None


def estimate(
    store: Any, settings: Any, collection_id: int, config: Any, base_model: str, precision: str
) -> Estimate:
    """The plan a run would start with: its steps from the training rows, fit to the budget at
    the speed of the last comparable run (see :func:`past_speed`)."""
    from mmdemo.training.data import build_train_data

    data = build_train_data(
        store, settings, collection_id, config.use_hard_negatives, config.symmetric
    )
    per_epoch = data.steps_per_epoch(config.batch_size)
    plan = Plan(config.max_minutes * 60.0, config.warmup_ratio)
    plan.start(
        math.ceil(config.epochs * per_epoch),
        past_speed(store, speed_key(base_model, config, precision)),
    )
    return Estimate(per_epoch, plan, float(config.epochs))
