"""Which embedding model to start from, and loading it.

- :func:`build_tiny_model` makes a tiny, randomly initialised CLIP, SigLIP or SigLIP 2 offline (a
  few seconds; :func:`build_tiny_clip` is the CLIP one), so the app, the tests and machines without
  Hub access always have a real model that trains. :data:`TINY_FAMILIES` lists them.
- :func:`resolve_base_model` turns ``settings.base_model`` (``auto``, ``tiny`` / ``tiny-clip``,
  ``tiny-siglip``, ``tiny-siglip2``, a local folder or a Hub id) into a :class:`ModelChoice`; it
  never waits on the network longer than ``settings.hub_timeout_s``.
- :func:`load_model` loads a model through a process-wide :class:`ModelCache` and refuses models
  that cannot embed both images and text with the reason (:class:`ModelLoadError` and its
  ``kind``, from :mod:`mmdemo.retrieval.model_checks`). A SigLIP / SigLIP 2 without its own text
  padding setting gets the one it was trained with (:func:`apply_family_defaults`), so every run
  the app saves carries it.
- :func:`model_fingerprint` is a stable id of a model's weights for caching embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mmdemo.locks import file_lock
from mmdemo.retrieval.model_checks import (
    DIFFERENT_SPACES,
    MISSING_FILES,
    OTHER,
    LoadProblem,
    explain_failure,
    inspect_folder,
    modality_problem,
    tokenizer_problem,
)
from mmdemo.settings import DEFAULT_CLIP_MODEL, Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TINY_MODEL_DIRNAME = "tiny-clip"
TINY_IMAGE_SIZE = 32
TINY_MAX_TOKENS = 77
TINY_PROJECTION_DIM = 64
TINY_TEXT_CONFIG: Mapping[str, int] = MappingProxyType(
    {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
)
TINY_VISION_CONFIG: Mapping[str, int] = MappingProxyType(
    {
        "patch_size": 4,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    }
)
TINY_SIGLIP_MAX_TOKENS = 64
"""SigLIP and SigLIP 2 were trained on text padded to exactly 64 tokens."""
TINY_SIGLIP2_PATCHES = 64
"""Patches per image of the tiny SigLIP 2 (8 × 8 of 4 px: the same 32 px geometry as the others)."""
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_SIGLIP_FAMILIES = ("siglip", "siglip2")


class ModelLoadError(RuntimeError):
    """A model that cannot be used; ``str(exc)`` is a message for people.

    ``kind`` says which problem it is (one of :data:`mmdemo.retrieval.model_checks.PROBLEM_KINDS`:
    ``not-multimodal``, ``missing-package``, ``gated``, ``offline``, ``missing-files``, …).
    """

    def __init__(self, message: str, kind: str = OTHER):
        super().__init__(message)
        self.kind = kind

    @classmethod
    def of(cls, problem: LoadProblem) -> ModelLoadError:
        """The error for one :class:`LoadProblem`."""
        return cls(problem.message, problem.kind)


@dataclass(frozen=True)
class TinyFamily:
    """One built-in tiny model: which architecture, where it lives, how it preprocesses."""

    key: str
    """``clip``, ``siglip`` or ``siglip2``."""
    dirname: str
    """Folder name under ``models_dir`` and the ``MMDEMO_BASE_MODEL`` value that picks it."""
    title: str
    """The architecture's name for people (``CLIP``, ``SigLIP``, ``SigLIP 2``)."""
    processing_kwargs: Mapping[str, Mapping[str, Any]]
    """sentence-transformers' ``Transformer(processing_kwargs=…)`` saved with the model."""


