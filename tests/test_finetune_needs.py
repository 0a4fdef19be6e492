"""bench/finetune_needs.py: the README's finetune estimates come from these formulas and sizes."""

from __future__ import annotations

import pytest

from bench import finetune_needs as fn


@pytest.mark.parametrize(
    ("build", "millions"),
    [(fn.clip_b32, 151.3), (fn.siglip_b16, 203.2), (fn.siglip2_b16, 375.2)],
)
def test_parameter_counts_are_the_real_models(build, millions: float):
    # 151.3 M and 203.2 M are also what bench/gpu_models.py builds with random weights.
    assert fn.estimate(build)["parameters_m"] == millions


def test_memory_and_time_follow_the_formulas():
    clip = fn.estimate(fn.clip_b32)
    assert clip["weights_grads_adam_gb"] == pytest.approx(151.3e6 * 16 / 1e9, abs=0.05)
    total = clip["weights_grads_adam_gb"] + clip["activations_gb_at_batch_256"]
    assert clip["total_gb_at_batch_256"] == pytest.approx(total, abs=0.1)
    pairs = clip["h100_pairs_per_s_at_35pct_mfu"]
    assert pairs == pytest.approx(
        fn.MFU * fn.H100_BF16_FLOPS / (clip["gflop_per_pair"] * 1e9), rel=0.01
    )
    vlm = fn.estimate(fn.qwen3_vl_2b)
    assert 2000 < vlm["parameters_m"] < 2300  # "2B"
    assert vlm["total_gb_at_batch_256"] > 80  # does not fit one 80 GB GPU at batch 256
