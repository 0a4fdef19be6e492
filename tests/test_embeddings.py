"""The on-disk embedding cache: encode once, survive restarts and kills, rebuild on corruption.

The bookkeeping tests use a small deterministic encoder that counts its calls (what is asked of
the model is the thing under test); one end-to-end test uses the real tiny CLIP.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest

from mmdemo.data.images import ImageLimits, ingest_image_bytes, load_rgb, train_path
from mmdemo.retrieval.embeddings import EmbeddingCache, normalise_rows, text_key
from mmdemo.retrieval.search import collection_corpus
from tests.conftest import make_image_bytes

FP = "fake:model-1"


class CountingEncoder:
    """Deterministic vectors (texts from a hash, images from their pixels); counts calls."""

    def __init__(self, dim: int = 8):
        self.dim = dim
        self.calls = 0
        self.items = 0
        self.seen: list[object] = []

    def vector(self, item: object) -> np.ndarray:
        if isinstance(item, dict):  # {"text": ...}: the cache marks texts explicitly
            item = item["text"]
        if isinstance(item, str):
            seed = int(hashlib.sha256(item.encode()).hexdigest()[:12], 16)
        else:
            seed = int(hashlib.sha256(np.asarray(item).tobytes()).hexdigest()[:12], 16)
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, inputs: list, **kwargs: object) -> np.ndarray:
        self.calls += 1
        self.items += len(inputs)
        self.seen.extend(inputs)
        return np.stack([self.vector(x) for x in inputs])


def add_images(settings, n: int, start: int = 0) -> list[str]:
    """Store ``n`` distinct real images; return their SHAs."""
    limits = ImageLimits.from_settings(settings)
    shas = []
    for i in range(start, start + n):
        colour = ((i * 37) % 256, (i * 91 + 40) % 256, (i * 53 + 90) % 256)
        shas.append(
            ingest_image_bytes(make_image_bytes(colour), settings.images_dir, limits).sha256
        )
    return shas


def expected_images(settings, shas: list[str]) -> np.ndarray:
    reference = CountingEncoder()
    return normalise_rows(
        np.stack([reference.vector(load_rgb(train_path(settings.images_dir, s))) for s in shas])
    )


def test_images_encode_once_and_reopening_costs_nothing(settings):
    shas = add_images(settings, 5)
    encoder = CountingEncoder()
    cache = EmbeddingCache(settings, chunk_size=2)
    first = np.array(cache.image_embeddings(encoder, FP, shas))
    assert encoder.items == 5 and encoder.calls == 3  # chunks of 2, 2, 1
    np.testing.assert_allclose(first, expected_images(settings, shas), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-6)

    again = cache.image_embeddings(encoder, FP, list(reversed(shas)))
    assert encoder.calls == 3
    np.testing.assert_array_equal(again, first[::-1])

    reopened = EmbeddingCache(settings)  # a restart: a new process-wide object, same folder
    np.testing.assert_array_equal(reopened.image_embeddings(encoder, FP, shas), first)
    assert encoder.calls == 3
    assert reopened.encode_calls == 0 and cache.encode_calls == 3 and cache.encoded_items == 5


def test_only_new_items_are_encoded(settings):
    shas = add_images(settings, 4)
    encoder = CountingEncoder()
    cache = EmbeddingCache(settings)
    cache.image_embeddings(encoder, FP, shas[:2])
    assert encoder.items == 2
    both = cache.image_embeddings(encoder, FP, [shas[3], shas[0], shas[2], shas[1]])
    assert encoder.items == 4
    assert [load_rgb(train_path(settings.images_dir, s)).tobytes() for s in (shas[3], shas[2])] == [
        img.tobytes() for img in encoder.seen[2:]
    ]
    np.testing.assert_allclose(
        both, expected_images(settings, [shas[3], shas[0], shas[2], shas[1]]), rtol=1e-6
    )


def test_models_are_kept_apart(settings):
    shas = add_images(settings, 2)
    one, two = CountingEncoder(dim=8), CountingEncoder(dim=4)
    cache = EmbeddingCache(settings)
    a = cache.image_embeddings(one, "model-a", shas)
    b = cache.image_embeddings(two, "model-b", shas)
    assert a.shape == (2, 8) and b.shape == (2, 4)
    assert one.items == 2 and two.items == 2
    assert cache.count("model-a") == 2 and cache.count("model-b") == 2


def test_texts_deduplicated_ordered_and_persistent(settings):
    encoder = CountingEncoder()
    cache = EmbeddingCache(settings)
    texts = ["a red circle", "a blue square", "a red circle", "a red circle "]
    vectors = cache.text_embeddings(encoder, FP, texts)
    assert encoder.items == 3  # identical texts once; a trailing space is another text
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert not np.allclose(vectors[0], vectors[3])
    np.testing.assert_allclose(vectors[1], normalise_rows(encoder.vector("a blue square"))[0])
    EmbeddingCache(settings).text_embeddings(encoder, FP, ["a blue square", "a red circle"])
    assert encoder.items == 3
    assert EmbeddingCache(settings).count(FP, "text") == 3


def _add_pair(store, settings, collection_id: int, colour, caption: str):
    stored = ingest_image_bytes(
        make_image_bytes(colour), settings.images_dir, ImageLimits.from_settings(settings)
    )
    pair, _ = store.add_pair(collection_id, stored.as_row(), caption, "train")
    return pair


def test_replaced_image_is_encoded_and_deleted_pair_is_not_asked(store, settings):
    coll = store.create_collection("c")
    pairs = [_add_pair(store, settings, coll.id, (10 * i, 90, 200), f"c{i}") for i in range(3)]
    encoder = CountingEncoder()
    cache = EmbeddingCache(settings)
    corpus = collection_corpus(store, cache, encoder, FP, coll.id)
    assert len(corpus) == 3 and encoder.items == 3

    # Replace pair 1's image: delete it and add the new image with the same caption.
    store.delete_pair(pairs[1].id)
    new = _add_pair(store, settings, coll.id, (250, 250, 10), "c1")
    corpus = collection_corpus(store, cache, encoder, FP, coll.id)
    assert encoder.items == 4  # only the new image
    assert set(corpus.shas) == {pairs[0].image_sha256, pairs[2].image_sha256, new.image_sha256}
    assert pairs[1].image_sha256 not in corpus.shas
    np.testing.assert_allclose(
        np.asarray(corpus.matrix), expected_images(settings, list(corpus.shas)), rtol=1e-6
    )

    # Deleting a pair needs no encoding at all; its image is simply not in the corpus.
    store.delete_pair(pairs[0].id)
    corpus = collection_corpus(store, cache, encoder, FP, coll.id)
    assert encoder.items == 4 and pairs[0].image_sha256 not in corpus.shas
    assert len(corpus) == 2

    # Undoing the delete brings the old embedding back from disk, not from the model.
    store.restore_pair(pairs[0].id)
    corpus = collection_corpus(store, cache, encoder, FP, coll.id)
    assert encoder.items == 4 and pairs[0].image_sha256 in corpus.shas


def _files(settings) -> tuple[Path, Path]:
    folder = next((settings.cache_dir / "embeddings").iterdir())
    return folder / "image.f32", folder / "image.sqlite3"


def test_killed_write_leaves_a_tail_that_is_cut_off(settings):
    shas = add_images(settings, 4)
    encoder = CountingEncoder()
    EmbeddingCache(settings).image_embeddings(encoder, FP, shas[:2])
    vectors, _ = _files(settings)
    size = vectors.stat().st_size
    with vectors.open("ab") as handle:  # vectors written, the index commit never happened
        handle.write(b"\x7f" * 8 * 4 * 3)
    cache = EmbeddingCache(settings)
    np.testing.assert_allclose(
        cache.image_embeddings(encoder, FP, shas[:2]),
        expected_images(settings, shas[:2]),
        rtol=1e-6,
    )
    assert encoder.items == 2
    result = cache.image_embeddings(encoder, FP, shas)
    assert encoder.items == 4
    assert vectors.stat().st_size == size * 2  # the garbage tail was overwritten
    np.testing.assert_allclose(result, expected_images(settings, shas), rtol=1e-6)


def test_truncated_vector_file_is_rebuilt(settings):
    shas = add_images(settings, 3)
    encoder = CountingEncoder()
    EmbeddingCache(settings).image_embeddings(encoder, FP, shas)
    vectors, _ = _files(settings)
    with vectors.open("r+b") as handle:
        handle.truncate(8 * 4 + 5)
    result = EmbeddingCache(settings).image_embeddings(encoder, FP, shas)
    assert encoder.items == 6  # everything re-encoded
    np.testing.assert_allclose(result, expected_images(settings, shas), rtol=1e-6)


def test_garbage_index_is_rebuilt(settings):
    shas = add_images(settings, 2)
    encoder = CountingEncoder()
    EmbeddingCache(settings).image_embeddings(encoder, FP, shas)
    _, index = _files(settings)
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    result = EmbeddingCache(settings).image_embeddings(encoder, FP, shas)
    assert encoder.items == 4
    np.testing.assert_allclose(result, expected_images(settings, shas), rtol=1e-6)


def test_dimension_change_under_one_fingerprint_rebuilds(settings):
    encoder8, encoder4 = CountingEncoder(dim=8), CountingEncoder(dim=4)
    cache = EmbeddingCache(settings)
    cache.text_embeddings(encoder8, FP, ["one", "two"])
    vectors = cache.text_embeddings(encoder4, FP, ["three"])
    assert vectors.shape == (1, 4)
    assert cache.count(FP, "text") == 1
    assert cache.text_embeddings(encoder4, FP, ["one"]).shape == (1, 4)


def test_two_caches_on_one_folder_share_rows(settings):
    """Another process (the CLI beside the app) appends; each sees the other's rows."""
    encoder = CountingEncoder()
    app, cli = EmbeddingCache(settings), EmbeddingCache(settings)
    app.text_embeddings(encoder, FP, ["a"])
    cli.text_embeddings(encoder, FP, ["b"])
    assert app.text_embeddings(encoder, FP, ["b"]).shape == (1, 8)
    app.text_embeddings(encoder, FP, ["c"])
    both = cli.text_embeddings(encoder, FP, ["a", "b", "c"])
    assert encoder.items == 3
    expected = normalise_rows(np.stack([encoder.vector(t) for t in "abc"]))
    np.testing.assert_allclose(both, expected, rtol=1e-6)


