"""One-shot GPU check: the app's training path on real-sized CLIP and SigLIP, and a real finetune.

For a ViT-B/32-sized CLIP and a SigLIP-B/16-sized model, both with random weights built offline
from ``transformers`` configs (no Hub), at batch 256 in the app's precision (bf16 on a GPU), it
measures:

- ``app_path``: samples/s of the trainer the app builds (:func:`mmdemo.training.run._trainer`
  on :func:`~mmdemo.training.data.build_train_data` of a synthetic collection: the app's masked
  loss, the input pipeline of :mod:`mmdemo.training.pipeline` with its DataLoader workers, the
  progress callback), split into the time the loop waits for its next batch (``input_wait_s``:
  the data loader, in which the app's collator takes ``collate_s`` — ``null`` when it runs in
  worker processes, as on a GPU) and the time in forward, backward, optimizer and the GPU's crop
  and normalisation of the ``uint8`` images (``compute_s``);
- ``compute_only``: the same trainer fed one cached batch already on the device, so the input
  pipeline costs nothing: what the GPU can do when it never waits;
- model FLOP utilisation (``mfu``) of both, FLOPs counted analytically
  (:func:`bench.gpu_models.tower_flops`);
- peak GPU memory (``torch.cuda.max_memory_allocated``);
- ``finetune``: a 60-s finetune through :func:`mmdemo.training.run.run_training` on the built-in
  demo collection in a temporary ``MMDEMO_HOME`` (steps, samples/s, recall@1 before/after).

The step clock synchronises the GPU at every step's begin and end, so the two shares add up to
the step time (the trainer already waits for the loss at every step for its NaN check; the
optimizer's kernels no longer overlap the next batch's loading, a small pessimism).

The models and the FLOP count are in :mod:`bench.gpu_models`. Both use a byte-level BPE tokenizer
(mmdemo's tiny CLIP tokenizer) instead of their own, so tokenizing speed differs a little from the
real tokenizers'.

``--smoke`` runs the same code on CPU in fp32 with tiny models (the tiny CLIP's geometry and a
tiny SigLIP), batch 8, a few steps and a 10-s finetune; GPU-only numbers are ``null``.
Prints one JSON object on stdout's last line (``--out FILE`` also writes it to a file).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script, too

from transformers import TrainerCallback  # noqa: E402

from bench.gpu_models import (  # noqa: E402
    ModelSpec,
    build_random_model,
    flop_params,
    model_specs,
    pair_flops,
)

COLLECTION = "gpu-check"
PEAK_FLOPS: tuple[tuple[tuple[str, ...], float, str], ...] = (
    (("H200",), 989e12, "bf16 dense"),
    (("H100", "PCIE"), 756e12, "bf16 dense"),
    (("H100",), 989e12, "bf16 dense (SXM)"),
    (("A100",), 312e12, "bf16 dense"),
    (("L4",), 121e12, "bf16 dense"),
    (("T4",), 65e12, "fp16 dense (no bf16)"),
)
"""Peak tensor-core FLOP/s by GPU name (all name parts must occur, first match wins)."""


def peak_flops(device_name: str | None) -> tuple[float | None, str | None]:
    """The GPU's peak dense FLOP/s in its training precision, from its name (``None``: unknown)."""
    upper = (device_name or "").upper()
    for parts, flops, what in PEAK_FLOPS:
        if device_name and all(p in upper for p in parts):
            return flops, what
    return None, None


