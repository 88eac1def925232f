import pytest

from transferlab.io import atomic_dir, atomic_path, write_json_atomic


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
