"""Ready when you are: the first query with a just-finetuned model, without and with the
background encode that follows a finetune (issue 13).

On a fresh home with the demo collection (``--pairs`` pairs, the built-in tiny CLIP as base):

- ``cold``: run A finishes with no after-run hook; the first Compare search with it loads the
  model, hashes its weights and encodes every image of the collection; then a second search.
- ``warm``: run B finishes as the app runs it (a job whose hook is
  :meth:`Services.after_finetune`); once the background encode is done (its time is reported), the
  first search with run B, then a second one.

Each search is :func:`mmdemo.retrieval.compare.search_command` (what Compare does per query),
counting the images encoded during it. Prints one JSON object; times are reported, not judged.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub from a benchmark

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from mmdemo.retrieval.compare import resolve_model, search_command  # noqa: E402
from mmdemo.retrieval.models import model_fingerprint  # noqa: E402
from mmdemo.services import DEMO_COLLECTION, Services  # noqa: E402
from mmdemo.settings import Settings  # noqa: E402
from mmdemo.training.run import TrainConfig, TrainingJob, run_training  # noqa: E402

QUERIES = ("a red circle on a blue square", "two green triangles")


def _query(services: Services, run: str, text: str) -> dict[str, float | int]:
    cache = services.embeddings
    images = cache.encoded_items
    started = time.perf_counter()
    hits = search_command(services, DEMO_COLLECTION, f"run:{run}", text, k=10)
    seconds = time.perf_counter() - started
    assert len(hits) == 10
    return {"seconds": round(seconds, 3), "items_encoded": cache.encoded_items - images}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1800, help="demo pairs (default 1800)")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="bench-warm-")
    settings = Settings.from_env({"MMDEMO_HOME": home, "MMDEMO_BASE_MODEL": "tiny"}).with_overrides(
        demo_pairs=args.pairs
    )
    started = time.perf_counter()
    services = Services.create(settings)
    setup_s = time.perf_counter() - started
    # A few steps are enough: the bench is about the query after the run, not the run. The two
    # runs differ by their seed, so their weights (and embedding-cache fingerprints) differ.
    config = TrainConfig(epochs=0.25, max_minutes=5)
    try:
        trained = time.perf_counter()
        cold = run_training(
            services.store, settings, DEMO_COLLECTION, config, "cold", services.model.spec
        )
        assert cold.status == "finished", cold.message
        train_s = time.perf_counter() - trained
        before = [_query(services, "cold", q) for q in QUERIES]

        job = TrainingJob(
            services.store,
            settings,
            DEMO_COLLECTION,
            dataclasses.replace(config, seed=1),
            run_name="warm",
            base_model=services.model.spec,
            after=services.after_finetune,
        )
        done = services.jobs.wait(services.jobs.start(job), 600)
        assert done is not None and done.state == "finished", done and done.message
        waited = time.perf_counter()
        assert services.background.wait(600)
        background_wait_s = time.perf_counter() - waited
        after = [_query(services, "warm", q) for q in QUERIES]
        fingerprints = {
            name: model_fingerprint(resolve_model(services.store, services.model, name).spec)
            for name in ("cold", "warm")
        }
        assert fingerprints["cold"] != fingerprints["warm"], "the two runs trained the same model"
        pairs = services.store.count_pairs(services.store.collection(DEMO_COLLECTION).id)
    finally:
        services.close()
    print(
        json.dumps(
            {
                "pairs": pairs,
                "base_model": services.model.label,
                "setup_s": round(setup_s, 1),
                "one_finetune_s": round(train_s, 1),
                "without_background_encode": {"first": before[0], "second": before[1]},
                "with_background_encode": {
                    "background_still_running_after_the_job_s": round(background_wait_s, 3),
                    "first": after[0],
                    "second": after[1],
                },
                "background_done": services.background.done,
            }
        )
    )


if __name__ == "__main__":
    main()