_SIGLIP_TEXT = {"padding": "max_length", "max_length": TINY_SIGLIP_MAX_TOKENS}
TINY_FAMILIES: Mapping[str, TinyFamily] = MappingProxyType(
    {
        "clip": TinyFamily("clip", TINY_MODEL_DIRNAME, "CLIP", MappingProxyType({})),
        "siglip": TinyFamily(
            "siglip", "tiny-siglip", "SigLIP", MappingProxyType({"text": _SIGLIP_TEXT})
        ),
        "siglip2": TinyFamily(
            "siglip2",
            "tiny-siglip2",
            "SigLIP 2",
            MappingProxyType(
                {
                    "text": _SIGLIP_TEXT,
                    # Siglip2Processor's own defaults (patch 16, 256 patches) override the image
                    # processor's at call time, so the tiny geometry is set where ST calls it.
                    "image": {"patch_size": 4, "max_num_patches": TINY_SIGLIP2_PATCHES},
                }
            ),
        ),
    }
)
"""The built-in tiny models by family key."""
TINY_ALIASES: Mapping[str, str] = MappingProxyType(
    {"tiny": "clip", **{f.dirname: key for key, f in TINY_FAMILIES.items()}}
)
"""``MMDEMO_BASE_MODEL`` / ``--base-model`` values that pick a built-in tiny model."""


def tiny_family(name: str) -> TinyFamily | None:
    """The tiny family a base-model value (``tiny-siglip``) or model folder name stands for."""
    key = TINY_ALIASES.get((name or "").strip().lower())
    return TINY_FAMILIES[key] if key else None


@dataclass(frozen=True)
class ModelChoice:
    """The base model to use and why."""

    spec: str
    """What to pass to ``SentenceTransformer()`` (a local folder or a Hub id)."""
    label: str
    """Short name for the UI."""
    reason: str
    """Why this model, one sentence for the UI."""
    is_tiny: bool


# -- the built-in tiny CLIP ----------------------------------------------------------------------
def _byte_chars() -> list[str]:
    """The 256 printable characters that stand for bytes in byte-level BPE (GPT-2's map).

    Printable Latin-1 bytes stand for themselves; the others are shifted above U+0100.
    """
    keep = set(range(ord("!"), ord("~") + 1))
    keep |= set(range(0xA1, 0xAC + 1)) | set(range(0xAE, 0xFF + 1))
    chars, shifted = [], 0
    for byte in range(256):
        if byte in keep:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


_TINY_WORD_TEXT = """
    a an the of to in on at by for with from and or not no is are be was it its this that these
    those there here what which who where when how one two three some all each both other
    another left right above below under over top bottom middle center centre next near far
    beside between behind front inside outside up down side corner small big large tiny little
    long short round dark light bright pale red green blue yellow purple orange pink brown
    black white gray grey cyan magenta violet gold silver circle circles square squares
    triangle triangles rectangle star shape shapes dot line box ball disc ring object image
    picture photo scene background man woman person people boy girl child dog dogs cat cats
    bird horse cow car bus train bike boat plane street road city house room table chair bed
    tree trees grass flower flowers water sky sea beach snow field food plate cup phone sitting
    standing walking running playing holding looking wearing riding eating has have his her
    their them they he she we you i my your very more most new old good first last many few
    same different like just only also then than into onto out off through around
"""
TINY_WORDS: tuple[str, ...] = tuple(_TINY_WORD_TEXT.split())
"""Words the tiny tokenizer keeps whole: the demo's vocabulary plus common English words.

Each gets byte-level BPE merges that join it into one token (``"red"`` → ``red</w>``), so the
tiny text tower learns word meanings directly instead of composing them from characters; any
other text still tokenizes, falling back to pieces and single bytes."""


