"""Curate's Data checks section and the Finetune tab's leak warning, called directly."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image, ImageDraw

from bench.bench_check import edited
from mmdemo.data.ingest import ImportReport, ingest_item
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.curate import checks as ck
from mmdemo.ui.curate.handlers import CurateState, CurateView
from mmdemo.ui.finetune.collection import collection_summary
from tests.conftest import plain

EVIL = "<img src=x onerror=alert(1)> **bold**"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("checks-ui-home")
    settings = Settings.from_env(
        {"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny", "MMDEMO_DEMO_PAIRS": "24"}
    )
    services = Services.create(settings)
    yield services
    services.close()


def _scene(top: str, bottom: str) -> Image.Image:
    img = Image.new("RGB", (128, 128), "white")
    draw = ImageDraw.Draw(img)
    draw.ellipse((30, 10, 78, 58), top)
    draw.rectangle((50, 70, 98, 118), bottom)
    return img


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def leaky(services: Services, name: str) -> list[int]:
    """A collection where an eval pair is a resized JPEG of a train pair's image."""
    coll = services.store.get_or_create_collection(name)
    report = ImportReport(coll.name)
    original = _scene("#d72323", "#234be1")
    items = [
        (_png(original), EVIL, "train"),
        (edited(original, "all", random.Random(0)), "the same scene, smaller", "eval"),
        (_png(_scene("#1e9e3c", "#f0cd14")), "a green circle above a yellow square", "train"),
        (_png(_scene("#8732af", "#fa7d14")), "a purple circle above an orange square", "eval"),
    ]
    for n, (data, caption, split) in enumerate(items):
        ingest_item(
            services.store, services.settings, coll.id, report, f"{n}.png", data, caption, split
        )
    assert len(report.added_pair_ids) == 4, report.rejected
    return report.added_pair_ids


def state_for(name: str) -> CurateState:
    return CurateState(collection=name)


def test_run_shows_the_leaking_group_with_thumbnails_and_escaped_text(services: Services):
    ids = leaky(services, "ui-leak")
    outcome = ck.run_clicked(services, state_for("ui-leak"), ck.ChecksState(), hashes_only=True)
    view = outcome.view
    assert outcome.curate is None
    report = view.checks.report
    assert report is not None and len(report.leaks) == 1
    (row,) = view.duplicates
    assert row[0].startswith("⚠") and row[1] == f"{ids[0]}, {ids[1]}"
    assert row[2] == "train, eval" and row[4] == "train"
    assert EVIL in row[5]  # dataframe cells are plain text
    assert len(view.thumbs) == 2 and all(path.endswith(".jpg") for path, _ in view.thumbs)
    assert "<img" not in view.summary and "1 duplicate group leaks between train" in plain(
        view.summary
    )
    assert view.fix["interactive"] is True and "1 leaking group" in view.fix["value"]
    assert view.undo["visible"] is False


def test_fix_moves_the_group_refreshes_curate_and_undo_restores(services: Services):
    ids = leaky(services, "ui-fix")
    state = state_for("ui-fix")
    checks = ck.run_clicked(services, state, ck.ChecksState(), hashes_only=True).view.checks
    moved = ck.fix_clicked(services, state, checks)
    assert isinstance(moved.curate, CurateView)
    assert services.store.get_pair(ids[1]).split == "train"  # a tie goes to train
    assert "Moved 1 pair" in plain(moved.view.summary)
    assert moved.view.checks.report.leaks == ()
    assert moved.view.fix["interactive"] is False and moved.view.undo["visible"] is True
    undone = ck.undo_clicked(services, state, moved.view.checks)
    assert services.store.get_pair(ids[1]).split == "eval"
    assert isinstance(undone.curate, CurateView)
    assert len(undone.view.checks.report.leaks) == 1 and undone.view.undo["visible"] is False


def test_fix_before_any_run_and_undo_without_a_move_only_say_so(services: Services):
    state = state_for("ui-fix")
    outcome = ck.fix_clicked(services, state, ck.ChecksState())
    assert outcome.curate is None and "Run the checks" in plain(outcome.view.summary)
    outcome = ck.undo_clicked(services, state, ck.ChecksState())
    assert outcome.curate is None and "Nothing to undo" in plain(outcome.view.summary)


def test_run_with_the_model_reports_its_name(services: Services):
    leaky(services, "ui-model")
    view = ck.run_clicked(services, state_for("ui-model"), ck.ChecksState()).view
    assert view.checks.report.model is not None
    assert "image embeddings of" in plain(view.summary)


def test_finetune_summary_warns_when_eval_leaks_train(services: Services):
    ids = leaky(services, "ui-finetune")
    text = collection_summary(services, "ui-finetune")
    assert "eval leaks train: 1 eval/test pair is a copy of train images" in text
    services.store.set_splits({ids[1]: "train"})
    assert "eval leaks train" not in collection_summary(services, "ui-finetune")
    assert "eval leaks train" not in collection_summary(services, "demo-shapes")


def test_the_collection_name_in_the_summary_is_escaped(services: Services):
    name = "ui <img src=x onerror=alert(1)>"
    leaky(services, name)
    view = ck.run_clicked(services, state_for(name), ck.ChecksState(), hashes_only=True).view
    assert "<img" not in view.summary
    assert f"“{name}”" in plain(view.summary)
