"""The built-in tiny CLIP, base-model resolution, loading and fingerprints (real models)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
from PIL import Image

from mmdemo.retrieval import models
from mmdemo.retrieval.models import (
    ModelCache,
    ModelChoice,
    ModelLoadError,
    build_tiny_clip,
    check_multimodal,
    ensure_tiny_model,
    load_model,
    model_fingerprint,
    resolve_base_model,
)
from mmdemo.settings import DEFAULT_CLIP_MODEL, Settings


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny-clip", seed=0)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An empty HF cache and a fake Hub: tests set ``hub.answer`` and read ``hub.calls``."""

    class FakeHub:
        answer: object = None  # an exception to raise, a callable to run, or a value to return
        calls: list[tuple[str, float]] = []

    fake = FakeHub()
    fake.calls = []

    def fetch(repo_id: str, timeout_s: float) -> object:
        fake.calls.append((repo_id, timeout_s))
        if isinstance(fake.answer, BaseException):
            raise fake.answer
        return fake.answer() if callable(fake.answer) else fake.answer

    monkeypatch.setattr(models, "_fetch_model_info", fetch)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return fake


@pytest.fixture
def online(hub, monkeypatch: pytest.MonkeyPatch):
    """The fake Hub with offline mode off, so ``auto`` asks it."""
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return hub


@pytest.fixture
def prebuilt(settings: Settings, tiny_dir: Path) -> Path:
    """The tiny model already in place under MMDEMO_HOME (saves a build per test)."""
    target = settings.models_dir / "tiny-clip"
    shutil.copytree(tiny_dir, target)
    return target


def _red_image() -> Image.Image:
    return Image.new("RGB", (48, 40), (220, 30, 30))


# -- the tiny model ------------------------------------------------------------------------------
def test_tiny_model_encodes_images_and_text_to_the_same_dimension(tiny_dir: Path):
    assert (tiny_dir / "sentence_bert_config.json").is_file()
    model = load_model(str(tiny_dir), device="cpu", fresh=True)
    image_vec = model.encode([_red_image()])
    text_vec = model.encode(["a red circle above a blue square"])
    assert image_vec.shape == text_vec.shape == (1, 64)
    assert model.supports("image") and model.supports("text")
    check_multimodal(model)  # does not raise
    # Captions longer than the position table are truncated, not an error.
    assert model.encode(["red " * 500]).shape == (1, 64)


def test_tiny_tokenizer_keeps_words_whole_and_still_reads_any_text(tiny_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_dir))
    ids = tokenizer("a red circle to the left of an orange square")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    words = ["a", "red", "circle", "to", "the", "left", "of", "an", "orange", "square"]
    assert tokens[1:-1] == [w + "</w>" for w in words]
    # Unknown words fall back to pieces and bytes: nothing becomes an unknown token.
    odd = tokenizer("Zebra naïve 42 😀")["input_ids"]
    assert len(odd) > 6 and not set(odd[1:-1]) & set(tokenizer.all_special_ids)
    assert tokenizer.decode(odd, skip_special_tokens=True).replace(" ", "") == "zebranaïve42😀"
    # Every merge result is in the vocabulary, and every listed word is one token.
    merges = models._tiny_merges()
    vocab = models._tiny_vocab(merges)
    assert all(a + b in vocab for a, b in merges)
    assert all(w + "</w>" in vocab for w in models.TINY_WORDS)


