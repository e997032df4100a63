"""Collecting /out from the engine's tar stream: path order, the cap, and what is never kept."""

from __future__ import annotations

import hashlib
import io
import tarfile

from hypernode_host.core.artifacts import MAX_ARTIFACTS
from hypernode_host.tasks.artifacts import PAGE, collect, tmpfs_bytes


def archive(files: dict[str, bytes], links: tuple[str, ...] = ()) -> list[bytes]:
    """/out as the engine sends it (members under ``out/``), cut in small chunks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directory = tarfile.TarInfo("out")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name, data in files.items():
            info = tarfile.TarInfo(f"out/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(f"out/{name}")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            tar.addfile(info)
    raw = buffer.getvalue()
    return [raw[i : i + 1000] for i in range(0, len(raw), 1000)]


def test_files_are_listed_in_path_order_with_their_digests() -> None:
    found = collect(archive({"b/two.txt": b"2" * 10, "a.txt": b"one"}), cap=1 << 20)

    assert [a.path for a in found.artifacts] == ["a.txt", "b/two.txt"]
    assert found.artifacts[0].sha256 == hashlib.sha256(b"one").hexdigest()
    assert found.files == {"a.txt": b"one", "b/two.txt": b"2" * 10}
    assert not found.over_cap and found.skipped == 0


def test_files_past_the_cap_are_not_kept_and_say_so() -> None:
    found = collect(archive({"a": b"x" * 600, "b": b"y" * 600, "c": b"z" * 300}), cap=1000)

    assert [a.path for a in found.artifacts] == ["a", "c"]  # the files that fit, in path order
    assert found.over_cap and found.skipped == 1
    assert found.total_bytes == 1500


def test_a_full_tmpfs_is_over_the_cap_even_when_the_files_fit() -> None:
    cap = 4 * PAGE
    pages = tmpfs_bytes(cap) // PAGE
    many = {f"f{i:03d}": b"." for i in range(pages)}  # one byte each, one page each: the tmpfs is full
    found = collect(archive(many), cap=cap)

    assert found.over_cap


def test_links_and_too_many_files_are_not_kept() -> None:
    found = collect(archive({"ok": b"1"}, links=("link",)), cap=100)
    assert [a.path for a in found.artifacts] == ["ok"] and found.skipped == 1 and not found.over_cap

    crowd = {f"f{i:04d}": b"" for i in range(MAX_ARTIFACTS + 1)}
    found = collect(archive(crowd), cap=1 << 30)
    assert len(found.artifacts) == MAX_ARTIFACTS and found.over_cap
