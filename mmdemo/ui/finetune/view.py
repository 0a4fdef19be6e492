"""The Finetune tab's view-building: pure formatting of a job snapshot and of past runs.

Used by :mod:`mmdemo.ui.finetune.handlers` (which reads the job manager and the store) and by the
layout in :mod:`mmdemo.ui.finetune.layout`. Nothing here starts, stops or changes anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from mmdemo.data.store import Run
from mmdemo.services import Services
from mmdemo.text import md
from mmdemo.training.jobs import JobSnapshot
from mmdemo.training.rounds import started_from
from mmdemo.training.schedule import Estimate

METRIC_NAMES = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
METRICS_COLUMNS = [
    "metric",
    "t→i base",
    "t→i finetuned",
    "Δ t→i",
    "i→t base",
    "i→t finetuned",
    "Δ i→t",
]
RUNS_COLUMNS = [
    "run",
    "status",
    "collection",
    "base model",
    "started",
    "duration",
    "t→i R@1",
    "started from",
]
LOSS_COLUMNS = ["step", "loss"]
PHASES = {
    "starting": "Starting",
    "preparing": "Preparing the data",
    "loading": "Loading the model",
    "evaluating base": "Measuring the base model",
    "training": "Training",
    "evaluating finetuned": "Measuring the finetuned model",
    "saving": "Saving the model",
    "finished": "Finished",
    "cancelled": "Cancelled",
    "failed": "⚠️ Failed",
}
BAR_COLOURS = {
    "running": "#3b82f6",
    "finished": "#16a34a",
    "cancelled": "#9ca3af",
    "failed": "#dc2626",
}
NO_JOB = "*No finetune has run since the app started. Pick a collection and press **Start**.*"
NO_METRICS = (
    "*Finished runs show their before/after metrics here; click a past run to see its metrics.*"
)


# -- formatting a job ------------------------------------------------------------------------------
def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def budget_text(seconds: float | None) -> str:
    """A time budget in words: ``2 min``, ``1.5 min``, ``30 s``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    return f"{minutes:.0f} min" if abs(minutes - round(minutes)) < 0.05 else f"{minutes:.1f} min"


def run_label(name: object) -> str:
    """A run's name for Markdown: as typed (escaped), in monospace."""
    return f"<code>{md(name)}</code>"


def phase_label(snap: JobSnapshot) -> str:
    """The job's phase in words (``Cancelling`` once a cancel is asked)."""
    if snap.running:
        if snap.cancel_requested:
            return "Cancelling"
        return PHASES.get(str(snap.progress.get("phase")), str(snap.progress.get("phase", "")))
    return PHASES.get(snap.state, snap.state)


def format_status(snap: JobSnapshot | None) -> str:
    """The live status: phase, step/total, epoch, loss, learning rate, samples/s, ETA, message."""
    if snap is None:
        return NO_JOB
    p = snap.progress
    head = f"**{phase_label(snap)}**"
    if p.get("run_name"):
        head += f" · run {run_label(p['run_name'])}"
    head += f" · {md(snap.description)}"
    facts = []
    if p.get("total_steps"):
        facts.append(f"step **{p.get('step', 0):,} / {p['total_steps']:,}**")
        if p.get("planned_by") == "budget":
            facts.append(f"schedule fit to the {budget_text(p.get('budget_s'))} budget")
    if p.get("epoch") is not None and p.get("total_steps"):
        facts.append(f"epoch {float(p['epoch']):.2f}")
    if p.get("loss") is not None:
        facts.append(f"loss {float(p['loss']):.4f}")
    if p.get("learning_rate") is not None:
        facts.append(f"lr {float(p['learning_rate']):.2e}")
    if p.get("samples_per_s"):
        facts.append(f"{float(p['samples_per_s']):,.1f} samples/s")
    if snap.running and p.get("eta_s") is not None and p.get("phase") == "training":
        facts.append(f"ETA {_clock(p['eta_s'])}")
    facts.append(f"{_clock(snap.elapsed_s)} elapsed")
    message = snap.message if not snap.running else str(p.get("message") or "")
    lines = [head, " · ".join(facts)]
    if message:
        lines.append(("⚠️ " if snap.state == "failed" else "") + md(message))
    return "\n\n".join(lines)


