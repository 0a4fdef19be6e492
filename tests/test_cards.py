"""Cards are data + a pure render function: render from plain data and read the Markdown back."""

from __future__ import annotations

import re

import yaml

from mmdemo.hub.cards import (
    TINY_BASE_DESCRIPTION,
    CardEvaluation,
    CardExample,
    ModelCardInfo,
    finish_dataset_card,
    metrics_table,
    probe_section,
    public_hyperparameters,
    render_model_card,
    scrub_paths,
    split_front_matter,
    usage_snippet,
)
from tests.conftest import plain

ST_CARD = """---
tags:
- sentence-transformers
- feature-extraction
pipeline_tag: sentence-similarity
library_name: sentence-transformers
---

# SentenceTransformer

This is a [sentence-transformers](https://www.SBERT.net) model trained.

## Model Details

### Model Description
<!-- - **Base model:** [Unknown](https://huggingface.co/unknown) -->
<!-- - **Training Dataset:** Unknown -->

```python
model = SentenceTransformer("sentence_transformers_model_id")
```
"""

METRICS = {
    "base": {"t2i": {"recall@1": 0.5, "mrr@10": 0.6, "queries": 9}, "i2t": {"recall@1": 0.4}},
    "finetuned": {"t2i": {"recall@1": 0.75, "mrr@10": 0.7, "queries": 9}, "i2t": {"recall@1": 0.3}},
}


def _info(**changes) -> ModelCardInfo:
    data = dict(
        repo_id="alice/my-clip",
        run_name="run-7",
        base_model="sentence-transformers/clip-ViT-B-32",
        base_model_id="sentence-transformers/clip-ViT-B-32",
        st_card=ST_CARD,
        collection="street | signs",
        dataset_repo="alice/signs",
        data_counts={"pairs (train)": 40},
        hyperparameters={"epochs": 3, "learning_rate": 2e-05},
        metrics=METRICS,
        examples=(CardExample("assets/example-1.jpg", "a [stop] sign"),),
    )
    data.update(changes)
    return ModelCardInfo(**data)


def test_model_card_keeps_sentence_transformers_metadata_and_adds_ours():
    meta, body = split_front_matter(render_model_card(_info()))
    assert meta["tags"][:2] == ["sentence-transformers", "feature-extraction"]
    assert meta["tags"].count("sentence-transformers") == 1
    assert {"mmdemo", "clip", "hard-negatives"} <= set(meta["tags"])
    assert meta["base_model"] == "sentence-transformers/clip-ViT-B-32"
    assert meta["datasets"] == ["alice/signs"]
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert body.startswith("# my-clip\n")
    assert 'SentenceTransformer("alice/my-clip")' in body
    assert "sentence_transformers_model_id" not in body
    assert "- **Base model:** [sentence-transformers/clip-ViT-B-32](https" in body
    assert (
        "- **Training Dataset:** [alice/signs](https://huggingface.co/datasets/alice/signs)" in body
    )
    # our sections come before sentence-transformers' details
    assert body.index("## Finetuned with mmdemo") < body.index("## Model Details")


def test_model_card_holds_the_metrics_with_deltas_and_the_examples():
    card = render_model_card(_info())
    assert "| text → image | recall@1 | 0.5000 | 0.7500 | +0.2500 |" in card
    assert "| text → image | mrr@10 | 0.6000 | 0.7000 | +0.1000 |" in card
    assert "| image → text | recall@1 | 0.4000 | 0.3000 | -0.1000 |" in card
    assert "| text → image | queries | 9 | 9 |  |" in card
    assert "| `epochs` | 3 |" in card and "| `learning_rate` | 2e-05 |" in card
    assert "| ![a \\[stop\\] sign](assets/example-1.jpg) | a \\[stop\\] sign |" in card
    assert "mmdemo collection: “street \\| signs”" in card
    assert "Attribute-binding probe" not in card


