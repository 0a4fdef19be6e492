"""What a model upload holds, prepared in a staging folder: the model's files, the names and facts
its card states (the base model by Hub id or description, the collection's counts, eval-split
examples) and the evaluation measured on the published images.
:func:`mmdemo.hub.publish.publish_model` uploads the folder :func:`stage_model` returns.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdemo.data.images import thumb_path, train_path
from mmdemo.data.store import Store, StoreError
from mmdemo.hub.cards import (
    CardEvaluation,
    CardExample,
    ModelCardInfo,
    public_hyperparameters,
    render_model_card,
    scrub_paths,
)
from mmdemo.hub.client import PublishError, check_repo_id
from mmdemo.settings import Settings
from mmdemo.training.rounds import config_lineage

log = logging.getLogger(__name__)

ModelLoader = Callable[[str], Any]
"""Loads a model by its spec (a Hub id or a folder); the app passes its shared model cache."""
EXAMPLE_IMAGES = 4
# Files a training run keeps beside the model that are not part of the model.
_RUN_ARTIFACTS = {"metrics.json", "log.jsonl", "README.md", "status.json", "run.json"}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def find_model_dir(run_dir: Path) -> Path:
    """The saved sentence-transformers folder of a run: the run folder or a subfolder of it."""
    run_dir = Path(run_dir)
    if (run_dir / "modules.json").is_file():
        return run_dir
    if (run_dir / "model" / "modules.json").is_file():
        return run_dir / "model"
    found = [
        p.parent
        for p in sorted(run_dir.glob("*/modules.json")) + sorted(run_dir.glob("*/*/modules.json"))
        if not any(part.startswith(("checkpoint", ".")) for part in p.relative_to(run_dir).parts)
    ]
    if not found:
        raise PublishError(
            f"The run folder {run_dir} holds no saved model (no modules.json): has it finished?",
            retryable=False,
        )
    return found[0]


def _model_files(model_dir: Path, run_dir: Path) -> list[Path]:
    """Files of the model (relative to ``model_dir``), without the card and run artifacts."""
    if model_dir.resolve() == run_dir.resolve():
        modules = json.loads((model_dir / "modules.json").read_text(encoding="utf-8"))
        subdirs = {m.get("path", "") for m in modules if isinstance(m, dict)} - {""}
        files = [p for p in model_dir.iterdir() if p.is_file() and p.name not in _RUN_ARTIFACTS]
        for sub in sorted(subdirs):
            files += [p for p in (model_dir / sub).rglob("*") if p.is_file()]
    else:
        files = [p for p in model_dir.rglob("*") if p.is_file()]
        files = [p for p in files if p.relative_to(model_dir).as_posix() != "README.md"]
    rel = [p.relative_to(model_dir) for p in files]
    return [
        r
        for r in rel
        if not any(part.startswith((".", "checkpoint-")) for part in r.parts)
        and not r.name.endswith((".lock", ".tmp", ".partial"))
    ]


def hub_model_id(base_model: str) -> str | None:
    """The Hub id of a base model given as an id or a Hub-cache snapshot path, else ``None``."""
    cache = re.search(r"models--([^/\\]+?)--([^/\\]+)", base_model or "")
    if cache:
        return f"{cache.group(1)}/{cache.group(2)}"
    if not base_model or Path(base_model).expanduser().exists():
        return None
    try:
        return check_repo_id(base_model)
    except PublishError:
        return None


@dataclass(frozen=True)
class BaseModelName:
    """How a card names a run's base model: never by a server path."""

    label: str
    hub_id: str | None
    is_tiny: bool
    tiny_family: str = "CLIP"
    """The built-in tiny model's family (CLIP, SigLIP, SigLIP 2), when ``is_tiny``."""


def describe_base_model(base_model: str) -> BaseModelName:
    """The Hub id of the base model, or what it is when it has none (a built-in tiny CLIP,
    SigLIP or SigLIP 2, or a local folder)."""
    from mmdemo.retrieval.models import tiny_family

    hub_id = hub_model_id(base_model)
    if hub_id:
        return BaseModelName(hub_id, hub_id, False)
    name = Path(base_model or "").name
    tiny = tiny_family(name) if name != "tiny" else None  # a folder is named by its dirname
    if tiny is not None:
        return BaseModelName(f"mmdemo's built-in tiny {tiny.title}", None, True, tiny.title)
    return BaseModelName(f"a local model folder named “{name or 'unknown'}”", None, False)


def _run_json(text: str | None, fallback: Path | None) -> dict:
    from_file = fallback.read_text(encoding="utf-8") if fallback and fallback.is_file() else None
    for raw in (text, from_file):
        if not raw:
            continue
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if isinstance(data, dict) and data:
            return data
    return {}


def _example_pairs(store: Store, settings: Settings, collection_id: int) -> list[tuple[Path, str]]:
    """Up to :data:`EXAMPLE_IMAGES` eval pairs (their 224-pixel copies) for the card."""
    picked: list[tuple[Path, str]] = []
    for pair in store.list_pairs(collection_id, split="eval", limit=EXAMPLE_IMAGES * 2):
        for image in (
            train_path(settings.images_dir, pair.image_sha256),
            thumb_path(settings.images_dir, pair.image_sha256),
        ):
            if image.is_file() and len(picked) < EXAMPLE_IMAGES:
                picked.append((image, pair.caption))
                break
    return picked


