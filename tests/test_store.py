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
