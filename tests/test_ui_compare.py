"""The Compare tab's handlers and the compare/search domain entry points, on a real Services:
SQLite, the small demo collection, the tiny CLIP as the base model and a second tiny CLIP
(another seed) as a finished run."""

from __future__ import annotations

import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from mmdemo.data.demo import swap_attributes
from mmdemo.data.images import load_rgb, train_path
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.retrieval.compare import (
    CompareError,
    LabelEdit,
    clear_label,
    compare_command,
    model_options,
    resolve_model,
    run_model_dir,
    search_command,
    set_label,
    undo_edit,
)
from mmdemo.retrieval.evaluation import evaluate_model
from mmdemo.retrieval.models import build_tiny_clip
from mmdemo.retrieval.search import compare_runs
from mmdemo.services import DEMO_COLLECTION, Services
from mmdemo.settings import Settings
from mmdemo.text import md
from mmdemo.ui.app import build_app
from mmdemo.ui.compare import handlers as h
from mmdemo.ui.compare.handlers import CompareState
from mmdemo.ui.compare.layout import as_outputs
from mmdemo.ui.compare.models import NO_RUN_NOTE, SAME_MODEL_NOTE
from mmdemo.ui.results import TABLE_COLUMNS, is_skip, metrics_markdown
from tests.conftest import make_image_bytes

DEMO_PAIRS = 24
RUN = "tuned"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    """An app's services with one finished run, plus runs that must not be offered."""
    home = tmp_path_factory.mktemp("compare-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "24"}
    )
    services = Services.create(settings)
    store = services.store
    run_dir = settings.runs_dir / RUN
    build_tiny_clip(run_dir / "model", seed=1)
    store.create_run(RUN, None, "tiny", str(run_dir), status="finished")
    failed = settings.runs_dir / "broken"
    shutil.copytree(run_dir / "model", failed / "model")
    store.create_run("broken", None, "tiny", str(failed), status="failed")
    (settings.runs_dir / "empty").mkdir()
    store.create_run("empty", None, "tiny", str(settings.runs_dir / "empty"), status="finished")
    yield services
    services.close()


@pytest.fixture(autouse=True)
def no_labels_left(services):
    """Every test starts and ends without labels (the services are shared by the module)."""
    yield
    store = services.store
    for label in store.labels_for_collection(store.collection(DEMO_COLLECTION).id):
        store.remove_label(label.id)


def demo_id(services: Services) -> int:
    return services.store.collection(DEMO_COLLECTION).id


def eval_pairs(services: Services):
    return services.store.list_pairs(demo_id(services), split="eval")


def opened(services: Services, progress=None) -> h.CompareView:  # noqa: ANN001
    state = h.on_load(services, h.initial_state(services), DEMO_COLLECTION).state
    return h.open_tab(services, state, 8, None, progress)