def budget_decides(snap: JobSnapshot | None) -> bool:
    """Whether the time budget, not the requested steps, decided the run's schedule."""
    if snap is None:
        return False
    p = snap.progress
    return p.get("planned_by") == "budget" and bool(p.get("budget_s"))


def progress_share(snap: JobSnapshot | None) -> float:
    """How far the job is, 0–1: the share of the time budget spent when the budget decides the
    schedule, else of the planned steps; after training, all of it."""
    if snap is None:
        return 0.0
    p = snap.progress
    total, step = p.get("total_steps") or 0, p.get("step") or 0
    if snap.state == "finished" or p.get("phase") in ("evaluating finetuned", "saving"):
        return 1.0
    if budget_decides(snap) and total:
        return min(1.0, float(p.get("elapsed_s") or 0.0) / float(p["budget_s"]))
    return min(1.0, step / total) if total else 0.0


def progress_html(snap: JobSnapshot | None) -> str:
    """A progress bar (plain HTML/CSS): steps done, or the budget spent when the budget decides;
    ``data-*`` say what it shows."""
    share = progress_share(snap)
    state = snap.state if snap is not None else "idle"
    colour = BAR_COLOURS.get(state, "#3b82f6")
    step = (snap.progress.get("step") or 0) if snap is not None else 0
    total = (snap.progress.get("total_steps") or 0) if snap is not None else 0
    by_budget = budget_decides(snap)
    label = f"{step:,} / {total:,} steps · {share:.0%}" if total else f"{share:.0%}"
    if total and by_budget:
        budget = budget_text(snap.progress.get("budget_s")) if snap is not None else ""
        label = f"{step:,} / {total:,} steps · {share:.0%} of the {budget} budget"
    if snap is None:
        label = "no finetune yet"
    if snap is not None and snap.running and not total:
        label = phase_label(snap) + "…"
    return (
        f'<div class="mm-ft-bar" data-state="{state}" data-step="{step}" data-total="{total}" '
        f'data-by="{"budget" if by_budget else "steps"}" '
        'style="position:relative;height:24px;border-radius:6px;overflow:hidden;'
        'background:var(--border-color-primary)">'
        f'<div style="width:{share * 100:.1f}%;height:100%;background:{colour};'
        'transition:width .5s"></div>'
        '<span style="position:absolute;inset:0;text-align:center;line-height:24px;'
        f'font-size:.85rem;font-weight:600">{label}</span></div>'
    )


def loss_frame(snap: JobSnapshot | None) -> pd.DataFrame:
    """The loss curve so far: one row per logged step."""
    points = (snap.progress.get("loss_history") or []) if snap is not None else []
    rows = [(int(p["step"]), float(p["loss"])) for p in points if "loss" in p]
    frame = pd.DataFrame(rows, columns=LOSS_COLUMNS)
    # Typed even when empty: the plot reads an untyped (object) column as categories.
    return frame.astype({"step": "int64", "loss": "float64"})


# -- metrics and runs ------------------------------------------------------------------------------
def _num(value: Any) -> str:
    return "–" if value is None else f"{float(value):.3f}"


def _delta(before: Any, after: Any) -> str:
    if before is None or after is None:
        return ""
    change = float(after) - float(before)
    if abs(change) < 5e-4:
        return "±0"
    return f"{change:+.3f} {'▲' if change > 0 else '▼'}"


def _probe(metrics: dict) -> tuple[dict | None, dict | None]:
    """The attribute-binding probe (base, finetuned) in any shape a run may store it."""
    probe = metrics.get("probe") or metrics.get("binding")
    if isinstance(probe, dict) and {"a", "b"} <= probe.keys():
        return probe.get("a"), probe.get("b")
    if isinstance(probe, dict) and ("base" in probe or "finetuned" in probe):
        return probe.get("base"), probe.get("finetuned")
    sides = [(metrics.get(side) or {}).get("binding") for side in ("base", "finetuned")]
    return sides[0], sides[1]


