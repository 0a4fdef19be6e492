"""Why a base model cannot be used for text–image retrieval, in words a person can act on.

A model the app can use is a sentence-transformers model that embeds both text and images into one
space. Everything else gets one :class:`LoadProblem`: a ``kind`` (one of :data:`PROBLEM_KINDS`, for
code and tests) and a ``message`` (for people: what is wrong and what to do).

- :func:`inspect_folder` finds what is missing in a local folder *before* loading it: things
  sentence-transformers does not refuse but silently degrades (``modules.json`` without
  ``sentence_bert_config.json`` loads text-only).
- :func:`explain_failure` turns an exception raised while loading into a reason: a missing Python
  package, an architecture the installed transformers does not know, custom code, a gated, unknown
  or unreachable Hub model, missing files.
- :func:`modality_problem` explains a model that loaded but cannot embed both modalities, and
  :func:`tokenizer_problem` a local folder that loaded without its tokenizer files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOT_A_MODEL_FOLDER = "not-a-model-folder"
MISSING_FILES = "missing-files"
NOT_MULTIMODAL = "not-multimodal"
MISSING_PACKAGE = "missing-package"
NEWER_TRANSFORMERS = "needs-newer-transformers"
REMOTE_CODE = "remote-code"
GATED = "gated"
NOT_ON_HUB = "not-on-hub"
OFFLINE = "offline"
DIFFERENT_SPACES = "different-spaces"
OTHER = "other"
PROBLEM_KINDS = (
    NOT_A_MODEL_FOLDER,
    MISSING_FILES,
    NOT_MULTIMODAL,
    MISSING_PACKAGE,
    NEWER_TRANSFORMERS,
    REMOTE_CODE,
    GATED,
    NOT_ON_HUB,
    OFFLINE,
    DIFFERENT_SPACES,
    OTHER,
)
"""Every ``LoadProblem.kind``."""

_MODEL_MARKERS = ("modules.json", "config.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)
_IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_PIP_NAMES = {
    "sentencepiece": "sentencepiece",
    "protobuf": "protobuf",
    "google": "protobuf",
    "pil": "pillow",
    "pillow": "pillow",
    "vision": "pillow",
    "qwen_vl_utils": "qwen-vl-utils",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
}
"""Import or library names (as transformers names them, lower-cased) → the package to install."""
_PACKAGE_NOTES = {
    "sentencepiece": "SigLIP (1) and other T5-style tokenizers are SentencePiece models",
    "protobuf": "transformers reads SentencePiece tokenizer files with it",
}


@dataclass(frozen=True)
class LoadProblem:
    """Why a model cannot be used."""

    kind: str
    """One of :data:`PROBLEM_KINDS`."""
    message: str
    """One or two sentences for people: what is wrong and what to do."""


# -- local folders ---------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def looks_like_model_folder(path: Path) -> bool:
    """A folder with a ``config.json`` or ``modules.json`` (what every model folder has)."""
    return path.is_dir() and any((path / marker).is_file() for marker in _MODEL_MARKERS)


def _hf_model_folders(folder: Path) -> list[tuple[Path, str]] | LoadProblem:
    """The folders holding a transformers model, each with its module type ('' for a plain folder).

    A sentence-transformers folder lists its modules in ``modules.json``; a module whose folder has
    a transformers ``config.json`` (with a ``model_type``: the ``Transformer`` module, the old
    ``CLIPModel`` module; not ``Pooling``'s own config) holds one.
    """
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return [(folder, "")]
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        return LoadProblem(MISSING_FILES, f"{folder}: modules.json is not a valid module list.")
    found: list[tuple[Path, str]] = []
    for entry in modules:
        if not isinstance(entry, dict):
            return LoadProblem(MISSING_FILES, f"{folder}: modules.json is not a valid module list.")
        sub = folder / str(entry.get("path") or "")
        if not sub.is_dir():
            return LoadProblem(
                MISSING_FILES,
                f"{folder} is incomplete: modules.json names the module folder "
                f"{entry.get('path')!r}, which is missing. Copy the whole model folder.",
            )
        config = _read_json(sub / "config.json")
        if isinstance(config, dict) and "model_type" in config:
            found.append((sub, str(entry.get("type") or "")))
    if not found:
        return LoadProblem(
            MISSING_FILES,
            f"{folder} is incomplete: none of the modules in modules.json has a transformers "
            "config.json with a model_type (the model itself is missing).",
        )
    return found


def inspect_folder(folder: Path) -> LoadProblem | None:
    """What is missing in a local model folder, or ``None`` when its files look complete.

    Checked without loading anything: the folder is a model folder; every module folder that
    ``modules.json`` names exists; a ``Transformer`` module has its ``sentence_bert_config.json``
    (without it sentence-transformers loads the model **text-only**); the transformers model has
    weights. (Tokenizer files: :func:`tokenizer_problem`, after loading.)
    """
    if not looks_like_model_folder(folder):
        return LoadProblem(
            NOT_A_MODEL_FOLDER,
            f"{folder} is not a model folder (it has no config.json or modules.json).",
        )
    models = _hf_model_folders(folder)
    if isinstance(models, LoadProblem):
        return models
    for sub, module_type in models:
        if (
            module_type.endswith(".Transformer")
            and not (sub / "sentence_bert_config.json").is_file()
        ):
            return LoadProblem(
                MISSING_FILES,
                f"{sub} has no sentence_bert_config.json: sentence-transformers then loads the "
                "model text-only (it does not accept images). Save the model with "
                "sentence-transformers "
                "(SentenceTransformer(...).save_pretrained(folder)) so the file is written.",
            )
        names = {p.name for p in sub.iterdir()}
        if not any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
            return LoadProblem(
                MISSING_FILES,
                f"{sub} has no weights (model.safetensors or pytorch_model.bin). Copy the whole "
                "model folder.",
            )
    return None


def tokenizer_problem(folder: Path) -> LoadProblem | None:
    """A model folder that loaded with text input but has no tokenizer files, or ``None``.

    transformers then builds an empty tokenizer (only its special tokens) without a word: every
    caption would embed the same. Checked after loading, so an image-only model (no tokenizer,
    rightly) is explained as not multimodal instead.
    """
    models = _hf_model_folders(folder)
    if isinstance(models, LoadProblem):
        return models
    for sub, _ in models:
        if not {p.name for p in sub.iterdir()} & set(_TOKENIZER_FILES):
            return LoadProblem(
                MISSING_FILES,
                f"{sub} has no tokenizer files ({', '.join(_TOKENIZER_FILES[:3])}, …): it loads "
                "with an empty tokenizer that cannot read captions. Copy the whole model folder.",
            )
    return None


# -- exceptions raised while loading ---------------------------------------------------------
def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and the ones it was raised from, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _missing_package(errors: list[BaseException]) -> str | None:
    """The package an ImportError asks for, named as ``pip install`` wants it."""
    for error in errors:
        if not isinstance(error, ImportError):
            continue
        text = str(error)
        if "cannot import name" in text:
            continue  # a name missing from an installed package: a version problem, not a package
        found = re.search(r"requires the (\S+?) librar", text)
        if found:
            name = found.group(1).strip("`'\"").lower()
            return _PIP_NAMES.get(name, name)
        found = re.search(
            r"pip install (?:-{1,2}\w+ )*[\"'`]?([A-Za-z0-9_.\[\]][\w.\-\[\]]*)", text
        )
        if found:
            return found.group(1)
        module = getattr(error, "name", None)
        if module and isinstance(error, ModuleNotFoundError):
            top = module.split(".")[0]
            return _PIP_NAMES.get(top.lower(), top.replace("_", "-"))
    return None


def _hub_problem(spec: str, errors: list[BaseException]) -> LoadProblem | None:
    from huggingface_hub import errors as hub_errors

    text = " ".join(str(e) for e in errors)
    if any(isinstance(e, hub_errors.GatedRepoError) for e in errors) or "gated repo" in text:
        return LoadProblem(
            GATED,
            f"{spec} is gated on the Hub: accept its terms on https://huggingface.co/{spec} and "
            "log in (HF_TOKEN or `hf auth login`) with the account that accepted them.",
        )
    offline = (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled)
    if any(isinstance(e, offline) for e in errors) or "couldn't connect to" in text:
        return LoadProblem(
            OFFLINE,
            f"{spec} is not in the local Hugging Face cache and the Hub cannot be reached "
            "(offline mode or no network). Download it once on a machine with Hub access, or "
            "name a local model folder.",
        )
    not_found = (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError)
    if any(isinstance(e, not_found) for e in errors) or "not a valid model identifier" in text:
        return LoadProblem(
            NOT_ON_HUB,
            f"{spec} is neither a local folder nor a model on the Hub (check the spelling; a "
            "private model needs a login with access to it).",
        )
    return None


def explain_failure(spec: str, exc: BaseException) -> LoadProblem:
    """The reason behind an exception raised while loading ``spec`` (a Hub id or local folder)."""
    import transformers

    errors = _chain(exc)
    text = " ".join(str(e) for e in errors)
    package = _missing_package(errors)
    if package:
        note = _PACKAGE_NOTES.get(package)
        command = f'"{package}"' if "[" in package else package  # a shell would expand [ ]
        return LoadProblem(
            MISSING_PACKAGE,
            f"{spec} needs the Python package {package}, which is not installed"
            + (f" ({note})" if note else "")
            + f": pip install {command}",
        )
    model_type = re.search(r"has model type `([^`]+)` but Transformers does not recognize", text)
    if model_type:
        return LoadProblem(
            NEWER_TRANSFORMERS,
            f"{spec} is a {model_type.group(1)!r} model, an architecture the installed "
            f"transformers {transformers.__version__} does not know: it needs a newer "
            "transformers (pip install -U transformers).",
        )
    old_library = re.search(r"cannot import name '([^']+)' from '([\w.]+)'", text)
    if old_library:
        library = old_library.group(2).split(".")[0]
        return LoadProblem(
            NEWER_TRANSFORMERS if library == "transformers" else OTHER,
            f"{spec} needs {old_library.group(1)} from {library}, which the installed version "
            f"does not have: it needs a newer {library} (pip install -U {library}).",
        )
    if "trust_remote_code" in text or "contains custom code" in text:
        return LoadProblem(
            REMOTE_CODE,
            f"{spec} runs custom code from its repository (trust_remote_code); mmdemo does not "
            "run downloaded code. Choose a model that sentence-transformers loads without it.",
        )
    hub = _hub_problem(spec, errors)
    if hub is not None:
        return hub
    if "Should have a `model_type` key" in text:
        return LoadProblem(
            MISSING_FILES,
            f"{spec} has no usable config.json (no model_type): copy the whole model folder.",
        )
    if "Can't load image processor" in text or "preprocessor_config.json" in text:
        return LoadProblem(
            MISSING_FILES,
            f"{spec} has no image processor settings ({' or '.join(_IMAGE_PROCESSOR_FILES)}), "
            "so it cannot read images. Copy the whole model folder.",
        )
    missing = re.search(
        r"no file named ([\w.\-]+)|does not appear to have a file named ([\w.\-]+)", text
    )
    if missing:
        name = (missing.group(1) or missing.group(2)).rstrip(".")
        return LoadProblem(
            MISSING_FILES,
            f"{spec} is missing {name}. Copy the whole model folder (for a Hub model: the "
            "repository lacks it).",
        )
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return LoadProblem(OTHER, f"Could not load the model {spec!r}: {first}")


# -- a model that loaded ---------------------------------------------------------------------
def modality_problem(model: Any, folder: Path | None = None) -> LoadProblem | None:
    """Why a loaded model cannot embed both images and text, or ``None`` when it can.

    ``folder`` (a local model folder) lets the reason name the missing file when the model is a
    vision-language architecture without its image processor settings.
    """
    modalities = [str(m) for m in (getattr(model, "modalities", None) or [])]
    supports = getattr(model, "supports", None)
    has_image = bool(supports("image")) if supports else "image" in modalities
    has_text = bool(supports("text")) if supports else "text" in modalities
    if has_image and has_text:
        return None
    module = model[0] if len(model) else None
    config = getattr(getattr(module, "model", None), "config", None)
    model_type = getattr(config, "model_type", None) or "unknown"
    listed = ", ".join(modalities) or "none"
    if not has_image:
        vision = folder is not None and getattr(config, "vision_config", None) is not None
        if vision and not any((folder / n).is_file() for n in _IMAGE_PROCESSOR_FILES):
            return LoadProblem(
                MISSING_FILES,
                f"{folder} holds a {model_type} model with a vision tower but no image "
                f"processor settings ({' or '.join(_IMAGE_PROCESSOR_FILES)}), so it loads "
                "text-only. Copy the whole model folder.",
            )
        return LoadProblem(
            NOT_MULTIMODAL,
            f"This model does not accept images (a {model_type} model; its modules take: "
            f"{listed}), so it cannot embed text–image pairs. Choose a CLIP, SigLIP or "
            "vision-language embedding model (see the README's 'Base models known to work').",
        )
    return LoadProblem(
        NOT_MULTIMODAL,
        f"This model does not accept text (a {model_type} model; its modules take: {listed}), "
        "so it cannot embed captions.",
    )
