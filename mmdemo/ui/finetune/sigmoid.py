"""The Finetune tab's read-only box with the start values of the sigmoid loss's learnable
temperature ``t`` and bias ``b``, shown while the sigmoid loss is picked."""

from __future__ import annotations

from typing import Any

from mmdemo.services import Services

SIGMOID_START_LABEL = "Sigmoid loss starts at (learned during training)"


def sigmoid_start_text(services: Services) -> str:
    """Where a sigmoid-loss run on the base model starts: ``t = 10, b = -10`` (the SigLIP paper's
    start) or a pretrained SigLIP's own values, read from the loss the run would build
    (:class:`~mmdemo.training.data.MaskedSigmoidLoss`)."""
    from mmdemo.retrieval.models import ModelLoadError
    from mmdemo.training.data import MaskedSigmoidLoss, siglip_start_values

    try:
        model = services.models.get(services.model.spec)
    except ModelLoadError as exc:
        return f"unknown: the base model does not load ({exc})"
    t, b = MaskedSigmoidLoss(model, relevance=None).start
    source = (
        "the base model's own, from its pretraining"
        if siglip_start_values(model) is not None
        else "the SigLIP paper's start; the base model has no trained t and b"
    )
    return f"t = {t:.4g}, b = {b:.4g} ({source})"


def sigmoid_box(services: Services, loss: str | None) -> dict[str, Any]:
    """The box's update for the picked loss: shown with the start values for ``sigmoid``,
    hidden otherwise (its value then left as it is)."""
    if loss != "sigmoid":
        return {"visible": False}
    return {"visible": True, "value": sigmoid_start_text(services)}
