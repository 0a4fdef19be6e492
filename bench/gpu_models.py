"""Real-sized CLIP and SigLIP with random weights, built offline, and their training FLOPs.

:func:`model_specs` gives the geometries (ViT-B/32 CLIP and SigLIP-B/16, or tiny ones for a smoke
run), :func:`build_random_model` builds one into a sentence-transformers folder the way
:func:`mmdemo.retrieval.models.build_tiny_clip` builds the tiny CLIP, and :func:`pair_flops`
counts a (caption, image) pair's training FLOPs from the parameters (:func:`tower_flops`).

Both models use a byte-level BPE tokenizer (mmdemo's tiny CLIP tokenizer, ~1,000 tokens) instead
of their own: SigLIP's SentencePiece tokenizer cannot be built offline without a trained model
file. Their embedding tables keep the real vocabulary sizes (49,408 and 32,000), so the parameter
counts are the real models'.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOKUPS = (
    "token_embedding.weight",
    "position_embedding.weight",
    "class_embedding",
    "head.probe",
)
"""Parameters read by index, not multiplied: no FLOPs."""
SIGLIP_MAX_TOKENS = 64
"""SigLIP's text length: it was trained on text padded to exactly 64 tokens."""


@dataclass(frozen=True)
class ModelSpec:
    """A CLIP or SigLIP geometry to build with random weights."""

    family: str
    """``clip`` or ``siglip``."""
    size: str
    text: Mapping[str, int]
    vision: Mapping[str, int]
    image_size: int
    max_tokens: int
    vocab_size: int | None = None
    """Rows of the token embedding (``None``: the tokenizer's own size)."""
    projection_dim: int | None = None
    """CLIP only: the shared embedding size."""

    @property
    def patch(self) -> int:
        return int(self.vision["patch_size"])

    @property
    def image_tokens(self) -> int:
        """Patches, plus CLIP's class token (SigLIP has none: it pools with an attention head)."""
        return (self.image_size // self.patch) ** 2 + (1 if self.family == "clip" else 0)

    @property
    def text_padding(self) -> str:
        """SigLIP was trained on text padded to its max length; CLIP pads to the longest."""
        return "max_length" if self.family == "siglip" else "longest"


def _b(hidden: int, layers: int = 12) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
    }


def model_specs(smoke: bool) -> dict[str, ModelSpec]:
    """The two models: real sizes, or tiny ones for ``--smoke``."""
    from mmdemo.retrieval.models import (
        TINY_IMAGE_SIZE,
        TINY_MAX_TOKENS,
        TINY_PROJECTION_DIM,
        TINY_TEXT_CONFIG,
        TINY_VISION_CONFIG,
    )

    if smoke:
        return {
            "clip": ModelSpec(
                "clip",
                "tiny (mmdemo's tiny CLIP geometry)",
                TINY_TEXT_CONFIG,
                TINY_VISION_CONFIG,
                TINY_IMAGE_SIZE,
                TINY_MAX_TOKENS,
                projection_dim=TINY_PROJECTION_DIM,
            ),
            "siglip": ModelSpec(
                "siglip",
                "tiny SigLIP",
                TINY_TEXT_CONFIG,
                TINY_VISION_CONFIG,
                TINY_IMAGE_SIZE,
                SIGLIP_MAX_TOKENS,
            ),
        }
    return {
        # sentence-transformers/clip-ViT-B-32 (openai/clip-vit-base-patch32)
        "clip": ModelSpec(
            "clip",
            "ViT-B/32 (clip-ViT-B-32 sizes, random weights)",
            {**_b(512), "num_attention_heads": 8},
            {**_b(768), "patch_size": 32},
            224,
            77,
            vocab_size=49408,
            projection_dim=512,
        ),
        # google/siglip-base-patch16-224
        "siglip": ModelSpec(
            "siglip",
            "SigLIP-B/16 (siglip-base-patch16-224 sizes, random weights)",
            _b(768),
            {**_b(768), "patch_size": 16},
            224,
            SIGLIP_MAX_TOKENS,
            vocab_size=32000,
        ),
    }


# -- building the models -------------------------------------------------------------------------
def _byte_level_tokenizer(folder: Path, max_tokens: int) -> tuple[Any, dict[str, int]]:
    """mmdemo's tiny CLIP tokenizer (byte-level BPE over its word list), built in ``folder``."""
    from transformers import CLIPTokenizer

    from mmdemo.retrieval.models import _tiny_merges, _tiny_vocab

    merges = _tiny_merges()
    vocab = _tiny_vocab(merges)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    merges_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=max_tokens)
    vocab_file.unlink()
    merges_file.unlink()
    return tokenizer, vocab


