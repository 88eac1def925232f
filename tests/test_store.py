"""The store of trained results: its location, its errors, its writes."""

import os

import pytest

from transferlab.training.store import Store, StoreError, configured_location, open_store


def test_the_location_is_the_environment_or_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TRANSFERLAB_STORE", str(tmp_path / "shared"))
    assert configured_location() == str(tmp_path / "shared")
    monkeypatch.delenv("TRANSFERLAB_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert configured_location() == os.path.join(str(tmp_path / "cache"), "transferlab")


def test_an_unknown_filesystem_is_refused_naming_the_url():
    with pytest.raises(StoreError, match=r"TRANSFERLAB_STORE='nosuchfs://bucket/x'.*"
                                         r"Protocol not known"):
        Store("nosuchfs://bucket/x")


def test_an_unwritable_store_is_refused_before_any_work(tmp_path):
    (tmp_path / "a-file").write_text("not a directory")
    url = str(tmp_path / "a-file" / "store")
    with pytest.raises(StoreError, match=r"a-file/store.*not writable"):
        open_store(url)


def test_entries_are_written_whole_under_their_key_by_url(tmp_path):
    store = open_store(f"file://{tmp_path}/store")
    assert store.local and store.read("variants/x.json") is None
    store.write("variants/x.json", b"{}")
    assert store.read("variants/x.json") == b"{}"
    assert sorted(p.name for p in (tmp_path / "store").rglob("*")) == ["variants", "x.json"]


def test_an_object_store_writes_each_entry_in_one_put():
    import pickle

    store = open_store("memory://transferlab-test-store")
    assert not store.local and store.local_path("variants/y.json") is None
    store.write("variants/y.json", b"[1]")
    assert pickle.loads(pickle.dumps(store)).read("variants/y.json") == b"[1]"


def test_a_store_that_does_not_exist_is_created_after_a_message_naming_it(
        monkeypatch, tmp_path, capsys):
    """The red-team's S3: a misspelt path silently started an empty store (and S6: a
    relative one was made in the workspace)."""
    url = str(tmp_path / "nonexist" / "a" / "b")
    monkeypatch.setenv("TRANSFERLAB_STORE", url)
    store = open_store()
    assert store.writable and (tmp_path / "nonexist" / "a" / "b").is_dir()
    assert capsys.readouterr().err == \
        f"TRANSFERLAB_STORE={url!r}: creating a new, empty store at {url}\n"
    open_store()
    assert capsys.readouterr().err == "", "an existing store is opened without a word"

    monkeypatch.chdir(tmp_path)
    open_store("relstore")
    assert f"creating a new, empty store at {tmp_path / 'relstore'}\n" in \
        capsys.readouterr().err


def test_the_default_store_is_named_as_the_default_when_created(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TRANSFERLAB_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    open_store()
    assert capsys.readouterr().err == ("the default store (TRANSFERLAB_STORE unset): creating "
                                       f"a new, empty store at {tmp_path / 'cache/transferlab'}\n")


def _read_only(monkeypatch, root):
    """Writes under `root` fail as on a read-only mount (the red-team's S2 used
    `mount -o remount,ro,bind`); permissions cannot show it to root, who ignores them."""
    import errno

    import transferlab.io

    real = transferlab.io.write_bytes_atomic

    def write(path, data):
        if str(path).startswith(str(root)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, data)

    monkeypatch.setattr(transferlab.io, "write_bytes_atomic", write)


def test_a_read_only_store_serves_its_entries_and_skips_writes(monkeypatch, tmp_path, capsys):
    """The red-team's S2: a read-only store holding every entry needed was refused
    ("the store is not writable"); it is now a read-only cache."""
    from transferlab.training.store import checkpoint_dir
    from transferlab.training.sweep import VariantCache
    from transferlab.training.variant import Variant

    root = tmp_path / "team-store"
    stored, new = Variant("AnB", 3, 5, 0), Variant("AnB", 2, 5, 0)
    VariantCache(open_store(str(root)), {"c": 1}).put(stored, {"treatment": "AnB",
                                                                "test_score": 0.5})
    before = sorted(root.rglob("*"))
    capsys.readouterr()

    _read_only(monkeypatch, root)
    store = open_store(str(root))
    assert not store.writable
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written (OSError: [Errno 30] Read-only" in err
    assert "using it as a read-only cache" in err and str(root) in err
    cache = VariantCache(store, {"c": 1})
    assert cache.get(stored)["test_score"] == 0.5  # served
    cache.put(new, {"treatment": "AnB", "test_score": 0.7})  # skipped, without a word
    store.clean_stale("variants")
    assert cache.get(new) is None and sorted(root.rglob("*")) == before
    assert capsys.readouterr().err == ""
    # Checkpoints (rewritten every epoch) go to the local default meanwhile.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert checkpoint_dir(store) == tmp_path / "cache" / "transferlab" / "checkpoints"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through any permission")
def test_a_store_without_write_permission_is_a_read_only_cache(tmp_path, capsys):
    root = tmp_path / "store"
    open_store(str(root)).write("variants/x.json", b"{}")
    root.chmod(0o555)
    try:
        store = open_store(str(root))
        assert not store.writable and store.read("variants/x.json") == b"{}"
        assert "read-only cache" in capsys.readouterr().err
    finally:
        root.chmod(0o755)
