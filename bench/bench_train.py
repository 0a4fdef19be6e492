"""Training-loop throughput: the app's path against a bare sentence-transformers script.

The app's path: the store → :func:`~mmdemo.training.data.build_train_data` → the trainer with the
app's masked loss and progress callback, run by ``JobManager.start(TrainingJob(...))`` while a
thread polls ``JobManager.status()`` every 0.5 s, as the Finetune tab's timer does. The bare
script: the same tiny model (``build_tiny_clip``), the same pre-resized training images, batch
size, sampler, learning rate and number of steps, with the stock ``MultipleNegativesRankingLoss``
and no callbacks. Both sides are measured on the training loop alone (from the first step's end
to the last step's end, so model loading, evaluation and the first step's warm-up are excluded),
alternately (bare, app, bare, app, …) in one process; the medians are compared. The bare
script also runs in a worker thread (where the job manager runs a finetune), which separates the
cost of the app's code from the cost of training off the main thread. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import PrinterCallback, TrainerCallback  # noqa: E402

from mmdemo.data.store import Store  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402

COLLECTION = "bench-train"


class StepClock(TrainerCallback):
    """Wall-clock time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - HF signature
        self.times.append(time.perf_counter())


def loop_samples_per_s(times: list[float], batch_size: int) -> float:
    """Samples/s between the first and the last step end (the first step's warm-up excluded)."""
    if len(times) < 2:
        return 0.0
    return batch_size * (len(times) - 1) / (times[-1] - times[0])


def _fill(store: Store, settings: Settings, pairs: int) -> None:
    from mmdemo.data.demo import generate_demo_scenes
    from mmdemo.data.images import ImageLimits, ingest_image_bytes

    collection = store.create_collection(COLLECTION)
    limits = ImageLimits.from_settings(settings)
    for scene in generate_demo_scenes(pairs, seed=0):
        stored = ingest_image_bytes(scene.image_bytes, settings.images_dir, limits)
        split = scene.split if scene.split == "eval" else "train"
        store.add_pair(collection.id, stored.as_row(), scene.caption, split=split)


def _bare_rows(store: Store, settings: Settings) -> tuple[list[str], list[str]]:
    from mmdemo.data.images import train_path

    found = store.collection(COLLECTION)
    train = [p for p in store.list_pairs(found.id) if p.split == "train"]
    paths = [str(train_path(settings.images_dir, p.image_sha256)) for p in train]
    return [p.caption for p in train], paths


