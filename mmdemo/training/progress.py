"""The progress callback of a finetune: it publishes progress to a board and the run log, stops
training at the next step on cancel or when the time budget is spent, and fits the schedule
(:class:`mmdemo.training.schedule.Plan`) to the budget at the speed it measures.

In a multi-process run (``torchrun``) the stop decision and the clock are all-reduced, so every
process refits the same way and stops at the same step.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from transformers import TrainerCallback

from mmdemo.training.schedule import PROBE_STEPS, Plan, SpeedMeter, probe_seconds, speed_window

REASONS = (None, "time budget", "cancelled")
"""Stop reasons in order of precedence when processes disagree."""


class ProgressCallback(TrainerCallback):
    """Publishes progress to a board and the run log; stops on the stop event or time budget;
    fits the schedule (``plan``) to the budget at the speed it measures.

    In a multi-process run the stop decision and the clock are all-reduced, so every process
    refits the same way and stops at the same step.
    """

    def __init__(
        self,
        board: Any,
        stop_event: threading.Event | None,
        max_seconds: float | None,
        samples_per_step: int,
        log_event: Any = None,
        plan: Plan | None = None,
    ):
        self.board = board
        self.stop_event = stop_event
        self.max_seconds = max_seconds
        self.samples_per_step = samples_per_step
        self.log_event = log_event or (lambda **_: None)
        self.plan = plan
        self.meter = SpeedMeter(speed_window(max_seconds or 0.0))
        self.probed = False
        self.refit_at = 0.0
        """When the plan was last refit (seconds into training)."""
        self.started: float | None = None
        self.stop_reason: str | None = None
        self.current_lr: float | None = None

    def _plan_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"budget_s": self.max_seconds}
        if self.plan is not None:
            fields.update(
                planned_by=self.plan.decided_by, requested_steps=self.plan.requested_steps
            )
        return fields

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - HF signature
        self.started = time.monotonic()
        if self.plan is not None:
            if not self.plan.requested_steps:  # no planned scheduler: plan the trainer's steps
                self.plan.start(state.max_steps)
            state.max_steps = self.plan.total_steps  # the trainer stops there
        self.board.update(
            phase="training", step=0, total_steps=state.max_steps, epoch=0.0, **self._plan_fields()
        )

    def _shared(self, elapsed: float, device: Any) -> tuple[float, str | None]:
        """Elapsed time and stop reason, agreed by all processes (max) in a distributed run, so
        that every replica plans the same schedule and stops at the same step."""
        reason = None
        if self.stop_event is not None and self.stop_event.is_set():
            reason = "cancelled"
        elif self.max_seconds is not None and elapsed >= self.max_seconds:
            reason = "time budget"
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            shared = torch.tensor([REASONS.index(reason), elapsed], device=device)
            dist.all_reduce(shared, op=dist.ReduceOp.MAX)
            reason, elapsed = REASONS[int(shared[0].item())], float(shared[1].item())
        return elapsed, reason

    def _refit(self, state: Any, elapsed: float, optimizer: Any, scheduler: Any) -> None:
        """Measure the speed; after the probe, fit the plan to it when it drifts out of the
        budget's band (:meth:`Plan.fit`) and move the learning rate onto the new schedule."""
        plan = self.plan
        if plan is None or self.max_seconds is None:
            return
        self.meter.add(state.global_step, elapsed)
        steps, seconds = self.meter.measured(state.global_step, elapsed)
        if not self.probed and (steps < PROBE_STEPS or seconds < probe_seconds(self.max_seconds)):
            return
        rate = self.meter.rate()
        if rate is None:
            return
        self.probed = True
        # Shorten at any step (the budget is at stake), lengthen at most once per probe time.
        grow = elapsed - self.refit_at >= probe_seconds(self.max_seconds)
        if not plan.fit(rate, state.global_step, elapsed, grow=grow):
            return
        self.refit_at = elapsed
        state.max_steps = plan.total_steps
        scheduler = getattr(scheduler, "scheduler", scheduler)  # unwrap an accelerate wrapper
        if optimizer is not None and hasattr(scheduler, "base_lrs"):
            factor = plan.lr_factor(int(scheduler.last_epoch))
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=False):
                group["lr"] = base * factor
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.log_event(
            event="plan", step=state.global_step, elapsed_s=round(elapsed, 2), **plan.as_dict()
        )

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):  # noqa: ANN001
        local = time.monotonic() - (self.started or time.monotonic())
        elapsed, reason = self._shared(local, getattr(args, "device", "cpu"))
        self._refit(state, elapsed, optimizer, lr_scheduler)
        if optimizer is not None:
            self.current_lr = float(optimizer.param_groups[0]["lr"])
        per_step = elapsed / max(1, state.global_step)
        remaining = per_step * (state.max_steps - state.global_step)
        if self.max_seconds is not None:
            remaining = min(remaining, max(0.0, self.max_seconds - elapsed))
        self.board.update(
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=round(float(state.epoch or 0.0), 3),
            samples_per_s=round(self.samples_per_step * state.global_step / max(elapsed, 1e-9), 2),
            elapsed_s=round(elapsed, 1),
            eta_s=round(remaining, 1),
            learning_rate=self.current_lr,
            **self._plan_fields(),
        )
        if reason is None and state.global_step >= state.max_steps:
            control.should_training_stop = True  # a refit may end the plan at this very step
        if reason is not None and self.stop_reason is None:
            self.stop_reason = reason
            control.should_training_stop = True
            self.board.update(message=f"Stopping ({reason}) after step {state.global_step}.")
        return control

    def measured_speed(self) -> float | None:
        """Steps/s of this run so far, the first step left out (``None``: too few steps)."""
        return self.meter.overall()

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - HF signature
        logs = dict(logs or {})
        if "loss" in logs:
            point = {
                "step": state.global_step,
                "epoch": round(float(state.epoch or 0.0), 3),
                "loss": float(logs["loss"]),
            }
            if "learning_rate" in logs:
                point["learning_rate"] = float(logs["learning_rate"])
            elif self.current_lr is not None:
                point["learning_rate"] = self.current_lr
            self.board.update(loss=point["loss"])
            self.board.append("loss_history", point)
        self.log_event(event="log", step=state.global_step, **logs)
