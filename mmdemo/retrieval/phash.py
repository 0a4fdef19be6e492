"""Perceptual hashes of stored images, and the pixel comparison that confirms a near-duplicate.

A hash is a DCT pHash (32×32 → the 8×8 lowest frequencies, each bit "above the median") of each
YCbCr channel, so a colour swap (a red circle on blue vs a blue circle on red, the same in grey)
is not a duplicate. It is taken of the whole image and of three centred crops (95, 90, 85 %), so
a lightly cropped copy still lands close to one of its original's crops. Hashes are read from the
gallery thumbnails and cached on disk by image SHA-256 (content-addressed: a hash never goes
stale), in ``settings.cache_dir/phash.sqlite3``.

Hashes only propose candidates. :func:`compare_pixels` confirms one: it aligns the two (blurred,
96×96) images by searching the crop box of one that best matches the other (coordinate descent on
the four insets, both ways round) and measures the mean and the worst 4×4-block absolute error
at 32×32. A re-encoded, resized or lightly cropped copy stays far below the thresholds; two
distinct scenes that share a layout do not.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mmdemo.data.images import image_path, thumb_path, train_path
from mmdemo.settings import Settings

HASH_VERSION = 3
CROPS = (1.0, 0.95, 0.9, 0.85)
"""Centred crops hashed per image (share of each side kept); the first is the whole image."""
CHANNELS = 3
_DCT_SIZE = 32
_LOW = 8
_ALIGN_SIZE = 96
_COMPARE_SIZE = 32
_MAX_INSET = 0.16
"""The most of one side a crop search may cut away (share of the side)."""


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT = _dct_matrix(_DCT_SIZE)
_WEIGHTS = (1 << np.arange(64, dtype=np.uint64)).astype(np.uint64)


def _channel_hash(channel: np.ndarray) -> np.uint64:
    coefficients = (_DCT @ channel @ _DCT.T)[:_LOW, :_LOW].reshape(-1)
    bits = coefficients > np.median(coefficients[1:])
    return np.bitwise_or.reduce(_WEIGHTS[bits]) if bits.any() else np.uint64(0)


LAYOUT = 8
"""A layout is the image's mean colours on a LAYOUT×LAYOUT grid (uint8 RGB): smooth images
(a gradient, a sky) whose hash bits are noise still have a telling layout."""


def _centre_crop(img: Image.Image, keep: float) -> Image.Image:
    if keep >= 1.0:
        return img
    w, h = img.size
    cw, ch = w * keep, h * keep
    box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
    return img.resize((_DCT_SIZE, _DCT_SIZE), Image.Resampling.LANCZOS, box=box)


def image_signature(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The hashes of one image, ``uint64[len(CROPS), 3]`` (crop × Y/Cb/Cr), and its layout,
    ``uint8[LAYOUT * LAYOUT * 3]``."""
    rgb = img.convert("RGB")
    out = np.zeros((len(CROPS), CHANNELS), dtype=np.uint64)
    layout = None
    for i, keep in enumerate(CROPS):
        small = _centre_crop(rgb, keep).resize((_DCT_SIZE, _DCT_SIZE), Image.Resampling.LANCZOS)
        if layout is None:
            pixels = np.asarray(small, dtype=np.float32)
            cell = _DCT_SIZE // LAYOUT
            means = pixels.reshape(LAYOUT, cell, LAYOUT, cell, 3).mean((1, 3))
            layout = np.clip(np.rint(means), 0, 255).astype(np.uint8).reshape(-1)
        ycc = np.asarray(small.convert("YCbCr"), dtype=np.float64)
        for c in range(CHANNELS):
            out[i, c] = _channel_hash(ycc[..., c])
    assert layout is not None
    return out, layout


_HASH_BYTES = len(CROPS) * CHANNELS * 8
_LAYOUT_BYTES = LAYOUT * LAYOUT * 3


def stored_image(settings: Settings, sha256: str, ext: str = "png") -> Path:
    """The smallest stored file of an image: its thumbnail, else its training copy or original."""
    for path in (thumb_path(settings.images_dir, sha256), train_path(settings.images_dir, sha256)):
        if path.is_file():
            return path
    return image_path(settings.images_dir, sha256, ext)


