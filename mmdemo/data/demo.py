"""The built-in demo collection: synthetic two-shape scenes where attribute binding matters.

Each scene holds two coloured shapes in a spatial relation, captioned compositionally
("a red circle above a blue square"). Swapping the colours gives a hard negative that names the
same words in the wrong binding ("a blue circle above a red square"): a bag-of-words model
cannot tell them apart, a model that binds colour to shape can. The helpers
:func:`swap_attributes`, :func:`swap_shapes` and :func:`flip_relation` build such negatives for
the attribute-binding probe.

Everything is deterministic: the same ``n`` and ``seed`` give the same PNG bytes.
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from mmdemo.data.ingest import ImportReport, ProgressFn, ingest_item
from mmdemo.data.store import Collection, Store, StoreError
from mmdemo.locks import file_lock
from mmdemo.settings import Settings

DEMO_COLLECTION = "demo-shapes"
DEMO_AUTHOR = "mmdemo-demo"
IMAGE_SIZE = 128
EVAL_FRACTION = 0.12
"""Share of scenes in the ``eval`` split. With the default 540 scenes (every configuration once)
that is 65 eval scenes whose combinations training never sees, and 475 to learn from: measured on
the tiny model, the default finetune reaches eval text→image recall@1 0.85–0.86 this way, against
0.69–0.83 with 320 scenes and a 20% eval split (less to learn from)."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (30, 160, 60),
    "blue": (35, 75, 225),
    "yellow": (240, 205, 20),
    "purple": (135, 50, 175),
    "orange": (250, 125, 20),
}
SHAPES = ("circle", "square", "triangle")
RELATIONS = ("above", "below", "to the left of", "to the right of")
CAPTION_RELATIONS = ("above", "to the left of")
"""The relations demo captions use. Each scene is said one way only ("A above B", never "B below
A"): a tiny model trained for two minutes then learns each relation once instead of also learning
that two phrasings are the same scene (eval text→image recall@1 ≈ 0.05 higher). The opposite
relations stay parseable, for hard negatives (:func:`flip_relation`)."""
_OPPOSITE = {
    "above": "below",
    "below": "above",
    "to the left of": "to the right of",
    "to the right of": "to the left of",
}
SHAPE_SIZE_RANGE = (40.0, 52.0)
"""Width of a shape in pixels: large enough to stay recognisable at the tiny model's 32×32."""
GAP_RANGE = (4.0, 12.0)
_SUPERSAMPLE = 4  # draw large, then downsample: smooth edges that survive resizing

_CAPTION_RE = re.compile(
    r"^an? (?P<c1>{c}) (?P<s1>{s}) (?P<rel>{r}) an? (?P<c2>{c}) (?P<s2>{s})$".format(
        c="|".join(COLORS), s="|".join(SHAPES), r="|".join(RELATIONS)
    )
)


@dataclass(frozen=True)
class SceneAttrs:
    """What a caption says: ``<color1> <shape1> <relation> <color2> <shape2>``."""

    color1: str
    shape1: str
    relation: str
    color2: str
    shape2: str

    def caption(self) -> str:
        return (
            f"{_article(self.color1)} {self.color1} {self.shape1} {self.relation} "
            f"{_article(self.color2)} {self.color2} {self.shape2}"
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "color1": self.color1,
            "shape1": self.shape1,
            "relation": self.relation,
            "color2": self.color2,
            "shape2": self.shape2,
        }


@dataclass(frozen=True)
class DemoScene:
    """One generated pair: caption, PNG bytes, split and what the scene shows."""

    caption: str
    image_bytes: bytes
    split: str
    attrs: dict = field(default_factory=dict)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# -- captions and their hard negatives -----------------------------------------------------------
def parse_caption(caption: str) -> SceneAttrs | None:
    """The scene a demo-style caption describes, or ``None`` for any other text."""
    match = _CAPTION_RE.match(" ".join(caption.strip().lower().split()))
    if not match:
        return None
    return SceneAttrs(match["c1"], match["s1"], match["rel"], match["c2"], match["s2"])


