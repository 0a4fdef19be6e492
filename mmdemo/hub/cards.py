"""Hub cards for a published model (and additions to the exported dataset card).

A card is data plus a pure render function: :class:`ModelCardInfo` holds everything the card says,
:func:`render_model_card` turns it into Markdown with YAML front matter. Nothing here reads files,
the store or the network, so cards are easy to test and to preview in the UI.

The model card starts from the card sentence-transformers writes in ``save_pretrained`` (its
README.md) and adds mmdemo's sections: a usage snippet that runs as written once pushed, base
model, training data, hyper-parameters, the evaluation (how it was measured, the before/after
table and a snippet that reproduces it from the published dataset), the attribute-binding probe
and example images from the eval split. Nothing in a card may name a file on the server:
:func:`scrub_paths` replaces what sentence-transformers' card says about local files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import yaml

from mmdemo.data.agreement import Agreement
from mmdemo.text import md

MODEL_TAGS = ("mmdemo", "clip", "sentence-transformers", "hard-negatives")
DEFAULT_PIPELINE_TAG = "sentence-similarity"
ST_PLACEHOLDER_ID = "sentence_transformers_model_id"
GENERIC_TITLE = "# SentenceTransformer\n"
DIRECTIONS = {"t2i": "text → image", "i2t": "image → text"}
METRIC_ORDER = (
    "accuracy@1",
    "accuracy@5",
    "accuracy@10",
    "recall@1",
    "recall@5",
    "recall@10",
    "mrr@10",
    "ndcg@10",
)
TINY_BASE_DETAILS: dict[str, str] = {
    "CLIP": "a randomly initialised CLIP (64-dimensional embeddings, 32×32-pixel images, a"
    " byte-level tokenizer)",
    "SigLIP": "a randomly initialised SigLIP (64-dimensional embeddings, 32×32-pixel images, a"
    " SigLIP-style word tokenizer, text padded to 64 tokens as SigLIP was trained)",
    "SigLIP 2": "a randomly initialised SigLIP 2 (64-dimensional embeddings, images cut into at"
    " most 64 patches of 4×4 pixels at their own aspect ratio, SigLIP 2's Gemma-style tokenizer,"
    " text padded to 64 tokens as SigLIP 2 was trained)",
}
"""What each built-in tiny model is, by family (``TinyFamily.title``)."""


def tiny_base_description(family: str = "CLIP") -> str:
    """The card's sentence on a built-in tiny base model of ``family`` (CLIP, SigLIP, SigLIP 2)."""
    details = TINY_BASE_DETAILS.get(family, f"a randomly initialised {family}")
    return (
        f"mmdemo's built-in tiny {family}: {details} that mmdemo builds offline from a fixed seed"
        " for tests and machines without Hub access. It is not on the Hub, and a model finetuned"
        " from it is a demonstration, not a useful retrieval model."
    )


TINY_BASE_DESCRIPTION = tiny_base_description("CLIP")
EVAL_KEYS_NOTE = (
    "accuracy@k is the share of queries with a relevant item among the top k (the app calls it"
    " recall@k); MRR@10 is the mean reciprocal rank of the first relevant item; NDCG@10 uses"
    " binary relevance."
)
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_key)$", re.IGNORECASE)


@dataclass(frozen=True)
class CardExample:
    """An example image shipped with the model: its path inside the repo and its caption."""

    path: str
    caption: str


@dataclass(frozen=True)
class CardEvaluation:
    """Retrieval metrics measured when publishing, on exactly the images the dataset publishes.

    ``base`` and ``finetuned`` are ``{"t2i": {...}, "i2t": {...}}`` with the keys of
    :data:`mmdemo.retrieval.evaluation.IR_METRIC_KEYS` plus ``queries``; ``base`` is ``None`` when
    the base
    model could not be loaded, and ``base_note`` says why.
    """

    split: str
    pairs: int
    finetuned: dict
    base: dict | None = None
    base_note: str = ""