class HashCache:
    """Hashes by image SHA-256, on disk (one SQLite file) and in memory; thread-safe."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.path = Path(settings.cache_dir) / "phash.sqlite3"
        self._lock = threading.Lock()
        self._memory: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.computed = 0
        """Hashes computed from image files (a test checks that a second check computes none)."""

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS hashes_v{HASH_VERSION}"
            " (sha256 TEXT PRIMARY KEY, bits BLOB NOT NULL)"
        )
        return conn

    def signatures(
        self,
        shas: Sequence[str],
        exts: Sequence[str] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hashes ``uint64[n, len(CROPS), 3]`` and layouts ``uint8[n, LAYOUT²·3]``, one row per
        SHA in order; computes only images not cached yet."""
        shas = list(shas)
        with self._lock:
            todo = [s for s in dict.fromkeys(shas) if s not in self._memory]
        if todo:
            self._load(todo)
            with self._lock:
                todo = [s for s in todo if s not in self._memory]
        if todo:
            where = dict(zip(shas, exts, strict=True)) if exts is not None else {}
            fresh: dict[str, tuple[np.ndarray, np.ndarray]] = {}
            for done, sha in enumerate(todo, 1):
                path = stored_image(self.settings, sha, where.get(sha, "png"))
                with Image.open(path) as img:
                    fresh[sha] = image_signature(img)
                if progress is not None and (done % 50 == 0 or done == len(todo)):
                    progress(done, len(todo))
            self._save(fresh)
            with self._lock:
                self._memory.update(fresh)
                self.computed += len(fresh)
        with self._lock:
            if not shas:
                empty = np.zeros((0, len(CROPS), CHANNELS), dtype=np.uint64)
                return empty, np.zeros((0, _LAYOUT_BYTES), dtype=np.uint8)
            hashes = np.stack([self._memory[s][0] for s in shas])
            layouts = np.stack([self._memory[s][1] for s in shas])
        return hashes, layouts

    def missing(self, shas: Sequence[str]) -> list[str]:
        """The distinct SHAs among ``shas`` with no cached signature (in memory or on disk)."""
        with self._lock:
            todo = [s for s in dict.fromkeys(shas) if s not in self._memory]
        if todo:
            self._load(todo)
            with self._lock:
                todo = [s for s in todo if s not in self._memory]
        return todo

    def hashes(self, shas: Sequence[str], exts: Sequence[str] | None = None) -> np.ndarray:
        """Only the hashes of :meth:`signatures`."""
        return self.signatures(shas, exts)[0]

    def _load(self, shas: list[str]) -> None:
        found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        conn = self._connect()
        try:
            for start in range(0, len(shas), 500):
                chunk = shas[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT sha256, bits FROM hashes_v{HASH_VERSION} WHERE sha256 IN ({marks})",
                    chunk,
                )
                for sha, bits in rows:
                    if len(bits) == _HASH_BYTES + _LAYOUT_BYTES:
                        hashes = np.frombuffer(bits[:_HASH_BYTES], dtype=np.uint64)
                        layout = np.frombuffer(bits[_HASH_BYTES:], dtype=np.uint8)
                        found[sha] = (hashes.reshape(len(CROPS), CHANNELS).copy(), layout.copy())
        finally:
            conn.close()
        with self._lock:
            self._memory.update(found)

    def _save(self, fresh: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        if not fresh:
            return
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT OR IGNORE INTO hashes_v{HASH_VERSION}(sha256, bits) VALUES (?, ?)",
                [
                    (sha, hashes.astype(np.uint64).tobytes() + layout.astype(np.uint8).tobytes())
                    for sha, (hashes, layout) in fresh.items()
                ],
            )
            conn.execute("COMMIT")
        finally:
            conn.close()