def swap_attributes(caption: str) -> str | None:
    """Swap the two colours ("a red circle above a blue square" → "a blue circle above a red
    square"); ``None`` when the caption is not a demo caption or both colours are equal."""
    scene = parse_caption(caption)
    if scene is None or scene.color1 == scene.color2:
        return None
    return SceneAttrs(
        scene.color2, scene.shape1, scene.relation, scene.color1, scene.shape2
    ).caption()


def swap_shapes(caption: str) -> str | None:
    """Swap the two shapes; ``None`` when not a demo caption or both shapes are equal."""
    scene = parse_caption(caption)
    if scene is None or scene.shape1 == scene.shape2:
        return None
    return SceneAttrs(
        scene.color1, scene.shape2, scene.relation, scene.color2, scene.shape1
    ).caption()


def flip_relation(caption: str) -> str | None:
    """Replace the relation by its opposite (above ↔ below, left ↔ right); ``None`` when the
    caption is not a demo caption."""
    scene = parse_caption(caption)
    if scene is None:
        return None
    return SceneAttrs(
        scene.color1, scene.shape1, _OPPOSITE[scene.relation], scene.color2, scene.shape2
    ).caption()


def hard_negative_captions(caption: str) -> list[str]:
    """Every distinct compositional hard negative of a demo caption (colour swap first)."""
    found: list[str] = []
    for make in (swap_attributes, swap_shapes, flip_relation):
        negative = make(caption)
        if negative and negative != caption and negative not in found:
            found.append(negative)
    return found


def _canonical(scene: SceneAttrs) -> tuple[str, str, str, str, str]:
    """One key per depicted configuration: "A below B" is the same scene as "B above A"."""
    if scene.relation in ("below", "to the right of"):
        return (scene.color2, scene.shape2, _OPPOSITE[scene.relation], scene.color1, scene.shape1)
    return (scene.color1, scene.shape1, scene.relation, scene.color2, scene.shape2)


def _all_configurations() -> list[tuple[str, str, str, str, str]]:
    """Every distinct configuration (first object above / left of the second), colours distinct."""
    return [
        (c1, s1, rel, c2, s2)
        for rel in CAPTION_RELATIONS
        for c1 in COLORS
        for c2 in COLORS
        if c1 != c2
        for s1 in SHAPES
        for s2 in SHAPES
    ]


# -- rendering -----------------------------------------------------------------------------------
def _draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, size: float, color: tuple
) -> None:
    half = size / 2
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=color)
    elif shape == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon(
            [(cx, cy - half), (cx + half, cy + half * 0.85), (cx - half, cy + half * 0.85)],
            fill=color,
        )


def _layout(rng: random.Random, vertical: bool) -> tuple[tuple[float, float, float], ...]:
    """Centres and sizes of (first, second) with the first clearly above / left of the second."""
    size1, size2 = rng.uniform(*SHAPE_SIZE_RANGE), rng.uniform(*SHAPE_SIZE_RANGE)
    margin, gap = 6.0, rng.uniform(*GAP_RANGE)
    # Along the relation axis: first object, gap, second object, somewhere inside the canvas.
    span = size1 + gap + size2
    start = rng.uniform(margin, IMAGE_SIZE - margin - span)
    a1 = start + size1 / 2
    a2 = start + size1 + gap + size2 / 2
    # Across it: independent positions, but never so far apart that the relation gets ambiguous.
    limit = (a2 - a1) * 0.6
    b1 = rng.uniform(margin + size1 / 2, IMAGE_SIZE - margin - size1 / 2)
    low = max(margin + size2 / 2, b1 - limit)
    high = min(IMAGE_SIZE - margin - size2 / 2, b1 + limit)
    b2 = rng.uniform(low, high)
    if vertical:
        return (b1, a1, size1), (b2, a2, size2)
    return (a1, b1, size1), (a2, b2, size2)