# -- a synthetic collection ----------------------------------------------------------------------
def _synthetic_jpeg(rng: Any, width: int = 320, height: int = 256) -> bytes:
    """A photo-like JPEG: smooth colour blobs plus noise (so it compresses like a photo)."""
    import numpy as np
    from PIL import Image

    grid = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.integers(-24, 25, (height, width, 3))
    pixels = np.clip(smooth.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def fill_collection(store: Any, settings: Any, pairs: int, seed: int = 0) -> int:
    """``pairs`` train pairs of 320×256 JPEGs (224-px training copies) and distinct captions of
    8–14 common words; returns the collection id."""
    import numpy as np

    from mmdemo.data.images import ImageLimits, ingest_image_bytes
    from mmdemo.retrieval.models import TINY_WORDS

    collection = store.create_collection(COLLECTION)
    limits = ImageLimits.from_settings(settings)
    rng, words = np.random.default_rng(seed), random.Random(seed)
    captions: set[str] = set()
    while len(captions) < pairs:
        captions.add(" ".join(words.choices(TINY_WORDS, k=words.randint(8, 14))))
    for caption in sorted(captions):
        stored = ingest_image_bytes(_synthetic_jpeg(rng), settings.images_dir, limits)
        store.add_pair(collection.id, stored.as_row(), caption, split="train")
    return collection.id


# -- measuring the trainer -----------------------------------------------------------------------
class StepClock(TrainerCallback):
    """Times every step's begin and end; syncs the GPU first so the times are the device's."""

    def __init__(self, sync: bool):
        self.sync = sync
        self.begins: list[float] = []
        self.ends: list[float] = []

    def _now(self) -> float:
        if self.sync:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - HF signature
        self.begins.append(self._now())

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - HF signature
        self.ends.append(self._now())

    def split(self, warmup: int) -> dict[str, float]:
        """Mean step, input-wait and compute seconds over the steps after ``warmup``."""
        first = max(1, warmup)
        steps = range(first, len(self.ends))
        if not steps:
            raise RuntimeError(f"Too few steps to measure ({len(self.ends)}).")
        step = (self.ends[-1] - self.ends[first - 1]) / len(steps)
        wait = statistics.fmean(self.begins[i] - self.ends[i - 1] for i in steps)
        compute = statistics.fmean(self.ends[i] - self.begins[i] for i in steps)
        return {"step_s": step, "input_wait_s": wait, "compute_s": compute, "steps": len(steps)}


class _Wrapper:
    """Passes attribute reads on to the wrapped collator (the trainer reads some)."""

    collator: Any

    def __getattr__(self, name: str) -> Any:
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)


