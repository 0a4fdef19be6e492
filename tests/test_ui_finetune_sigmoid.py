"""The Finetune tab's read-only box with the sigmoid loss's start temperature and bias (real
tiny CLIP and a tiny SigLIP given pretrained-like values)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from mmdemo.retrieval.models import ModelChoice, build_tiny_model
from mmdemo.services import Services
from mmdemo.settings import Settings
from mmdemo.ui.finetune.sigmoid import sigmoid_box, sigmoid_start_text


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Services:
    home = tmp_path_factory.mktemp("sigmoid-home")
    settings = Settings.from_env({"MMDEMO_HOME": str(home), "MMDEMO_BASE_MODEL": "tiny"})
    services = Services.create(settings, demo=False, recover_runs=False)
    yield services
    services.close()


def test_the_box_shows_only_for_the_sigmoid_loss(services: Services):
    assert sigmoid_box(services, "mnrl") == {"visible": False}
    assert sigmoid_box(services, "cached-symmetric") == {"visible": False}
    shown = sigmoid_box(services, "sigmoid")
    assert shown["visible"] is True and shown["value"] == sigmoid_start_text(services)


def test_a_model_without_trained_t_and_b_starts_at_the_papers_values(services: Services):
    text = sigmoid_start_text(services)  # the tiny CLIP has a logit scale but no bias
    assert text.startswith("t = 10, b = -10 ")
    assert "SigLIP paper's start" in text


def test_a_pretrained_siglip_starts_at_its_own_values(services: Services, tmp_path: Path):
    from sentence_transformers import SentenceTransformer

    folder = build_tiny_model(tmp_path / "built", "siglip")
    model = SentenceTransformer(str(folder), device="cpu")
    hf = model[0].model
    hf.logit_scale.data.fill_(math.log(112.0))  # google/siglip-base-patch16-224's are close
    hf.logit_bias.data.fill_(-16.5)
    pretrained = tmp_path / "pretrained-siglip"
    model.save_pretrained(str(pretrained))
    choice = ModelChoice(str(pretrained), "pretrained-siglip", "test", False)
    text = sigmoid_start_text(dataclasses.replace(services, model=choice))
    assert text == "t = 112, b = -16.5 (the base model's own, from its pretraining)"


def test_a_base_model_that_does_not_load_says_so(services: Services, tmp_path: Path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    choice = ModelChoice(str(empty), "x", "test", False)
    text = sigmoid_start_text(dataclasses.replace(services, model=choice))
    assert text.startswith("unknown: the base model does not load") and "not a model" in text
