"""The Finetune tab's knobs: their choices and start values, and the checked
:class:`~mmdemo.training.run.TrainConfig` they make (used by :mod:`mmdemo.ui.finetune.handlers`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from mmdemo.training.run import TrainConfig, TrainingError, default_config

LOSS_CHOICES = [
    ("MNRL: text → image", "mnrl"),
    ("Symmetric MNRL: text ↔ image", "symmetric"),
    ("Cached MNRL: big batches in small pieces", "cached"),
    ("Cached symmetric MNRL", "cached-symmetric"),
    ("Sigmoid (SigLIP): every pair a yes/no, learned temperature", "sigmoid"),
]
SAMPLER_CHOICES = [
    ("auto", "auto"),
    ("no duplicates", "no_duplicates"),
    ("plain (duplicates masked)", "batch_sampler"),
]


# -- knobs -----------------------------------------------------------------------------------------
class Knobs(NamedTuple):
    """The tab's knobs, in the order of the Start button's inputs (``None``: a cleared box)."""

    epochs: float | None
    max_minutes: float | None
    batch_size: float | None
    lr: float | None
    warmup_ratio: float | None
    seed: float | None
    loss: str
    mini_batch_size: float | None
    matryoshka: bool
    matryoshka_dims: str
    use_hard_negatives: bool
    sampler: str
    scale: float | None


def default_knobs(tiny: bool = True) -> Knobs:
    """The knobs' start values: a short finetune tuned for the tiny model, or gentle defaults
    for a pretrained base model (:func:`mmdemo.training.run.default_config`)."""
    c = default_config(tiny)
    dims = ", ".join(str(d) for d in c.matryoshka_dims)
    return Knobs(
        c.epochs,
        c.max_minutes,
        c.batch_size,
        c.lr,
        c.warmup_ratio,
        c.seed,
        c.loss,
        c.mini_batch_size,
        bool(c.matryoshka_dims),
        dims,
        c.use_hard_negatives,
        c.sampler,
        c.scale,
    )


def _required(value: float | None, what: str) -> float:
    if value is None or value == "":
        raise TrainingError(f"Fill in the {what}.")
    return float(value)


def parse_dims(text: str | None, embedding_dim: Callable[[], int | None] | None) -> tuple:
    """Matryoshka dimensions from ``"512, 256"``; empty: full, ½, ¼ and ⅛ of the model's."""
    parts = [p for p in (text or "").replace(";", ",").replace(" ", ",").split(",") if p]
    if parts:
        try:
            dims = sorted({int(p) for p in parts}, reverse=True)
        except ValueError as exc:
            raise TrainingError(
                "Matryoshka dimensions are whole numbers, e.g. 64, 32, 16."
            ) from exc
        if dims[-1] < 1:
            raise TrainingError("Matryoshka dimensions must be more than 0.")
        return tuple(dims)
    dim = embedding_dim() if embedding_dim is not None else None
    if not dim:
        raise TrainingError("Write the Matryoshka dimensions (the model's size is unknown).")
    return tuple(d for d in (dim, dim // 2, dim // 4, dim // 8) if d >= 1)


def build_config(
    knobs: Knobs, embedding_dim: Callable[[], int | None] | None = None
) -> TrainConfig:
    """A checked :class:`TrainConfig` from the knobs; :class:`TrainingError` says what is wrong.

    ``embedding_dim`` is asked only when Matryoshka is on and no dimensions are written.
    """
    config = TrainConfig(
        epochs=_required(knobs.epochs, "number of epochs"),
        max_minutes=_required(knobs.max_minutes, "time budget"),
        batch_size=int(_required(knobs.batch_size, "batch size")),
        lr=_required(knobs.lr, "learning rate"),
        warmup_ratio=_required(knobs.warmup_ratio, "warm-up"),
        seed=int(_required(knobs.seed, "seed")),
        loss=knobs.loss,
        use_hard_negatives=bool(knobs.use_hard_negatives),
        mini_batch_size=int(_required(knobs.mini_batch_size, "mini-batch size")),
        sampler=knobs.sampler,
        scale=_required(knobs.scale, "scale"),
    )
    if knobs.matryoshka:
        config.matryoshka_dims = parse_dims(knobs.matryoshka_dims, embedding_dim)
    if config.loss.startswith("cached") and config.mini_batch_size < 1:
        raise TrainingError("The mini-batch size must be at least 1.")
    return config.validate()


def uses_mini_batches(loss: str | None) -> bool:
    """Whether the loss splits batches (then the mini-batch size box is shown)."""
    return bool(loss) and str(loss).startswith("cached")