def run_bare(
    model_path: str, captions: list[str], paths: list[str], args: Any, workdir: Path
) -> float:
    """A plain sentence-transformers finetune; returns the loop's samples/s."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(model_path, device="cpu")
    train = Dataset.from_dict({"anchor": captions, "positive": paths})
    clock = StepClock()
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(workdir / f"bare-{time.monotonic_ns()}"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=0.1,
        seed=0,
        batch_sampler=args.sampler,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
    )
    trainer = SentenceTransformerTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        loss=MultipleNegativesRankingLoss(model, scale=args.scale),
        callbacks=[clock],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return loop_samples_per_s(clock.times, args.batch_size)


def run_app(
    store: Store, settings: Settings, model_path: str, args: Any, index: int
) -> dict[str, Any]:
    """The app's job path, polled every 0.5 s; returns the loop's samples/s and poll counts."""
    from mmdemo.training.data import build_train_data
    from mmdemo.training.jobs import JobManager
    from mmdemo.training.run import TrainConfig, TrainingJob

    found = store.collection(COLLECTION)
    data = build_train_data(store, settings, found.id, use_hard_negatives=False)
    per_epoch = data.steps_per_epoch(args.batch_size)
    config = TrainConfig(
        epochs=args.steps / per_epoch,
        max_minutes=60.0,  # no time budget: the step count ends the run
        batch_size=args.batch_size,
        lr=args.lr,
        scale=args.scale,
        augment=args.augment,
        use_hard_negatives=False,
        sampler=args.sampler,
    )
    clock = StepClock()
    # The app's callback is the only one in the trainer; time its steps from the inside by
    # wrapping its on_step_end (a bench-only hook, the callback's own work is still included).
    from mmdemo.training import run as training

    original = training.ProgressCallback.on_step_end

    def timed(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003
        control = original(self, *a, **kw)
        clock.times.append(time.perf_counter())
        return control

    # The app's priority settings. A nice value only goes up, so the bare runs after the first
    # app run share it; alone on the machine, a thread's nice value does not change its speed.
    manager = JobManager(store, niceness=settings.train_niceness)
    polls = 0
    outcome: dict[str, Any] = {}
    stop = threading.Event()

    def control() -> None:
        """What the tab does: start the job, poll it every 0.5 s, wait for the end."""
        nonlocal polls
        try:
            while not manager.runs_jobs_here():
                time.sleep(0.01)
            job = TrainingJob(store, settings, COLLECTION, config, f"bench-app-{index}", model_path)
            job_id = manager.start(job)
            while True:
                snap = manager.wait(job_id, timeout=0.5)
                polls += 1
                if snap is not None and snap.state != "running":
                    outcome["snap"] = snap
                    return
        finally:
            stop.set()

    training.ProgressCallback.on_step_end = timed
    try:
        controller = threading.Thread(target=control, daemon=True)
        controller.start()
        # As in the app (mmdemo.ui.app.launch): the main thread runs the jobs.
        manager.run_jobs_here(stop, poll_s=0.05)
        controller.join()
    finally:
        training.ProgressCallback.on_step_end = original
    snap = outcome.get("snap")
    if snap is None or snap.state != "finished":
        raise RuntimeError(f"The app's run did not finish: {snap and snap.message}")
    return {
        "samples_per_s": loop_samples_per_s(clock.times, args.batch_size),
        "steps": snap.result.steps,
        "board_samples_per_s": snap.progress.get("samples_per_s"),
        "polls": polls,
    }


def _in_thread(fn: Any) -> Any:
    """``fn()`` in a fresh worker thread, as the job manager runs a finetune."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn()))
    thread.start()
    thread.join()
    return out["value"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=3, help="bare/app alternations")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--scale", type=float, default=50.0)
    parser.add_argument("--sampler", default="batch_sampler")
    parser.add_argument("--augment", action="store_true", help="the app's random crops too")
    args = parser.parse_args()

    import torch

    from mmdemo.retrieval.models import build_tiny_clip

    with tempfile.TemporaryDirectory(prefix="mmdemo-bench-train-") as tmp:
        settings = Settings.from_env({"MMDEMO_HOME": tmp, "MMDEMO_BASE_MODEL": "tiny"})
        settings.ensure_dirs()
        store = Store(settings.db_path)
        try:
            _fill(store, settings, args.pairs)
            model_path = str(build_tiny_clip(Path(tmp) / "tiny-clip", seed=0))
            captions, paths = _bare_rows(store, settings)
            bare, bare_thread, app, details = [], [], [], []
            for index in range(args.rounds):
                bare.append(run_bare(model_path, captions, paths, args, Path(tmp)))
                bare_thread.append(
                    _in_thread(lambda: run_bare(model_path, captions, paths, args, Path(tmp)))
                )
                result = run_app(store, settings, model_path, args, index)
                app.append(result["samples_per_s"])
                details.append(result)
        finally:
            store.close()
    bare_sps, app_sps = statistics.median(bare), statistics.median(app)
    thread_sps = statistics.median(bare_thread)
    report = {
        "benchmark": "train_overhead",
        "model": "tiny (build_tiny_clip)",
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "train_pairs": len(captions),
        "batch_size": args.batch_size,
        "steps": args.steps,
        "augment": args.augment,
        "bare_samples_per_s": round(bare_sps, 2),
        "app_samples_per_s": round(app_sps, 2),
        "ratio": round(app_sps / bare_sps, 3) if bare_sps else None,
        "bare_in_thread_samples_per_s": round(thread_sps, 2),
        "ratio_vs_bare_in_thread": round(app_sps / thread_sps, 3) if thread_sps else None,
        "bare_runs": [round(v, 2) for v in bare],
        "bare_in_thread_runs": [round(v, 2) for v in bare_thread],
        "app_runs": [round(v, 2) for v in app],
        "app_board_samples_per_s": [d["board_samples_per_s"] for d in details],
        "app_polls": [d["polls"] for d in details],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