class TimedCollator(_Wrapper):
    """Wraps the app's collator: records how long each batch takes and its text length."""

    def __init__(self, collator: Any):
        self.collator = collator
        self.seconds: list[float] = []
        self.text_tokens: list[int] = []

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        batch = self.collator(features)
        self.seconds.append(time.perf_counter() - started)
        ids = batch.get("anchor_input_ids")
        if ids is not None:
            self.text_tokens.append(int(ids.shape[-1]))
        return batch

    def finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The step's end of the pipeline (in this process: with DataLoader workers the text
        lengths are recorded here, not in ``__call__``)."""
        if "anchor_input_ids" in batch and not self.seconds:
            self.text_tokens.append(int(batch["anchor_input_ids"].shape[-1]))
        return self.collator.finish(batch)


class CachedBatch(_Wrapper):
    """A collator that makes one real batch, moves it to ``device`` and returns it every time."""

    def __init__(self, collator: Any, device: Any):
        self.collator, self.device = collator, device
        self.batch: dict[str, Any] | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        if self.batch is None:
            batch = self.collator(features)
            self.batch = {
                key: value.to(self.device) if hasattr(value, "to") else value
                for key, value in batch.items()
            }
        return dict(self.batch)  # the trainer pops keys from its inputs


def _train(
    model: Any, settings: Any, data: Any, config: Any, steps: int, cached: bool
) -> tuple[StepClock, Any]:
    """The app's trainer (``_training_args`` + ``_trainer``) for ``steps`` steps; its collator
    wrapped by :class:`TimedCollator`, or by :class:`CachedBatch` when ``cached``. Returns the
    step clock and the wrapper."""
    import torch

    from mmdemo.training.board import ProgressBoard
    from mmdemo.training.progress import ProgressCallback
    from mmdemo.training.run import _trainer, _training_args

    args, _ = _training_args(settings, config, data)
    args.max_steps = steps
    if cached:
        args.dataloader_pin_memory = False  # the cached batch already lives on the device
        args.dataloader_num_workers = 0  # and is made here (a worker cannot reach the GPU)
        args.dataloader_persistent_workers, args.dataloader_prefetch_factor = False, None
    progress = ProgressCallback(ProgressBoard(), None, None, config.batch_size)
    trainer = _trainer(model, args, data, config, progress)
    clock = StepClock(sync=torch.cuda.is_available())
    trainer.add_callback(clock)
    collator = trainer.data_collator
    wrapper = CachedBatch(collator, model.device) if cached else TimedCollator(collator)
    trainer.data_collator = wrapper
    trainer.train()
    return clock, wrapper


def measure_model(
    spec: ModelSpec, path: Path, store: Any, settings: Any, collection_id: int, opts: Any
) -> dict[str, Any]:
    """``app_path`` and ``compute_only`` of one model, with FLOPs, MFU and peak memory."""
    import torch

    from mmdemo.training.data import build_train_data
    from mmdemo.training.run import TrainConfig, _load

    cuda = torch.cuda.is_available()
    model = _load(str(path))
    hf_model = model[0].auto_model
    counts = flop_params(hf_model)
    total = sum(p.numel() for p in hf_model.parameters())
    data = build_train_data(store, settings, collection_id, use_hard_negatives=False)
    config = TrainConfig.for_pretrained(batch_size=opts.batch_size).validate()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    clock, timed = _train(model, settings, data, config, opts.steps, cached=False)
    app = clock.split(opts.warmup)
    text_tokens = statistics.fmean(timed.text_tokens) if timed.text_tokens else spec.max_tokens
    fast, cached = _train(model, settings, data, config, opts.compute_steps, cached=True)
    compute = fast.split(opts.warmup + 1)
    cached_tokens = int(cached.batch["anchor_input_ids"].shape[-1]) if cached.batch else 0
    peak, _ = peak_flops(torch.cuda.get_device_name() if cuda else None)

    def mfu(flops_per_pair: float, step_s: float) -> float | None:
        if peak is None:
            return None
        return round(flops_per_pair * opts.batch_size / step_s / peak, 4)

    app_flops = pair_flops(counts, spec, text_tokens)
    compute_flops = pair_flops(counts, spec, cached_tokens or text_tokens)
    # The collator runs in DataLoader workers on a GPU: their timings stay there.
    collate = statistics.fmean(timed.seconds[opts.warmup :] or timed.seconds or [float("nan")])
    result = {
        "size": spec.size,
        "params": {
            "total": total,
            "vision": sum(counts["vision"].values()),
            "text": sum(counts["text"].values()),
            "flop_counted": {t: c["per_token"] + c["pooled"] for t, c in counts.items()},
        },
        "image_size": spec.image_size,
        "patch": spec.patch,
        "image_tokens": spec.image_tokens,
        "text_max_tokens": spec.max_tokens,
        "text_padding": spec.text_padding,
        "text_tokens": round(text_tokens, 2),
        "flops_per_pair": round(app_flops),
        "app_path": {
            "steps_measured": app["steps"],
            "samples_per_s": round(opts.batch_size / app["step_s"], 2),
            "step_s": round(app["step_s"], 4),
            "input_wait_s": round(app["input_wait_s"], 4),
            "collate_s": round(collate, 4) if collate == collate else None,
            "compute_s": round(app["compute_s"], 4),
            "input_share": round(app["input_wait_s"] / app["step_s"], 4),
            "mfu": mfu(app_flops, app["step_s"]),
        },
        "compute_only": {
            "steps_measured": compute["steps"],
            "samples_per_s": round(opts.batch_size / compute["step_s"], 2),
            "step_s": round(compute["step_s"], 4),
            "text_tokens": cached_tokens,
            "mfu": mfu(compute_flops, compute["step_s"]),
        },
        "peak_gpu_memory_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
        ),
    }
    del model, hf_model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


# -- the real finetune ---------------------------------------------------------------------------
def real_finetune(home: Path, seconds: float, base_model: str | None) -> dict[str, Any]:
    """:func:`run_training` on the demo collection in a fresh home, ``seconds`` of budget."""
    from mmdemo.data.demo import DEMO_COLLECTION, ensure_demo_collection
    from mmdemo.data.store import Store
    from mmdemo.settings import Settings
    from mmdemo.training.run import TrainConfig, default_config, run_training

    settings = Settings.from_env({"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny"})
    settings.ensure_dirs()
    store = Store(settings.db_path)
    try:
        started = time.monotonic()
        ensure_demo_collection(store, settings)
        demo_s = time.monotonic() - started
        config = default_config(tiny=base_model is None)
        config = TrainConfig(**{**config.as_dict(), "max_minutes": seconds / 60.0})
        result = run_training(store, settings, DEMO_COLLECTION, config, base_model=base_model)
        pairs = store.count_pairs(store.collection(DEMO_COLLECTION).id)
    finally:
        store.close()
    metrics = result.metrics or {}

    def recall(which: str) -> float | None:
        found = metrics.get(which) or {}
        return found.get("t2i", {}).get("recall@1")

    rate = result.steps_per_s
    return {
        "model": "tiny (mmdemo's built-in tiny CLIP)" if base_model is None else base_model,
        "collection": DEMO_COLLECTION,
        "pairs": pairs,
        "budget_s": seconds,
        "status": result.status,
        "message": result.message,
        "stop_reason": result.stop_reason,
        "steps": result.steps,
        "planned_steps": result.planned_steps,
        "batch_size": config.batch_size,
        "train_seconds": result.train_seconds,
        "samples_per_s": round(rate * config.batch_size, 2) if rate else None,
        "recall@1_before": recall("base"),
        "recall@1_after": recall("finetuned"),
        "demo_build_s": round(demo_s, 2),
    }


# -- main ----------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny models, a few steps")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, help="steps of the app path per model")
    parser.add_argument("--compute-steps", type=int, help="steps with the cached batch")
    parser.add_argument("--pairs", type=int, help="pairs in the synthetic collection")
    parser.add_argument("--finetune-seconds", type=float)
    parser.add_argument(
        "--finetune-model",
        choices=("tiny", "clip"),
        default="tiny",
        help="the demo finetune's model: the app's tiny CLIP, or the random ViT-B/32-sized CLIP",
    )
    args = parser.parse_args(argv)
    defaults = (
        {"batch_size": 8, "steps": 4, "compute_steps": 4, "pairs": 32, "finetune_seconds": 10.0}
        if args.smoke
        else {
            "batch_size": 256,
            "steps": 20,
            "compute_steps": 30,
            "pairs": 1024,
            "finetune_seconds": 60.0,
        }
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.warmup = 1 if args.smoke else 2
    if args.steps <= args.warmup or args.compute_steps <= args.warmup + 1:
        parser.error(
            f"--steps must be more than {args.warmup} and --compute-steps more than "
            f"{args.warmup + 1}: the first steps warm up and are not measured"
        )
    if args.batch_size < 2 or args.pairs < args.batch_size:
        parser.error("--batch-size must be at least 2 and --pairs at least the batch size")
    return args


def run(opts: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; returns the report."""
    import sentence_transformers
    import torch
    import transformers

    from mmdemo.data.store import Store
    from mmdemo.settings import Settings
    from mmdemo.training.pipeline import loader_options
    from mmdemo.training.run import detect_precision

    started = time.monotonic()
    cuda = torch.cuda.is_available()
    workers = loader_options("cuda" if cuda else "cpu")["dataloader_num_workers"]
    name = torch.cuda.get_device_name() if cuda else None
    peak, peak_kind = peak_flops(name)
    phases: dict[str, float] = {}
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "smoke": bool(opts.smoke),
        "device": "cuda" if cuda else "cpu",
        "gpu_name": name,
        "peak_flops": peak,
        "peak_flops_kind": peak_kind,
        "precision": detect_precision()["precision"],
        "batch_size": opts.batch_size,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dataloader_num_workers": workers,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
        },
        "tokenizer": (
            "byte-level BPE (mmdemo's tiny CLIP tokenizer) for both models, not their own: "
            "SigLIP's SentencePiece tokenizer cannot be built offline"
        ),
        "flops_formula": (
            "per pair and tower: 3 x (2*P*T + 2*P_pool + 4*L*T^2*d); P = non-embedding "
            "parameters applied per token, T = tokens (image: (size/patch)^2 (+1 CLIP class "
            "token); text: the padded length of the batch), P_pool = projection/pooling head"
        ),
        "models": {},
        "finetune": None,
        "phase_seconds": phases,
    }
    with tempfile.TemporaryDirectory(prefix="mmdemo-gpu-check-") as tmp:
        root = Path(tmp)
        settings = Settings.from_env({"MMDEMO_HOME": str(root / "home")})
        settings.ensure_dirs()
        store = Store(settings.db_path)
        try:
            clock = time.monotonic()
            collection_id = fill_collection(store, settings, opts.pairs)
            phases["synthetic_collection"] = round(time.monotonic() - clock, 2)
            paths: dict[str, Path] = {}
            for key, spec in model_specs(opts.smoke).items():
                clock = time.monotonic()
                paths[key] = build_random_model(spec, root / f"model-{key}")
                phases[f"build_{key}"] = round(time.monotonic() - clock, 2)
                clock = time.monotonic()
                report["models"][key] = measure_model(
                    spec, paths[key], store, settings, collection_id, opts
                )
                phases[f"measure_{key}"] = round(time.monotonic() - clock, 2)
        finally:
            store.close()
        clock = time.monotonic()
        base = str(paths["clip"]) if opts.finetune_model == "clip" else None
        report["finetune"] = real_finetune(root / "finetune-home", opts.finetune_seconds, base)
        phases["finetune"] = round(time.monotonic() - clock, 2)
    report["wall_s"] = round(time.monotonic() - started, 2)
    return report


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    if opts.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: CPU only
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
        report = run(opts)
    text = json.dumps(report)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
