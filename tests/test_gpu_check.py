"""The one-shot GPU check (bench/gpu_check.py): its FLOP count, its GPU table, and a smoke run.

The smoke run is the real script in a subprocess, on CPU with tiny models; the GPU numbers it
cannot measure there must come back as ``null``, the others positive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from bench import run_all
from bench.gpu_check import parse_args, peak_flops
from bench.gpu_models import flop_params, hf_parts, model_specs, pair_flops, tower_flops
from mmdemo.settings import PROJECT_ROOT

TOP_KEYS = {
    "benchmark",
    "smoke",
    "device",
    "gpu_name",
    "peak_flops",
    "peak_flops_kind",
    "precision",
    "batch_size",
    "cpu_cores",
    "torch_threads",
    "dataloader_num_workers",
    "versions",
    "tokenizer",
    "flops_formula",
    "models",
    "finetune",
    "phase_seconds",
    "wall_s",
}
MODEL_KEYS = {
    "size",
    "params",
    "image_size",
    "patch",
    "image_tokens",
    "text_max_tokens",
    "text_padding",
    "text_tokens",
    "flops_per_pair",
    "app_path",
    "compute_only",
    "peak_gpu_memory_gib",
}
APP_KEYS = {
    "steps_measured",
    "samples_per_s",
    "step_s",
    "input_wait_s",
    "collate_s",
    "compute_s",
    "input_share",
    "mfu",
}
FINETUNE_KEYS = {
    "model",
    "collection",
    "pairs",
    "budget_s",
    "status",
    "message",
    "stop_reason",
    "steps",
    "planned_steps",
    "batch_size",
    "train_seconds",
    "samples_per_s",
    "recall@1_before",
    "recall@1_after",
    "demo_build_s",
}


def test_tower_flops_is_the_documented_formula():
    """3 × (2·P·T + 2·P_pool + 4·L·T²·d): forward, and backward at twice the forward."""
    assert tower_flops(10, 3, 5, 2, 4) == 3 * (2 * 10 * 5 + 2 * 3 + 4 * 2 * 5**2 * 4)


def test_real_sizes_have_the_real_models_parameters(tmp_path):
    """The specs build the published sizes (checked on the meta device: nothing allocated), and
    the FLOP count is close to 6 × parameters × tokens."""
    specs = model_specs(smoke=False)
    totals, counts = {}, {}
    for key, spec in specs.items():
        config, model_class, _ = hf_parts(spec, tmp_path)
        with torch.device("meta"):
            model = model_class(config)
        totals[key] = sum(p.numel() for p in model.parameters())
        counts[key] = flop_params(model)
    assert totals["clip"] == 151_277_313  # openai/clip-vit-base-patch32
    assert 202e6 < totals["siglip"] < 204e6  # google/siglip-base-patch16-224: 203 M
    assert specs["clip"].image_tokens == 50 and specs["siglip"].image_tokens == 196
    assert specs["siglip"].text_padding == "max_length" and specs["clip"].text_padding == "longest"
    clip = counts["clip"]
    rough = 6 * (clip["vision"]["per_token"] * 50 + clip["text"]["per_token"] * 77)
    assert pair_flops(clip, specs["clip"], 77) == pytest.approx(rough, rel=0.05)
    # Lookups (token/position embeddings) are parameters but no FLOPs.
    assert clip["text"]["lookup"] == 49408 * 512 + 77 * 512


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA H200", 989e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L4", 121e12),
        ("Tesla T4", 65e12),
        ("NVIDIA GeForce RTX 4090", None),
        (None, None),
    ],
)
def test_peak_flops_by_gpu_name(name, expected):
    assert peak_flops(name)[0] == expected


def test_options_refuse_runs_too_short_to_measure():
    assert parse_args(["--smoke"]).batch_size == 8
    assert parse_args([]).batch_size == 256
    with pytest.raises(SystemExit):
        parse_args(["--smoke", "--steps", "1"])


def test_make_bench_leaves_the_gpu_check_to_the_device_machine():
    assert "bench.gpu_check" not in run_all.BENCHMARKS


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and value > 0


@pytest.mark.slow
def test_smoke_run_prints_every_number(tmp_path):
    """``--smoke`` runs the whole check on CPU: same keys as on a GPU, GPU-only numbers null."""
    out = tmp_path / "check.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--smoke", "--out", str(out)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads(out.read_text(encoding="utf-8")) == report
    assert set(report) == TOP_KEYS
    assert report["smoke"] is True and report["device"] == "cpu"
    assert report["precision"] == "fp32" and report["batch_size"] == 8
    assert report["gpu_name"] is None and report["peak_flops"] is None
    assert set(report["models"]) == {"clip", "siglip"}
    for key, model in report["models"].items():
        assert set(model) == MODEL_KEYS, key
        assert set(model["app_path"]) == APP_KEYS, key
        for name in ("flops_per_pair", "text_tokens", "image_tokens"):
            assert _positive(model[name]), (key, name)
        assert _positive(model["params"]["total"])
        for name in ("samples_per_s", "step_s", "input_wait_s", "collate_s", "compute_s"):
            assert _positive(model["app_path"][name]), (key, name)
        assert 0 < model["app_path"]["input_share"] < 1
        assert _positive(model["compute_only"]["samples_per_s"])
        assert model["app_path"]["mfu"] is None and model["compute_only"]["mfu"] is None
        assert model["peak_gpu_memory_gib"] is None
    assert report["models"]["siglip"]["text_tokens"] == 64  # padded to SigLIP's max length
    assert report["models"]["clip"]["text_tokens"] < 77  # CLIP pads to the longest caption
    finetune = report["finetune"]
    assert set(finetune) == FINETUNE_KEYS
    assert finetune["status"] == "finished", finetune["message"]
    assert finetune["pairs"] == 540 and finetune["budget_s"] == 10.0
    assert _positive(finetune["steps"]) and _positive(finetune["samples_per_s"])
    for name in ("recall@1_before", "recall@1_after"):
        assert 0 <= finetune[name] <= 1