def hf_parts(spec: ModelSpec, folder: Path) -> tuple[Any, type, Any]:
    """The HF config, model class and processor (tokenizer made in ``folder``) of ``spec``."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    from mmdemo.retrieval.models import _BOS, _EOS

    tokenizer, vocab = _byte_level_tokenizer(folder, spec.max_tokens)
    text = {
        **spec.text,
        "vocab_size": spec.vocab_size or len(vocab),
        "max_position_embeddings": spec.max_tokens,
        "bos_token_id": vocab[_BOS],
        "eos_token_id": vocab[_EOS],
        "pad_token_id": vocab[_EOS],
    }
    vision = {**spec.vision, "image_size": spec.image_size}
    side = spec.image_size
    if spec.family == "clip":
        config = CLIPConfig(
            text_config=text, vision_config=vision, projection_dim=spec.projection_dim
        )
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
        return config, CLIPModel, CLIPProcessor(image_processor, tokenizer)
    config = SiglipConfig(text_config=text, vision_config=vision)
    image_processor = SiglipImageProcessor(size={"height": side, "width": side})
    return config, SiglipModel, SiglipProcessor(image_processor, tokenizer)


def _save_hf_folder(spec: ModelSpec, folder: Path, seed: int) -> None:
    """A randomly initialised (seeded) HF CLIP or SigLIP with tokenizer and processor."""
    import torch

    config, model_class, processor = hf_parts(spec, folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def build_random_model(spec: ModelSpec, out_dir: Path, seed: int = 0) -> Path:
    """Build ``spec`` with random weights into ``out_dir`` (a sentence-transformers folder).

    Made the way :func:`mmdemo.retrieval.models.build_tiny_clip` makes the tiny CLIP; SigLIP's
    text is padded to its max length (saved in the module's ``processing_kwargs``).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer

    from mmdemo.retrieval.models import verify_encodes_both

    with tempfile.TemporaryDirectory(prefix="mmdemo-gpu-check-hf-") as raw:
        _save_hf_folder(spec, Path(raw), seed)
        if spec.family == "siglip":
            kwargs = {"text": {"padding": "max_length", "max_length": spec.max_tokens}}
            module = Transformer(raw, processing_kwargs=kwargs)
            model = SentenceTransformer(modules=[module], device="cpu")
        else:
            model = SentenceTransformer(raw, device="cpu")
        model.save_pretrained(str(out_dir))
    verify_encodes_both(SentenceTransformer(str(out_dir), device="cpu"))
    return out_dir


# -- FLOPs ---------------------------------------------------------------------------------------
def flop_params(hf_model: Any) -> dict[str, dict[str, int]]:
    """Parameters per tower that multiply every token (``per_token``) or one vector per sample
    (``pooled``: projections, SigLIP's heads), lookups (token/position embeddings, CLIP's class
    token, SigLIP's probe) and the logit scale/bias left out."""
    counts = {t: {"per_token": 0, "pooled": 0, "lookup": 0} for t in ("text", "vision")}
    for name, param in hf_model.named_parameters():
        tower = "text" if name.startswith(("text_model", "text_projection")) else "vision"
        if name.startswith("logit_"):
            continue
        n = param.numel()
        if name.endswith(LOOKUPS):
            counts[tower]["lookup"] += n
        elif "head.attention.in_proj" in name:  # MAP head: 1 query, keys/values of all tokens
            counts[tower]["pooled"] += n // 3
            counts[tower]["per_token"] += n - n // 3
        elif "projection" in name or ".head." in name:
            counts[tower]["pooled"] += n
        else:
            counts[tower]["per_token"] += n
    return counts


def tower_flops(per_token: int, pooled: int, tokens: int, layers: int, width: int) -> float:
    """Training FLOPs of one tower for one sample: 3 × forward, forward = 2·P·T + 2·P_pool +
    4·L·T²·d.

    ``P``: parameters applied to each of the ``T`` tokens (every matmul costs 2 FLOPs per weight
    and token); ``P_pool``: applied once (projection, pooling head); ``4·L·T²·d``: attention
    scores and their weighted sum in ``L`` layers of width ``d``. Backward ≈ 2 × forward
    (gradients for activations and weights), so training ≈ 6·P·T. Left out: lookups, softmax,
    norms' and activations' element-wise work, the loss's similarity matrix (B² · dim).
    """
    forward = 2 * per_token * tokens + 2 * pooled + 4 * layers * tokens**2 * width
    return 3.0 * forward


def pair_flops(counts: dict[str, dict[str, int]], spec: ModelSpec, text_tokens: float) -> float:
    """Training FLOPs of one (caption, image) pair: both towers (:func:`tower_flops`)."""
    image = tower_flops(
        counts["vision"]["per_token"],
        counts["vision"]["pooled"],
        spec.image_tokens,
        spec.vision["num_hidden_layers"],
        spec.vision["hidden_size"],
    )
    text = tower_flops(
        counts["text"]["per_token"],
        counts["text"]["pooled"],
        round(text_tokens),
        spec.text["num_hidden_layers"],
        spec.text["hidden_size"],
    )
    return image + text