def test_model_card_without_sentence_transformers_card_or_hub_ids_is_still_valid():
    card = render_model_card(
        _info(
            st_card="",
            base_model="mmdemo's built-in tiny CLIP",
            base_model_id=None,
            is_tiny_base=True,
            dataset_repo=None,
            collection=None,
            data_counts={},
            metrics={},
            examples=(),
        )
    )
    meta, body = split_front_matter(card)
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["library_name"] == "sentence-transformers"
    assert body.startswith("# my-clip")
    assert TINY_BASE_DESCRIPTION in body and "Not recorded." in body
    assert "base vs finetuned" not in body
    assert "widget" not in meta, "no examples, no widget"


def test_metrics_table_keeps_metric_order_and_marks_missing_values():
    table = metrics_table(
        {
            "base": {"t2i": {"ndcg@10": 0.1, "recall@1": 0.2}},
            "finetuned": {"t2i": {"recall@1": 0.3}},
        }
    )
    lines = table.splitlines()
    assert lines[2].startswith("| text → image | recall@1 |")
    assert lines[3] == "| text → image | ndcg@10 | 0.1000 | – |  |"
    assert metrics_table({}) == ""


def test_probe_renders_a_comparison_or_plain_values():
    compared = probe_section(
        {"description": "red cube vs blue cube", "base": {"acc": 0.5}, "finetuned": {"acc": 0.75}}
    )
    assert "red cube vs blue cube" in compared and "| acc | 0.5000 | 0.7500 | +0.2500 |" in compared
    plain = probe_section({"accuracy": 0.9, "pairs": 12})
    assert "| accuracy | 0.9000 |" in plain and "| pairs | 12 |" in plain
    assert probe_section(None) == ""
    pair = probe_section({"a": {"accuracy": 0.5, "n": 8}, "b": {"accuracy": 0.625, "n": 8}})
    assert "| accuracy | 0.5000 | 0.6250 | +0.1250 |" in pair and "| n | 8 | 8 |  |" in pair
    card = render_model_card(_info(metrics={**METRICS, "probe": {"base": 0.5, "finetuned": 0.6}}))
    assert "### Attribute-binding probe" in card and "| value | 0.5000 | 0.6000 | +0.1000 |" in card


def test_public_hyperparameters_drop_secrets_and_nested_values():
    kept = public_hyperparameters(
        {
            "epochs": 1,
            "hub_token": "hf_x",
            "token": "hf_y",
            "api_key": "k",
            "max_tokens": 77,
            "lr": 1e-4,
            "nested": {"a": 1},
            "dirs": ["t2i", "i2t"],
        }
    )
    assert kept == {"epochs": 1, "max_tokens": 77, "lr": 1e-4, "dirs": '["t2i", "i2t"]'}


def test_front_matter_round_trips_through_yaml():
    card = render_model_card(_info())
    front = card.split("---\n")[1]
    assert yaml.safe_load(front)["datasets"] == ["alice/signs"]
    assert split_front_matter("no front matter") == ({}, "no front matter")


def test_finish_dataset_card_sets_repo_id_authors_and_model_link():
    exported = (
        "---\npretty_name: x\n---\n\n# x\n\n"
        'pairs = load_dataset("path/to/this/folder", "pairs")\n\n## License\n\nother\n'
    )
    card = finish_dataset_card(exported, "alice/signs", ["bob", "alice", "", "bob"], "alice/clip")
    assert 'load_dataset("alice/signs", "pairs")' in card
    assert "## Authors\n\n- alice\n- bob\n" in card
    assert "[alice/clip](https://huggingface.co/alice/clip)" in card
    assert card.index("## Authors") < card.index("## License")
    assert "- Not recorded." in finish_dataset_card("# x\n", "a/b", [])


