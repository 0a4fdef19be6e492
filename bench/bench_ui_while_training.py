"""UI responsiveness while a finetune trains: Curate gallery page latency, idle vs training.

Times the Curate tab's page handler (:func:`mmdemo.ui.curate.handlers.render`: store queries,
thumbnail paths, captions, the page label) on random pages of the collection, first with nothing
running, then while a finetune of the tiny model runs in the same process through the job manager
(polled every 0.5 s like the Finetune tab's timer). Reports p50/p95 of both and their ratio
(target: while training ≤ 2 × idle). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from mmdemo.settings import Settings  # noqa: E402

COLLECTION = "bench-ui"


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
    }


def _fill(services, pairs: int) -> int:  # noqa: ANN001
    from mmdemo.data.demo import generate_demo_scenes
    from mmdemo.data.images import ImageLimits, ingest_image_bytes

    store, settings = services.store, services.settings
    collection = store.create_collection(COLLECTION)
    limits = ImageLimits.from_settings(settings)
    for scene in generate_demo_scenes(pairs, seed=0):
        stored = ingest_image_bytes(scene.image_bytes, settings.images_dir, limits)
        store.add_pair(collection.id, stored.as_row(), scene.caption, split=scene.split)
    return store.count_pairs(collection.id)


def _time_pages(services, pages: int, rng: random.Random, samples: int, gap_s: float, until=None):  # noqa: ANN001, ANN201
    """Render random gallery pages; stop after ``samples`` or when ``until()`` turns false."""
    from mmdemo.ui.curate.handlers import CurateState, render

    timings = []
    while len(timings) < samples and (until is None or until()):
        state = CurateState(collection=COLLECTION, page=rng.randrange(pages))
        start = time.perf_counter()
        view = render(services, state, editor=False)
        timings.append((time.perf_counter() - start) * 1000)
        assert view.gallery, "an empty page measures nothing"
        time.sleep(gap_s)  # requests arrive spaced, as from people clicking
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=320)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--train-minutes", type=float, default=1.0)
    parser.add_argument(
        "--niceness",
        type=int,
        default=None,
        help="nice value of the training threads (default: the app's, MMDEMO_TRAIN_NICENESS)",
    )
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="sys.setswitchinterval for the whole run (how long a thread may hold the GIL)",
    )
    args = parser.parse_args()
    if args.switch_interval_ms is not None:
        sys.setswitchinterval(args.switch_interval_ms / 1000)

    from mmdemo.services import Services
    from mmdemo.training.run import TrainConfig, TrainingJob
    from mmdemo.ui.curate.handlers import PAGE_SIZE

    rng = random.Random(0)
    gap = args.gap_ms / 1000
    with tempfile.TemporaryDirectory(prefix="mmdemo-bench-ui-") as tmp:
        settings = Settings.from_env({"MMDEMO_HOME": tmp, "MMDEMO_BASE_MODEL": "tiny"})
        settings = settings.with_overrides(train_niceness=args.niceness)
        services = Services.create(settings, demo=False)
        try:
            total = _fill(services, args.pairs)
            pages = max(1, -(-total // PAGE_SIZE))
            results: dict = {}
            stop = threading.Event()

            def measure() -> None:
                """As in the app: pages are served from a worker thread, the job runs on main."""
                try:
                    while not services.jobs.runs_jobs_here():
                        time.sleep(0.01)
                    _time_pages(services, pages, rng, 10, 0.0)  # warm-up
                    results["idle"] = _time_pages(services, pages, rng, args.samples, gap)
                    # Long enough to outlast the measurement; cancelled once it is done.
                    config = TrainConfig(epochs=10_000.0, max_minutes=args.train_minutes)
                    job = TrainingJob(services.store, settings, COLLECTION, config, "bench-ui-run")
                    job_id = services.jobs.start(job)
                    done = threading.Event()

                    def poller() -> None:
                        while not done.wait(0.5):
                            services.jobs.status(job_id)

                    threading.Thread(target=poller, daemon=True).start()

                    def training() -> bool:
                        snap = services.jobs.status(job_id)
                        return snap is not None and snap.running

                    while (
                        training()
                        and services.jobs.status(job_id).progress.get("phase") != "training"
                    ):
                        time.sleep(0.05)
                    first_step = services.jobs.status(job_id).progress.get("step", 0)
                    began = time.perf_counter()
                    results["busy"] = _time_pages(
                        services, pages, rng, args.samples, gap, until=training
                    )
                    results["still_training"] = training()
                    results["steps"] = services.jobs.status(job_id).progress.get("step", 0)
                    results["steps_per_s"] = (results["steps"] - first_step) / (
                        time.perf_counter() - began
                    )
                    services.jobs.cancel(job_id)
                    services.jobs.wait(job_id)
                    done.set()
                finally:
                    stop.set()

            controller = threading.Thread(target=measure, daemon=True)
            controller.start()
            services.jobs.run_jobs_here(stop, poll_s=0.05)
            controller.join()
            idle, busy = results["idle"], results["busy"]
            still_training, steps = results["still_training"], results["steps"]
        finally:
            services.close()
    idle_stats, busy_stats = _percentiles(idle), _percentiles(busy)
    report = {
        "benchmark": "ui_while_training",
        "handler": "mmdemo.ui.curate.handlers.render",
        "pairs": total,
        "page_size": PAGE_SIZE,
        "idle": idle_stats,
        "training": busy_stats,
        "ratio_p50": round(busy_stats["p50_ms"] / idle_stats["p50_ms"], 2),
        "ratio_p95": round(busy_stats["p95_ms"] / idle_stats["p95_ms"], 2),
        "train_niceness": settings.train_niceness,
        "gil_switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
        "training_steps_during_measurement": steps,
        "training_steps_per_s": round(results["steps_per_s"], 1),
        "training_covered_all_samples": still_training,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
