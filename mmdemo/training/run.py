"""Finetune a CLIP-style model on a collection: one run, from the app's job or the CLI.

:func:`run_training` reads the train split (:mod:`mmdemo.training.data`), evaluates the base model
on
the eval split, trains with :class:`SentenceTransformerTrainer`, evaluates the result with the same
evaluator and writes the run folder ``runs/<name>/``::

    config.json     the TrainConfig and what the run was made from
    log.jsonl       one JSON object per event (phases, training logs, metrics, the end)
    metrics.json    {"base": {"t2i": …, "i2t": …}, "finetuned": {…}}
    schedule.json   the planned schedule and the measured speed (:mod:`mmdemo.training.schedule`)
    model/          the finetuned model (save_pretrained, with its model card)

The run is recorded in the store (queued → running → finished / cancelled / failed). Progress goes
to a thread-safe board through a :class:`TrainerCallback`, which also stops training at the next
step when the stop event is set or the time budget is spent.

The learning-rate schedule is planned to end inside the time budget
(:mod:`mmdemo.training.schedule`):
when the requested epochs' steps fit, they decide and nothing depends on the machine's speed;
when they do not, the schedule is planned for the steps that fit, at the speed of the last
comparable run and then at the speed this run measures, so a budgeted run still finishes every
planned step with its learning rate decayed to 0.

The same code runs under ``torchrun --nproc_per_node N`` (gloo on CPU, NCCL on GPUs): every process
trains, only the main one evaluates and writes the run folder and the store; the stop decision is
shared so that all processes stop at the same step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PrinterCallback

from mmdemo.data.store import Store, StoreError
from mmdemo.settings import Settings
from mmdemo.training.board import JobContext, ProgressBoard
from mmdemo.training.progress import ProgressCallback
from mmdemo.training.schedule import Plan, Speed

log = logging.getLogger(__name__)

LOSSES = ("mnrl", "symmetric", "cached", "cached-symmetric", "sigmoid")
MODEL_DIRNAME = "model"


class TrainingError(RuntimeError):
    """A finetune that cannot run or stopped on a known problem; ``str(exc)`` is for people."""

    person_readable = True


@dataclass
class TrainConfig:
    """The knobs of a finetune. Defaults suit the tiny model, trained from scratch on the demo
    (:meth:`for_pretrained` gives gentler ones for a pretrained CLIP)."""

    epochs: float = 80.0
    max_minutes: float = 2.0
    """Time budget of the training loop; training stops at the next step when it is spent."""
    batch_size: int = 32
    lr: float = 1e-3
    warmup_ratio: float = 0.1
    seed: int = 0
    loss: str = "mnrl"
    """``mnrl`` (text→image), ``symmetric`` (+ image→text), ``cached``, ``cached-symmetric``, or
    ``sigmoid`` (SigLIP's pairwise loss with a learned temperature and bias; ``scale`` unused)."""
    use_hard_negatives: bool = True
    matryoshka_dims: tuple[int, ...] = ()
    mini_batch_size: int = 16
    """Pieces of a batch for the cached losses."""
    sampler: str = "auto"
    """``auto``, ``no_duplicates`` or ``batch_sampler`` (see :mod:`mmdemo.training.data`)."""
    scale: float = 100.0
    """Inverse temperature of the contrastive loss."""
    augment: bool = True
    """Random crops of the training images (CLIP's augmentation)."""
    eval_batch_size: int = 64

    @classmethod
    def for_pretrained(cls, **changes: Any) -> TrainConfig:
        """Defaults for a pretrained CLIP: a small learning rate and few epochs, so the finetune
        adapts the model instead of overwriting it."""
        base = {"epochs": 3.0, "lr": 1e-5, "scale": 20.0, "max_minutes": 10.0}
        return cls(**{**base, **changes})

    def validate(self) -> TrainConfig:
        if self.loss not in LOSSES:
            raise TrainingError(f"Unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}.")
        if self.epochs <= 0:
            raise TrainingError("Epochs must be more than 0.")
        if self.batch_size < 2:
            raise TrainingError("The batch size must be at least 2: the loss compares pairs.")
        if self.lr <= 0:
            raise TrainingError("The learning rate must be more than 0.")
        if not 0 <= self.warmup_ratio < 1:
            raise TrainingError("Warm-up is a share of the steps, from 0 up to (not incl.) 1.")
        if self.max_minutes <= 0:
            raise TrainingError("The time budget must be more than 0 minutes.")
        if self.sampler not in ("auto", "no_duplicates", "batch_sampler"):
            raise TrainingError(f"Unknown sampler {self.sampler!r}.")
        self.matryoshka_dims = tuple(int(d) for d in self.matryoshka_dims or ())
        return self

    @property
    def symmetric(self) -> bool:
        """Whether the loss also ranks captions for an image (so caption negatives are used)."""
        return self.loss in ("symmetric", "cached-symmetric", "sigmoid")

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["matryoshka_dims"] = list(self.matryoshka_dims)
        return data


def default_config(tiny: bool) -> TrainConfig:
    """The Start values: tuned for the built-in tiny CLIP, or gentle ones for a pretrained model
    (the tiny model's learning rate would overwrite what a real CLIP knows)."""
    return TrainConfig() if tiny else TrainConfig.for_pretrained()


@dataclass
class RunResult:
    """What a run produced; ``status`` is finished, cancelled or failed."""

    name: str
    path: Path
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    steps: int = 0
    train_seconds: float = 0.0
    stop_reason: str | None = None
    planned_steps: int = 0
    """Steps the learning-rate schedule was planned for (all done unless stopped early)."""
    requested_steps: int = 0
    """Steps the epochs asked for."""
    planned_by: str = "steps"
    """``steps`` (the requested steps fit the budget) or ``budget`` (the schedule was fit to it)."""
    steps_per_s: float | None = None
    """Training speed measured by this run (the first step left out)."""

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_DIRNAME


class _Cancelled(Exception):
    pass


def detect_precision() -> dict[str, Any]:
    """Trainer arguments: bf16 on a GPU that has it, else fp16 on a GPU, fp32 on CPU."""
    import torch

    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return {"bf16": True, "device": "cuda", "precision": "bf16"}
        return {"fp16": True, "device": "cuda", "precision": "fp16"}
    return {"use_cpu": True, "device": "cpu", "precision": "fp32"}


def default_run_name(collection: str, runs_dir: Path) -> str:
    """``<collection>-<YYYYmmdd-HHMMSS>`` made safe for a folder name, unique in ``runs_dir``."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", collection).strip("-.") or "run"
    base = f"{stem[:60]}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 2
    while (runs_dir / name).exists():
        name, n = f"{base}-{n}", n + 1
    return name


# -- the run ---------------------------------------------------------------------------------------
class _RunWriter:
    """The run folder and the store record; a no-op in non-main processes."""

    def __init__(self, store: Store, settings: Settings, name: str, active: bool):
        self.store, self.name, self.active = store, name, active
        self.path = settings.runs_dir / name
        self._log_lock = threading.Lock()

    def create(self, collection_id: int, base_model: str, config: dict[str, Any]) -> None:
        if not self.active:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise TrainingError(f"A run folder named {self.name!r} already exists.") from exc
        try:
            self.store.create_run(
                self.name, collection_id, base_model, str(self.path), json.dumps(config)
            )
        except StoreError as exc:
            shutil.rmtree(self.path, ignore_errors=True)
            raise TrainingError(str(exc)) from exc
        self.write_json("config.json", config)

    def write_json(self, filename: str, data: Any) -> None:
        if self.active:
            text = json.dumps(data, indent=2, default=str)
            (self.path / filename).write_text(text + "\n", encoding="utf-8")

    def log(self, **event: Any) -> None:
        if not self.active:
            return
        line = json.dumps({"time": round(time.time(), 3), **event}, default=str)
        with self._log_lock, (self.path / "log.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    def status(self, status: str, message: str | None = None, metrics: Any = None) -> None:
        if not self.active:
            return
        final = status in ("finished", "cancelled", "failed")
        self.store.update_run(
            self.name,
            status=status,
            message=message,
            metrics_json=json.dumps(metrics) if metrics is not None else None,
            finished=final,
        )


def _from_main_process(value: Any) -> Any:
    """``value`` as computed by process 0 (itself when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom_type) or "out of memory" in str(exc).lower()


def _world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def fit_batch_to_processes(config: TrainConfig, data: Any, world_size: int) -> tuple[Any, str]:
    """The config with a batch size every process can fill, and a note when it was lowered.

    Under DDP sentence-transformers drops every incomplete last batch, so a process with fewer
    training rows than the batch size gets an empty loader and transformers refuses to start
    ("max_steps must be set …"). One process keeps its partial batch: nothing to change.
    """
    if world_size <= 1:
        return config, ""
    per_process = max(len(cols["anchor"]) for cols in data.columns.values()) // world_size
    if per_process >= config.batch_size:
        return config, ""
    batch = max(2, per_process)
    note = (
        f"Batch size lowered from {config.batch_size} to {batch}: each of the {world_size}"
        f" processes has only {per_process} training rows."
    )
    return dataclasses.replace(config, batch_size=batch), note


def _text_usage_examples(model: Any, store: Store, collection_id: int) -> None:
    """Give sentence-transformers' card text-only usage examples before it is saved.

    On save it encodes its usage examples in one call; the ones it takes from our training rows
    mix captions and image paths, which CLIP refuses ("This batch mixes multiple modalities").
    The published card brings its own snippet (:mod:`mmdemo.hub.cards`).
    """
    card = getattr(model, "model_card_data", None)
    captions = [p.caption for p in store.list_pairs(collection_id, split="train", limit=12)]
    if card is not None and captions:
        card.usage_examples = list(dict.fromkeys(captions))[:3]


def run_training(
    store: Store,
    settings: Settings,
    collection: str,
    config: TrainConfig | None = None,
    run_name: str | None = None,
    base_model: str | None = None,
    status_sink: Any = None,
    stop_event: threading.Event | None = None,
    start_from: str | None = None,
) -> RunResult:
    """Finetune on the collection's train split and evaluate before and after (see module doc).

    ``base_model``: a model spec (folder or Hub id); ``None`` resolves ``settings.base_model``.
    ``start_from``: the name of a finished run to continue from instead of the base model (its
    base model is this run's ``base_model``; see :mod:`mmdemo.training.rounds`).
    ``status_sink``: an object with ``update(**fields)`` and ``append(key, item)`` (e.g.
    :class:`mmdemo.training.board.ProgressBoard`). Raises :class:`TrainingError` for problems found
    before
    the run exists; once it exists, failures are recorded and returned as ``status="failed"``.
    """
    config = (config or TrainConfig()).validate()
    board = status_sink if status_sink is not None else ProgressBoard()
    board.update(phase="preparing", message="Reading the collection.")
    try:
        found = store.collection(collection)
    except StoreError as exc:
        raise TrainingError(str(exc)) from exc

    from mmdemo.training.data import build_train_data

    data = build_train_data(store, settings, found.id, config.use_hard_negatives, config.symmetric)
    if data.stats["pairs"] < 2:
        raise TrainingError(
            f"The collection {collection!r} has {data.stats['pairs']} usable training pair(s); a "
            "finetune needs at least 2. Add pairs or move some to the train split."
        )
    if store.count_pairs(found.id, split="eval") == 0:
        raise TrainingError(
            f"The eval split of {collection!r} is empty, so the finetune could not be measured. "
            "Move some pairs to the eval split first."
        )
    start = _start_point(store, start_from, found.id)
    if start is not None:
        base_model = start.base_model
    if base_model is None:
        from mmdemo.retrieval.models import resolve_base_model

        base_model = resolve_base_model(settings).spec
    config, note = fit_batch_to_processes(config, data, _world_size())
    if note:
        board.update(message=note)
    args, precision = _training_args(settings, config, data)
    is_main = bool(args.process_index == 0)
    # Every process must agree on the name; the others would see rank 0's folder and add -2.
    name = _from_main_process(run_name or default_run_name(collection, settings.runs_dir))
    writer = _RunWriter(store, settings, name, active=is_main)
    record = {
        "run": name,
        "collection": collection,
        "base_model": base_model,
        "precision": precision,
        "world_size": args.world_size,
        "sampler": getattr(args.batch_sampler, "value", str(args.batch_sampler)),
        "data": data.stats,
        "config": config.as_dict(),
    }
    if start is not None:
        record["start_from"] = start.as_json()
    from mmdemo.training.schedule import past_speed, speed_key

    key = speed_key(base_model, config, precision, args.world_size)
    # The plan must be the same in every process: rank 0's reading of the past speed decides.
    speed = _from_main_process(past_speed(store, key) if is_main else None)
    plan = Plan(config.max_minutes * 60.0, config.warmup_ratio)
    trainer_dir = Path(args.output_dir)
    try:
        writer.create(found.id, base_model, record)
    except BaseException:
        shutil.rmtree(trainer_dir, ignore_errors=True)
        raise
    result = RunResult(name, writer.path, "running")
    board.update(run_name=name, run_path=str(writer.path), data=data.stats)

    def phase(name_: str, message: str) -> None:
        board.update(phase=name_, message=message)
        writer.log(event="phase", phase=name_, message=message)
        if stop_event is not None and stop_event.is_set():
            raise _Cancelled()

    metrics: dict[str, Any] = {"base": None, "finetuned": None}
    if start is not None:
        metrics["start"] = None  # the start run's model before this run trains it
    result.metrics = metrics  # filled in as it goes: a failed run keeps what was measured
    try:
        writer.status("running")
        phase("loading", f"Loading {_start_words(start, base_model)}.")
        model = _load(start.model_dir if start is not None else base_model)
        if is_main:
            phase("evaluating base", "Measuring the base model on the eval split.")
            if start is not None:
                # The baseline stays the real base model; "start" is this run's own before.
                metrics["start"] = _evaluate(
                    model, store, settings, found.id, config.eval_batch_size
                )
                writer.log(event="metrics", which="start", **metrics["start"])
                base = _load_for_eval(base_model)
                metrics["base"] = _evaluate(base, store, settings, found.id, config.eval_batch_size)
                del base
            else:
                metrics["base"] = _evaluate(
                    model, store, settings, found.id, config.eval_batch_size
                )
            board.update(metrics=dict(metrics))
            writer.log(event="metrics", which="base", **metrics["base"])
            writer.write_json("metrics.json", metrics)
        phase("preparing", "Preparing model-ready images and captions (once per geometry).")
        inputs = _train_inputs(model, data, settings, config, args.process_index)
        writer.log(event="inputs", **_describe_inputs(inputs))
        phase("training", "Training.")
        callback = ProgressCallback(
            board,
            stop_event,
            config.max_minutes * 60.0,
            config.batch_size * args.world_size,
            writer.log,
            plan,
        )
        started = time.monotonic()
        trainer = _trainer(model, args, data, config, callback, plan, speed, inputs)
        try:
            trainer.train()
        finally:
            _stop_loader_workers(trainer)
        result.train_seconds = round(time.monotonic() - started, 2)
        result.steps = int(trainer.state.global_step)
        result.stop_reason = callback.stop_reason
        result.planned_steps, result.requested_steps = plan.total_steps, plan.requested_steps
        result.planned_by = plan.decided_by
        rate = callback.measured_speed()
        result.steps_per_s = round(rate, 3) if rate else None
        if is_main:
            _write_schedule(writer.path, key, plan, result)
        if callback.stop_reason == "cancelled":
            result.status = "cancelled"
            result.message = f"Cancelled after {result.steps} steps; the model so far is kept."
        else:
            if is_main:
                phase("evaluating finetuned", "Measuring the finetuned model.")
                metrics["finetuned"] = _evaluate(
                    model, store, settings, found.id, config.eval_batch_size
                )
                writer.log(event="metrics", which="finetuned", **metrics["finetuned"])
            result.status = "finished"
            result.message = _summary(metrics, result, callback.stop_reason)
        if is_main:
            board.update(phase="saving", metrics=dict(metrics), message="Saving the model.")
            _text_usage_examples(model, store, found.id)
            model.save_pretrained(str(writer.path / MODEL_DIRNAME))
            writer.write_json("metrics.json", metrics)
    except _Cancelled:
        result.status, result.message = "cancelled", "Cancelled before training started."
    except Exception as exc:  # noqa: BLE001 - recorded on the run, then reported
        result.status = "failed"
        if _is_oom(exc):
            result.message = (
                f"The GPU ran out of memory at batch size {config.batch_size}. Lower the batch "
                "size, or pick the cached loss (it splits each batch into mini-batches)."
            )
        elif isinstance(exc, TrainingError) or type(exc).__name__ == "ModelLoadError":
            result.message = str(exc)
        else:
            result.message = f"Training failed: {type(exc).__name__}: {exc}"
        writer.log(event="error", error=f"{type(exc).__name__}: {exc}")
    finally:
        shutil.rmtree(trainer_dir, ignore_errors=True)
    writer.log(event="end", status=result.status, message=result.message, steps=result.steps)
    writer.status(result.status, result.message, result.metrics or None)
    board.update(phase=result.status, message=result.message, metrics=result.metrics)
    return result


def _write_schedule(path: Path, key: dict[str, Any], plan: Plan, result: RunResult) -> None:
    from mmdemo.training.schedule import write_schedule

    write_schedule(
        path,
        key,
        plan,
        {
            "steps_per_s": result.steps_per_s,
            "steps": result.steps,
            "train_seconds": result.train_seconds,
            "stop_reason": result.stop_reason,
        },
    )


def _summary(metrics: dict[str, Any], result: RunResult, stop_reason: str | None) -> str:
    base, tuned = metrics.get("base"), metrics.get("finetuned")
    text = f"Finished {result.steps:,} steps in {result.train_seconds:.0f} s"
    if stop_reason == "time budget":
        text += f" (stopped by the time budget, {result.planned_steps:,} were planned)"
    elif result.planned_by == "budget":
        text = (
            f"Finished all {result.steps:,} planned steps in {result.train_seconds:.0f} s, "
            f"inside the time budget (the schedule was fit to it: {result.requested_steps:,} "
            "steps would not fit)"
        )
    start = metrics.get("start")
    if start and tuned:
        before, after = start["t2i"]["recall@1"], tuned["t2i"]["recall@1"]
        text += f"; text→image recall@1 {before:.2f} → {after:.2f} (from the start run"
        if base:
            text += f"; base model {base['t2i']['recall@1']:.2f}"
        text += ")"
    elif base and tuned:
        before, after = base["t2i"]["recall@1"], tuned["t2i"]["recall@1"]
        text += f"; text→image recall@1 {before:.2f} → {after:.2f}"
    return text + "."


def _start_point(store: Store, start_from: str | None, collection_id: int) -> Any:
    """The :class:`~mmdemo.training.rounds.StartPoint` of ``start_from`` (``None``: base)."""
    if not start_from:
        return None
    from mmdemo.training.rounds import StartError, resolve_start

    try:
        return resolve_start(store, start_from, collection_id)
    except StartError as exc:
        raise TrainingError(str(exc)) from exc


def _start_words(start: Any, base_model: str) -> str:
    if start is None:
        return base_model
    return f"run {start.run} (round {start.round - 1} on {Path(base_model).name or base_model})"


def _load_for_eval(spec: str) -> Any:
    """The base model for measuring only (the process-wide cache: never trained)."""
    from mmdemo.retrieval.models import ModelLoadError, load_model

    try:
        return load_model(spec)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from exc


def _load(spec: str) -> Any:
    from mmdemo.retrieval.models import ModelLoadError, load_model

    try:
        model = load_model(spec, fresh=True)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from exc
    # CLIP's / SigLIP's own temperature (and SigLIP's bias) are not used by our losses: freeze
    # them, so the saved model keeps the base values and DDP does not wait for a gradient that
    # never comes (the sigmoid loss learns its own pair).
    for pname, param in model.named_parameters():
        if pname.endswith(("logit_scale", "logit_bias")):
            param.requires_grad_(False)
    return model


def _evaluate(model: Any, store: Store, settings: Settings, collection_id: int, batch: int):
    from mmdemo.retrieval.evaluation import evaluate_model

    return evaluate_model(model, store, settings, collection_id, "eval", batch_size=batch)


def _training_args(settings: Settings, config: TrainConfig, data: Any) -> tuple[Any, str]:
    import tempfile

    from sentence_transformers import SentenceTransformerTrainingArguments

    from mmdemo.training.data import pick_sampler
    from mmdemo.training.pipeline import loader_options

    device = detect_precision()
    precision = device.pop("precision")
    kind = device.pop("device")
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    output_dir = tempfile.mkdtemp(prefix="trainer-", dir=settings.tmp_dir)
    steps = data.steps_per_epoch(config.batch_size) * config.epochs
    args = SentenceTransformerTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=config.warmup_ratio,
        seed=config.seed,
        batch_sampler=pick_sampler(
            data.stats["distinct_captions"], config.batch_size, config.sampler
        ),
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=max(1, min(10, int(steps // 200))),
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        **loader_options(kind, _world_size()),
        **device,
    )
    return args, precision


def _train_inputs(
    model: Any, data: Any, settings: Settings | None, config: TrainConfig, rank: int = 0
) -> Any:
    """The trainer's collator (:class:`~mmdemo.training.pipeline.TrainInputs`): images made
    once per image and model geometry into ``settings.cache_dir`` (in memory without settings),
    captions tokenised once. Under DDP process 0 makes the cache first, the others then read it."""
    from mmdemo.training.pipeline import (
        ImageFileInputs,
        TrainInputs,
        VariableGeometry,
        training_texts,
    )

    def build() -> Any:
        seed = config.seed * 7919 + rank
        try:
            return TrainInputs.build(
                model,
                data.image_paths,
                training_texts(data.columns),
                settings.cache_dir if settings is not None else None,
                augment=config.augment,
                seed=seed,
                finish_in_collator=model.device.type != "cuda",
            )
        except VariableGeometry as exc:
            log.info("Training reads images per batch: %s", exc)
            return ImageFileInputs(data.image_paths, config.augment, seed=seed, reason=str(exc))

    inputs = build() if rank == 0 else None
    _from_main_process(None)  # a barrier: process 0 has written the cache
    return inputs if inputs is not None else build()


def _describe_inputs(inputs: Any) -> dict[str, Any]:
    from mmdemo.training.pipeline import describe

    return describe(inputs)


def _stop_loader_workers(trainer: Any) -> None:
    from mmdemo.training.pipeline import stop_loader_workers

    stop_loader_workers(trainer)


def _planned_trainer(plan: Plan | None, speed: Speed | None) -> type:
    """The app's ``SentenceTransformerTrainer``: it finishes the pipeline's ``uint8`` images at
    each step on the model's device (:meth:`~mmdemo.training.pipeline.TrainInputs.finish`), and,
    given a ``plan``, its learning-rate schedule follows it: linear warm-up and decay like
    ``transformers``' default, over the plan's steps, which the progress callback may refit."""
    from sentence_transformers import SentenceTransformerTrainer
    from torch.optim.lr_scheduler import LambdaLR

    class PlannedTrainer(SentenceTransformerTrainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any):
            finish = getattr(self.data_collator, "finish", None)
            if finish is not None:  # a no-op when the collator already finished the batch
                inputs = finish(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if plan is None:
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                plan.start(num_training_steps, speed)
                self.lr_scheduler = LambdaLR(optimizer or self.optimizer, plan.lr_factor)
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return PlannedTrainer


def _trainer(
    model: Any,
    args: Any,
    data: Any,
    config: TrainConfig,
    callback: Any,
    plan: Plan | None = None,
    speed: Speed | None = None,
    inputs: Any = None,
) -> Any:
    """The trainer for one run; ``inputs`` is its collator (:func:`_train_inputs`, made here
    in memory when not given)."""
    from mmdemo.training.data import build_loss

    dims = config.matryoshka_dims
    if dims and max(dims) > (model.get_embedding_dimension() or max(dims)):
        raise TrainingError(
            f"Matryoshka dimensions cannot exceed the model's {model.get_embedding_dimension()}."
        )
    loss = build_loss(
        model, data.relevance, config.loss, config.scale, config.mini_batch_size, dims
    )
    if inputs is None:
        inputs = _train_inputs(model, data, None, config, int(args.process_index))
    per_batch = hasattr(inputs, "wrap")  # ImageFileInputs: wraps the trainer's own collator
    trainer = _planned_trainer(plan, speed)(
        model=model,
        args=args,
        train_dataset=data.datasets(),
        loss=loss,
        callbacks=[callback],
        data_collator=None if per_batch else inputs,
    )
    if per_batch:
        trainer.data_collator = inputs.wrap(trainer.data_collator)
    # With tqdm off, transformers prints every log dict to stdout; the CLI keeps stdout for JSON.
    trainer.remove_callback(PrinterCallback)
    return trainer


GpuRunner = Callable[["TrainingJob", JobContext], Any]
"""Runs a finetune somewhere else (ZeroGPU's ``@spaces.GPU`` call), see
:func:`mmdemo.training.zerogpu.gpu_runner`."""


@dataclass
class TrainingJob:
    """A finetune as a job: ``manager.start(TrainingJob(store, settings, "demo-shapes"))``.

    ``gpu``: where to run it instead of this thread (the app's services pass ZeroGPU's runner on
    a ZeroGPU Space); ``None`` runs :func:`run_training` here.
    """

    store: Store
    settings: Any
    collection: str
    config: Any = None
    run_name: str | None = None
    base_model: str | None = None
    gpu: GpuRunner | None = None
    kind: str = "finetune"
    start_from: str | None = None
    """A finished run to continue from (:mod:`mmdemo.training.rounds`); ``None``: the base."""
    after: Callable[[Any], None] | None = None
    """Called with the :class:`RunResult` once the run ends (e.g. to encode the collection with
    the new model in the background); its failure is logged, never the job's."""

    @property
    def description(self) -> str:
        return f"finetune on {self.collection!r}" + (
            f" as {self.run_name!r}" if self.run_name else ""
        )

    def __call__(self, ctx: JobContext) -> Any:
        if self.gpu is not None:
            result = self.gpu(self, ctx)
        else:
            result = run_training(
                self.store,
                self.settings,
                self.collection,
                self.config,
                run_name=self.run_name,
                base_model=self.base_model,
                status_sink=ctx.progress,
                stop_event=ctx.stop_event,
                start_from=self.start_from,
            )
        if self.after is not None:
            try:
                self.after(result)
            except Exception:  # noqa: BLE001 - the run itself is done and recorded
                log.exception("after-run hook of %s failed", getattr(result, "name", "?"))
        return result