ST_CARD_WITH_LOCAL_PATHS = """---
tags:
- sentence-transformers
widget:
- source_sentence: a red square
  sentences:
  - /srv/home/images/ab/abc.train.jpg
pipeline_tag: sentence-similarity
library_name: sentence-transformers
---

# SentenceTransformer

## Model Details

## Usage

### Direct Usage (Sentence Transformers)

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("sentence_transformers_model_id")
sentences = [
    'a red square',
    '/srv/home/images/ab/abc.train.jpg',
]
embeddings = model.encode(sentences)
```

## Training Details

* Samples:
  | anchor | positive |
  |:---|:---|
  | <code>a red square</code> | <code>/srv/home/images/ab/abc.train.jpg</code> |
* Loss: <code>MultipleNegativesRankingLoss</code> (base model at /srv/home/models/tiny-clip)
"""


def test_card_drops_sentence_transformers_mixed_snippet_and_its_local_widget():
    examples = (CardExample("assets/example-1.jpg", 'a "quoted" ```fence``` caption'),)
    card = render_model_card(_info(st_card=ST_CARD_WITH_LOCAL_PATHS, examples=examples))
    meta, body = split_front_matter(card)
    assert meta["widget"] == [
        {"source_sentence": examples[0].caption, "sentences": ["assets/example-1.jpg"]}
    ]
    assert "sentences = [" not in body, "the mixed text+image encode call is gone"
    assert "See *Usage* under *Finetuned with mmdemo*" in body
    # The caption's backticks cannot close the snippet's fence early.
    assert "````python" in body
    scrubbed = scrub_paths(card, ["/srv/home"])
    assert "/srv/home" not in scrubbed and "(base model at (local file))" in scrubbed


def test_scrub_paths_replaces_only_paths_under_the_given_roots():
    text = (
        "see /srv/home/images/a.jpg, /srv/home/runs/r1/config.json and /srv/homework/x.png;"
        " https://huggingface.co/srv/home stays"
    )
    out = scrub_paths(text, ["/srv/home", "/"])
    assert out.startswith("see (image), (local file) and /srv/homework/x.png;")
    assert "https://huggingface.co/srv/home stays" in out


def test_usage_snippet_runs_on_a_model_folder_without_examples(tiny_clip_dir):
    code = usage_snippet(str(tiny_clip_dir), ())
    printed = _run_code(code)
    assert "tensor(" in printed


def test_card_evaluation_section_says_how_it_was_measured_and_why_base_is_missing():
    evaluation = CardEvaluation(
        "eval",
        12,
        {"t2i": {"accuracy@1": 0.5, "queries": 10}, "i2t": {"accuracy@1": 0.25, "queries": 12}},
        None,
        "the base model could not be loaded when publishing (offline)",
    )
    card = render_model_card(_info(evaluation=evaluation))
    assert "12 pairs, 10 distinct captions and 12 distinct images" in card
    assert "| text → image | accuracy@1 | – | 0.5000 |  |" in card
    assert "No base column: the base model could not be loaded when publishing (offline)." in plain(
        card
    )
    assert 'load_dataset("alice/signs", "pairs", split="eval")' in card
    assert 'SentenceTransformer("sentence-transformers/clip-ViT-B-32")` it gives the base' in card
    assert "recall@1 | 0.5000 | 0.7500" not in card, "training-time numbers are replaced"


def _run_code(code: str) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<card snippet>", "exec"), {"__name__": "__card__"})  # noqa: S102
    return out.getvalue()


def test_user_text_in_a_card_stays_text_on_the_hub():
    hostile = "<img src=x onerror=alert(1)> **bold** | [link](javascript:x)"
    card = render_model_card(
        _info(
            run_name="r`1`",
            collection=hostile,
            examples=(CardExample("assets/example-1.jpg", hostile),),
            st_card=ST_CARD_WITH_LOCAL_PATHS.replace("a red square", hostile),
        )
    )
    _, body = split_front_matter(card)
    outside_code = re.sub(r"(`{3,})python\n.*?\1|``[^`]*``|`[^`\n]*`", "", body, flags=re.S)
    assert "<img" not in outside_code and "**bold**" not in outside_code
    assert "](javascript" not in outside_code
    assert hostile in plain(outside_code), "shown as typed"
    assert "(run `` r`1` ``)" in body
    assert "Samples:" not in body, "sentence-transformers' raw-HTML samples table is dropped"