class Recorder:
    """Stands in for ``gr.Progress``: remembers what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, value, desc=None, unit=None, **kwargs) -> None:  # noqa: ANN001
        self.calls.append((value, desc))


# -- choosing models ------------------------------------------------------------------------------
def test_choices_are_base_and_finished_runs_with_a_model(services):
    state = h.initial_state(services)
    assert (state.model_a, state.model_b) == ("base", "run:tuned")
    view = h.on_load(services, state, DEMO_COLLECTION)
    assert view.model_a["choices"] == [
        ("Base: tiny-clip (built-in)", "base"),
        ("Run: tuned", "run:tuned"),
    ]
    assert view.model_b["value"] == "run:tuned"
    assert view.note == ""
    refs = {ref.key: ref for ref in model_options(services.store, services.model)}
    assert Path(refs["run:tuned"].spec) == services.settings.runs_dir / RUN / "model"


def test_resolve_model_names(services, tmp_path):
    store, base = services.store, services.model
    assert resolve_model(store, base, "base").spec == base.spec
    assert resolve_model(store, base, RUN) == resolve_model(store, base, "run:tuned")
    with pytest.raises(CompareError, match="is failed"):
        resolve_model(store, base, "broken")
    with pytest.raises(CompareError, match="saved no model"):
        resolve_model(store, base, "empty")
    with pytest.raises(CompareError, match="No run or model folder"):
        resolve_model(store, base, "nothing-like-this")
    # A folder that is itself a model, and a run-like folder with model/ inside.
    flat = tmp_path / "flat"
    shutil.copytree(services.settings.runs_dir / RUN / "model", flat)
    assert run_model_dir(flat) == flat
    assert resolve_model(store, base, str(flat)).spec == str(flat.resolve())
    assert run_model_dir(services.settings.runs_dir / RUN) == (
        services.settings.runs_dir / RUN / "model"
    )
    assert run_model_dir(tmp_path) is None


def test_without_a_run_the_base_model_is_explored_alone(services):
    services.store.update_run(RUN, status="cancelled")
    try:
        state = h.initial_state(services)
        assert (state.model_a, state.model_b) == ("base", "base")
        view = h.on_load(services, state, DEMO_COLLECTION)
        assert view.note == NO_RUN_NOTE
        assert "Finetune tab" in view.note
        view = h.open_tab(services, view.state, 8)
        assert view.state.single
        assert view.column_b["visible"] is False and view.table["visible"] is False
        assert "| metric | text → image | image → text |" in view.metrics
        result = h.search_text(services, view.state, eval_pairs(services)[0].caption, 5)
        assert len(result.gallery_a) == 5 and result.gallery_b == []
        services.store.update_run(RUN, status="finished")
        # A run finished while the page was open: opening the tab offers it as B.
        view = h.open_tab(services, view.state, 8)
        assert (view.state.model_b, view.state.single) == ("run:tuned", False)
        assert view.model_b["value"] == "run:tuned"
    finally:
        services.store.update_run(RUN, status="finished")


# -- metrics, the probe and the per-query table ---------------------------------------------------
def test_opening_measures_both_models_then_encodes_nothing_again(services):
    services.embeddings.clear()
    progress = Recorder()
    view = opened(services, progress)
    state = view.state
    assert not state.single and state.loaded_for is not None
    n_eval = len(eval_pairs(services))
    assert ((n_eval, n_eval), "Encoding images (Base: tiny-clip (built-in))") in progress.calls
    assert ((n_eval, n_eval), "Encoding images (Run: tuned)") in progress.calls
    assert f"**Eval split** ({n_eval} pairs)" in view.metrics
    assert "| metric | t→i A | t→i B | Δ | i→t A | i→t B | Δ |" in view.metrics
    assert "**Attribute binding**" in view.metrics  # the demo collection's captions swap
    assert view.column_b["visible"] is True and view.title_b == "### B · Run\\: tuned"

    # The table: one row per distinct eval caption, most improved first, ranks as computed.
    table = view.table["value"]
    assert list(table.columns) == TABLE_COLUMNS
    base = services.models.get(services.model.spec)
    tuned = services.models.get(str(services.settings.runs_dir / RUN / "model"))
    from mmdemo.retrieval.models import model_fingerprint

    rows = compare_runs(
        services.store,
        services.settings,
        services.embeddings,
        base,
        model_fingerprint(services.model.spec),
        tuned,
        model_fingerprint(str(services.settings.runs_dir / RUN / "model")),
        demo_id(services),
    )
    assert table["pair"].tolist() == [r["pair_id"] for r in rows]
    assert table["A"].tolist() == [r["rank_a"] for r in rows]
    assert table["B"].tolist() == [r["rank_b"] for r in rows]
    deltas = [int(d) for d in table["Δ rank"]]
    assert deltas == sorted(deltas, reverse=True)

    # Reopening the tab, or a new session opening it, encodes nothing.
    calls = services.embeddings.encode_calls
    again = h.open_tab(services, state, 8)
    assert is_skip(again.metrics)  # still current: nothing recomputed
    other_session = opened(services)
    assert other_session.metrics == view.metrics
    assert services.embeddings.encode_calls == calls


def test_direction_switch_shows_image_queries(services):
    state = opened(services).state
    view = h.set_direction(services, state, "image → text")
    assert view.state.direction == "image_to_text"
    table = view.table
    assert len(table) == len(eval_pairs(services))  # one query per eval image


def test_metrics_markdown_formats_deltas_and_missing_split():
    a = {
        d: {"recall@1": 0.5, "recall@5": 1.0, "recall@10": 1.0, "mrr@10": 0.6, "ndcg@10": 0.7}
        for d in ("t2i", "i2t")
    }
    b = {d: dict(v, **{"recall@1": 0.75}) for d, v in a.items()}
    text = metrics_markdown(
        a,
        b,
        "Base",
        "Run: x",
        4,
        {"a": {"accuracy": 0.5, "n": 4}, "b": {"accuracy": 0.75, "n": 4}, "delta": 0.25},
    )
    assert "| recall@1 | 0.500 | 0.750 | **+0.250** ▲ | 0.500 | 0.750 | **+0.250** ▲ |" in text
    assert "| recall@5 | 1.000 | 1.000 | ±0 |" in text
    assert "A 50% of 4 · B 75% (+25 points)" in text
    assert "No eval split yet" in metrics_markdown(None, None, "Base", None, 0, None)


# -- queries --------------------------------------------------------------------------------------
def test_text_query_marks_the_positive_and_finds_its_pair(services):
    state = opened(services).state
    pair = eval_pairs(services)[1]
    view = h.search_text(services, state, f"  {pair.caption.upper()} ", DEMO_PAIRS)
    st = view.state
    assert st.anchor == pair.id and st.query_kind == "text"
    assert len(st.hits_a) == len(st.hits_b) == DEMO_PAIRS
    for hits, gallery in ((st.hits_a, view.gallery_a), (st.hits_b, view.gallery_b)):
        positives = [i for i, hit in enumerate(hits) if hit.positive]
        assert [hits[i].pair_id for i in positives] == [pair.id]
        assert gallery[positives[0]][1].startswith(f"#{positives[0] + 1} ")
        assert " ✓ · " in gallery[positives[0]][1]
        assert sum(" ✓ · " in caption for _, caption in gallery) == 1
        assert all(Path(path).is_file() for path, _ in gallery)
    assert f"pair {pair.id}" in view.selection
    assert view.negative_caption["value"] == swap_attributes(pair.caption)
    outputs = as_outputs(view)
    assert len(outputs) == len(h.CompareView._fields)


def test_label_a_result_then_change_and_undo(services):
    pair = eval_pairs(services)[0]
    view = h.search_text(services, opened(services).state, pair.caption, 8)
    index = next(i for i, hit in enumerate(view.state.hits_b) if not hit.positive)
    hit = view.state.hits_b[index]
    view = h.select_hit(services, view.state, "b", index)
    assert "**Selected:**" in view.selection and f"pair {hit.pair_id}" in view.selection

    view = h.mark(services, view.state, "negative", "alice")
    labels = services.store.labels_for_pair(pair.id)
    assert [(lab.kind, lab.negative_sha256, lab.author) for lab in labels] == [
        ("negative", hit.image_sha256, "alice")
    ]
    assert " ✗ · " in view.gallery_b[index][1]
    assert view.undo["visible"] is True and "Saved: hard negative" in view.message
    assert as_outputs(view)[h.CompareView._fields.index("gallery_b")].selected_index == index

    # The same image marked "also correct" by the same author changes the label instead of
    # adding one (another author's label would be their own decision, beside it) ...
    view = h.mark(services, view.state, "also-positive", "alice")
    labels = services.store.labels_for_pair(pair.id)
    assert [(lab.kind, lab.author) for lab in labels] == [("also-positive", "alice")]
    assert " + · " in view.gallery_b[index][1]
    # ... and undo puts the hard negative back, with its author.
    view = h.undo(services, view.state)
    labels = services.store.labels_for_pair(pair.id)
    assert [(lab.kind, lab.author) for lab in labels] == [("negative", "alice")]
    assert view.undo["visible"] is False
    assert "Nothing to undo" in h.undo(services, view.state).message

    # A new label undone leaves nothing behind.
    other = next(
        i
        for i, h_ in enumerate(view.state.hits_a)
        if not h_.positive and h_.image_sha256 != hit.image_sha256
    )
    view = h.mark(services, h.select_hit(services, view.state, "a", other).state, "negative", "a")
    assert len(services.store.labels_for_pair(pair.id)) == 2
    h.undo(services, view.state)
    assert [lab.author for lab in services.store.labels_for_pair(pair.id)] == ["alice"]


def test_free_text_and_uploads_cannot_be_labeled(services):
    state = opened(services).state
    view = h.search_text(services, state, "something nobody wrote", 4)
    assert view.state.anchor is None and len(view.gallery_a) == 4
    assert "Labels attach to a pair" in view.selection
    view = h.mark(services, h.select_hit(services, view.state, "a", 0).state, "negative", "x")
    assert "Labels attach to a pair" in view.message
    assert services.store.labels_for_collection(demo_id(services)) == []

    pair = eval_pairs(services)[2]
    image = load_rgb(train_path(services.settings.images_dir, pair.image_sha256))
    view = h.search_upload(services, state, image, 3)
    assert view.state.query_kind == "upload" and view.state.anchor is None
    assert view.state.hits_a[0].image_sha256 == pair.image_sha256  # itself, found by pixels
    assert view.state.hits_a[0].score == pytest.approx(1.0, abs=1e-4)
    assert h.rerun(services, view.state, 5, image).state.hits_a[4].rank == 5


def test_image_query_and_a_hard_negative_caption(services):
    state = opened(services).state
    ids = state.picker_ids
    assert len(ids) == min(h.PICKER_SIZE, DEMO_PAIRS)
    pair = services.store.get_pair(ids[0])
    assert pair.split == "eval"  # eval images first: those are the measured ones
    view = h.pick_image(services, state, 0, 5)
    st = view.state
    assert st.query_kind == "image" and st.query_sha == pair.image_sha256 and st.anchor == pair.id
    assert st.hits_a[0].image_sha256 == pair.image_sha256 and st.hits_a[0].positive
    swapped = swap_attributes(pair.caption)
    assert swapped in view.negative_caption["choices"]

    view = h.add_negative_caption(services, st, swapped, "carol")
    labels = services.store.labels_for_pair(pair.id)
    assert [(lab.negative_caption, lab.author) for lab in labels] == [(swapped, "carol")]
    assert "Saved: hard negative: caption" in view.message
    assert (
        md("Write a hard-negative caption")
        in h.add_negative_caption(services, view.state, "  ", "carol").message
    )
    h.undo(services, view.state)
    assert services.store.labels_for_pair(pair.id) == []

    # Following a result's image runs an image query for it.
    view = h.search_selected(services, h.select_hit(services, st, "b", 2).state, 4)
    assert view.state.query_sha == st.hits_b[2].image_sha256


def test_clicking_a_table_row_runs_its_query(services):
    view = opened(services)
    table = view.table["value"]
    row = table.iloc[-1].tolist()  # the most regressed query
    result = h.pick_row(services, view.state, row, 6)
    pair = services.store.get_pair(int(row[TABLE_COLUMNS.index("pair")]))
    assert result.state.query_kind == "text" and result.state.query_text == pair.caption
    assert result.state.anchor == pair.id and len(result.gallery_b) == 6
    image_view = h.set_direction(services, result.state, "image → text")
    row = image_view.table.iloc[0].tolist()
    result = h.pick_row(services, image_view.state, row, 6)
    pair = services.store.get_pair(int(row[TABLE_COLUMNS.index("pair")]))
    assert result.state.query_kind == "image" and result.state.query_sha == pair.image_sha256
    assert is_skip(h.pick_row(services, image_view.state, None, 6).gallery_a)


def test_changing_models_reruns_the_query(services):
    pair = eval_pairs(services)[0]
    view = h.search_text(services, opened(services).state, pair.caption, 4)
    view = h.choose_models(services, view.state, "run:tuned", "base", 4)
    assert view.state.model_a == "run:tuned" and view.title_a == "### A · Run\\: tuned"
    assert [hit.pair_id for hit in view.state.hits_a] == [
        hit["pair_id"] for hit in search_command(services, DEMO_COLLECTION, RUN, pair.caption, 4)
    ]
    same = h.choose_models(services, view.state, "base", "base", 4)
    assert same.state.single and same.note == SAME_MODEL_NOTE and same.gallery_b == []
    bad = h.choose_models(services, view.state, "base", "no-such-run", 4)
    assert "No run or model folder" in bad.message


def test_collection_switch_forgets_results(services):
    view = h.search_text(services, opened(services).state, "a red circle", 3)
    same = h.switch_collection(services, view.state, DEMO_COLLECTION)
    assert same.state == view.state
    services.store.get_or_create_collection("another")
    other = h.switch_collection(services, view.state, "another")
    assert other.state.collection == "another" and other.state.hits_a == ()
    assert other.captions["choices"] == [] and other.picker == []
    opened_empty = h.open_tab(services, other.state, 8)
    assert "No eval split yet" in opened_empty.metrics
    result = h.search_text(services, opened_empty.state, "anything", 8)
    assert result.gallery_a == [] and "has no pairs yet" in result.message


HOSTILE = "<img src=x onerror=alert(1)>"


def hostile_collection(services: Services, name: str = "<b>x</b>") -> int:
    """A small collection whose captions and name are markup, as a person may type them."""
    store = services.store
    existing = store.find_collection(name)
    if existing is not None:
        return existing.id
    coll = store.create_collection(name)
    report = ImportReport(name)
    for i, caption in enumerate([HOSTILE, "a **bold** _claim_ [link](http://x)", "plain"]):
        ingest_item(
            store,
            services.settings,
            coll.id,
            report,
            f"{i}.png",
            make_image_bytes((60 * i, 200 - 50 * i, 90)),
            caption,
            "eval",
        )
    return coll.id


def test_opening_the_tab_follows_the_browsers_collection(services):
    view = h.search_text(services, opened(services).state, "a red circle", 3)
    assert view.state.hits_a
    services.store.get_or_create_collection("another")
    other = h.open_tab(services, view.state, 8, collection="another")
    assert other.state.collection == "another" and other.state.hits_a == ()
    assert other.gallery_a == [] and other.picker == [] and other.captions["choices"] == []
    assert "No eval split yet" in other.metrics
    # A stale name (a collection deleted in another browser tab) falls back to the default.
    back = h.open_tab(services, other.state, 8, collection="deleted-elsewhere")
    assert back.state.collection == DEMO_COLLECTION and back.state.loaded_for is not None
    assert len(back.picker) > 0


def test_reopening_shows_labels_made_elsewhere_without_recomputing(services):
    pair = eval_pairs(services)[0]
    view = h.search_text(services, opened(services).state, pair.caption, 4)
    other = next(hit for hit in view.state.hits_a if not hit.positive)
    set_label(services.store, pair.id, "negative", sha256=other.image_sha256, author="label-tab")
    calls = services.embeddings.encode_calls
    again = h.open_tab(services, view.state, 4, collection=DEMO_COLLECTION)
    assert is_skip(again.metrics) and services.embeddings.encode_calls == calls
    index = view.state.hits_a.index(other)
    assert " ✗ · " in again.gallery_a[index][1]


def test_user_text_in_the_selection_line_and_titles_is_text(services):
    hostile_collection(services)
    state = h.on_load(services, h.initial_state(services), "<b>x</b>").state
    assert state.collection == "<b>x</b>"
    coll = services.store.collection("<b>x</b>")
    pair = next(p for p in services.store.list_pairs(coll.id) if p.caption == HOSTILE)
    view = h.search_caption(services, state, pair.id, 3)
    assert "<img" not in view.selection and md(HOSTILE) in view.selection
    view = h.select_hit(services, view.state, "a", 0)
    assert "<" not in view.selection.replace("&lt;", "")
    # Gallery captions are plain text (the gallery shows them as text), whole.
    assert any(caption.endswith(HOSTILE) for _, caption in view.gallery_a)

    # A run named like markup: escaped in the titles and the metrics.
    run_dir = services.settings.runs_dir / "hostile-run"
    shutil.copytree(services.settings.runs_dir / RUN / "model", run_dir / "model")
    services.store.create_run("<i>run</i>", None, "tiny", str(run_dir), status="finished")
    try:
        chosen = h.choose_models(services, view.state, "base", "run:<i>run</i>", 3)
        assert chosen.title_b == "### B · Run\\: &lt;i&gt;run&lt;/i&gt;"
        assert "<i>" not in chosen.metrics and "&lt;i&gt;run&lt;/i&gt;" in chosen.metrics
    finally:
        services.store.update_run("<i>run</i>", status="failed")


def test_each_compare_event_shows_one_progress_indicator(services):
    demo = build_app(services)
    by_id = {getattr(block, "elem_id", None): block for block in demo.blocks.values()}
    metrics, results = by_id["mm-compare-metrics"], by_id["mm-results-a"]
    browser_state = next(b for b in demo.blocks.values() if isinstance(b, gr.BrowserState))
    compare_fns = [fn for fn in demo.fns.values() if metrics in fn.outputs]
    assert len(compare_fns) >= 15
    for fn in compare_fns:
        assert (browser_state._id, "change") not in fn.targets, "no collection.change listener"
        if fn.tracks_progress:
            assert fn.show_progress != "hidden" and len(fn.show_progress_on) == 1, fn.name
        else:
            assert fn.show_progress == "hidden", fn.name
    on_results = [fn for fn in compare_fns if fn.show_progress_on == [results]]
    assert len(on_results) >= 8  # every query: search, caption, image, upload, k, row, follow
    tab_select = [fn for fn in compare_fns if any(t[1] == "select" for t in fn.targets)]
    assert any(browser_state in fn.inputs for fn in tab_select)


# -- the domain entry points of the CLI ------------------------------------------------------------
def test_search_command(services):
    pair = eval_pairs(services)[0]
    hits = search_command(services, DEMO_COLLECTION, "base", pair.caption, k=DEMO_PAIRS)
    assert [h_["rank"] for h_ in hits] == list(range(1, DEMO_PAIRS + 1))
    assert set(hits[0]) == {"pair_id", "score", "caption", "rank", "positive"}
    scores = [h_["score"] for h_ in hits]
    assert scores == sorted(scores, reverse=True)
    assert [h_["pair_id"] for h_ in hits if h_["positive"]] == [pair.id]
    with pytest.raises(CompareError, match="No collection"):
        search_command(services, "nope", "base", "x")
    with pytest.raises(CompareError, match="No run or model folder"):
        search_command(services, DEMO_COLLECTION, "nope", "x")


def test_compare_command_agrees_with_the_training_evaluation(services):
    result = compare_command(services, DEMO_COLLECTION, RUN)
    n_eval = len(eval_pairs(services))
    assert result["models"]["finetuned"]["run"] == RUN
    base = services.models.get(services.model.spec)
    expected = evaluate_model(base, services.store, services.settings, demo_id(services))
    for direction in ("t2i", "i2t"):
        for key, value in expected[direction].items():
            assert result["metrics"]["base"][direction][key] == pytest.approx(value, abs=1e-6)
    directions = [q["direction"] for q in result["queries"]]
    assert directions.count("text_to_image") == len({p.caption for p in eval_pairs(services)})
    assert directions.count("image_to_text") == n_eval
    for q in result["queries"]:
        assert q["delta"] == q["rank_base"] - q["rank_finetuned"]
    assert result["binding"]["a"]["n"] == n_eval
    assert np.isclose(
        result["binding"]["delta"],
        result["binding"]["b"]["accuracy"] - result["binding"]["a"]["accuracy"],
    )
    empty = services.store.get_or_create_collection("no-eval")
    with pytest.raises(CompareError, match="eval split of 'no-eval' is empty"):
        compare_command(services, empty.name, RUN)


def test_label_edits_undo_exactly(services):
    store = services.store
    pair, other = eval_pairs(services)[:2]
    first = set_label(store, pair.id, "negative", sha256=other.image_sha256, author="a")
    assert first.previous is None and first.written.kind == "negative"
    changed = set_label(store, pair.id, "also-positive", sha256=other.image_sha256, author="a")
    assert changed.previous == first.written and changed.written.id == first.written.id
    # Another author's label of the same image is their own: undoing it leaves a's alone.
    beside = set_label(store, pair.id, "also-positive", sha256=other.image_sha256, author="b")
    assert beside.previous is None and beside.written.id != first.written.id
    undo_edit(store, beside)
    undo_edit(store, changed)
    (label,) = store.labels_for_pair(pair.id)
    assert (label.kind, label.author) == ("negative", "a")
    removed = clear_label(store, label.id)
    assert removed == LabelEdit(None, label) and store.labels_for_pair(pair.id) == []
    undo_edit(store, removed)
    assert [(lab.kind, lab.author) for lab in store.labels_for_pair(pair.id)] == [("negative", "a")]
    assert "hard negative: image" in removed.describe()


def test_compare_starts_on_the_base_model():
    assert CompareState().model_a == "base"