def test_threads_share_one_cache(settings):
    encoder = CountingEncoder()
    cache = EmbeddingCache(settings, chunk_size=3)
    texts = [f"caption {i}" for i in range(40)]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            order = texts[worker:] + texts[:worker]
            results[worker] = np.array(cache.text_embeddings(encoder, FP, order))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected = normalise_rows(np.stack([encoder.vector(t) for t in texts]))
    for worker, got in results.items():
        np.testing.assert_allclose(got, np.roll(expected, -worker, axis=0), rtol=1e-6)
    assert cache.count(FP, "text") == 40
    keys = [text_key(t) for t in texts]
    assert cache.missing(FP, "text", keys) == []


def test_contiguous_rows_are_a_view_of_the_memory_map(settings):
    cache = EmbeddingCache(settings)
    keys = [f"k{i}" for i in range(6)]
    vectors = normalise_rows(np.random.default_rng(0).standard_normal((6, 4)))
    cache.add_vectors(FP, "image", keys, vectors)
    view = cache.lookup(FP, "image", keys[1:4])
    assert not view.flags.owndata and not view.flags.writeable
    np.testing.assert_allclose(view, vectors[1:4], rtol=1e-6)
    picked = cache.lookup(FP, "image", ["k5", "k0"])
    np.testing.assert_allclose(picked, vectors[[5, 0]], rtol=1e-6)
    with pytest.raises(KeyError):
        cache.lookup(FP, "image", ["k0", "nope"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mmdemo.retrieval.models import build_tiny_clip, load_model

    return load_model(str(build_tiny_clip(tmp_path_factory.mktemp("tiny") / "model")))


class Counting:
    """Wraps a real model and counts ``encode`` calls."""

    def __init__(self, model):
        self.model = model
        self.calls = 0

    def encode(self, inputs, **kwargs):
        self.calls += 1
        return self.model.encode(inputs, **kwargs)


def test_real_tiny_model_end_to_end(settings, tiny_model):
    shas = add_images(settings, 6)
    counting = Counting(tiny_model)
    cache = EmbeddingCache(settings)
    images = np.array(cache.image_embeddings(counting, "tiny", shas))
    texts = np.array(cache.text_embeddings(counting, "tiny", ["a red circle", "a blue square"]))
    direct = tiny_model.encode(
        [load_rgb(train_path(settings.images_dir, s)) for s in shas], normalize_embeddings=True
    )
    np.testing.assert_allclose(images, direct, atol=1e-5)
    np.testing.assert_allclose(
        texts,
        tiny_model.encode(["a red circle", "a blue square"], normalize_embeddings=True),
        atol=1e-5,
    )
    calls = counting.calls
    reopened = EmbeddingCache(settings)
    np.testing.assert_array_equal(reopened.image_embeddings(counting, "tiny", shas), images)
    np.testing.assert_array_equal(
        reopened.text_embeddings(counting, "tiny", ["a blue square"]), texts[1:]
    )
    assert counting.calls == calls  # reopening costs zero encoder calls


def test_text_that_names_an_image_file_is_encoded_as_text(settings):
    """sentence-transformers reads a string naming an existing image as that image."""
    sha = add_images(settings, 1)[0]
    path = str(train_path(settings.images_dir, sha))
    encoder = CountingEncoder()
    EmbeddingCache(settings).text_embeddings(encoder, FP, [path])
    assert encoder.seen == [{"text": path}]