def metrics_frame(metrics: dict | None) -> pd.DataFrame:
    """Before/after table: t→i and i→t recall@1/5/10, MRR@10, NDCG@10 with deltas (+ probe)."""
    metrics = metrics or {}
    base, tuned = metrics.get("base") or {}, metrics.get("finetuned") or {}
    if not base and not tuned:
        return pd.DataFrame(columns=METRICS_COLUMNS)
    rows = []
    for name in METRIC_NAMES:
        row = [name]
        for direction in ("t2i", "i2t"):
            before = (base.get(direction) or {}).get(name)
            after = (tuned.get(direction) or {}).get(name)
            row += [_num(before), _num(after), _delta(before, after)]
        rows.append(row)
    probe_base, probe_tuned = _probe(metrics)
    if probe_base or probe_tuned:
        before = (probe_base or {}).get("accuracy")
        after = (probe_tuned or {}).get("accuracy")
        rows.append(["binding probe", _num(before), _num(after), _delta(before, after), "", "", ""])
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def run_metrics(run: Run) -> dict | None:
    """A run's metrics: its ``metrics.json`` (written as soon as the base is measured), else the
    copy in the store."""
    path = Path(run.path) / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    try:
        return json.loads(run.metrics_json) if run.metrics_json else None
    except ValueError:
        return None


def _model_label(spec: str) -> str:
    path = Path(spec)
    return path.name if path.is_absolute() else spec


def _r1(metrics: dict | None) -> str:
    if not metrics:
        return "–"
    start = metrics.get("start") or metrics.get("base") or {}  # a later round: its own before
    before = (start.get("t2i") or {}).get("recall@1")
    after = ((metrics.get("finetuned") or {}).get("t2i") or {}).get("recall@1")
    if before is None and after is None:
        return "–"
    return f"{_num(before)} → {_num(after)}"


def runs_frame(services: Services) -> pd.DataFrame:
    """Past runs, newest first: name, status, collection, base model, started, duration, R@1
    (before → after), and the run it started from."""
    names = {c.id: c.name for c in services.store.list_collections()}
    rows = []
    for run in services.store.list_runs():
        end = run.finished_at
        if end is None and run.status not in ("queued", "running"):
            end = run.updated_at
        rows.append(
            [
                run.name,
                run.status,
                names.get(run.collection_id, "–") if run.collection_id is not None else "–",
                _model_label(run.base_model),
                time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at)),
                _duration(end - run.created_at) if end is not None else "running",
                _r1(run_metrics(run)),
                started_from(run) or "base model",
            ]
        )
    return pd.DataFrame(rows, columns=RUNS_COLUMNS)


def run_title(run: Run) -> str:
    """A past run's headline: its name, status, the run it started from, and its message."""
    text = f"**Run {run_label(run.name)}** · {run.status}"
    parent = started_from(run)
    if parent:
        text += f" · started from run {run_label(parent)} (the base column is the base model)"
    if run.message:
        text += f" · {md(run.message)}"
    return text


# -- what the next run will be ---------------------------------------------------------------------
def _about(seconds: float) -> str:
    return "under 1 s" if seconds < 1 else f"≈ {_duration(seconds)}"


def _epochs(value: float) -> str:
    return f"{value:,.0f}" if abs(value - round(value)) < 0.05 or value >= 10 else f"{value:.1f}"


def plan_markdown(estimate: Estimate) -> str:
    """What a run with the knobs will do, before Start: epochs, steps and time, or how many of
    them fit in the budget at the measured speed."""
    plan = estimate.plan
    budget = budget_text(plan.budget_s)
    rate = plan.steps_per_s
    speed = ""
    if rate:
        source = f", run {run_label(plan.speed_from)}" if plan.speed_from else ""
        speed = f" at the measured speed ({rate:,.1f} steps/s{source})"
    if plan.decided_by == "budget":
        return (
            f"**This run:** ≈ {_epochs(estimate.planned_epochs)} of {_epochs(estimate.epochs)}"
            f" epochs ({plan.total_steps:,} of {plan.requested_steps:,} steps) fit in {budget}"
            f"{speed}; the learning-rate schedule is planned to end inside the budget."
        )
    text = f"**This run:** {_epochs(estimate.epochs)} epochs, {plan.total_steps:,} steps"
    seconds = estimate.seconds
    if seconds is not None:
        return f"{text}, {_about(seconds)} of the {budget} budget{speed}."
    return (
        f"{text}. Speed not measured yet: the first steps measure it, and if the steps would "
        f"not fit in {budget} the schedule is planned for those that do."
    )