def _bpe_pieces(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply byte-level BPE merges to a word's symbols, lowest rank first (as CLIP does)."""
    while len(symbols) > 1:
        pairs = [
            (ranks.get(pair, -1), i)
            for i, pair in enumerate(zip(symbols, symbols[1:], strict=False))
        ]
        found = [(rank, i) for rank, i in pairs if rank >= 0]
        if not found:
            break
        _, i = min(found)
        symbols = symbols[:i] + [symbols[i] + symbols[i + 1]] + symbols[i + 2 :]
    return symbols


def _word_merges(spellings: list[list[str]]) -> list[tuple[str, str]]:
    """Deterministic merges that make every spelling (a word as a list of symbols) one token.

    Spellings are taken in order; while one still splits, the merge of its two leftmost pieces is
    appended. Later merges rank after earlier ones, so words already whole stay whole.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for symbols in spellings:
        pieces = _bpe_pieces(symbols, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = _bpe_pieces(symbols, ranks)
    return merges


def _tiny_merges(words: tuple[str, ...] = TINY_WORDS) -> list[tuple[str, str]]:
    """CLIP's byte-level merges that make every word in ``words`` a single ``word</w>`` token."""
    chars = _byte_chars()
    spellings = []
    for word in dict.fromkeys(words):
        symbols = [chars[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        spellings.append(symbols)
    return _word_merges(spellings)


def _tiny_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Bytes, bytes ending a word, every merge result, then the two special tokens."""
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars]
    tokens += list(dict.fromkeys(a + b for a, b in merges)) + [_BOS, _EOS]
    return {token: index for index, token in enumerate(tokens)}


def _tiny_clip_parts(folder: Path) -> tuple[Any, Any, Any]:
    """The tiny CLIP's config, model class and processor (byte-level BPE, 32 px ViT)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    merges = _tiny_merges()
    vocab = _tiny_vocab(merges)
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    merges_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=TINY_MAX_TOKENS)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    )
    text_config = {
        **TINY_TEXT_CONFIG,
        "vocab_size": len(vocab),
        "max_position_embeddings": TINY_MAX_TOKENS,
        "bos_token_id": vocab[_BOS],
        "eos_token_id": vocab[_EOS],
        "pad_token_id": vocab[_EOS],
    }
    vision_config = {**TINY_VISION_CONFIG, "image_size": TINY_IMAGE_SIZE}
    config = CLIPConfig(
        text_config=text_config, vision_config=vision_config, projection_dim=TINY_PROJECTION_DIM
    )
    vocab_file.unlink()
    merges_file.unlink()
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return config, CLIPModel, processor


def _siglip_tokenizer() -> Any:
    """A SigLIP-like tokenizer that needs no ``sentencepiece``: lowercase, punctuation removed,
    ``▁``-prefixed words, ``</s>`` appended and used for padding on the right, 64 tokens.

    SigLIP's own ``SiglipTokenizer`` is a SentencePiece model (it needs the ``sentencepiece``
    package and a trained ``spiece.model``); this is the same behaviour as a ``tokenizers`` BPE
    with the demo's words whole, saved as a generic ``TokenizersBackend``.
    """
    import re
    import string

    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE
    from transformers import TokenizersBackend

    specials = ["<pad>", "</s>", "<unk>"]
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["▁"]
    merges = _word_merges([list("▁" + word) for word in dict.fromkeys(TINY_WORDS)])
    tokens = specials + chars + [a + b for a, b in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    backend = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True))
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Replace(Regex(f"[{re.escape(string.punctuation)}]"), ""),
            normalizers.Replace(Regex(" {2,}"), " "),
            normalizers.Strip(),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    return TokenizersBackend(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
        model_max_length=TINY_SIGLIP_MAX_TOKENS,
        padding_side="right",
    )


def _siglip2_tokenizer() -> Any:
    """SigLIP 2's own ``Siglip2Tokenizer`` (Gemma-style BPE with byte fallback, lowercased), with
    a tiny vocabulary: specials, the 256 byte tokens, printable ASCII, and the demo's words whole
    (``red`` at the start of a text, ``▁red`` after a space)."""
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    chars = [chr(c) for c in range(ord("!"), ord("~") + 1)] + ["▁"]
    spellings = [s for w in dict.fromkeys(TINY_WORDS) for s in (list(w), list("▁" + w))]
    merges = _word_merges(spellings)
    tokens = specials + byte_tokens + chars + [a + b for a, b in merges]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return Siglip2Tokenizer(vocab=vocab, merges=merges, model_max_length=TINY_SIGLIP_MAX_TOKENS)


