"""Which embedding model to start from, and loading it.

- :func:`build_tiny_clip` makes a tiny, randomly initialised CLIP offline (a few seconds), so the
  app, the tests and machines without Hub access always have a real model that trains.
- :func:`resolve_base_model` turns ``settings.base_model`` (``auto``, ``tiny``, a local folder or a
  Hub id) into a :class:`ModelChoice`; it never waits on the network longer than
  ``settings.hub_timeout_s``.
- :func:`load_model` loads a model through a process-wide :class:`ModelCache` and refuses models
  that cannot embed images (:class:`ModelLoadError`).
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
_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_MODEL_MARKERS = ("modules.json", "config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ModelLoadError(RuntimeError):
    """A model that cannot be used; ``str(exc)`` is a message for people."""


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


def _tiny_merges(words: tuple[str, ...] = TINY_WORDS) -> list[tuple[str, str]]:
    """Deterministic merges that make every word in ``words`` a single token.

    Words are taken in order; while a word still splits, the merge of its two leftmost pieces is
    appended. Later merges rank after earlier ones, so words already whole stay whole.
    """
    chars = _byte_chars()
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(words):
        symbols = [chars[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        pieces = _bpe_pieces(symbols, ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = _bpe_pieces(symbols, ranks)
    return merges


def _tiny_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Bytes, bytes ending a word, every merge result, then the two special tokens."""
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars]
    tokens += list(dict.fromkeys(a + b for a, b in merges)) + [_BOS, _EOS]
    return {token: index for index, token in enumerate(tokens)}


def _save_tiny_hf_folder(folder: Path, seed: int) -> None:
    """Write a randomly initialised (seeded) HF CLIP with tokenizer and processor to ``folder``."""
    import torch
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
    # Seed a private RNG state so building never disturbs the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    vocab_file.unlink()
    merges_file.unlink()
    model.save_pretrained(folder)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)


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
    except Exception as exc:  # noqa: BLE001 - any failure means "not multimodal"
        raise ModelLoadError(f"This model cannot embed both images and text: {exc}") from exc
    if image_vec.shape[-1] != text_vec.shape[-1]:
        raise ModelLoadError(
            f"This model embeds images ({image_vec.shape[-1]} dims) and text "
            f"({text_vec.shape[-1]} dims) into different spaces."
        )
    return int(text_vec.shape[-1])


def build_tiny_clip(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny CLIP into ``out_dir`` (a sentence-transformers folder) and return it.

    Offline and deterministic: the same seed gives the same weights. The folder is written by
    ``SentenceTransformer.save_pretrained`` so it carries ``sentence_bert_config.json``; without
    it the folder would load text-only. The result is checked to embed images and text.
    """
    from sentence_transformers import SentenceTransformer

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="mmdemo-tiny-hf-") as raw:
        _save_tiny_hf_folder(Path(raw), seed)
        model = SentenceTransformer(raw, device="cpu")
        model.save_pretrained(str(out_dir))
    if not (out_dir / "sentence_bert_config.json").is_file():
        raise ModelLoadError(
            f"Building the tiny model left no sentence_bert_config.json in {out_dir}"
        )
    verify_encodes_both(SentenceTransformer(str(out_dir), device="cpu"))
    return out_dir


_TINY_LOCK = threading.Lock()


def _is_complete_tiny(folder: Path) -> bool:
    return (folder / "sentence_bert_config.json").is_file() and (
        folder / "model.safetensors"
    ).is_file()


def ensure_tiny_model(settings: Settings) -> Path:
    """Build the tiny model once into ``models_dir/tiny-clip`` and return its path.

    Built in a temporary sibling folder and renamed into place, so a killed build never leaves
    a half-written model behind. The check and the build hold a file lock under
    ``settings.home``: a second process (another ``torchrun`` rank) waits and then finds the
    finished model, instead of replacing it as an incomplete leftover while the first loads it.
    """
    target = settings.models_dir / TINY_MODEL_DIRNAME
    if _is_complete_tiny(target):
        return target
    with _TINY_LOCK, file_lock(settings.home / "locks" / "tiny-model.lock"):
        if _is_complete_tiny(target):
            return target
        settings.models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{TINY_MODEL_DIRNAME}-", dir=settings.models_dir))
        try:
            build_tiny_clip(staging / "model")
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


def _tiny_choice(settings: Settings, reason: str) -> ModelChoice:
    path = ensure_tiny_model(settings)
    return ModelChoice(str(path), "tiny-clip (built-in)", reason, True)


def _looks_like_model_folder(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in _MODEL_MARKERS)


def resolve_base_model(settings: Settings) -> ModelChoice:
    """Turn ``settings.base_model`` into the model to load, with a reason for the UI.

    ``auto`` prefers :data:`DEFAULT_CLIP_MODEL` when it is cached or the Hub answers within
    ``settings.hub_timeout_s``, else the built-in tiny model. Raises :class:`ModelLoadError` for
    a local path that is not a model folder.
    """
    wanted = (settings.base_model or "auto").strip()
    if wanted.lower() == "tiny":
        return _tiny_choice(
            settings, "The built-in tiny CLIP was requested (MMDEMO_BASE_MODEL=tiny)."
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
        if not _looks_like_model_folder(local):
            raise ModelLoadError(
                f"{wanted} is not a model folder (it has no config.json or modules.json)."
            )
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
def check_multimodal(model: SentenceTransformer) -> None:
    """Raise :class:`ModelLoadError` unless the model embeds both images and text."""
    supports = getattr(model, "supports", None)
    has_image = bool(supports("image")) if supports else False
    has_text = bool(supports("text")) if supports else False
    if not has_image:
        raise ModelLoadError(
            "This model does not accept images, so it cannot embed text–image pairs. "
            "Choose a CLIP-style model (for a local folder: one saved by sentence-transformers "
            "with its sentence_bert_config.json)."
        )
    if not has_text:
        raise ModelLoadError("This model does not accept text, so it cannot embed captions.")


def _load_uncached(spec: str, device: str | None) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    local = Path(spec).expanduser()
    kwargs: dict[str, Any] = {"device": device}
    if local.exists():
        if not _looks_like_model_folder(local):
            raise ModelLoadError(
                f"{spec} is not a model folder (it has no config.json or modules.json)."
            )
        spec = str(local.resolve())
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
    except Exception as exc:  # noqa: BLE001 - surface any loader failure as one clear error
        raise ModelLoadError(f"Could not load the model {spec!r}: {exc}") from exc
    check_multimodal(model)
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
