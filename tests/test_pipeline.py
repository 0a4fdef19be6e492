"""The training input pipeline (mmdemo/training/pipeline.py) on the real tiny CLIP, SigLIP and
SigLIP 2: without augmentation it gives exactly what the model's processor and tokenizer give;
the image cache is made once and then hit; crops stay inside the image; workers and the trainer
use it; and bench/bench_input.py runs (smoke sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmdemo.data.images import load_rgb
from mmdemo.retrieval.models import TINY_FAMILIES, build_tiny_model, load_model
from mmdemo.settings import PROJECT_ROOT
from mmdemo.training.pipeline import (
    CACHE_SUBDIR,
    TrainInputs,
    build_image_cache,
    build_text_cache,
    crop_boxes,
    crop_resize_batched,
    crop_resize_each,
    loader_options,
    stop_loader_workers,
    training_texts,
)

CAPTIONS = ["a red square", "a big blue circle on the left of a small green triangle", "x"]
SIZES = [(224, 280), (300, 224), (224, 224), (250, 224)]  # width, height: not all square


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {f: build_tiny_model(root / TINY_FAMILIES[f].dirname, f) for f in TINY_FAMILIES}


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Noisy RGB JPEGs of several aspect ratios, as pre-resized training copies are."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height) in enumerate(SIZES):
        path = folder / f"{i}.train.jpg"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def _rows(paths: list[str]) -> list[dict]:
    return [
        {"anchor": CAPTIONS[i % 3], "positive": p, "label": [i % 3, i, 0, -1]}
        for i, p in enumerate(paths)
    ]


@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_unaugmented_batches_equal_the_processor_and_tokenizer(
    tiny_models, image_paths, tmp_path, family
):
    """pixel_values within float rounding of model.preprocess (SigLIP 2's patches, mask and
    patch grid too), token ids exactly equal (CLIP cut to the batch's longest caption, SigLIP
    kept at its saved 64)."""
    model = load_model(str(tiny_models[family]), fresh=True)
    inputs = TrainInputs.build(model, image_paths, CAPTIONS, tmp_path, augment=False)
    rows = _rows(image_paths)
    batch = inputs(rows)
    images = model.preprocess([load_rgb(p) for p in image_paths])
    texts = model.preprocess([r["anchor"] for r in rows])
    pixels = batch["positive_pixel_values"]
    assert pixels.dtype == torch.float32 and pixels.shape == images["pixel_values"].shape
    assert torch.allclose(pixels, images["pixel_values"], atol=1e-5)
    for key, value in images.items():
        if key != "pixel_values" and isinstance(value, torch.Tensor):
            assert torch.equal(batch[f"positive_{key}"], value), key
    for key, value in texts.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(batch[f"anchor_{key}"], value), key
    assert batch["anchor_modality"] == "text" and batch["positive_modality"] == "image"
    assert torch.equal(batch["label"], torch.tensor([r["label"] for r in rows]))
    width = batch["anchor_input_ids"].shape[1]
    assert width == 64 if family != "clip" else width < 64
    short = inputs.texts.batch(["x"])["input_ids"]
    assert short.shape[1] == (64 if family != "clip" else 3)  # CLIP: x + its 2 specials


@pytest.mark.parametrize("family", ["clip", "siglip2"])
def test_augmented_images_keep_the_shape_and_change_the_pixels(tiny_models, image_paths, family):
    model = load_model(str(tiny_models[family]), fresh=True)
    plain = TrainInputs.build(model, image_paths, CAPTIONS, augment=False)
    crops = TrainInputs(plain.images, plain.texts, plain.normaliser, augment=True, seed=3)
    rows = _rows(image_paths)
    before, after = plain(rows)["positive_pixel_values"], crops(rows)["positive_pixel_values"]
    assert after.shape == before.shape and after.dtype == torch.float32
    assert not torch.allclose(after, before)
    assert after.abs().max() < 3.5  # still normalised pixels
    if family == "siglip2":  # padding patches stay zero
        mask = plain(rows)["positive_pixel_attention_mask"].bool()
        assert (after[~mask] == 0).all()


def test_the_image_cache_is_made_once_and_reused(tiny_models, image_paths, tmp_path):
    """First build makes every image, the second is a hit (same file), a new image set copies
    the rows it already has and makes only the new image; another geometry has its own folder."""
    clip = load_model(str(tiny_models["clip"]), fresh=True)
    first = build_image_cache(clip, image_paths[:3], tmp_path)
    assert first.built == 3 and first.path is not None and first.path.is_file()
    again = build_image_cache(clip, image_paths[:3], tmp_path)
    assert again.built == 0 and again.reused == 0 and again.path == first.path
    assert isinstance(again.pixels, np.memmap)
    grown = build_image_cache(clip, image_paths, tmp_path)
    assert grown.built == 1 and grown.reused == 3 and grown.path != first.path
    row_old, row_new = first.rows[image_paths[0]], grown.rows[image_paths[0]]
    assert np.array_equal(first.pixels[row_old], grown.pixels[row_new])
    siglip = load_model(str(tiny_models["siglip"]), fresh=True)
    other = build_image_cache(siglip, image_paths, tmp_path)
    assert other.built == 4 and other.path.parent != grown.path.parent
    assert len(list((tmp_path / CACHE_SUBDIR).iterdir())) == 2


def test_two_builders_of_one_cache_make_it_once(tiny_models, image_paths, tmp_path):
    """The app and a CLI run preparing the same images at once: one makes the array (under the
    geometry folder's lock), the other waits and opens it; no half-written file is read."""
    from concurrent.futures import ThreadPoolExecutor

    clip = load_model(str(tiny_models["clip"]), fresh=True)
    with ThreadPoolExecutor(2) as pool:
        caches = list(pool.map(lambda _: build_image_cache(clip, image_paths, tmp_path), range(2)))
    assert sorted(cache.built for cache in caches) == [0, len(image_paths)]
    assert caches[0].path == caches[1].path
    assert np.array_equal(np.asarray(caches[0].pixels), np.asarray(caches[1].pixels))
    assert not [p for p in caches[0].path.parent.iterdir() if ".tmp" in p.name]


def test_crops_match_between_the_cpu_and_gpu_ways(image_paths):
    """The per-image uint8 resize (CPU) and the batched grid_sample (GPU) crop the same boxes:
    both are the identity for the full box and agree closely on a pixel-aligned crop."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    ones, zeros = torch.ones(4), torch.zeros(4)
    no_flip = torch.zeros(4, dtype=torch.bool)
    assert torch.equal(crop_resize_each(images, ones, zeros, zeros, no_flip), images)
    same = crop_resize_batched(images.float(), ones, zeros, zeros, no_flip)
    assert torch.allclose(same, images.float(), atol=1e-3)
    flipped = crop_resize_batched(images.float(), ones, zeros, zeros, ~no_flip)
    assert torch.allclose(flipped, images.float().flip(-1), atol=1e-3)
    assert torch.equal(crop_resize_each(images, ones, zeros, zeros, ~no_flip), images.flip(-1))
    side, x, y = torch.full((4,), 0.5), torch.full((4,), 0.25), torch.full((4,), 0.5)
    cpu = crop_resize_each(images, side, x, y, no_flip).float()
    gpu = crop_resize_batched(images.float(), side, x, y, no_flip)
    assert (cpu - gpu).abs().mean() < 2.0
    side, x, y, flips = crop_boxes(1000, gen, 0.85, flip=False)
    assert ((side >= 0.85) & (side <= 1)).all() and not flips.any()
    assert ((x >= 0) & (x + side <= 1 + 1e-6) & (y >= 0) & (y + side <= 1 + 1e-6)).all()
    assert crop_boxes(1000, gen, 0.85, flip=True)[3].float().mean().item() == pytest.approx(
        0.5, abs=0.1
    )


def test_text_cache_tokenises_each_caption_once(tiny_models):
    model = load_model(str(tiny_models["clip"]), fresh=True)
    cache = build_text_cache(model, CAPTIONS * 5, chunk=2)  # chunks pad to different widths
    assert len(cache.rows) == 3 and cache.tensors["input_ids"].shape[0] == 3
    expected = model.preprocess(CAPTIONS[::-1])
    assert torch.equal(cache.batch(CAPTIONS[::-1])["input_ids"], expected["input_ids"])
    with pytest.raises(KeyError, match="not prepared"):
        cache.batch(["never seen"])


def test_a_dataloader_worker_gives_the_same_batches(tiny_models, image_paths):
    """Through a real worker process (fork) the collator gives what it gives here."""
    from torch.utils.data import DataLoader

    model = load_model(str(tiny_models["clip"]), fresh=True)
    inputs = TrainInputs.build(model, image_paths, CAPTIONS, augment=False)
    rows = _rows(image_paths)
    loader = DataLoader(rows, batch_size=4, collate_fn=inputs, num_workers=1)
    (batch,) = list(loader)
    here = inputs(rows)
    assert torch.equal(batch["positive_pixel_values"], here["positive_pixel_values"])
    assert torch.equal(batch["anchor_input_ids"], here["anchor_input_ids"])


def test_loader_options():
    assert loader_options("cpu", cores=2) == {
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
    }
    gpu = loader_options("cuda", cores=16)
    assert gpu["dataloader_num_workers"] == 15 and gpu["dataloader_pin_memory"]
    assert gpu["dataloader_persistent_workers"]
    assert loader_options("cuda", world_size=4, cores=16)["dataloader_num_workers"] == 3
    assert loader_options("cuda", cores=1)["dataloader_num_workers"] == 0


def test_training_texts_are_anchors_and_caption_negatives():
    columns = {
        "pairs": {"anchor": ["a"], "positive": ["p.jpg"], "label": [[0]]},
        "image_negatives": {"anchor": ["b"], "positive": ["p"], "negative": ["n.jpg"]},
        "caption_negatives": {"anchor": ["c"], "positive": ["p"], "negative": ["d"]},
    }
    assert training_texts(columns) == ["a", "b", "c", "d"]


@pytest.mark.slow
def test_trainer_steps_through_a_worker_process_and_the_run_hits_the_cache(
    store, settings, tiny_models
):
    """The app's trainer on the pipeline with a persistent DataLoader worker on CPU trains and
    its worker is ended after; run_training's second finetune on the same images reuses the
    image cache (log.jsonl)."""
    from mmdemo.training.data import build_train_data
    from mmdemo.training.run import TrainConfig, _trainer, _training_args, run_training
    from tests.test_training import _demo

    collection_id = _demo(store, settings, 40)
    data = build_train_data(store, settings, collection_id)
    config = TrainConfig(epochs=1.0, batch_size=8).validate()
    args, _ = _training_args(settings, config, data)
    args.dataloader_num_workers, args.max_steps = 1, 3
    args.dataloader_persistent_workers = True  # as on a GPU: ended by stop_loader_workers
    model = load_model(str(tiny_models["clip"]), fresh=True)
    from mmdemo.training.board import ProgressBoard
    from mmdemo.training.progress import ProgressCallback

    trainer = _trainer(model, args, data, config, ProgressCallback(ProgressBoard(), None, None, 8))
    trainer.train()
    assert trainer.state.global_step == 3
    loader = trainer._train_dataloader
    holders = (loader, getattr(loader, "base_dataloader", None))
    holder = next(h for h in holders if getattr(h, "_iterator", None) is not None)
    workers = list(holder._iterator._workers)
    assert workers and all(w.is_alive() for w in workers)  # persistent: waiting for more
    stop_loader_workers(trainer)
    assert not any(w.is_alive() for w in workers)

    hits = []
    for name in ("first", "second"):
        config = TrainConfig(epochs=1.0, batch_size=8, max_minutes=1.0)
        result = run_training(store, settings, "shapes", config, name, str(tiny_models["clip"]))
        assert result.status == "finished", result.message
        log = [json.loads(line) for line in (result.path / "log.jsonl").read_text().splitlines()]
        (event,) = [e for e in log if e.get("event") == "inputs"]
        hits.append(event["image_cache_hit"])
    assert hits == [False, True]


def test_bench_input_smoke_prints_one_json_object():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.bench_input", "--smoke"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "baseline_pairs_per_s_per_core",
        "pipeline_pairs_per_s_per_core",
        "ratio",
        "pipeline_worker_pairs_per_s_per_core",
        "loader_1_worker_pairs_per_s",
        "on_paper_pairs_per_s_15_workers",
    ):
        assert report[key] > 0, key
    assert report["cache_hit"] is True and isinstance(report["on_paper_formula"], str)
