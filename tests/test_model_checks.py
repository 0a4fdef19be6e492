"""Every reason the loading check gives, each produced by a real folder built offline (only the
Hub's answers for gated and unknown repos are made here: there is no Hub)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest

from mmdemo.retrieval import model_checks
from mmdemo.retrieval.model_checks import explain_failure
from mmdemo.retrieval.models import ModelLoadError, build_tiny_clip, load_model, resolve_base_model
from mmdemo.settings import Settings

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square"]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("checks") / "tiny-clip", seed=0)


@pytest.fixture
def copy_of(tiny_dir: Path, tmp_path: Path):
    def make(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(tiny_dir, target)
        return target

    return make


def _refusal(spec: Path | str) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        load_model(str(spec), device="cpu", fresh=True)
    return caught.value


def _text_only_model(folder: Path) -> Path:
    """A tiny BERT sentence-transformers model (text only), built offline."""
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel, BertTokenizer

    raw = folder.parent / f"{folder.name}-hf"
    raw.mkdir()
    (raw / "vocab.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(raw / "vocab.txt")).save_pretrained(raw)
    config = BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertModel(config).save_pretrained(raw)
    SentenceTransformer(str(raw), device="cpu").save_pretrained(str(folder))
    return folder


def test_a_text_only_sentence_transformer_is_not_multimodal(tmp_path: Path):
    folder = _text_only_model(tmp_path / "text-only-bert")
    error = _refusal(folder)
    assert error.kind == "not-multimodal"
    assert "does not accept images" in str(error)
    assert "a bert model" in str(error) and "take: text" in str(error)


def test_modules_json_without_sentence_bert_config_is_named(copy_of):
    # The trap: sentence-transformers loads such a folder text-only, without a word of warning.
    folder = copy_of("no-sbert-config")
    (folder / "sentence_bert_config.json").unlink()
    error = _refusal(folder)
    assert error.kind == "missing-files"
    assert "no sentence_bert_config.json" in str(error) and "text-only" in str(error)


def test_missing_weights_tokenizer_processor_and_module_folders(copy_of):
    folder = copy_of("no-weights")
    (folder / "model.safetensors").unlink()
    error = _refusal(folder)
    assert error.kind == "missing-files" and "has no weights" in str(error)

    folder = copy_of("no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    error = _refusal(folder)  # transformers would load it with an empty tokenizer
    assert error.kind == "missing-files" and "no tokenizer files" in str(error)

    folder = copy_of("no-image-processor")
    (folder / "processor_config.json").unlink()
    error = _refusal(folder)
    assert error.kind == "missing-files" and "image processor settings" in str(error)

    folder = copy_of("lost-module")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 1, "name": "1", "path": "1_Dense", "type": "Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    error = _refusal(folder)
    assert error.kind == "missing-files" and "'1_Dense', which is missing" in str(error)

    folder = copy_of("no-config")
    (folder / "config.json").unlink()
    error = _refusal(folder)
    assert error.kind == "missing-files"
    missing = OSError("/m does not appear to have a file named config.json. Checkout the repo")
    assert explain_failure("/m", missing).message.startswith("/m is missing config.json. Copy")


def test_a_folder_that_is_no_model_and_one_with_missing_files_at_resolve(
    settings: Settings, copy_of, tmp_path: Path
):
    photos = tmp_path / "photos"
    photos.mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder") as caught:
        resolve_base_model(settings.with_overrides(base_model=str(photos)))
    assert caught.value.kind == "not-a-model-folder"
    folder = copy_of("half-copied")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="has no weights"):
        resolve_base_model(settings.with_overrides(base_model=str(folder)))


def test_an_architecture_transformers_does_not_know_asks_for_a_newer_one(copy_of):
    import transformers

    folder = copy_of("future-model")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "qwen9_vl"
    (folder / "config.json").write_text(json.dumps(config))
    error = _refusal(folder)
    assert error.kind == "needs-newer-transformers"
    assert "'qwen9_vl'" in str(error) and transformers.__version__ in str(error)


def test_custom_code_is_refused_with_its_reason(copy_of):
    folder = copy_of("remote-code")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "mystery"
    config["auto_map"] = {"AutoConfig": "configuration_mystery.MysteryConfig"}
    (folder / "config.json").write_text(json.dumps(config))
    error = _refusal(folder)
    assert error.kind == "remote-code" and "trust_remote_code" in str(error)


def test_a_missing_python_package_is_named(tmp_path: Path):
    # timm is not installed here: a timm checkpoint (config.json + weights) asks for it.
    import importlib.util

    from safetensors.torch import save_file

    if importlib.util.find_spec("timm") is not None:
        pytest.skip("timm is installed here")
    folder = tmp_path / "timm-model"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "timm_wrapper", "architecture": "resnet18"})
    )
    save_file({}, str(folder / "model.safetensors"))
    error = _refusal(folder)
    assert error.kind == "missing-package"
    assert str(error).endswith("pip install timm")


def test_missing_package_messages_as_transformers_words_them():
    sentencepiece = ImportError(
        "\nSiglipTokenizer requires the SentencePiece library but it was not found in your "
        "environment. Check out the instructions on the installation page of its repo"
    )
    problem = explain_failure("google/siglip-base-patch16-224", sentencepiece)
    assert problem.kind == "missing-package"
    assert "sentencepiece" in problem.message and "SigLIP" in problem.message
    protobuf = ImportError("\nSiglipTokenizer requires the protobuf library but it was not found")
    assert explain_failure("x", protobuf).message.endswith("pip install protobuf")
    missing = ModuleNotFoundError("No module named 'qwen_vl_utils'", name="qwen_vl_utils")
    assert explain_failure("x", missing).message.endswith("pip install qwen-vl-utils")
    pillow = ImportError(
        'needs PIL.\n\nTo install, run:\npip install -U "sentence-transformers[image]"'
    )
    assert explain_failure("x", pillow).message.endswith(
        'pip install "sentence-transformers[image]"'
    )
    flags = ImportError("needs einops: pip install --upgrade --quiet einops")
    assert explain_failure("x", flags).message.endswith("pip install einops")
    old = ImportError("cannot import name 'Qwen9VLModel' from 'transformers' (/x/__init__.py)")
    assert explain_failure("x", old).kind == "needs-newer-transformers"


def test_not_cached_while_offline_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    error = _refusal("nobody/no-such-model")
    assert error.kind == "offline"
    assert "not in the local Hugging Face cache" in str(error)


def _hub_error(cls: type, status: int, message: str) -> Exception:
    import httpx2

    request = httpx2.Request("GET", "https://huggingface.co/api/models/x")
    return cls(message, response=httpx2.Response(status, request=request))


def test_gated_and_unknown_hub_models_are_named():
    from huggingface_hub import errors

    gated = _hub_error(errors.GatedRepoError, 403, "Access to model google/gemma is restricted.")
    wrapped = OSError("You are trying to access a gated repo.")
    wrapped.__cause__ = gated
    problem = explain_failure("google/gemma", wrapped)
    assert problem.kind == "gated" and "HF_TOKEN" in problem.message
    missing = _hub_error(errors.RepositoryNotFoundError, 404, "Repository Not Found")
    assert explain_failure("nobody/typo", missing).kind == "not-on-hub"


def test_every_kind_is_listed():
    assert len(set(model_checks.PROBLEM_KINDS)) == len(model_checks.PROBLEM_KINDS)
    assert ModelLoadError("x").kind == "other"