def _tiny_siglip_parts(family: str) -> tuple[Any, Any, Any]:
    """The tiny SigLIP's or SigLIP 2's config, model class and processor (32 px, patch 4)."""
    from transformers import (
        Siglip2Config,
        Siglip2ImageProcessor,
        Siglip2Model,
        Siglip2Processor,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipProcessor,
    )

    tokenizer = _siglip_tokenizer() if family == "siglip" else _siglip2_tokenizer()
    text_config = {
        **TINY_TEXT_CONFIG,
        "vocab_size": len(tokenizer),
        "max_position_embeddings": TINY_SIGLIP_MAX_TOKENS,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if family == "siglip":
        vision_config = {**TINY_VISION_CONFIG, "image_size": TINY_IMAGE_SIZE}
        size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
        image_processor = SiglipImageProcessor(size=size)
        processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
        config = SiglipConfig(text_config=text_config, vision_config=vision_config)
        return config, SiglipModel, processor
    vision_config = {**TINY_VISION_CONFIG, "num_patches": TINY_SIGLIP2_PATCHES}
    image_processor = Siglip2ImageProcessor(
        patch_size=TINY_VISION_CONFIG["patch_size"], max_num_patches=TINY_SIGLIP2_PATCHES
    )
    processor = Siglip2Processor(image_processor=image_processor, tokenizer=tokenizer)
    config = Siglip2Config(text_config=text_config, vision_config=vision_config)
    return config, Siglip2Model, processor


def _save_tiny_hf_folder(folder: Path, seed: int, family: str = "clip") -> None:
    """Write a randomly initialised (seeded) HF model of ``family`` (``clip``, ``siglip``,
    ``siglip2``) with its tokenizer and processor to ``folder``."""
    import torch

    if family == "clip":
        config, model_class, processor = _tiny_clip_parts(folder)
    else:
        config, model_class, processor = _tiny_siglip_parts(family)
    # Seed a private RNG state so building never disturbs the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def _probe_image() -> Any:
    from PIL import Image

    return Image.new("RGB", (TINY_IMAGE_SIZE * 2, TINY_IMAGE_SIZE * 2), (200, 40, 40))


def verify_encodes_both(model: SentenceTransformer) -> int:
    """Encode one image and one string (one modality per call); return the shared dimension.

    Raises :class:`ModelLoadError` when either fails or the dimensions differ, which is how a
    folder that silently loaded text-only shows itself.
    """
    try:
        image_vec = model.encode([_probe_image()], convert_to_numpy=True)
        text_vec = model.encode(["a red square"], convert_to_numpy=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable", with its reason
        problem = explain_failure("This model", exc)
        if problem.kind == OTHER:
            problem = LoadProblem(OTHER, f"This model cannot embed both images and text: {exc}")
        raise ModelLoadError.of(problem) from exc
    if image_vec.shape[-1] != text_vec.shape[-1]:
        raise ModelLoadError(
            f"This model embeds images ({image_vec.shape[-1]} dims) and text "
            f"({text_vec.shape[-1]} dims) into different spaces.",
            DIFFERENT_SPACES,
        )
    return int(text_vec.shape[-1])


def build_tiny_model(out_dir: Path, family: str = "clip", seed: int = 0) -> Path:
    """Build the tiny model of ``family`` (a :data:`TINY_FAMILIES` key) into ``out_dir`` (a
    sentence-transformers folder) and return it.

    Offline and deterministic: the same seed gives the same weights. The folder is written by
    ``SentenceTransformer.save_pretrained`` so it carries ``sentence_bert_config.json`` (without
    it the folder would load text-only) and the family's ``processing_kwargs`` (SigLIP's text
    padding). The result is checked to embed images and text.
    """
    from sentence_transformers import SentenceTransformer

    if family not in TINY_FAMILIES:
        raise ValueError(f"Unknown tiny model family {family!r}; use one of {list(TINY_FAMILIES)}")
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="mmdemo-tiny-hf-") as raw:
        _save_tiny_hf_folder(Path(raw), seed, family)
        model = SentenceTransformer(raw, device="cpu")
        kwargs = {k: dict(v) for k, v in TINY_FAMILIES[family].processing_kwargs.items()}
        if kwargs:
            model[0].processing_kwargs = kwargs
        model.save_pretrained(str(out_dir))
    if not (out_dir / "sentence_bert_config.json").is_file():
        raise ModelLoadError(
            f"Building the tiny model left no sentence_bert_config.json in {out_dir}", MISSING_FILES
        )
    verify_encodes_both(SentenceTransformer(str(out_dir), device="cpu"))
    return out_dir


def build_tiny_clip(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny CLIP into ``out_dir`` (see :func:`build_tiny_model`) and return it."""
    return build_tiny_model(out_dir, "clip", seed)


def _build_tiny(family: TinyFamily, out_dir: Path) -> Path:
    if family.key == "clip":
        return build_tiny_clip(out_dir)  # looked up at call time (tests count the builds)
    return build_tiny_model(out_dir, family.key)


_TINY_LOCK = threading.Lock()


def _is_complete_tiny(folder: Path) -> bool:
    return (folder / "sentence_bert_config.json").is_file() and (
        folder / "model.safetensors"
    ).is_file()


def ensure_tiny_model(settings: Settings, family: str = "clip") -> Path:
    """Build the tiny model of ``family`` once into ``models_dir/<its dirname>`` (``tiny-clip``,
    ``tiny-siglip``, ``tiny-siglip2``) and return its path.

    Built in a temporary sibling folder and renamed into place, so a killed build never leaves
    a half-written model behind. The check and the build hold a file lock under
    ``settings.home``: a second process (another ``torchrun`` rank) waits and then finds the
    finished model, instead of replacing it as an incomplete leftover while the first loads it.
    """
    tiny = TINY_FAMILIES[family]
    target = settings.models_dir / tiny.dirname
    if _is_complete_tiny(target):
        return target
    with _TINY_LOCK, file_lock(settings.home / "locks" / "tiny-model.lock"):
        if _is_complete_tiny(target):
            return target
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{tiny.dirname}-", dir=settings.models_dir))
        try:
            _build_tiny(tiny, staging / "model")
            if target.exists():  # an incomplete leftover from something else: replace it
                shutil.rmtree(target, ignore_errors=True)
            try:
                os.replace(staging / "model", target)
            except OSError:
                if not _is_complete_tiny(target):  # another process won the race?
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# -- choosing the base model ---------------------------------------------------------------------
def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hub model when its ``modules.json`` is cached (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "modules.json")
    except Exception:  # noqa: BLE001 - an id the cache cannot even name is "not cached"
        return None
    return Path(found).parent if isinstance(found, str) else None


def _fetch_model_info(repo_id: str, timeout_s: float) -> object:
    """One metadata request to the Hub (replaced in tests: they never touch the network)."""
    from huggingface_hub import HfApi

    return HfApi().model_info(repo_id, timeout=timeout_s)


def hub_answers(repo_id: str, timeout_s: float) -> tuple[bool, str]:
    """Ask the Hub about ``repo_id``, waiting at most ``timeout_s`` seconds.

    Returns ``(answered, why)``. The request runs in a daemon thread, so a stuck connection
    can delay the caller by the timeout only, never hang it. Offline mode skips the request.
    """
    if _hub_offline():
        return False, "offline mode (HF_HUB_OFFLINE) is on"
    outcome: dict[str, object] = {}
    done = threading.Event()

    def ask() -> None:
        try:
            _fetch_model_info(repo_id, timeout_s)
            outcome["ok"] = True
        except Exception as exc:  # noqa: BLE001 - every failure means "not reachable"
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=ask, name="mmdemo-hub-ping", daemon=True).start()
    if not done.wait(timeout_s):
        return False, f"the Hub did not answer within {timeout_s:g} s"
    if outcome.get("ok"):
        return True, "the Hub answered"
    error = outcome.get("error")
    return False, f"the Hub could not be reached ({type(error).__name__})"


def _tiny_choice(settings: Settings, reason: str, family: str = "clip") -> ModelChoice:
    path = ensure_tiny_model(settings, family)
    return ModelChoice(str(path), f"{TINY_FAMILIES[family].dirname} (built-in)", reason, True)


def resolve_base_model(settings: Settings) -> ModelChoice:
    """Turn ``settings.base_model`` into the model to load, with a reason for the UI.

    ``tiny`` / ``tiny-clip``, ``tiny-siglip`` and ``tiny-siglip2`` pick a built-in tiny model
    (built on first use). ``auto`` prefers :data:`DEFAULT_CLIP_MODEL` when it is cached or the
    Hub answers within ``settings.hub_timeout_s``, else the built-in tiny CLIP. Raises
    :class:`ModelLoadError` for a local path that is not a model folder or misses files
    (:func:`~mmdemo.retrieval.model_checks.inspect_folder`).
    """
    wanted = (settings.base_model or "auto").strip()
    tiny = tiny_family(wanted)
    if tiny is not None:
        return _tiny_choice(
            settings,
            f"The built-in tiny {tiny.title} was requested (MMDEMO_BASE_MODEL={wanted}).",
            tiny.key,
        )
    if wanted.lower() == "auto":
        short = DEFAULT_CLIP_MODEL.split("/")[-1]
        if cached_hub_snapshot(DEFAULT_CLIP_MODEL) is not None:
            reason = f"{DEFAULT_CLIP_MODEL} is in the local Hugging Face cache."
            return ModelChoice(DEFAULT_CLIP_MODEL, short, reason, False)
        answered, why = hub_answers(DEFAULT_CLIP_MODEL, settings.hub_timeout_s)
        if answered:
            reason = f"{DEFAULT_CLIP_MODEL} is on the Hub; it downloads on first use."
            return ModelChoice(DEFAULT_CLIP_MODEL, short, reason, False)
        return _tiny_choice(
            settings,
            f"Using the built-in tiny CLIP: {DEFAULT_CLIP_MODEL} is not cached and {why}.",
        )
    local = Path(wanted).expanduser()
    if local.exists():
        problem = inspect_folder(local)
        if problem is not None:
            raise ModelLoadError.of(problem)
        resolved = local.resolve()
        return ModelChoice(str(resolved), resolved.name, f"Local model folder {resolved}.", False)
    if cached_hub_snapshot(wanted) is not None:
        return ModelChoice(wanted, wanted, f"Hub model {wanted}, found in the local cache.", False)
    return ModelChoice(
        wanted,
        wanted,
        f"Hub model {wanted}, not cached: it downloads on first use (availability not checked).",
        False,
    )


# -- loading -------------------------------------------------------------------------------------
def apply_family_defaults(model: SentenceTransformer) -> bool:
    """Give a SigLIP / SigLIP 2 the text padding it was trained with; True when it changed.

    sentence-transformers pads text to the longest in the batch unless the module's
    ``processing_kwargs`` say otherwise, but SigLIP pools the last position and was trained on
    text padded to exactly ``max_length`` (64) tokens: pad-to-longest degrades it badly. A model
    that sets its own text padding is left alone. The setting lives on the ``Transformer`` module,
    so ``save_pretrained`` writes it into every run the app saves.
    """
    module = model[0] if len(model) else None
    config = getattr(getattr(module, "model", None), "config", None)
    if getattr(config, "model_type", None) not in _SIGLIP_FAMILIES:
        return False
    kwargs = getattr(module, "processing_kwargs", None)
    if kwargs is None or "padding" in (kwargs.get("text") or {}):
        return False
    text_config = getattr(config, "text_config", None)
    length = getattr(text_config, "max_position_embeddings", None) or TINY_SIGLIP_MAX_TOKENS
    module.processing_kwargs = {
        **kwargs,
        "text": {**(kwargs.get("text") or {}), "padding": "max_length", "max_length": length},
    }
    return True


def check_multimodal(model: SentenceTransformer, folder: Path | None = None) -> None:
    """Raise :class:`ModelLoadError` unless the model embeds both images and text.

    ``folder``: the local folder it was loaded from, so the reason can name a missing file.
    """
    problem = modality_problem(model, folder)
    if problem is None and folder is not None:
        problem = tokenizer_problem(folder)
    if problem is not None:
        raise ModelLoadError.of(problem)


def _load_uncached(spec: str, device: str | None) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    local = Path(spec).expanduser()
    kwargs: dict[str, Any] = {"device": device}
    folder: Path | None = None
    if local.exists():
        problem = inspect_folder(local)
        if problem is not None:
            raise ModelLoadError.of(problem)
        folder = local.resolve()
        spec = str(folder)
    elif cached_hub_snapshot(spec) is not None:
        kwargs["local_files_only"] = True  # fully cached: no need to ask the Hub
    try:
        try:
            model = SentenceTransformer(spec, **kwargs)
        except OSError:
            if not kwargs.pop("local_files_only", False):
                raise
            model = SentenceTransformer(spec, **kwargs)  # partial cache: let it fetch the rest
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - surface any loader failure as one clear reason
        raise ModelLoadError.of(explain_failure(spec, exc)) from exc
    check_multimodal(model, folder)
    apply_family_defaults(model)
    verify_encodes_both(model)
    return model


class ModelCache:
    """Loaded models shared by the whole process, keyed by ``(spec, device)``.

    Thread-safe; each key loads once even when several threads ask at the same time. The least
    recently used model is dropped beyond ``max_models``. Cached models are shared: never train
    one in place (ask :func:`load_model` with ``fresh=True`` for a private copy).
    """

    def __init__(self, max_models: int = 3):
        self.max_models = max(1, int(max_models))
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple[str, str | None], SentenceTransformer] = OrderedDict()
        self._key_locks: dict[tuple[str, str | None], threading.Lock] = {}

    def get(self, spec: str, device: str | None = None) -> SentenceTransformer:
        key = (spec, device)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = _load_uncached(spec, device)
            with self._lock:
                self._models[key] = model
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
        return model

    def __contains__(self, key: tuple[str, str | None]) -> bool:
        with self._lock:
            return key in self._models

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def evict(self, spec: str) -> None:
        """Forget every cached copy of ``spec`` (e.g. after its folder was rewritten)."""
        with self._lock:
            for key in [k for k in self._models if k[0] == spec]:
                del self._models[key]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


MODEL_CACHE = ModelCache()
"""The process-wide cache :func:`load_model` uses."""


def load_model(spec: str, device: str | None = None, *, fresh: bool = False) -> SentenceTransformer:
    """Load a multimodal model (cached per process), or raise :class:`ModelLoadError`.

    ``fresh=True`` bypasses the cache and returns a private instance, e.g. to train.
    """
    if fresh:
        return _load_uncached(spec, device)
    return MODEL_CACHE.get(spec, device)


# -- fingerprints ----------------------------------------------------------------------------------
_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_MEMO:
            return _HASH_MEMO[key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASH_MEMO[key] = value
    return value


def model_fingerprint(spec: str) -> str:
    """A stable id of a model's weights and configuration, for caching embeddings.

    Local folder: a hash over the content of its files (weights hashed once per process per
    size+mtime), so a copy of the same model has the same fingerprint and retraining changes it.
    Hub id: the id plus the cached commit, or the id alone when it is not cached.
    """
    local = Path(spec).expanduser()
    if local.is_dir():
        digest = hashlib.sha256()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            relative = path.relative_to(local).as_posix()
            if relative == "README.md" or any(p.startswith(".") for p in relative.split("/")):
                continue  # the model card and hidden files do not change the embeddings
            digest.update(relative.encode("utf-8") + b"\0")
            digest.update(_file_sha256(path).encode("ascii") + b"\0")
        return f"local:{digest.hexdigest()[:32]}"
    snapshot = cached_hub_snapshot(spec)
    if snapshot is not None:
        return f"hub:{spec}@{snapshot.name}"
    return f"hub:{spec}"
