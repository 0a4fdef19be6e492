"""Hub cards for a published model (and additions to the exported dataset card).

A card is data plus a pure render function: :class:`ModelCardInfo` holds everything the card says,
:func:`render_model_card` turns it into Markdown with YAML front matter. Nothing here reads files,
the store or the network, so cards are easy to test and to preview in the UI.

The model card starts from the card sentence-transformers writes in ``save_pretrained`` (its
README.md) and adds mmdemo's sections: base model, training data, hyper-parameters, the
before/after metrics table, the attribute-binding probe and example images.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import yaml

MODEL_TAGS = ("mmdemo", "clip", "sentence-transformers", "hard-negatives")
DEFAULT_PIPELINE_TAG = "sentence-similarity"
ST_PLACEHOLDER_ID = "sentence_transformers_model_id"
GENERIC_TITLE = "# SentenceTransformer\n"
DIRECTIONS = {"t2i": "text → image", "i2t": "image → text"}
METRIC_ORDER = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10")
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_key)$", re.IGNORECASE)


@dataclass(frozen=True)
class CardExample:
    """An example image shipped with the model: its path inside the repo and its caption."""

    path: str
    caption: str


@dataclass(frozen=True)
class ModelCardInfo:
    """Everything the model card says."""

    repo_id: str
    run_name: str
    base_model: str
    """What the run started from: a Hub id or a local path."""
    base_model_id: str | None = None
    """The base model's Hub id when it has one (goes to the ``base_model`` metadata)."""
    st_card: str = ""
    """The README.md sentence-transformers wrote next to the weights ('' when there is none)."""
    collection: str | None = None
    dataset_repo: str | None = None
    data_counts: dict[str, int] = field(default_factory=dict)
    """Pairs per split and label counts of the training collection (display only)."""
    hyperparameters: dict[str, object] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    """``{"base": {"t2i": {...}, "i2t": {...}}, "finetuned": {...}, "probe": ...}``."""
    examples: tuple[CardExample, ...] = ()


# -- pieces ------------------------------------------------------------------------------------
def split_front_matter(text: str) -> tuple[dict, str]:
    """Split a card into its YAML front matter (a dict, empty when none) and its body."""
    if not text.startswith("---"):
        return {}, text
    end = text.find("\n---", 3)
    if end < 0:
        return {}, text
    try:
        data = yaml.safe_load(text[3:end]) or {}
    except yaml.YAMLError:
        return {}, text
    if not isinstance(data, dict):
        return {}, text
    body = text[end + 4 :]
    return data, body.lstrip("\n")


def join_front_matter(metadata: dict, body: str) -> str:
    front = yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).rstrip()
    return f"---\n{front}\n---\n\n{body.lstrip(chr(10))}"


