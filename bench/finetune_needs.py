"""Estimates of what a full finetune of each base-model family needs on a GPU: parameters,
training FLOPs per (caption, image) pair, GPU memory and step time at batch 256 in bf16.

Nothing here is measured: the models are built on PyTorch's ``meta`` device (no memory, no
weights, no Hub) from their published sizes, and the memory and time follow from formulas:

- parameters: counted on the meta-built model (so the real vocabulary tables are included);
- FLOPs per pair and tower: ``6·P·T + 12·L·T²·d`` (forward ``2·P·T`` plus attention scores
  ``4·L·T²·d``, backward twice the forward); P the tower's parameters minus its embedding tables,
  T its tokens, L its layers, d its width;
- memory: 16 bytes per parameter (fp32 weights and gradients, AdamW's two fp32 moments: the
  Trainer's bf16 mixed precision keeps fp32 master weights) plus activations kept for the
  backward pass, ``34·d`` bytes per token and layer in bf16 (Korthikanti et al. 2022, attention
  scores not stored, as with SDPA / flash attention), times the batch;
- time: the step's FLOPs at 35 % of an H100's 989 bf16 TFLOP/s (the GPU check's MFU target).

``python bench/finetune_needs.py`` prints one JSON object (the README's "What a finetune needs").
"""

from __future__ import annotations

import json
from typing import Any

BATCH = 256
H100_BF16_FLOPS = 989e12
MFU = 0.35
BYTES_PER_PARAM = 16
ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH = 34
CAPTION_TOKENS = 20
"""A typical caption; CLIP pads to the longest in the batch, SigLIP to 64."""


def _meta(build: Any) -> Any:
    import torch

    with torch.device("meta"):
        return build()


def _params(module: Any, skip: tuple[str, ...] = ("embed_tokens", "token_embedding")) -> int:
    """Parameters that multiply every token: all but the token-embedding tables."""
    return sum(p.numel() for n, p in module.named_parameters() if not any(s in n for s in skip))


def _tower(params: int, tokens: int, layers: int, width: int) -> dict[str, float]:
    flops = 6.0 * params * tokens + 12.0 * layers * tokens**2 * width
    activations = ACTIVATION_BYTES_PER_TOKEN_LAYER_WIDTH * tokens * layers * width
    return {"tokens": tokens, "flops": flops, "activation_bytes": float(activations)}


def _two_towers(model: Any, text_tokens: int, image_tokens: int) -> list[dict[str, float]]:
    text, vision = model.text_model, model.vision_model
    tc, vc = model.config.text_config, model.config.vision_config
    return [
        _tower(_params(text), text_tokens, tc.num_hidden_layers, tc.hidden_size),
        _tower(_params(vision), image_tokens, vc.num_hidden_layers, vc.hidden_size),
    ]


def clip_b32() -> tuple[Any, list[dict[str, float]]]:
    """sentence-transformers/clip-ViT-B-32 (openai/clip-vit-base-patch32): 224 px, patch 32."""
    from transformers import CLIPConfig, CLIPModel

    b = {"intermediate_size": 3072, "num_hidden_layers": 12}
    config = CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8},
        vision_config={**b, "hidden_size": 768, "num_attention_heads": 12, "patch_size": 32},
        projection_dim=512,
    )
    model = _meta(lambda: CLIPModel(config))
    return model, _two_towers(model, CAPTION_TOKENS, (224 // 32) ** 2 + 1)


def _siglip_config(vocab: int) -> dict[str, Any]:
    b = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
    return {
        "text_config": {**b, "num_attention_heads": 12, "vocab_size": vocab},
        "vision_config": {**b, "num_attention_heads": 12, "patch_size": 16},
    }


def siglip_b16() -> tuple[Any, list[dict[str, float]]]:
    """google/siglip-base-patch16-224: 224 px, patch 16, text padded to 64, vocab 32,000."""
    from transformers import SiglipConfig, SiglipModel

    config = _siglip_config(32000)
    config["vision_config"]["image_size"] = 224
    model = _meta(lambda: SiglipModel(SiglipConfig(**config)))
    return model, _two_towers(model, 64, (224 // 16) ** 2)


def siglip2_b16() -> tuple[Any, list[dict[str, float]]]:
    """google/siglip2-base-patch16-224: SigLIP-B/16's towers with Gemma's 256,000-token
    vocabulary (the embedding table is most of the extra parameters). Built as the NaFlex
    architecture (``Siglip2Model``) at 196 patches; the fixed-resolution checkpoint is a
    ``SiglipModel`` with the same towers and count."""
    from transformers import Siglip2Config, Siglip2Model

    config = _siglip_config(256000)
    config["vision_config"]["num_patches"] = (224 // 16) ** 2
    model = _meta(lambda: Siglip2Model(Siglip2Config(**config)))
    return model, _two_towers(model, 64, (224 // 16) ** 2)


def qwen3_vl_2b() -> tuple[Any, list[dict[str, float]]]:
    """Qwen/Qwen3-VL-Embedding-2B (Qwen3-VL-2B sizes): a 24-layer ViT (patch 16, 2 × 2 merge)
    feeding a 28-layer, 2048-wide language model; a 224-px image is 196 patches, 49 LM tokens."""
    from transformers import Qwen3VLConfig, Qwen3VLModel

    config = Qwen3VLConfig(
        text_config={
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
        },
        vision_config={
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [5, 11, 17],
        },
        tie_word_embeddings=True,
    )
    model = _meta(lambda: Qwen3VLModel(config))
    lm, vision = model.language_model, model.visual
    template = 10  # chat-template tokens around each input
    lm_layers, width = 28, 2048
    return model, [
        _tower(_params(lm), CAPTION_TOKENS + template, lm_layers, width),  # the caption
        _tower(_params(vision), 196, 24, 1024),  # the image through the ViT
        _tower(_params(lm), 49 + template, lm_layers, width),  # its 49 tokens through the LM
    ]


FAMILIES = {
    "CLIP ViT-B/32 (sentence-transformers/clip-ViT-B-32)": clip_b32,
    "SigLIP-B/16 (google/siglip-base-patch16-224)": siglip_b16,
    "SigLIP 2 B/16 (google/siglip2-base-patch16-224)": siglip2_b16,
    "VLM embedder (Qwen/Qwen3-VL-Embedding-2B)": qwen3_vl_2b,
}


def estimate(build: Any) -> dict[str, float]:
    """One family's numbers (see the module docstring for the formulas)."""
    model, towers = build()
    params = sum(p.numel() for p in model.parameters())
    flops = sum(t["flops"] for t in towers)
    activations = sum(t["activation_bytes"] for t in towers)
    states = BYTES_PER_PARAM * params
    step_s = flops * BATCH / (MFU * H100_BF16_FLOPS)
    return {
        "parameters_m": round(params / 1e6, 1),
        "gflop_per_pair": round(flops / 1e9, 1),
        "weights_grads_adam_gb": round(states / 1e9, 1),
        "activations_gb_at_batch_256": round(activations * BATCH / 1e9, 1),
        "total_gb_at_batch_256": round((states + activations * BATCH) / 1e9, 1),
        "h100_step_ms_at_35pct_mfu": round(step_s * 1e3, 1),
        "h100_pairs_per_s_at_35pct_mfu": round(BATCH / step_s),
    }


def main() -> None:
    print(json.dumps({name: estimate(build) for name, build in FAMILIES.items()}, indent=1))


if __name__ == "__main__":
    main()