def render_scene(scene: SceneAttrs, rng: random.Random) -> bytes:
    """Draw a scene as a 128×128 PNG (light background, the two shapes, mild jitter)."""
    first_is_leading = scene.relation in ("above", "to the left of")
    vertical = scene.relation in ("above", "below")
    lead, trail = _layout(rng, vertical)
    first, second = (lead, trail) if first_is_leading else (trail, lead)
    background = tuple(int(v + rng.uniform(-6, 6)) for v in (238, 238, 232))
    scale = _SUPERSAMPLE
    canvas = Image.new("RGB", (IMAGE_SIZE * scale, IMAGE_SIZE * scale), background)
    draw = ImageDraw.Draw(canvas)
    for (cx, cy, size), colour_name, shape in (
        (first, scene.color1, scene.shape1),
        (second, scene.color2, scene.shape2),
    ):
        colour = tuple(max(0, min(255, int(v + rng.uniform(-12, 12)))) for v in COLORS[colour_name])
        _draw_shape(draw, shape, cx * scale, cy * scale, size * scale, colour)
    image = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def generate_demo_scenes(n: int, seed: int = 0) -> list[DemoScene]:
    """``n`` deterministic scenes, :data:`EVAL_FRACTION` of them in the ``eval`` split.

    Captions are unique up to the number of distinct configurations (540); beyond that
    configurations repeat with new layouts. Captions use :data:`CAPTION_RELATIONS` only, so
    equivalent phrasings ("A below B" for "B above A") never appear and text→image retrieval
    stays well defined.
    """
    if n <= 0:
        return []
    rng = random.Random(seed)
    configurations = _all_configurations()
    order: list[tuple[str, str, str, str, str]] = []
    while len(order) < n:
        batch = configurations[:]
        rng.shuffle(batch)
        order.extend(batch)
    order = order[:n]
    eval_count = round(n * EVAL_FRACTION)
    eval_indices = set(rng.sample(range(n), eval_count))
    scenes: list[DemoScene] = []
    for index, (c1, s1, rel, c2, s2) in enumerate(order):
        scene = SceneAttrs(c1, s1, rel, c2, s2)
        image = render_scene(scene, rng)
        split = "eval" if index in eval_indices else "train"
        scenes.append(DemoScene(scene.caption(), image, split, scene.as_dict()))
    return scenes


# -- the collection ------------------------------------------------------------------------------
def demo_lock_path(settings: Settings) -> Path:
    """The lock file that serialises building the demo collection in one home."""
    return settings.home / "locks" / "demo-collection.lock"


def ensure_demo_collection(
    store: Store,
    settings: Settings,
    name: str = DEMO_COLLECTION,
    progress: ProgressFn | None = None,
) -> Collection:
    """Create the demo collection (``settings.demo_pairs`` scenes) unless it already exists.

    Fast when present: nothing is generated. The pairs go into a temporary collection that is
    renamed when complete, so an interrupted first start never leaves a half-filled demo. The
    check and the build hold :func:`demo_lock_path` (:func:`~mmdemo.locks.file_lock`): a second
    process (another rank of ``torchrun``, the app beside the CLI) waits, then finds the finished
    collection instead of deleting the first one's staging collection as a leftover.
    """
    existing = store.find_collection(name)
    if existing is not None:
        return existing
    with file_lock(demo_lock_path(settings)):
        existing = store.find_collection(name)
        if existing is not None:  # built by another process while this one waited
            return existing
        return _build_demo_collection(store, settings, name, progress)


def _build_demo_collection(
    store: Store, settings: Settings, name: str, progress: ProgressFn | None
) -> Collection:
    """Generate the scenes into ``"<name> (being created)"`` and rename it (lock held)."""
    building = f"{name} (being created)"
    if store.find_collection(building) is not None:
        store.delete_collection(building)  # left over from an interrupted start
    staging = store.create_collection(building)
    scenes = generate_demo_scenes(settings.demo_pairs)
    report = ImportReport(collection=name)
    for index, scene in enumerate(scenes):
        ingest_item(
            store,
            settings,
            staging.id,
            report,
            item_name=f"demo-{index:04d}.png",
            image_bytes=scene.image_bytes,
            caption=scene.caption,
            split=scene.split,
            author=DEMO_AUTHOR,
            source="mmdemo built-in demo (synthetic shapes)",
        )
        if progress is not None:
            progress(index + 1, len(scenes), scene.caption)
    try:
        return store.rename_collection(building, name)
    except StoreError:  # created meanwhile by a process that does not take the lock: keep it
        store.delete_collection(building)
        return store.collection(name)
