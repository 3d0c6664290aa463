"""An output folder is one unit (files.output_folder): nothing lost, nothing mixed, nothing left behind.

Every test hashes the user's files before and after, and checks that no hidden staging,
lock or old folder is left beside the output.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from LVMyoSegLib.errors import InputError
from LVMyoSegLib.files import MARKER_NAME, check_output_folder, output_folder


def hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (hidden ones too), by relative path; folders as 'dir'."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def leftovers(parent: Path) -> list[str]:
    """Hidden staging, lock or old folders beside the outputs in ``parent``."""
    return sorted(p.name for p in Path(parent).iterdir() if p.name.startswith(".") and "lvmyoseg" in p.name
                  or ".partial." in p.name)


def _result(out: Path, files: dict[str, bytes], **kw) -> None:
    with output_folder(out, **kw) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)


def test_new_folder_appears_whole_with_its_marker(tmp_path) -> None:
    out = tmp_path / "new" / "seg"
    _result(out, {"report.json": b"{}", "labels.nrrd": b"L"})
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "labels.nrrd", "report.json"]
    assert leftovers(out.parent) == []


def test_folder_with_user_files_is_refused_and_untouched(tmp_path) -> None:
    out = tmp_path / "case"
    out.mkdir()
    (out / "labels.nrrd").write_bytes(b"expert labels")  # issue 17, item 1
    before = hashes(tmp_path)
    with pytest.raises(InputError) as info:
        _result(out, {"labels.nrrd": b"network labels"})
    message = str(info.value)
    assert str(out) in message and "labels.nrrd" in message and "--overwrite" in message
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []


def test_overwrite_replaces_the_whole_folder(tmp_path) -> None:
    out = tmp_path / "case"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _result(out, {"report.json": b"new"}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "report.json"]  # replaced, not merged
    assert leftovers(tmp_path) == []


def test_earlier_result_is_replaced_whole_so_patients_never_mix(tmp_path) -> None:
    out = tmp_path / "seg"
    _result(out, {"report.json": b"patient A", "overlay.png": b"A", "volume_curve.png": b"A"})
    _result(out, {"report.json": b"patient B", "overlay.png": b"B"})  # B has no volume curve
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "overlay.png", "report.json"]
    assert (out / "report.json").read_bytes() == b"patient B" and leftovers(tmp_path) == []


@pytest.mark.parametrize("edit", ["change", "add"])
def test_earlier_result_the_user_edited_is_refused(tmp_path, edit) -> None:
    out = tmp_path / "seg"
    _result(out, {"labels.nrrd": b"network"})
    if edit == "change":
        (out / "labels.nrrd").write_bytes(b"corrected by hand")
    else:
        (out / "my_notes.txt").write_text("keep me")
    before = hashes(tmp_path)
    with pytest.raises(InputError, match="after LVMyoSeg wrote it"):
        _result(out, {"labels.nrrd": b"network again"})
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []


def test_symlinked_output_folder_keeps_its_link(tmp_path) -> None:
    real = tmp_path / "disk" / "results"
    real.mkdir(parents=True)
    (real / "labels.nrrd").write_bytes(b"expert")
    link = tmp_path / "out"
    link.symlink_to(real)
    before = hashes(tmp_path / "disk")
    with pytest.raises(InputError, match="--overwrite"):
        _result(link, {"labels.nrrd": b"network"})
    assert hashes(tmp_path / "disk") == before
    _result(link, {"labels.nrrd": b"network"}, overwrite=True)
    assert link.is_symlink() and (real / "labels.nrrd").read_bytes() == b"network"
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


@pytest.mark.parametrize("case", ["file", "parent_file", "dangling", "proc"])
def test_unusable_output_paths_are_refused_with_a_message(tmp_path, case) -> None:
    (tmp_path / "a_file").write_text("user data")
    out = {"file": tmp_path / "a_file", "parent_file": tmp_path / "a_file" / "seg",
           "dangling": tmp_path / "link", "proc": Path("/proc/lvmyoseg-test/seg")}[case]
    if case == "dangling":
        out.symlink_to(tmp_path / "gone")
    before = hashes(tmp_path)
    with pytest.raises(InputError) as info:
        _result(out, {"report.json": b"{}"})
    words = {"file": "is an existing file", "parent_file": "a_file is a file", "dangling": "does not exist",
             "proc": "Cannot create the output folder"}[case]
    assert words in str(info.value) and str(out) in str(info.value)
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []


def test_input_inside_the_output_folder_is_protected(tmp_path) -> None:
    case = tmp_path / "cases" / "SCD0000101"
    case.mkdir(parents=True)
    (case / "cine.nrrd").write_bytes(b"cine")
    before = hashes(tmp_path)
    with pytest.raises(InputError, match="holds the input"):
        _result(case, {"labels.nrrd": b"x"}, overwrite=True, protect=[case / "cine.nrrd"])
    assert hashes(tmp_path) == before


def test_failure_or_full_disk_leaves_the_earlier_result_unchanged(tmp_path) -> None:
    out = tmp_path / "seg"
    _result(out, {"report.json": b"first"})
    before = hashes(tmp_path)
    with pytest.raises(RuntimeError):
        with output_folder(out) as staging:
            (staging / "report.json").write_bytes(b"half")
            raise RuntimeError("the network failed")
    with pytest.raises(InputError, match="No space left on device"):
        with output_folder(out) as staging:
            (staging / "report.json").write_bytes(b"half")
            with open("/dev/full", "wb") as full:  # a real ENOSPC
                full.write(b"x" * 65536)
                full.flush()
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []


def test_stale_staging_is_cleaned_and_an_interrupted_swap_undone(tmp_path) -> None:
    out = tmp_path / "seg"
    for name in (".seg.lvmyoseg-staging.abc", ".seg.partial.xyz"):  # killed runs, old and new naming
        (tmp_path / name).mkdir()
        (tmp_path / name / "labels.nrrd").write_bytes(b"x" * 1000)
    (tmp_path / ".other.partial.keep").mkdir()  # another folder's: not ours to remove
    _result(out, {"report.json": b"ok"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.partial.keep", "seg"]

    shutil.move(out, tmp_path / ".seg.lvmyoseg-old.1234")  # killed between the two renames of a swap
    with pytest.raises(InputError):  # the earlier result is back, so a changed input is refused
        (tmp_path / ".seg.lvmyoseg-old.1234" / "mine.txt").write_text("user")
        _result(out, {"report.json": b"new"})
    assert (out / "report.json").read_bytes() == b"ok" and (out / "mine.txt").exists()


def test_outputs_follow_the_umask(tmp_path) -> None:
    from LVMyoSegLib.files import atomic_path

    old = os.umask(0o027)
    try:
        out = tmp_path / "seg"
        with output_folder(out) as staging:
            (staging / "report.json").write_text("{}")
            with atomic_path(staging / "overlay.png") as tmp:
                tmp.write_bytes(b"png")
        modes = {p.name: p.stat().st_mode & 0o777 for p in [out, *out.iterdir()]}
    finally:
        os.umask(old)
    assert modes == {"seg": 0o750, "report.json": 0o640, "overlay.png": 0o640, MARKER_NAME: 0o640}


def test_symlink_to_another_device_is_written_there(tmp_path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the temporary folder")
    real = Path(tempfile.mkdtemp(prefix="lvmyoseg-test-", dir=shm))
    try:
        link = tmp_path / "out"
        link.symlink_to(real / "seg")
        (real / "seg").mkdir()
        _result(link, {"report.json": b"A"})
        _result(link, {"report.json": b"B"})  # staged beside the real folder, so the swap stays one rename
        assert (real / "seg" / "report.json").read_bytes() == b"B" and link.is_symlink()
        assert leftovers(real) == [] and leftovers(tmp_path) == []
    finally:
        shutil.rmtree(real, ignore_errors=True)


def test_folders_of_a_cohort_can_be_checked_up_front(tmp_path) -> None:
    (tmp_path / "case2").mkdir()
    (tmp_path / "case2" / "labels.nrrd").write_bytes(b"expert")
    _result(tmp_path / "case3", {"report.json": b"earlier"})
    before = hashes(tmp_path)
    assert check_output_folder(tmp_path / "case1") == tmp_path / "case1"  # new: fine, not created
    assert check_output_folder(tmp_path / "case3") == tmp_path / "case3"  # an untouched earlier result
    with pytest.raises(InputError, match="labels.nrrd"):
        check_output_folder(tmp_path / "case2")
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []


def test_overwrite_never_replaces_a_folder_of_folders(tmp_path) -> None:
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / "notes.txt").write_text("mine")
    before = hashes(tmp_path)
    with pytest.raises(InputError, match=r"holds folders \(Documents\); --overwrite replaces only a folder of files"):
        _result(home, {"report.json": b"{}"}, overwrite=True)
    assert hashes(tmp_path) == before and leftovers(tmp_path) == []