def _cell(text: object) -> str:
    """Text safe inside a Markdown table cell or image alt text."""
    flat = " ".join(str(text).split())
    return flat.replace("|", "\\|").replace("[", "(").replace("]", ")")


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _cell(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _delta(before: object, after: object) -> str:
    """``after - before`` for scores; counts (two ints, e.g. ``queries``) get no delta."""
    numbers = (int, float)
    if not (isinstance(before, numbers) and isinstance(after, numbers)):
        return ""
    if isinstance(before, bool) or isinstance(after, bool):
        return ""
    if isinstance(before, int) and isinstance(after, int):
        return ""
    return f"{after - before:+.4f}"


def _ordered_metric_names(*tables: dict) -> list[str]:
    names = [m for m in METRIC_ORDER if any(m in t for t in tables)]
    for table in tables:
        names += [m for m in table if m not in names]
    return names


def metrics_table(metrics: dict) -> str:
    """Markdown table of base vs finetuned retrieval metrics per direction, with deltas."""
    base, tuned = metrics.get("base") or {}, metrics.get("finetuned") or {}
    rows = ["| direction | metric | base | finetuned | Δ |", "|---|---|---:|---:|---:|"]
    for key in [*DIRECTIONS, *(k for k in {**base, **tuned} if k not in DIRECTIONS)]:
        before, after = base.get(key), tuned.get(key)
        if not isinstance(before, dict) and not isinstance(after, dict):
            continue
        before, after = before or {}, after or {}
        label = DIRECTIONS.get(key, key)
        for name in _ordered_metric_names(before, after):
            b, a = before.get(name), after.get(name)
            rows.append(
                f"| {_cell(label)} | {_cell(name)} | {_num(b) if b is not None else '–'}"
                f" | {_num(a) if a is not None else '–'} | {_delta(b, a)} |"
            )
    return "\n".join(rows) if len(rows) > 2 else ""


def _flatten(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        flat: dict[str, object] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix or "value": value}


def probe_section(probe: object) -> str:
    """Markdown for the attribute-binding probe: a base/finetuned table when it has both."""
    if not probe:
        return ""
    if isinstance(probe, dict) and {"a", "b"} <= probe.keys():  # compare_binding's shape
        probe = {"base": probe["a"], "finetuned": probe["b"]}
    lines = []
    if isinstance(probe, dict) and isinstance(probe.get("description"), str):
        lines += [_cell(probe["description"]), ""]
    if isinstance(probe, dict) and ("base" in probe or "finetuned" in probe):
        before, after = _flatten(probe.get("base", {})), _flatten(probe.get("finetuned", {}))
        lines += ["| measure | base | finetuned | Δ |", "|---|---:|---:|---:|"]
        for name in dict.fromkeys([*before, *after]):
            b, a = before.get(name), after.get(name)
            lines.append(
                f"| {_cell(name)} | {_num(b) if b is not None else '–'}"
                f" | {_num(a) if a is not None else '–'} | {_delta(b, a)} |"
            )
    else:
        rest = {k: v for k, v in _flatten(probe).items() if k != "description"}
        lines += ["| measure | value |", "|---|---:|"]
        lines += [f"| {_cell(k)} | {_num(v)} |" for k, v in rest.items()]
    return "\n".join(lines)


def public_hyperparameters(config: dict) -> dict[str, object]:
    """The scalar (or short list) settings of a run, minus anything that looks like a secret."""
    kept: dict[str, object] = {}
    for key, value in config.items():
        if _SECRET_KEY.search(str(key)):
            continue
        if isinstance(value, str | int | float | bool) or value is None:
            kept[str(key)] = value
        elif isinstance(value, list | tuple) and len(value) <= 8:
            kept[str(key)] = json.dumps(list(value), ensure_ascii=False, default=str)
    return kept


def _hyperparameter_table(params: dict[str, object]) -> str:
    rows = ["| setting | value |", "|---|---|"]
    rows += [f"| `{_cell(k)}` | {_cell(v)} |" for k, v in params.items()]
    return "\n".join(rows)


def _hub_link(repo_id: str, kind: str = "model") -> str:
    prefix = "datasets/" if kind == "dataset" else ""
    return f"[{repo_id}](https://huggingface.co/{prefix}{repo_id})"


# -- the model card ----------------------------------------------------------------------------
def _model_metadata(info: ModelCardInfo, st_meta: dict) -> dict:
    meta = dict(st_meta)
    meta.setdefault("library_name", "sentence-transformers")
    meta["pipeline_tag"] = st_meta.get("pipeline_tag") or DEFAULT_PIPELINE_TAG
    tags = [t for t in (meta.get("tags") or []) if isinstance(t, str)]
    meta["tags"] = tags + [t for t in MODEL_TAGS if t not in tags]
    if info.base_model_id:
        meta["base_model"] = info.base_model_id
    if info.dataset_repo:
        known = [d for d in (meta.get("datasets") or []) if isinstance(d, str)]
        meta["datasets"] = known + [info.dataset_repo] * (info.dataset_repo not in known)
    return meta


def _mmdemo_sections(info: ModelCardInfo) -> str:
    base = _hub_link(info.base_model_id) if info.base_model_id else f"`{_cell(info.base_model)}`"
    out = [
        "## Finetuned with mmdemo",
        "",
        f"This model was finetuned from {base} on hand-curated text–image pairs with"
        f" hand-labeled hard negatives, using mmdemo (run `{_cell(info.run_name)}`).",
        "It embeds images and captions into the same space: encode one modality per call.",
        "",
        "```python",
        "from PIL import Image",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{info.repo_id}")',
        'images = model.encode([Image.open("photo.jpg")])',
        'captions = model.encode(["a red bicycle leaning on a wall"])',
        "print(model.similarity(captions, images))",
        "```",
        "",
        "### Base model",
        "",
        f"- {base}",
        "",
        "### Training data",
        "",
    ]
    if info.dataset_repo:
        out.append(f"- Dataset: {_hub_link(info.dataset_repo, 'dataset')}")
    if info.collection:
        out.append(f"- mmdemo collection: “{_cell(info.collection)}”")
    out += [f"- {_cell(k)}: {_num(v)}" for k, v in info.data_counts.items()]
    if not (info.dataset_repo or info.collection or info.data_counts):
        out.append("- Not recorded.")
    if info.hyperparameters:
        out += ["", "### Hyper-parameters", "", _hyperparameter_table(info.hyperparameters)]
    table = metrics_table(info.metrics)
    if table:
        out += [
            "",
            "### Evaluation: base vs finetuned",
            "",
            "Retrieval on the held-out split of the collection (text → image: captions as"
            " queries, images as the corpus; image → text the other way round).",
            "",
            table,
        ]
    probe = probe_section(info.metrics.get("probe"))
    if probe:
        out += ["", "### Attribute-binding probe", "", probe]
    if info.examples:
        out += ["", "### Example images from the training data", ""]
        out += ["| image | caption |", "|---|---|"]
        out += [f"| ![{_cell(e.caption)}]({e.path}) | {_cell(e.caption)} |" for e in info.examples]
    return "\n".join(out) + "\n"


def render_model_card(info: ModelCardInfo) -> str:
    """The model card: sentence-transformers' card with mmdemo's sections and metadata added."""
    st_meta, body = split_front_matter(info.st_card or "")
    body = body.replace(ST_PLACEHOLDER_ID, info.repo_id)
    if body.startswith(GENERIC_TITLE):
        body = f"# {info.repo_id.split('/')[-1]}" + body[len(GENERIC_TITLE) - 1 :]
    if info.base_model_id:
        body = re.sub(
            r"<!-- - \*\*Base model:\*\* \[Unknown\]\([^)]*\) -->",
            f"- **Base model:** {_hub_link(info.base_model_id)}",
            body,
        )
    if info.dataset_repo:
        body = re.sub(
            r"<!-- - \*\*Training Dataset:\*\* Unknown -->",
            f"- **Training Dataset:** {_hub_link(info.dataset_repo, 'dataset')}",
            body,
        )
    ours = _mmdemo_sections(info)
    marker = body.find("\n## Model Details")
    if not body.strip():
        body = f"# {info.repo_id.split('/')[-1]}\n\n{ours}"
    elif marker >= 0:
        body = f"{body[:marker].rstrip()}\n\n{ours}{body[marker:]}"
    else:
        body = f"{body.rstrip()}\n\n{ours}"
    return join_front_matter(_model_metadata(info, st_meta), body)


# -- the dataset card --------------------------------------------------------------------------
EXPORT_PLACEHOLDER_ID = "path/to/this/folder"


def finish_dataset_card(
    card: str, repo_id: str, authors: list[str], model_repo: str | None = None
) -> str:
    """Add what only the publisher knows to an exported dataset card.

    The repo id replaces the export's placeholder in the usage snippet, the authors get a section,
    and a model trained on the data is linked.
    """
    card = card.replace(EXPORT_PLACEHOLDER_ID, repo_id)
    extra = ["", "## Authors", ""]
    names = sorted({a.strip() for a in authors if a and a.strip()})
    extra += [f"- {_cell(name)}" for name in names] or ["- Not recorded."]
    if model_repo:
        extra += ["", "## Models trained on this data", "", f"- {_hub_link(model_repo)}"]
    block = "\n".join(extra) + "\n"
    marker = card.find("\n## License")
    if marker >= 0:
        return card[:marker].rstrip("\n") + "\n" + block + card[marker:]
    return card.rstrip("\n") + "\n" + block
