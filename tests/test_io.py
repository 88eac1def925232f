import math
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from transferlab.io import (
    atomic_dir,
    atomic_path,
    clean_stale_temporaries,
    clean_stale_temporaries_in,
    current_umask,
    read_json,
    temporary_name,
    write_bytes_atomic,
    write_json_atomic,
    write_npz_atomic,
)


def test_atomic_path_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{") and list(tmp_path.iterdir()) == [target]


def test_atomic_dir_replaces_the_whole_directory_or_nothing(tmp_path):
    target = tmp_path / "features"
    with atomic_dir(target) as tmp:
        (tmp / "a.npz").write_text("x")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "b.npz").write_text("y")
        raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["a.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["features"]


# ---------------------------------------------------------------------------- permissions


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mask):
    umask(mask)
    with atomic_path(tmp_path / "summary.json") as tmp:
        tmp.write_text("{}")
    write_json_atomic(tmp_path / "meta.json", {"a": 1})
    write_npz_atomic(tmp_path / "target.npz", x=np.zeros(3))
    write_bytes_atomic(tmp_path / "A.pt", b"weights")
    with atomic_dir(tmp_path / "features") as tmp:
        (tmp / "conv1").mkdir()
    for name in ("summary.json", "meta.json", "target.npz", "A.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    assert stat.S_IMODE((tmp_path / "features").stat().st_mode) == 0o777 & ~mask
    assert current_umask() == mask


# ---------------------------------------------------------------------------- temporaries


def test_temporaries_are_unique_and_name_the_writing_process(tmp_path):
    target = tmp_path / "A.pt"
    with atomic_path(target, suffix=".pt") as first, atomic_path(target) as second:
        assert first != second
        for tmp in (first, second):
            assert tmp.parent == tmp_path and tmp.name.startswith(f".A.pt.{os.getpid()}-")
        assert first.name.endswith(".tmp.pt") and second.name.endswith(".tmp")
    with atomic_dir(tmp_path / "features") as tmp:
        assert tmp.name.startswith(f".features.{os.getpid()}-") and tmp.is_dir()


def test_write_bytes_atomic_replaces_the_file_and_leaves_nothing_else(tmp_path):
    target = tmp_path / "ckpt" / "pretrain-A.pt"
    write_bytes_atomic(target, b"old")
    write_bytes_atomic(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    assert [p.name for p in target.parent.iterdir()] == ["pretrain-A.pt"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _with_pid(tmp: Path, pid: int) -> Path:
    """`tmp` (a temporary name of this process) as another process would have named it."""
    return tmp.with_name(tmp.name.replace(f".{os.getpid()}-", f".{pid}-", 1))


def test_clean_stale_temporaries_removes_only_those_of_dead_writers(tmp_path):
    out, features = tmp_path / "summary.json", tmp_path / "features"
    dead = _dead_pid()
    stale_file = _with_pid(temporary_name(out), dead)
    stale_npz = _with_pid(temporary_name(out, ".npz"), dead)
    stale_dir = _with_pid(temporary_name(features), dead)
    live = temporary_name(out)  # this process: alive
    other_output = _with_pid(temporary_name(tmp_path / "other.json"), dead)
    ours = re.search(r"-([0-9a-f]{6})\.", stale_file.name)[1]
    elsewhere = "000000" if ours != "000000" else "111111"  # a pid of another host
    other_host = stale_file.with_name(stale_file.name.replace(f"-{ours}.", f"-{elsewhere}."))
    for f in (stale_file, stale_npz, live, other_output, other_host, out,
              tmp_path / ".summary.json.notes", tmp_path / "summary.json.tmp"):
        f.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "conv1.npz").write_text("gigabytes")
    removed = clean_stale_temporaries([out, features])
    assert sorted(removed) == sorted([stale_file, stale_npz, stale_dir])
    assert not stale_file.exists() and not stale_npz.exists() and not stale_dir.exists()
    for kept in (live, other_output, other_host, out, tmp_path / ".summary.json.notes",
                 tmp_path / "summary.json.tmp"):
        assert kept.exists(), kept.name
    assert clean_stale_temporaries([tmp_path / "missing" / "x.json"]) == []


def test_a_store_directory_is_cleaned_of_every_dead_writers_temporary(tmp_path):
    store = tmp_path / "variants"
    dead = _dead_pid()
    stale = [_with_pid(temporary_name(store / f"{k}.json"), dead) for k in ("ab", "cd")]
    live = temporary_name(store / "ef.json")
    store.mkdir()
    for f in (*stale, live, store / "ab.json"):
        f.write_text("{}")
    assert clean_stale_temporaries_in([store, tmp_path / "absent"]) == sorted(stale)
    assert sorted(p.name for p in store.iterdir()) == sorted(["ab.json", live.name])


def test_a_killed_writer_leaves_a_temporary_that_the_next_start_removes(tmp_path):
    target = tmp_path / "features"
    script = textwrap.dedent(f"""
        import sys, time
        from transferlab.io import atomic_dir
        with atomic_dir({str(target)!r}) as tmp:
            (tmp / "conv1.npz").write_bytes(b"0" * 4096)
            print(tmp, flush=True)
            time.sleep(120)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        tmp = Path(proc.stdout.readline().strip())
        assert tmp.parent == tmp_path and tmp.is_dir()
        assert clean_stale_temporaries([target]) == []  # its writer still runs
        assert tmp.is_dir()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert tmp.is_dir() and not target.exists()  # SIGKILL: no cleanup ran
    assert clean_stale_temporaries([target]) == [tmp]
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_over_an_old_directory_leaves_no_temporary(tmp_path):
    target = tmp_path / "features"
    for name in ("a.npz", "b.npz"):
        with atomic_dir(target) as tmp:
            (tmp / name).write_text(name)
    assert [p.name for p in target.iterdir()] == ["b.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["features"]


# ---------------------------------------------------------------------------- read_json


def test_read_json_names_the_file_and_what_is_wrong(tmp_path):
    path = tmp_path / "heads.json"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path)) + ".*missing"):
        read_json(path, "heads results")
    path.write_text("garbage{")
    with pytest.raises(ValueError, match=re.escape(f"{path} (heads results) is not valid JSON")):
        read_json(path, "heads results")
    path.write_text('{"seed": 0}')
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*lacks.*'variants'"):
        read_json(path, "sweep results", required=["seed", "variants"])
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*list.*variants"):
        read_json(path, required=["variants"])
    path.write_text('{"test_score": NaN}')
    assert math.isnan(read_json(path)["test_score"])
    with pytest.raises(ValueError, match=re.escape(str(path)) + " holds NaN"):
        read_json(path, allow_nan=False)
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match=re.escape(str(path)) + " cannot be read"):
        read_json(path)
    path.write_text('{"seed": 0, "variants": []}')
    assert read_json(path, required=["variants"]) == {"seed": 0, "variants": []}