@dataclass(frozen=True)
class ModelCardInfo:
    """Everything the model card says."""

    repo_id: str
    run_name: str
    base_model: str
    """What the run started from, for people: a Hub id or a short description (never a path)."""
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
    """The run's own metrics from the end of training: ``{"base": {"t2i": {...}, "i2t": {...}},
    "finetuned": {...}, "probe": ...}`` (the table falls back to them without ``evaluation``)."""
    examples: tuple[CardExample, ...] = ()
    """Images of the eval split shipped in the repo (``assets/…``)."""
    evaluation: CardEvaluation | None = None
    is_tiny_base: bool = False
    tiny_base: str = "CLIP"
    """Which built-in tiny model the base is, when ``is_tiny_base`` (CLIP, SigLIP, SigLIP 2)."""
    lineage: tuple[str, ...] = ()
    """The mmdemo runs this model continued from, first round first (empty: from the base)."""


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
    """User text as text on the Hub: one line, Markdown and HTML escaped (table cells and image
    alt text included)."""
    return md(" ".join(str(text).split()))


def _code(text: object) -> str:
    """Text as an inline code span (literal on the Hub, whatever it holds)."""
    flat = " ".join(str(text).split())
    longest = max((len(run) for run in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


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
    for key, value in params.items():
        shown = str(value) if isinstance(value, int | float) or value is None else _cell(value)
        rows.append(f"| {_code(key).replace('|', chr(92) + '|')} | {shown} |")
    return "\n".join(rows)


def _hub_link(repo_id: str, kind: str = "model") -> str:
    prefix = "datasets/" if kind == "dataset" else ""
    return f"[{repo_id}](https://huggingface.co/{prefix}{repo_id})"


# -- the model card ----------------------------------------------------------------------------
def _code_block(code: str, language: str = "python") -> str:
    """A fenced code block whose fence is longer than any backtick run inside (user captions)."""
    longest = max((len(run) for run in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code.rstrip()}\n{fence}"


def _literal(text: str) -> str:
    """A Python string literal for ``text`` (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def usage_snippet(repo_id: str, examples: tuple[CardExample, ...]) -> str:
    """Python that loads the model from the Hub and scores captions against images.

    With examples it downloads the repo's own example images, so it runs as written once the
    model is pushed; text and images go to separate ``encode`` calls (CLIP refuses a mix).
    """
    lines = [
        "from huggingface_hub import hf_hub_download",
        "from PIL import Image",
        "from sentence_transformers import SentenceTransformer",
        "",
        f"model = SentenceTransformer({_literal(repo_id)})",
    ]
    if examples:
        lines += ["captions = [", *(f"    {_literal(e.caption)}," for e in examples), "]"]
        lines += ["files = [", *(f"    {_literal(e.path)}," for e in examples), "]"]
        lines.append(
            f"images = [Image.open(hf_hub_download({_literal(repo_id)}, name)) for name in files]"
        )
    else:
        lines += [
            'captions = ["a red square", "a blue square"]',
            'images = [Image.new("RGB", (224, 224), "red"), Image.new("RGB", (224, 224), "blue")]',
        ]
    lines += [
        "",
        "caption_embeddings = model.encode(captions)  # one modality per call",
        "image_embeddings = model.encode(images)",
        "similarities = model.similarity(caption_embeddings, image_embeddings)",
        "print(similarities)  # row i: caption i against every image",
    ]
    return "\n".join(lines)


def evaluation_snippet(repo_id: str, dataset: str, split: str) -> str:
    """Python that recomputes the card's evaluation table from the published dataset.

    It builds the same two ``InformationRetrievalEvaluator``s as
    :func:`mmdemo.retrieval.evaluation.ir_evaluators`; a test runs it against the published files.
    """
    return "\n".join(
        [
            "from datasets import load_dataset",
            "from sentence_transformers import SentenceTransformer",
            "from sentence_transformers.evaluation import InformationRetrievalEvaluator",
            "",
            f"model = SentenceTransformer({_literal(repo_id)})",
            f'pairs = load_dataset({_literal(dataset)}, "pairs", split={_literal(split)})',
            "",
            "captions, images, t2i, i2t = {}, {}, {}, {}",
            "for row in pairs:",
            '    caption, image_id = row["caption"], row["image_sha256"]',
            "    captions[caption] = caption",
            '    images.setdefault(image_id, row["image"])',
            "    t2i.setdefault(caption, set()).add(image_id)  # identical captions share images",
            "    i2t.setdefault(image_id, set()).add(caption)",
            "",
            'for name, queries, corpus, relevant in [("t2i", captions, images, t2i),'
            ' ("i2t", images, captions, i2t)]:',
            "    evaluator = InformationRetrievalEvaluator(",
            "        queries, corpus, relevant, name=name,",
            "        accuracy_at_k=[1, 5, 10], precision_recall_at_k=[10], write_csv=False,",
            "    )",
            '    prefix = f"{name}_{model.similarity_fn_name}_"',
            "    results = evaluator(model)",
            "    print(name, {k.removeprefix(prefix): round(v, 4) for k, v in results.items()})",
        ]
    )


_PATH_END = r"[^\s'\"`<>|()\[\]{},]*"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def scrub_paths(text: str, roots: list[str]) -> str:
    """``text`` with every path under one of ``roots`` (server folders) replaced by a word.

    sentence-transformers' card quotes training samples by their local file paths; none of them
    means anything off this machine. Images become ``(image)``, anything else ``(local file)``.
    """
    usable = sorted({r.rstrip("/") for r in roots if r and len(r.rstrip("/")) > 1}, key=len)
    for root in reversed(usable):  # longest first, so a nested root is not cut in half

        def word(match: re.Match) -> str:
            return "(image)" if match.group(0).lower().endswith(_IMAGE_SUFFIXES) else "(local file)"

        pattern = r"(?<![\w./:~-])" + re.escape(root) + r"(?=[/\s'\"`<>|)\]},]|$)" + _PATH_END
        text = re.sub(pattern, word, text)
    return text


def _model_metadata(info: ModelCardInfo, st_meta: dict) -> dict:
    meta = dict(st_meta)
    meta.setdefault("library_name", "sentence-transformers")
    meta["pipeline_tag"] = st_meta.get("pipeline_tag") or DEFAULT_PIPELINE_TAG
    tags = [t for t in (meta.get("tags") or []) if isinstance(t, str)]
    meta["tags"] = tags + [t for t in MODEL_TAGS if t not in tags]
    meta.pop("base_model", None)
    if info.base_model_id:
        meta["base_model"] = info.base_model_id
    if info.dataset_repo:
        known = [d for d in (meta.get("datasets") or []) if isinstance(d, str)]
        meta["datasets"] = known + [info.dataset_repo] * (info.dataset_repo not in known)
    # sentence-transformers' widget quotes training images by their server paths: ours uses the
    # eval examples shipped in the repo.
    meta.pop("widget", None)
    if info.examples:
        meta["widget"] = [
            {
                "source_sentence": info.examples[0].caption,
                "sentences": [e.path for e in info.examples],
            }
        ]
    return meta


def _base_line(info: ModelCardInfo) -> str:
    if info.base_model_id:
        return _hub_link(info.base_model_id)
    if info.is_tiny_base:
        return f"mmdemo's built-in tiny {info.tiny_base}"
    return _cell(info.base_model)


def _evaluation_section(info: ModelCardInfo) -> list[str]:
    """How the numbers were measured, the table, and the snippet that reproduces them."""
    found = info.evaluation
    if found is None:
        table = metrics_table(info.metrics)
        if not table:
            return []
        return [
            "",
            "### Evaluation: base vs finetuned",
            "",
            "Measured by mmdemo at the end of training on the eval split of the collection, from"
            " its 224-pixel training copies of the images (text → image: distinct captions as"
            " queries over the distinct images; image → text the other way round). They were not"
            " re-measured on published images, so the published files may give slightly"
            " different numbers.",
            "",
            table,
        ]
    t2i_queries = found.finetuned.get("t2i", {}).get("queries", 0)
    i2t_queries = found.finetuned.get("i2t", {}).get("queries", 0)
    where = (
        f"the dataset {_hub_link(info.dataset_repo, 'dataset')}"
        if info.dataset_repo
        else "the collection's export (`python -m mmdemo export`)"
    )
    out = [
        "",
        "### Evaluation: base vs finetuned",
        "",
        f"Measured when this model was published, on the `{found.split}` split of {where}:"
        f" {found.pairs} pairs, {t2i_queries} distinct captions and {i2t_queries} distinct"
        " images, with sentence-transformers' `InformationRetrievalEvaluator` and the model's"
        " cosine similarity, on exactly the images the dataset holds.",
        "",
        "- text → image: every distinct caption is a query over the distinct images; the images"
        " of all pairs with exactly that caption are relevant.",
        "- image → text: every distinct image is a query over the distinct captions; all captions"
        " paired with it are relevant.",
        f"- {EVAL_KEYS_NOTE}",
        "",
        metrics_table({"base": found.base or {}, "finetuned": found.finetuned}),
    ]
    if found.base is None:
        out += [
            "",
            f"No base column: {_cell(found.base_note or 'the base model was not measured')}.",
        ]
    dataset = info.dataset_repo or "path/to/export"
    out += [
        "",
        "#### Reproduce these numbers",
        "",
        _code_block(evaluation_snippet(info.repo_id, dataset, found.split)),
        "",
    ]
    if info.base_model_id:
        out.append(
            f"With `SentenceTransformer({_literal(info.base_model_id)})` it gives the base column."
        )
    elif info.is_tiny_base:
        out.append(
            f"The base column is mmdemo's built-in tiny {info.tiny_base}, which is not on the Hub."
        )
    if not info.dataset_repo:
        out.append(
            "The dataset was not published with this model: export the collection"
            f" (“{_cell(info.collection or '')}”) to `path/to/export` first."
        )
    return out


def _start_line(info: ModelCardInfo, base: str) -> str:
    """``run X of <base>`` for a later round (``, after runs A → B`` when longer), else the base."""
    if not info.lineage:
        return base
    text = f"run {_code(info.lineage[-1])} of {base}"
    if len(info.lineage) > 1:
        text += f" (round {len(info.lineage) + 1}: " + " → ".join(map(_code, info.lineage)) + ")"
    return text


def _mmdemo_sections(info: ModelCardInfo) -> str:
    base = _base_line(info)
    out = [
        "## Finetuned with mmdemo",
        "",
        f"This model was finetuned from {_start_line(info, base)} on hand-curated text–image"
        f" pairs with hand-labeled hard negatives, using mmdemo (run {_code(info.run_name)}).",
        "It embeds images and captions into the same space: encode one modality per call.",
        "",
        "### Usage",
        "",
        "`pip install -U sentence-transformers`, then:",
        "",
        _code_block(usage_snippet(info.repo_id, info.examples)),
        "",
        "### Base model",
        "",
    ]
    if info.base_model_id:
        out.append(f"- {base}")
    elif info.is_tiny_base:
        out.append(f"- {tiny_base_description(info.tiny_base)}")
    else:
        out.append(f"- {_cell(info.base_model)} (not on the Hub)")
    out += ["", "### Training data", ""]
    if info.dataset_repo:
        out.append(f"- Dataset: {_hub_link(info.dataset_repo, 'dataset')}")
    if info.collection:
        out.append(f"- mmdemo collection: “{_cell(info.collection)}”")
    out += [f"- {_cell(k)}: {_num(v)}" for k, v in info.data_counts.items()]
    if not (info.dataset_repo or info.collection or info.data_counts):
        out.append("- Not recorded.")
    if info.hyperparameters:
        out += ["", "### Hyper-parameters", "", _hyperparameter_table(info.hyperparameters)]
    out += _evaluation_section(info)
    probe = probe_section(info.metrics.get("probe"))
    if probe:
        out += ["", "### Attribute-binding probe", "", probe]
    if info.examples:
        out += ["", "### Example images (eval split)", ""]
        out += ["| image | caption |", "|---|---|"]
        out += [f"| ![{_cell(e.caption)}]({e.path}) | {_cell(e.caption)} |" for e in info.examples]
    return "\n".join(out) + "\n"


_ST_SAMPLES = re.compile(r"^\* Samples:\n(?:^  .*\n)*", re.M)
_ST_USAGE = re.compile(
    r"^### Direct Usage \(Sentence Transformers\)\n.*?^```python\n.*?^```[ \t]*\n", re.S | re.M
)


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
    # Its samples table quotes training captions as raw HTML and training images by path.
    body = _ST_SAMPLES.sub("", body)
    # Its snippet mixes captions and image paths in one encode call, which CLIP refuses.
    body = _ST_USAGE.sub(
        "### Direct Usage (Sentence Transformers)\n\nSee *Usage* under *Finetuned with mmdemo*"
        " above: captions and images go to separate `encode` calls.\n\n",
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


def agreement_section(found: Agreement | None) -> list[str]:
    """The card's "Annotator agreement" lines (none when nobody is named as a label author):
    per-annotator counts and Cohen's kappa where two people labeled the same candidate."""
    if found is None or not found.annotators:
        return []
    lines = ["", "## Annotator agreement", ""]
    lines += ["| annotator | pairs | hard negatives | also correct |", "|---|---:|---:|---:|"]
    lines += [
        f"| {_cell(c.author)} | {c.pairs} | {c.negatives} | {c.also_positives} |"
        for c in found.annotators
    ]
    lines.append("")
    if not found.decisions:
        lines.append(
            "No candidate was labeled by two annotators, so there is no agreement to report."
        )
        return lines
    kappa = "undefined (a single kind of label)" if found.kappa is None else f"{found.kappa:.2f}"
    lines.append(
        f"Cohen's kappa on the hard-negative / also-correct decisions of candidates labeled by"
        f" two or more annotators: **{kappa}** ({found.items} candidate{'s' * (found.items != 1)}"
        f" on {found.shared_pairs} pair{'s' * (found.shared_pairs != 1)}; {found.agreed} of"
        f" {found.decisions} decision{'s' * (found.decisions != 1)} agree). Where annotators"
        " disagree, a candidate anyone marked also-correct is not a hard negative in this data."
    )
    for r in found.raters if len(found.raters) > 1 else ():
        value = "n/a" if r.kappa is None else f"{r.kappa:.2f}"
        lines.append(f"- {_cell(r.a)} and {_cell(r.b)}: kappa {value} on {r.items} candidates")
    return lines


def finish_dataset_card(
    card: str,
    repo_id: str,
    authors: list[str],
    model_repo: str | None = None,
    agreement: Agreement | None = None,
) -> str:
    """Add what only the publisher knows to an exported dataset card.

    The repo id replaces the export's placeholder in the usage snippet, the authors get a section
    (with the annotators' agreement when ``agreement`` is given), and a model trained on the data
    is linked.
    """
    card = card.replace(EXPORT_PLACEHOLDER_ID, repo_id)
    extra = ["", "## Authors", ""]
    names = sorted({a.strip() for a in authors if a and a.strip()})
    extra += [f"- {_cell(name)}" for name in names] or ["- Not recorded."]
    extra += agreement_section(agreement)
    if model_repo:
        extra += ["", "## Models trained on this data", "", f"- {_hub_link(model_repo)}"]
    block = "\n".join(extra) + "\n"
    marker = card.find("\n## License")
    if marker >= 0:
        return card[:marker].rstrip("\n") + "\n" + block + card[marker:]
    return card.rstrip("\n") + "\n" + block