def _distance(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Largest per-channel Hamming distance: ``[..., 3] → [...]``."""
    return np.bitwise_count(x ^ y).max(-1)


def hash_distances(hashes: np.ndarray, rows: slice | None = None) -> np.ndarray:
    """Distance of every image in ``rows`` to every image: ``int[len(rows), n]``.

    The distance of two images is the smallest, over "one whole, the other whole or cropped",
    of the largest per-channel Hamming distance (0–64): all three channels
    must be close.
    """
    rows = rows or slice(0, len(hashes))
    part = hashes[rows]
    whole_all = hashes[:, 0, :]
    whole_part = part[:, 0, :]
    best = np.full((part.shape[0], hashes.shape[0]), 64, dtype=np.uint8)
    for k in range(len(CROPS)):
        # part cropped (or whole) vs everyone whole, and part whole vs everyone cropped
        np.minimum(best, _distance(part[:, None, k, :], whole_all[None, :, :]), out=best)
        if k:
            two = _distance(whole_part[:, None, :], hashes[None, :, k, :])
            np.minimum(best, two, out=best)
    return best


def hash_distance_pairs(
    hashes: np.ndarray, max_distance: int, chunk_elements: int = 4_000_000
) -> list[tuple[int, int, int]]:
    """Every pair ``(i, j, distance)`` with ``i < j`` and distance at most ``max_distance``."""
    n = len(hashes)
    found: list[tuple[int, int, int]] = []
    step = max(1, chunk_elements // max(1, n * len(CROPS) * CHANNELS))
    for start in range(0, n, step):
        block = hash_distances(hashes, slice(start, min(n, start + step)))
        rows, cols = np.nonzero(block <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + r
            if i < c:
                found.append((i, c, int(block[r, c])))
    return found


def layout_pairs(
    layouts: np.ndarray, neighbours: int = 2, max_rms: float = 0.04
) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, where ``j`` is one of ``i``'s ``neighbours`` nearest layouts
    (or the other way round) and their RMS colour difference is at most ``max_rms`` (share of
    full scale)."""
    n = len(layouts)
    if n < 2:
        return []
    x = layouts.astype(np.float32) / 255.0
    norms = (x * x).sum(axis=1)
    found: set[tuple[int, int]] = set()
    k = min(neighbours, n - 1)
    limit = max_rms * max_rms * x.shape[1]
    for start in range(0, n, 1024):
        block = x[start : start + 1024]
        d2 = norms[start : start + len(block), None] + norms[None, :] - 2.0 * (block @ x.T)
        for r in range(len(block)):
            d2[r, start + r] = np.inf
        nearest = (
            np.argpartition(d2, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(d2, 1)[:, :k]
        )
        for r, row in enumerate(nearest):
            i = start + r
            for j in row.tolist():
                if d2[r, j] <= limit:
                    found.add((min(i, j), max(i, j)))
    return sorted(found)


# -- confirming a candidate by its pixels ---------------------------------------------------------
@dataclass(frozen=True)
class Aligned:
    """An image prepared for :func:`compare_pixels`: 96×96 RGB in [0, 1], lightly blurred, and
    its column and row means (the profiles the crop search matches)."""

    pixels: np.ndarray
    """``float32[3, 96, 96]`` (channels first)."""
    columns: np.ndarray
    """``float32[96, 3]``: the mean of each column."""
    rows: np.ndarray


def aligned_image(path: Path | str) -> Aligned:
    """Read and prepare a stored image for :func:`compare_pixels`."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    resample = Image.Resampling.BOX if min(rgb.size) >= _ALIGN_SIZE else Image.Resampling.BICUBIC
    small = rgb.resize((_ALIGN_SIZE, _ALIGN_SIZE), resample).filter(ImageFilter.GaussianBlur(1.5))
    pixels = np.asarray(small, dtype=np.float32) / 255.0
    return Aligned(
        np.ascontiguousarray(pixels.transpose(2, 0, 1)), pixels.mean(axis=0), pixels.mean(axis=1)
    )


def _sample_points(near: np.ndarray, far: np.ndarray) -> np.ndarray:
    """Source coordinates of the 32 output samples for each (near, far) inset: ``[k, 32]``."""
    span = _ALIGN_SIZE - near - far
    k = (np.arange(_COMPARE_SIZE, dtype=np.float64) + 0.5) / _COMPARE_SIZE
    return np.clip(near[:, None] + k[None, :] * span[:, None] - 0.5, 0, _ALIGN_SIZE - 1)


def _weights(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source indices and the weight of the second, per sample point."""
    low = np.floor(points).astype(np.intp)
    high = np.minimum(low + 1, _ALIGN_SIZE - 1)
    return low, high, (points - low).astype(np.float32)[..., None]


def _interpolate(profile: np.ndarray, weights: tuple[np.ndarray, ...]) -> np.ndarray:
    """``profile`` at the sample points by linear interpolation: ``[..., 3]``."""
    low, high, weight = weights
    lows = profile[low]
    return lows + (profile[high] - lows) * weight


def _matrix(near: float, far: float) -> np.ndarray:
    """The ``32×96`` linear-interpolation matrix of one axis for a crop."""
    points = _sample_points(np.array([near]), np.array([far]))[0]
    low = np.floor(points).astype(np.int64)
    high = np.minimum(low + 1, _ALIGN_SIZE - 1)
    weight = points - low
    matrix = np.zeros((_COMPARE_SIZE, _ALIGN_SIZE), dtype=np.float32)
    rows = np.arange(_COMPARE_SIZE)
    matrix[rows, low] += 1 - weight
    matrix[rows, high] += weight  # where high == low (the last pixel) the weights add to one
    return matrix


def _grid(near: np.ndarray, far: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    grid_near, grid_far = (g.reshape(-1) for g in np.meshgrid(near, far, indexing="ij"))
    return grid_near, grid_far


_COARSE = _grid(*(np.arange(0.0, _MAX_INSET * _ALIGN_SIZE + 1e-9, 1.0),) * 2)
_COARSE_POINTS = _weights(_sample_points(*_COARSE))
_WHOLE = tuple(w[0] for w in _COARSE_POINTS)  # near = far = 0
_FINE = np.arange(-1.0, 1.0 + 1e-9, 0.25)


def _best_insets(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """The (near, far) insets of one axis whose resampled ``source`` profile best fits
    ``target``'s whole profile: a 1-pixel grid, then a quarter-pixel one around its best."""
    wanted = _interpolate(target, _WHOLE)[None]
    errors = np.abs(_interpolate(source, _COARSE_POINTS) - wanted).mean(axis=(1, 2))
    best = int(np.argmin(errors))
    limit = _MAX_INSET * _ALIGN_SIZE
    near, far = (np.clip(g[best] + _FINE, 0.0, limit) for g in _COARSE)
    fine = _grid(near, far)
    errors = np.abs(_interpolate(source, _weights(_sample_points(*fine))) - wanted).mean(
        axis=(1, 2)
    )
    best = int(np.argmin(errors))
    return float(fine[0][best]), float(fine[1][best])


def _view(img: Aligned, insets: Sequence[float] = (0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """The 32×32 view of ``img`` through a crop box given as (left, top, right, bottom) insets."""
    left, top, right, bottom = insets
    ry, rx = _matrix(top, bottom), _matrix(left, right)
    return (ry @ img.pixels) @ rx.T  # [3, 32, 32]


@dataclass(frozen=True)
class PixelMatch:
    """How well two images match once aligned: errors are in [0, 1] (share of full scale)."""

    mean_error: float
    block_error: float
    """The worst 4×4 block of the 32×32 comparison: a changed object shows here."""
    exact: bool
    """Same pixels without any alignment (a re-saved copy of the same picture)."""

    def similarity(self) -> float:
        return round(max(0.0, 1.0 - self.mean_error), 4)


def _errors(source: Aligned, insets: Sequence[float], wanted: np.ndarray) -> np.ndarray:
    return np.abs(_view(source, insets) - wanted).mean(0)


def _refine(
    source: Aligned, insets: list[float], wanted: np.ndarray, value: float
) -> tuple[list[float], float]:
    """Coordinate descent on the four insets (1, ½, ¼ pixel steps) from ``insets``."""
    limit = _MAX_INSET * _ALIGN_SIZE
    for step in (1.0, 0.5, 0.25):
        improved = True
        while improved:
            improved = False
            for k in range(4):
                for sign in (1.0, -1.0):
                    trial = list(insets)
                    trial[k] = min(limit, max(0.0, trial[k] + sign * step))
                    if trial == insets:
                        continue
                    score = float(_errors(source, trial, wanted).mean())
                    if score < value - 1e-6:
                        insets, value, improved = trial, score, True
    return insets, value


def compare_pixels(a: Aligned, b: Aligned, refine_below: float = 0.06) -> PixelMatch:
    """Align ``a`` and ``b`` both ways round and measure the better match.

    The crop of one that best fits the other starts from the whole image and from the box
    whose column and row profiles fit best; the better start is refined by coordinate descent
    when its mean error is below ``refine_below`` (further off is not a copy).
    """
    whole_a, whole_b = _view(a), _view(b)
    exact = float(np.abs(whole_a - whole_b).max()) < 2.5 / 255.0
    results = []
    for source, target, wanted in ((a, b, whole_b), (b, a, whole_a)):
        left, right = _best_insets(source.columns, target.columns)
        top, bottom = _best_insets(source.rows, target.rows)
        starts = [[0.0, 0.0, 0.0, 0.0], [left, top, right, bottom]]
        scored = [(float(_errors(source, box, wanted).mean()), box) for box in starts]
        value, box = min(scored, key=lambda item: item[0])
        if value < refine_below:
            box, value = _refine(source, box, wanted, value)
        errors = _errors(source, box, wanted)
        blocks = errors.reshape(8, 4, 8, 4).mean((1, 3))
        results.append((float(errors.mean()), float(blocks.max())))
    mean_error, block_error = min(results)
    return PixelMatch(mean_error, block_error, exact)
