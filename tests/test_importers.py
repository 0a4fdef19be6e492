"""File importers: folders, zips, CSV/JSONL tables and uploads, made of real files in tmp_path.

Every kind of bad input must end as a per-item rejection with a reason (or, for a source that
cannot be used at all, :class:`ImportFailed`) while the rest is imported and the store stays
consistent.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdemo.data.images import image_path, thumb_path, train_path
from mmdemo.data.importers import ImportFailed, import_source, import_uploads, looks_like_hf_dataset
from tests.conftest import make_image_bytes
from tests.test_images import (
    animated_gif,
    cmyk_jpeg,
    corrupt_png,
    exif_rotated_jpeg,
    palette_png_with_transparency,
    png_16bit,
    png_claiming,
    rgba_png,
    truncated,
)


# -- helpers ---------------------------------------------------------------------------------
def image(i: int) -> bytes:
    """A distinct small real PNG per ``i``."""
    return make_image_bytes(color=(i % 256, 255 - i % 256, (i * 7) % 256), size=(40, 30))


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def image_folder(root: Path, n: int, **extra_columns) -> Path:
    """``n`` images + metadata.jsonl, captions ``caption i``."""
    rows = []
    for i in range(n):
        write(root / f"img{i}.png", image(i))
        rows.append({"file_name": f"img{i}.png", "caption": f"caption {i}", **extra_columns})
    write(root / "metadata.jsonl", jsonl(rows))
    return root


def pairs(store, name="c"):
    return store.list_pairs(store.collection(name).id)


def reasons(report) -> dict[str, str]:
    return {r.item: r.reason for r in report.rejected}


def snapshot(root: Path, skip: Path) -> set[Path]:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


def zip_bytes(members: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


# -- folders and tables ----------------------------------------------------------------------
def test_imagefolder_with_metadata_jsonl(store, settings, tmp_path):
    root = image_folder(tmp_path / "data", 3)
    write(
        root / "metadata.jsonl",
        jsonl(
            [
                {"file_name": "img0.png", "caption": "  a  red\tthing ", "split": "train"},
                {"file_name": "img1.png", "caption": "one", "split": "validation"},
                {"file_name": "img2.png", "caption": "two", "split": "TEST"},
            ]
        ),
    )
    calls = []
    report = import_source(
        store, settings, "c", root, author="ann", progress=lambda *a: calls.append(a)
    )
    assert (report.added, report.duplicates, report.rejected) == (3, 0, [])
    got = {p.caption: p for p in pairs(store)}
    assert {c: p.split for c, p in got.items()} == {
        "a red thing": "train",
        "one": "eval",
        "two": "test",
    }
    assert got["one"].author == "ann" and got["one"].source == "data:img1.png"
    assert calls[-1] == (3, 3, "img2.png") and len(calls) == 3


def test_metadata_csv_columns_found_case_insensitively_or_by_name(store, settings, tmp_path):
    root = tmp_path / "data"
    for i in range(2):
        write(root / "sub" / f"{i}.png", image(i))
    write(root / "metadata.csv", "File_Name,Text,Notes\nsub/0.png,first,x\nsub/1.png,second,y\n")
    assert import_source(store, settings, "c", root).added == 2
    assert sorted(p.caption for p in pairs(store)) == ["first", "second"]
    report = import_source(store, settings, "d", root, caption_column="notes")
    assert sorted(p.caption for p in pairs(store, "d")) == ["x", "y"] and report.added == 2


def test_table_file_with_named_columns(store, settings, tmp_path):
    write(tmp_path / "pics" / "a.png", image(1))
    table = write(tmp_path / "list.tsv", "pic\tdesc\npics/a.png\ta tab separated caption\n")
    report = import_source(
        store, settings, "c", table, image_column="PIC", caption_column="desc", split="val"
    )
    assert report.added == 1
    assert [(p.caption, p.split) for p in pairs(store)] == [("a tab separated caption", "eval")]


def test_missing_named_column_or_no_caption_column_fails_whole_import(store, settings, tmp_path):
    root = image_folder(tmp_path / "data", 1)
    with pytest.raises(ImportFailed, match="no caption column 'words'.*file_name, caption"):
        import_source(store, settings, "c", root, caption_column="words")
    write(root / "metadata.jsonl", jsonl([{"file_name": "img0.png", "colour": "red"}]))
    with pytest.raises(ImportFailed, match="no caption column .*looked for caption, text"):
        import_source(store, settings, "c", root)
    write(root / "metadata.jsonl", jsonl([{"picture": "img0.png", "caption": "x"}]))
    with pytest.raises(ImportFailed, match="no image column"):
        import_source(store, settings, "c", root)
    assert store.find_collection("c") is None  # a failed source creates nothing


def test_sidecar_captions_folder_splits_and_images_without_caption(store, settings, tmp_path):
    root = tmp_path / "data"
    write(root / "train" / "a.png", image(1))
    write(root / "train" / "a.txt", b"\xef\xbb\xbfcaption from a sidecar\n")
    write(root / "validation" / "b.png", image(2))
    write(root / "validation" / "b.txt", "another sidecar")
    write(root / "c.png", image(3))
    write(root / "d.png", image(5))
    write(root / "d.txt", b"caf\xe9 in latin-1")
    write(root / ".hidden.png", image(4))
    write(root / "__MACOSX" / "._a.png", b"resource fork")
    report = import_source(store, settings, "c", root)
    assert report.added == 2
    assert {p.caption: p.split for p in pairs(store)} == {
        "caption from a sidecar": "train",
        "another sidecar": "eval",
    }
    assert list(reasons(report)) == ["c.png", "d.png"]
    assert "not valid UTF-8" in reasons(report)["d.png"]
    assert "no caption" in reasons(report)["c.png"] and "c.txt" in reasons(report)["c.png"]
    report = import_source(store, settings, "d", root, split="test")
    assert {p.split for p in pairs(store, "d")} == {"test"}


def test_split_values_and_arguments_are_checked(store, settings, tmp_path):
    root = image_folder(tmp_path / "data", 2)
    write(
        root / "metadata.jsonl",
        jsonl(
            [
                {"file_name": "img0.png", "caption": "ok", "split": ""},
                {"file_name": "img1.png", "caption": "odd split", "split": "holdout"},
            ]
        ),
    )
    with pytest.raises(ImportFailed, match="unknown split 'later'"):
        import_source(store, settings, "c", root, split="later")
    report = import_source(store, settings, "c", root, split="dev")
    assert [p.split for p in pairs(store)] == ["eval"]
    assert "unknown split 'holdout'" in reasons(report)["img1.png"]


# -- bad images ------------------------------------------------------------------------------
def test_every_kind_of_bad_image_is_rejected_and_the_rest_imported(store, settings, tmp_path):
    bad = {
        "zero.png": b"",
        "text.jpg": b"this is a text file pretending to be a JPEG\n" * 5,
        "corrupt.png": corrupt_png(),
        "truncated.png": truncated(make_image_bytes(size=(200, 200))),
        "bomb.png": png_claiming(100_000, 100_000),
        "tiny.png": make_image_bytes(size=(8, 8)),
        "big.png": make_image_bytes(size=(300, 200)),  # over the lowered pixel cap
    }
    expected = {
        "zero.png": "empty file",
        "text.jpg": "not an image",
        "corrupt.png": "corrupt",
        "truncated.png": "truncated",
        "bomb.png": "decompression bomb",
        "tiny.png": "too small",
        "big.png": "over the cap of 50,000",
    }
    root = tmp_path / "data"
    rows = [{"file_name": "good.png", "caption": "good"}]
    write(root / "good.png", image(9))
    for name, data in bad.items():
        write(root / name, data)
        rows.append({"file_name": name, "caption": f"bad {name}"})
    write(root / "metadata.jsonl", jsonl(rows))
    report = import_source(store, settings.with_overrides(max_image_pixels=50_000), "c", root)
    assert report.added == 1 and [p.caption for p in pairs(store)] == ["good"]
    got = reasons(report)
    assert set(got) == set(expected)
    for name, reason in expected.items():
        assert reason in got[name], (name, got[name])
    assert len(list(settings.images_dir.rglob("*.png"))) == 1  # only the good original


def test_converted_images_are_reported_and_stored_as_rgb(store, settings, tmp_path):
    makers = {
        "anim.gif": animated_gif,
        "deep.png": png_16bit,
        "print.jpg": cmyk_jpeg,
        "palette.png": palette_png_with_transparency,
        "alpha.png": rgba_png,
    }
    root = tmp_path / "data"
    for name, make in makers.items():
        write(root / name, make())
        write(root / (Path(name).stem + ".txt"), f"an image called {name}")
    report = import_source(store, settings, "c", root)
    assert report.added == 5 and not report.rejected
    assert {item for item, _ in report.converted} == set(makers)
    for pair in pairs(store):
        info = store.image_info(pair.image_sha256)
        with Image.open(image_path(settings.images_dir, pair.image_sha256, info["ext"])) as img:
            assert img.mode == "RGB" and img.size == (info["width"], info["height"])
        assert train_path(settings.images_dir, pair.image_sha256).exists()
        assert thumb_path(settings.images_dir, pair.image_sha256).exists()
    alpha = next(p for p in pairs(store) if "alpha.png" in p.caption)
    with Image.open(image_path(settings.images_dir, alpha.image_sha256, "png")) as img:
        assert img.getpixel((40, 8)) == (255, 255, 255) and img.getpixel((5, 8)) == (255, 0, 0)


def test_exif_rotated_jpeg_comes_out_upright(store, settings, tmp_path):
    root = tmp_path / "data"
    write(root / "phone.jpg", exif_rotated_jpeg(6))
    write(root / "phone.txt", "a photo taken sideways")
    report = import_source(store, settings, "c", root)
    (pair,) = pairs(store)
    assert "orientation 6" in dict(report.converted)["phone.jpg"]
    info = store.image_info(pair.image_sha256)
    assert (info["width"], info["height"]) == (32, 64)
    for path in (
        image_path(settings.images_dir, pair.image_sha256, info["ext"]),
        train_path(settings.images_dir, pair.image_sha256),
        thumb_path(settings.images_dir, pair.image_sha256),
    ):
        with Image.open(path) as img:
            pixels = np.asarray(img.convert("RGB"), dtype=int)
        height = pixels.shape[0]
        assert pixels.shape[0] > pixels.shape[1]  # portrait
        assert pixels[height // 8].mean(axis=0)[0] > 150  # red on top
        assert pixels[-height // 8].mean(axis=0)[2] > 150  # blue at the bottom


# -- zips ------------------------------------------------------------------------------------
def test_zip_imagefolder_is_read_in_memory(store, settings, tmp_path):
    members = {
        "photos/metadata.jsonl": jsonl(
            [
                {"file_name": "a.png", "caption": "zipped a"},
                {"file_name": "sub/b.png", "caption": "zipped b", "split": "test"},
            ]
        )
    }
    members |= {"photos/a.png": image(1), "photos/sub/b.png": image(2)}
    members |= {"__MACOSX/photos/._a.png": b"junk", "photos/readme.md": "not an image"}
    archive = write(tmp_path / "in" / "photos.zip", zip_bytes(members))
    before = snapshot(tmp_path, settings.home)
    report = import_source(store, settings, "c", archive)
    assert (report.added, report.rejected) == (2, [])
    assert {p.caption: p.split for p in pairs(store)} == {"zipped a": "train", "zipped b": "test"}
    assert snapshot(tmp_path, settings.home) == before  # nothing extracted next to the zip
    assert not any(settings.tmp_dir.iterdir())


def test_zip_traversal_and_symlink_entries_are_refused(store, settings, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in ("../evil.png", "/abs.png", "a/../../x.png", "C:/win.png", "..\\y.png"):
            archive.writestr(name, image(5))
        link = zipfile.ZipInfo("link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("ok.png", image(6))
        archive.writestr("ok.txt", "the only good one")
        archive.writestr("metadata.csv", "file_name,caption\n../evil.png,escape\nok.png,good\n")
    source = write(tmp_path / "in" / "evil.zip", buffer.getvalue())
    before = snapshot(tmp_path, settings.home)
    report = import_source(store, settings, "c", source)
    assert [p.caption for p in pairs(store)] == ["good"]
    got = reasons(report)
    assert "outside the imported folder" in got["metadata.csv line 2 (../evil.png)"]
    assert "'..'" in got["../evil.png"]
    for name in ("/abs.png", "C:/win.png"):
        assert "absolute path" in got[name]
    for name in ("a/../../x.png", "..\\y.png"):
        assert "'..'" in got[name]
    assert "symbolic link" in got["link.png"]
    assert snapshot(tmp_path, settings.home) == before
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "in" / "y.png").exists()


def _patch_end_record_count(data: bytes, count: int) -> bytes:
    at = data.rfind(b"PK\x05\x06")
    return data[: at + 8] + count.to_bytes(2, "little") * 2 + data[at + 12 :]


def test_zip_bombs_are_refused_up_front(store, settings, tmp_path):
    many = zip_bytes({f"f{i}.txt": "x" for i in range(10)})
    capped = settings.with_overrides(max_zip_entries=5, max_zip_total_mb=1)
    with pytest.raises(ImportFailed, match="declares 10 entries"):
        import_source(store, capped, "c", write(tmp_path / "many.zip", many))
    lying = write(tmp_path / "lying.zip", _patch_end_record_count(many, 1))
    with pytest.raises(ImportFailed, match="has 10 entries"):  # the directory itself is counted
        import_source(store, capped, "c", lying)
    big = zip_bytes({"a.png": image(1), "zeros.png": b"\0" * (2 << 20)})
    assert len(big) < 10_000
    with pytest.raises(ImportFailed, match="unpack to .* over the cap.*zip bomb"):
        import_source(store, capped, "c", write(tmp_path / "big.zip", big))
    with pytest.raises(ImportFailed, match="not a readable zip"):
        import_source(store, settings, "c", write(tmp_path / "fake.zip", b"PK\x03\x04 nope"))
    assert store.find_collection("c") is None


def test_zip_member_that_lies_about_its_size_is_stopped(store, settings, tmp_path):
    rows = [{"file_name": name, "caption": name} for name in ("liar.png", "ok.png")]
    members = {"liar.png": image(7) + b"\0" * (1 << 20), "ok.png": image(8)}
    data = bytearray(zip_bytes(members | {"metadata.jsonl": jsonl(rows)}))
    small = len(image(7)).to_bytes(4, "little")  # liar.png comes first in both headers
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    data[local + 22 : local + 26] = small
    data[central + 24 : central + 28] = small
    report = import_source(store, settings, "c", write(tmp_path / "liar.zip", bytes(data)))
    assert [p.caption for p in pairs(store)] == ["ok.png"]
    assert "damaged zip entry" in reasons(report)["liar.png"]


def test_zip_total_cap_is_enforced_while_reading(store, settings, tmp_path):
    """Rows naming one big member again and again cannot inflate past the total cap."""
    rows = [{"file_name": "zeros.png", "caption": f"row {i}"} for i in range(5)]
    members = {"zeros.png": b"\0" * (900 << 10), "metadata.jsonl": jsonl(rows)}
    source = write(tmp_path / "again.zip", zip_bytes(members))
    report = import_source(store, settings.with_overrides(max_zip_total_mb=2), "c", source)
    got = [r.reason for r in report.rejected]
    assert report.added == 0 and len(got) == 5
    assert all("not an image" in reason for reason in got[:2])
    assert all("total uncompressed size cap was reached" in reason for reason in got[2:])


def test_zip_member_over_the_per_file_cap_is_rejected(store, settings, tmp_path):
    members = {"huge.png": b"\0" * (17 << 20), "ok.png": image(3)}
    members |= {"huge.txt": "huge", "ok.txt": "fine"}
    source = write(tmp_path / "huge.zip", zip_bytes(members))
    report = import_source(store, settings.with_overrides(max_image_pixels=2000), "c", source)
    assert report.added == 1 and "per-file cap" in reasons(report)["huge.png"]


# -- paths that leave the folder -------------------------------------------------------------
def test_symlinks_in_a_folder_are_not_followed(store, settings, tmp_path):
    outside = tmp_path / "outside"
    write(outside / "secret.png", image(1))
    root = tmp_path / "data"
    write(root / "ok.png", image(2))
    os.symlink(outside / "secret.png", root / "link.png")
    os.symlink(outside, root / "linked_dir")
    write(
        root / "metadata.jsonl",
        jsonl(
            [
                {"file_name": "ok.png", "caption": "fine"},
                {"file_name": "link.png", "caption": "through a file link"},
                {"file_name": "linked_dir/secret.png", "caption": "through a folder link"},
            ]
        ),
    )
    report = import_source(store, settings, "c", root)
    assert [p.caption for p in pairs(store)] == ["fine"]
    got = reasons(report)
    assert "symbolic link" in got["link.png"]
    assert "symbolic link" in got["linked_dir/secret.png"]
    assert "symbolic link to a folder" in got["linked_dir"]


def test_table_rows_pointing_outside_the_folder_are_refused(store, settings, tmp_path):
    write(tmp_path / "outside.png", image(1))
    root = tmp_path / "data"
    write(root / "imgs" / "ok.png", image(2))
    os.symlink(tmp_path / "outside.png", root / "escape.png")
    rows = {
        "imgs/ok.png": None,
        "../outside.png": "outside the imported folder",
        str(tmp_path / "outside.png"): "absolute path",
        "imgs/../../outside.png": "outside the imported folder",
        "..\\outside.png": "outside the imported folder",
        "escape.png": "symbolic link",
        "https://example.com/a.png": "URLs are not fetched",
        "imgs/missing.png": "not found",
        "": "missing image path",
    }
    lines = "".join(f'"{path}",caption {i}\n' for i, path in enumerate(rows))
    table = write(root / "list.csv", "path,caption\n" + lines)
    os.symlink(table, tmp_path / "chosen.csv")  # the source named by the user may be a link
    report = import_source(store, settings, "c", tmp_path / "chosen.csv")
    assert report.added == 1 and [p.source for p in pairs(store)] == ["data:imgs/ok.png"]
    got = {
        r.item.split(" (")[-1].rstrip(")") if " (" in r.item else r.item: r.reason
        for r in report.rejected
    }
    for path, reason in rows.items():
        if reason:
            assert reason in got[path], (path, got.get(path))


# -- captions and text -----------------------------------------------------------------------
def test_missing_blank_long_and_list_captions(store, settings, tmp_path):
    root = tmp_path / "data"
    captions = {
        "missing.png": ...,
        "blank.png": "   ",
        "null.png": None,
        "long.png": "word " * 1000,
        "mapping.png": {"en": "x"},
        "list.png": ["", "first real caption", "second"],
        "ok.png": "fine",
    }
    rows = []
    for i, (name, caption) in enumerate(captions.items()):
        write(root / name, image(i))
        rows.append({"file_name": name} | ({} if caption is ... else {"caption": caption}))
    write(root / "metadata.jsonl", jsonl(rows))
    report = import_source(store, settings, "c", root)
    assert sorted(p.caption for p in pairs(store)) == ["fine", "first real caption"]
    got = reasons(report)
    assert got["missing.png"] == got["null.png"] == "missing caption"
    assert got["blank.png"] == "blank caption"
    assert "caption too long" in got["long.png"]
    assert "not text" in got["mapping.png"]


def test_non_utf8_csv_rows_are_rejected_and_good_rows_kept(store, settings, tmp_path):
    root = tmp_path / "data"
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        write(root / name, image(i))
    body = b"file_name,caption\na.png,caf\xe9 au lait\nb.png,fine\nc.png," + b"x" * 200_000
    write(root / "metadata.csv", body + b"\n")
    report = import_source(store, settings, "c", root)
    assert [p.caption for p in pairs(store)] == ["fine"]
    got = reasons(report)
    assert got["metadata.csv line 2"] == "not valid UTF-8 text"
    assert "field larger than field limit" in got["metadata.csv line 4"]


def test_jsonl_lines_that_are_not_json_are_rejected(store, settings, tmp_path):
    root = tmp_path / "data"
    for name in ("a.png", "b.png", "c.png"):
        write(root / name, image(ord(name[0])))
    lines = [
        b'{"file_name": "a.png", "caption": "first"}',
        b'{"file_name": "b.png", "caption": ',
        b'{"file_name": "c.png", "caption": "caf\xe9"}',
        b"[1, 2, 3]",
        b"",
        '{"file_name": "c.png", "caption": "café ☕"}'.encode(),
    ]
    write(root / "metadata.jsonl", b"\r\n".join(lines))
    report = import_source(store, settings, "c", root)
    assert sorted(p.caption for p in pairs(store)) == ["café ☕", "first"]
    got = reasons(report)
    assert "not valid JSON" in got["metadata.jsonl line 2"]
    assert got["metadata.jsonl line 3"] == "not valid UTF-8 text"
    assert got["metadata.jsonl line 4"] == "not a JSON object"
    assert "b.png" in got  # listed nowhere valid, and no b.txt


# -- atomicity -------------------------------------------------------------------------------
def test_importing_twice_adds_nothing_the_second_time(store, settings, tmp_path):
    root = image_folder(tmp_path / "data", 5)
    first = import_source(store, settings, "c", root)
    files = sorted(settings.images_dir.rglob("*"))
    second = import_source(store, settings, "c", root)
    assert (first.added, second.added, second.duplicates) == (5, 0, 5)
    assert len(pairs(store)) == 5 and sorted(settings.images_dir.rglob("*")) == files


def test_interrupted_import_leaves_a_consistent_store_and_resumes(store, settings, tmp_path):
    root = image_folder(tmp_path / "data", 8)

    def stop_after_three(done, total, name):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_source(store, settings, "c", root, progress=stop_after_three)
    stored = pairs(store)
    assert len(stored) == 3
    for pair in stored:
        info = store.image_info(pair.image_sha256)
        assert image_path(settings.images_dir, pair.image_sha256, info["ext"]).exists()
        assert train_path(settings.images_dir, pair.image_sha256).exists()
    assert not [p for p in settings.images_dir.rglob("*") if p.name.startswith(".tmp-")]
    resumed = import_source(store, settings, "c", root)
    assert (resumed.added, resumed.duplicates) == (5, 3)
    assert sorted(p.caption for p in pairs(store)) == [f"caption {i}" for i in range(8)]


# -- uploads ---------------------------------------------------------------------------------
def _uploads(tmp_path: Path, names: list[str]) -> list[tuple[str, Path]]:
    """Like Gradio: every upload in its own temporary folder."""
    files = []
    for i, name in enumerate(names):
        data = zip_bytes({"x.png": image(50), "x.txt": "zipped"}) if name.endswith(".zip") else None
        files.append((name, write(tmp_path / "uploads" / f"u{i}" / name, data or image(i))))
    return files


def test_uploads_with_one_caption_each_or_one_for_all(store, settings, tmp_path):
    files = _uploads(tmp_path, ["a.png", "b.png"])
    report = import_uploads(store, settings, "c", files, ["first", "second"], split="test")
    assert report.added == 2
    assert sorted((p.caption, p.split, p.source) for p in pairs(store)) == [
        ("first", "test", "upload:a.png"),
        ("second", "test", "upload:b.png"),
    ]
    files = _uploads(tmp_path, ["c.png", "d.png", "e.png"])
    assert import_uploads(store, settings, "d", files, "same for all").added == 3
    with pytest.raises(ImportFailed, match="3 images but 2 captions"):
        import_uploads(store, settings, "d", files, ["one", "two"])
    files[0][1].unlink()
    report = import_uploads(store, settings, "e", files, ["x", " ", "z"])
    assert reasons(report) == {"c.png": "image file not found", "d.png": "blank caption"}


def test_uploaded_zip_is_imported_like_a_source(store, settings, tmp_path):
    files = _uploads(tmp_path, ["bundle.zip", "f.png"])
    report = import_uploads(store, settings, "c", files, ["typed caption"])
    assert report.added == 2
    assert sorted(p.caption for p in pairs(store)) == ["typed caption", "zipped"]
    broken = write(tmp_path / "uploads" / "x" / "broken.zip", b"not a zip at all")
    files = _uploads(tmp_path, ["g.png"]) + [("broken.zip", broken)]
    report = import_uploads(store, settings, "d", files, "still imported")
    assert report.added == 1 and "not a readable zip" in reasons(report)["broken.zip"]
    with pytest.raises(ImportFailed, match="not a readable zip"):  # alone, it fails the upload
        import_uploads(store, settings, "e", [("broken.zip", broken)], [])


# -- what the source is ----------------------------------------------------------------------
def test_missing_or_unknown_sources_fail(store, settings, tmp_path):
    with pytest.raises(ImportFailed, match="not found"):
        import_source(store, settings, "c", tmp_path / "nowhere")
    with pytest.raises(ImportFailed, match="not found"):
        import_source(store, settings, "c", "data/photos.zip")  # not a hub id: it has a suffix
    with pytest.raises(ImportFailed, match="give a folder, a .zip"):
        import_source(store, settings, "c", write(tmp_path / "notes.docx", b"x"))
    with pytest.raises(ImportFailed, match="holds no images"):
        import_source(store, settings, "c", write(tmp_path / "empty" / "readme.md", "hi").parent)
    with pytest.raises(ImportFailed, match="has no rows"):
        import_source(store, settings, "c", write(tmp_path / "empty.csv", "file_name,caption\n"))
    assert store.list_collections() == []


def test_hugging_face_sources_are_recognised(tmp_path):
    assert looks_like_hf_dataset(write(tmp_path / "a" / "state.json", "{}").parent)
    assert looks_like_hf_dataset(write(tmp_path / "b" / "dataset_dict.json", "{}").parent)
    assert looks_like_hf_dataset(write(tmp_path / "c" / "data" / "train-0.parquet", b"").parents[1])
    assert looks_like_hf_dataset(tmp_path / "c" / "data" / "train-0.parquet")
    assert not looks_like_hf_dataset(image_folder(tmp_path / "d", 1))


def test_hugging_face_sources_are_handed_to_hf_import(store, settings, tmp_path, monkeypatch):
    """Routing only: a stand-in module records the call (hf_import has its own tests)."""
    calls = []
    stand_in = types.ModuleType("mmdemo.data.hf_import")
    stand_in.import_hf_dataset = lambda *args, **kwargs: calls.append((args[3], kwargs)) or "ok"
    monkeypatch.setitem(sys.modules, "mmdemo.data.hf_import", stand_in)
    assert import_source(store, settings, "c", "someone/pets", caption_column="txt") == "ok"
    folder = write(tmp_path / "saved" / "state.json", "{}").parent
    assert import_source(store, settings, "c", folder, split="validation") == "ok"
    assert calls[0] == (
        "someone/pets",
        {
            "caption_column": "txt",
            "image_column": None,
            "split": None,
            "author": None,
            "progress": None,
        },
    )
    assert calls[1][0] == folder and calls[1][1]["split"] == "eval"
