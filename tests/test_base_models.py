"""Base-model families the README lists as known to work, as tiny random models built offline and
loaded through the app's loader (``load_model``): a SigLIP (1) folder laid out as the Hub ships
``google/siglip-*`` (a plain transformers folder with a SentencePiece ``spiece.model`` tokenizer),
and a vision-language embedder shaped like ``Qwen/Qwen3-VL-Embedding-2B`` (Qwen3-VL +
last-token pooling + normalize, as its sentence-transformers integration is)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdemo.retrieval.evaluation import evaluate_model
from mmdemo.retrieval.models import TINY_WORDS, _byte_chars, _word_merges, load_model

CAPTIONS = ["a red circle above a blue square", "a green triangle left of a yellow star"]
QWEN_SPECIALS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen-VL's chat template, cut to what an embedder needs: text, and one image as its pad tokens.
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (210, 30, 30)), Image.new("RGB", (30, 40), (20, 40, 200))]


def _encodes_both(model, dim: int) -> None:
    images = model.encode(_images(), convert_to_numpy=True)
    texts = model.encode(CAPTIONS, convert_to_numpy=True)
    assert images.shape == (2, dim) and texts.shape == (2, dim)
    assert np.isfinite(images).all() and np.isfinite(texts).all()
    assert not np.allclose(images[0], images[1]) and not np.allclose(texts[0], texts[1])


def build_tiny_qwen3_vl_embedder(folder: Path, seed: int = 0) -> Path:
    """A random 0.2 M-parameter Qwen3-VL embedder: byte-level BPE with Qwen's special tokens,
    4-px patches merged 2 × 2, 64-wide text tower; sentence-transformers modules Transformer
    (feature-extraction) → Pooling(lasttoken) → Normalize, as Qwen3-VL-Embedding's are."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLModel,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    raw = folder.parent / f"{folder.name}-hf"
    raw.mkdir(parents=True)
    chars = _byte_chars()
    space = chars[ord(" ")]
    spellings = [s for w in dict.fromkeys(TINY_WORDS) for s in (list(w), [space, *w])]
    merges = _word_merges(spellings)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(chars + [a + b for a, b in merges]))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, model_max_length=256)
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIALS)})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    geometry = {"patch_size": 4, "merge_size": 2, "temporal_patch_size": 2}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(
            **geometry, size={"shortest_edge": 16 * 16, "longest_edge": 32 * 32}
        ),
        video_processor=Qwen3VLVideoProcessor(
            **geometry, size={"shortest_edge": 16 * 16, "longest_edge": 4 * 32 * 32}
        ),
        tokenizer=tokenizer,
        chat_template=QWEN_TEMPLATE,
    )
    config = Qwen3VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 512,
            "pad_token_id": tokenizer.pad_token_id,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 4,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        Qwen3VLModel(config).save_pretrained(raw)
    processor.save_pretrained(raw)
    modules = [Transformer(str(raw)), Pooling(64, pooling_mode="lasttoken"), Normalize()]
    SentenceTransformer(modules=modules, device="cpu").save_pretrained(str(folder))
    shutil.rmtree(raw)
    return folder


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen3_vl_embedder(tmp_path_factory.mktemp("vlm") / "tiny-qwen3-vl-embedder")


@pytest.mark.slow
def test_a_tiny_qwen3_vl_embedder_encodes_text_and_images_through_the_app_loader(tiny_vlm: Path):
    model = load_model(str(tiny_vlm), device="cpu", fresh=True)
    # Qwen3-VL-Embedding-2B lists the same modalities under sentence-transformers.
    assert model.modalities == ["text", "image", "video", "message"]
    assert type(model[0].model).__name__ == "Qwen3VLModel"
    _encodes_both(model, 64)


@pytest.mark.slow
def test_the_app_evaluates_a_tiny_vlm_embedder(tiny_vlm: Path, store, settings):
    from mmdemo.data.demo import generate_demo_scenes
    from mmdemo.data.images import ImageLimits, ingest_image_bytes

    collection = store.create_collection("shapes")
    limits = ImageLimits.from_settings(settings)
    for scene in generate_demo_scenes(12, seed=0):
        stored = ingest_image_bytes(scene.image_bytes, settings.images_dir, limits)
        store.add_pair(collection.id, stored.as_row(), scene.caption, split="eval")
    model = load_model(str(tiny_vlm), device="cpu", fresh=True)
    metrics = evaluate_model(model, store, settings, collection.id)
    assert metrics["t2i"]["queries"] == 12 and 0 <= metrics["t2i"]["recall@1"] <= 1


@pytest.mark.slow
def test_the_app_trains_a_tiny_vlm_embedder(tiny_vlm: Path, store, settings):
    """Qwen-VL's processor sizes each image itself: no fixed array to cache, so the run reads
    the images per batch (ImageFileInputs) and says so in its log."""
    from mmdemo.data.demo import generate_demo_scenes
    from mmdemo.data.images import ImageLimits, ingest_image_bytes
    from mmdemo.training.run import TrainConfig, run_training

    collection = store.create_collection("shapes")
    limits = ImageLimits.from_settings(settings)
    for scene in generate_demo_scenes(24, seed=0):
        stored = ingest_image_bytes(scene.image_bytes, settings.images_dir, limits)
        store.add_pair(collection.id, stored.as_row(), scene.caption, split=scene.split)
    config = TrainConfig(epochs=1, batch_size=8, lr=1e-4)
    result = run_training(store, settings, "shapes", config, base_model=str(tiny_vlm))
    assert result.status == "finished", result.message
    events = [
        json.loads(line) for line in (Path(result.path) / "log.jsonl").read_text().splitlines()
    ]
    inputs = [e for e in events if e.get("event") == "inputs"]
    assert inputs and inputs[0]["per_batch"] is True and "dynamic resolution" in inputs[0]["reason"]


def _spiece_model(folder: Path) -> Path:
    """A real SentencePiece unigram model trained offline on the demo's words (SigLIP's ids:
    pad 0, eos 1, unk 2, no bos)."""
    spm = pytest.importorskip("sentencepiece")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join([" ".join(TINY_WORDS)] * 20 + CAPTIONS * 20), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spiece"),
        vocab_size=300,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return folder / "spiece.model"


def test_a_siglip_folder_as_the_hub_ships_it_loads_with_its_sentencepiece_tokenizer(
    tmp_path: Path,
):
    """google/siglip-* is a plain transformers folder whose tokenizer is SentencePiece: it needs
    the sentencepiece and protobuf packages (requirements.txt), and the app gives it SigLIP's
    fixed 64-token padding."""
    pytest.importorskip("google.protobuf")
    import torch
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
        SiglipTokenizer,
    )

    folder = tmp_path / "siglip-as-on-the-hub"
    folder.mkdir()
    tokenizer = SiglipTokenizer(str(_spiece_model(tmp_path)), model_max_length=64)
    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
    config = SiglipConfig(
        text_config={**tiny, "num_attention_heads": 2, "vocab_size": len(tokenizer)},
        vision_config={**tiny, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        SiglipModel(config).save_pretrained(folder)
    image_processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    assert not (folder / "modules.json").exists() and (folder / "spiece.model").is_file()

    model = load_model(str(folder), device="cpu", fresh=True)
    assert type(model[0].processor.tokenizer).__name__ == "SiglipTokenizer"
    assert model[0].processing_kwargs["text"] == {"padding": "max_length", "max_length": 64}
    _encodes_both(model, 32)