def test_tiny_model_is_deterministic_per_seed(tiny_dir: Path, tmp_path: Path):
    again = build_tiny_clip(tmp_path / "again", seed=0)
    other = build_tiny_clip(tmp_path / "other", seed=1)
    weights = (tiny_dir / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    assert model_fingerprint(str(again)) == model_fingerprint(str(tiny_dir))
    assert model_fingerprint(str(other)) != model_fingerprint(str(tiny_dir))


def test_ensure_tiny_model_builds_once(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    path = ensure_tiny_model(settings)
    assert path == settings.models_dir / "tiny-clip"
    assert (path / "model.safetensors").is_file()

    def no_rebuild(*args: object, **kwargs: object) -> Path:
        raise AssertionError("the tiny model was rebuilt")

    monkeypatch.setattr(models, "build_tiny_clip", no_rebuild)
    assert ensure_tiny_model(settings) == path
    assert sorted(p.name for p in settings.models_dir.iterdir()) == ["tiny-clip"]


def test_interrupted_tiny_build_leaves_nothing_behind(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
):
    def dies_half_way(out_dir: Path, seed: int = 0) -> Path:
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt  # as if the process were stopped mid-build

    real_build = models.build_tiny_clip
    monkeypatch.setattr(models, "build_tiny_clip", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ensure_tiny_model(settings)
    assert list(settings.models_dir.iterdir()) == []

    # An incomplete folder already in place (e.g. copied by hand) is replaced by a real build.
    target = settings.models_dir / "tiny-clip"
    target.mkdir()
    (target / "config.json").write_text("{}")
    monkeypatch.setattr(models, "build_tiny_clip", real_build)
    assert ensure_tiny_model(settings) == target
    assert (target / "sentence_bert_config.json").is_file()
    assert sorted(p.name for p in settings.models_dir.iterdir()) == ["tiny-clip"]


# -- resolving the base model --------------------------------------------------------------------
def test_tiny_is_used_when_asked(settings: Settings, hub, prebuilt: Path):
    choice = resolve_base_model(settings.with_overrides(base_model="tiny"))
    assert isinstance(choice, ModelChoice)
    assert choice.is_tiny and Path(choice.spec) == settings.models_dir / "tiny-clip"
    assert "tiny" in choice.label and "requested" in choice.reason
    assert hub.calls == []


def test_auto_offline_uses_tiny_without_asking_the_hub(
    settings: Settings, hub, prebuilt: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    hub.answer = AssertionError("the Hub must not be asked in offline mode")
    choice = resolve_base_model(settings.with_overrides(base_model="auto"))
    assert choice.is_tiny
    assert "HF_HUB_OFFLINE" in choice.reason
    assert hub.calls == []


def test_auto_gives_up_on_a_hub_that_never_answers(settings: Settings, online, prebuilt: Path):
    release = threading.Event()
    online.answer = lambda: release.wait()  # a connection that hangs until the test ends
    try:
        choice = resolve_base_model(settings.with_overrides(base_model="auto", hub_timeout_s=0.05))
    finally:
        release.set()
    # Returning at all proves the hung request was not awaited; the request itself was given
    # the same budget.
    assert choice.is_tiny
    assert "did not answer within 0.05 s" in choice.reason
    assert online.calls == [(DEFAULT_CLIP_MODEL, 0.05)]


def test_auto_uses_tiny_when_the_hub_is_unreachable(settings: Settings, online, prebuilt):
    online.answer = ConnectionError("no route to host")
    choice = resolve_base_model(settings.with_overrides(base_model="auto"))
    assert choice.is_tiny
    assert "could not be reached (ConnectionError)" in choice.reason


def test_auto_prefers_clip_when_the_hub_answers(settings: Settings, online):
    online.answer = {"id": DEFAULT_CLIP_MODEL}
    choice = resolve_base_model(settings.with_overrides(base_model="auto"))
    assert choice == ModelChoice(DEFAULT_CLIP_MODEL, "clip-ViT-B-32", choice.reason, is_tiny=False)
    assert "downloads on first use" in choice.reason
    assert not (settings.models_dir / "tiny-clip").exists()  # nothing built needlessly


def test_auto_prefers_a_cached_clip_without_asking(settings: Settings, online):
    cache = Path(hf_constants.HF_HUB_CACHE) / "models--sentence-transformers--clip-ViT-B-32"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (cache / "refs").mkdir(parents=True)
    (cache / "refs" / "main").write_text(commit)
    (cache / "snapshots" / commit).mkdir(parents=True)
    (cache / "snapshots" / commit / "modules.json").write_text("[]")
    online.answer = AssertionError("a cached model needs no Hub request")

    choice = resolve_base_model(settings.with_overrides(base_model="auto"))
    assert choice.spec == DEFAULT_CLIP_MODEL and not choice.is_tiny
    assert "cache" in choice.reason
    assert online.calls == []
    assert model_fingerprint(DEFAULT_CLIP_MODEL) == f"hub:{DEFAULT_CLIP_MODEL}@{commit}"


def test_local_folder_and_hub_id(settings: Settings, hub, tiny_dir: Path):
    local = resolve_base_model(settings.with_overrides(base_model=str(tiny_dir)))
    assert local.spec == str(tiny_dir.resolve()) and not local.is_tiny
    assert local.label == "tiny-clip" and "Local model folder" in local.reason

    remote = resolve_base_model(settings.with_overrides(base_model="someone/their-clip"))
    assert remote.spec == "someone/their-clip" and not remote.is_tiny
    assert "not checked" in remote.reason
    assert hub.calls == []
    assert model_fingerprint("someone/their-clip") == "hub:someone/their-clip"


def test_a_folder_that_is_not_a_model_is_refused(settings: Settings, tmp_path: Path):
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve_base_model(settings.with_overrides(base_model=str(folder)))
    with pytest.raises(ModelLoadError, match="not a model folder"):
        load_model(str(folder), fresh=True)


# -- loading -------------------------------------------------------------------------------------
def test_text_only_folder_is_refused(tiny_dir: Path, tmp_path: Path):
    # The trap: modules.json without sentence_bert_config.json loads as a text-only model.
    crippled = tmp_path / "text-only"
    shutil.copytree(tiny_dir, crippled)
    (crippled / "sentence_bert_config.json").unlink()
    with pytest.raises(ModelLoadError, match="no sentence_bert_config.json.*text-only"):
        load_model(str(crippled), device="cpu", fresh=True)


def test_unknown_hub_model_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match="nobody/no-such-model is not in the local Hugging"):
        load_model("nobody/no-such-model", fresh=True)


def test_model_cache_loads_each_key_once(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch):
    loads: list[tuple[str, str | None]] = []
    real = models._load_uncached

    def counting(spec: str, device: str | None):
        loads.append((spec, device))
        return real(spec, device)

    monkeypatch.setattr(models, "_load_uncached", counting)
    cache = ModelCache(max_models=1)
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(str(tiny_dir), "cpu")))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len(results) == 4
    assert all(result is results[0] for result in results)
    assert (str(tiny_dir), "cpu") in cache

    # A different key loads its own copy and, with room for one, pushes the first out.
    other = cache.get(str(tiny_dir), None)
    assert other is not results[0]
    assert len(cache) == 1 and (str(tiny_dir), "cpu") not in cache
    cache.evict(str(tiny_dir))
    assert len(cache) == 0


def test_fresh_models_are_private(tiny_dir: Path):
    shared = load_model(str(tiny_dir), device="cpu")
    assert load_model(str(tiny_dir), device="cpu") is shared
    assert load_model(str(tiny_dir), device="cpu", fresh=True) is not shared
    models.MODEL_CACHE.evict(str(tiny_dir))


def test_fingerprint_follows_the_weights(tiny_dir: Path, tmp_path: Path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_dir, copy)
    original = model_fingerprint(str(tiny_dir))
    assert original.startswith("local:")
    assert model_fingerprint(str(copy)) == original
    (copy / "README.md").write_text("a different model card")
    assert model_fingerprint(str(copy)) == original
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(weights))
    assert model_fingerprint(str(copy)) != original