def _collection_facts(store: Store, collection_id: int | None) -> tuple[str | None, dict]:
    if collection_id is None:
        return None, {}
    try:
        name = store.collection_by_id(collection_id).name
    except StoreError:
        return None, {}
    stats = store.collection_stats(collection_id)
    counts = {f"pairs ({split})": n for split, n in stats.splits.items() if n}
    counts["hand-labeled hard negatives"] = stats.negatives
    counts["also-positive labels"] = stats.also_positives
    return name, counts


def _default_loader(spec: str) -> Any:
    from mmdemo.retrieval.models import load_model

    return load_model(spec)


def _evaluate_for_card(
    store: Store,
    settings: Settings,
    collection_id: int | None,
    base_model: str,
    staged_model: Path,
    load_model: ModelLoader | None,
) -> CardEvaluation | None:
    """Both models on the eval split's published images (``None`` when there is no eval split).

    The finetuned model is loaded from the staging folder, i.e. exactly the files uploaded.
    """
    from mmdemo.retrieval.evaluation import ir_evaluators, ir_metrics, published_pairs
    from mmdemo.retrieval.models import load_model as load_fresh

    if collection_id is None:
        return None
    pairs = published_pairs(store, settings, collection_id, "eval")
    if not pairs:
        return None
    evaluators = ir_evaluators(pairs)
    finetuned = ir_metrics(load_fresh(str(staged_model), fresh=True), evaluators)
    base, note = None, ""
    try:
        base = ir_metrics((load_model or _default_loader)(base_model), evaluators)
    except Exception as exc:  # noqa: BLE001 - the card says why the column is missing
        note = f"the base model could not be loaded when publishing ({exc})"
        log.warning("Card evaluation without the base model: %s", exc)
    return CardEvaluation("eval", len(pairs), finetuned, base, note)


def _server_roots(settings: Settings, *paths: object) -> list[str]:
    """Folders of this machine whose paths must not reach a published card."""
    roots = {str(settings.home), tempfile.gettempdir(), str(Path.home())}
    for path in (settings.home, *paths):
        if path and Path(str(path)).is_absolute():
            roots |= {str(path), str(Path(str(path)).resolve())}
    return sorted(roots)


def stage_model(
    store: Store,
    settings: Settings,
    run_name: str,
    repo_id: str,
    dataset_repo: str | None,
    load_model: ModelLoader | None = None,
    report: Callable[[int, str], None] | None = None,
) -> Path:
    """Write the model folder to upload into a fresh staging folder and return it."""
    try:
        run = store.get_run(run_name)
    except StoreError as exc:
        raise PublishError(str(exc), retryable=False) from None
    if run.status != "finished":
        raise PublishError(
            f"Run {run_name!r} is {run.status}; only a finished run can be published.",
            retryable=False,
        )
    run_dir = (
        Path(run.path) if run.path and Path(run.path).is_dir() else settings.runs_dir / run_name
    )
    model_dir = find_model_dir(run_dir)
    separate = model_dir.resolve() != run_dir.resolve()
    config = _run_json(run.config_json, run_dir / "config.json" if separate else None)
    metrics = _run_json(run.metrics_json, run_dir / "metrics.json")
    st_card = model_dir / "README.md"
    collection, counts = _collection_facts(store, run.collection_id)
    base = describe_base_model(run.base_model)
    settings.ensure_dirs()
    staging = Path(tempfile.mkdtemp(prefix="publish-model-", dir=settings.tmp_dir))
    try:
        for rel in _model_files(model_dir, run_dir):
            _link_or_copy(model_dir / rel, staging / rel)
        examples = []
        if run.collection_id is not None:
            for index, (image, caption) in enumerate(
                _example_pairs(store, settings, run.collection_id), start=1
            ):
                rel = f"assets/example-{index}.jpg"
                _link_or_copy(image, staging / rel)
                examples.append(CardExample(rel, caption))
        if report is not None:
            report(2, "measuring both models on the eval split's published images")
        evaluation = _evaluate_for_card(
            store, settings, run.collection_id, run.base_model, staging, load_model
        )
        hyperparameters = public_hyperparameters(config)
        if "base_model" in hyperparameters:
            hyperparameters["base_model"] = base.label
        info = ModelCardInfo(
            repo_id=repo_id,
            run_name=run_name,
            base_model=base.label,
            base_model_id=base.hub_id,
            st_card=st_card.read_text(encoding="utf-8") if st_card.is_file() else "",
            collection=collection,
            dataset_repo=dataset_repo,
            data_counts=counts,
            hyperparameters=hyperparameters,
            metrics=metrics,
            examples=tuple(examples),
            evaluation=evaluation,
            is_tiny_base=base.is_tiny,
            tiny_base=base.tiny_family,
            lineage=config_lineage(config),
        )
        roots = _server_roots(settings, run_dir, model_dir, run.base_model, staging)
        card = scrub_paths(render_model_card(info), roots)
        (staging / "README.md").write_text(card, encoding="utf-8")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging
