"""The parsed-imports cache on disk (transferlab.keys): keyed by the file's text, its
place and the scanner's code, so it never serves another file's or an old parse."""

import json

import pytest

from transferlab import keys


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    keys._parsed_imports.cache_clear()
    yield tmp_path / "cache" / "imports"
    keys._parsed_imports.cache_clear()


def _fresh_closure(module: str) -> list:
    """The closure from parses made now, none read from the disk."""
    seen, todo = set(), [keys._module_file(module)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        names = keys._scan_imports(path.resolve(), path.read_text())
        todo += [keys._module_file(m) for m in names if keys._module_file(m) is not None]
    return sorted(seen)


def test_a_kept_parse_gives_the_closure_a_fresh_parse_gives(cache):
    first = keys.import_closure("transferlab.runs")
    assert len(list(cache.glob("*.json"))) == len(first)
    keys._parsed_imports.cache_clear()
    assert keys.import_closure("transferlab.runs") == first == _fresh_closure("transferlab.runs")


def test_an_unreadable_entry_is_a_miss(cache):
    first = keys.import_closure("transferlab.stage")
    for entry in cache.glob("*.json"):
        entry.write_text("{not json" if entry.stat().st_size % 2 else json.dumps({"a": 1}))
    keys._parsed_imports.cache_clear()
    assert keys.import_closure("transferlab.stage") == first


def test_an_edited_file_is_parsed_again_and_module_files_are_asked_of_the_disk(
        cache, tmp_path, monkeypatch):
    package = tmp_path / "pkg" / "transferlab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from transferlab import b\n")
    monkeypatch.setattr(keys, "PACKAGE_DIR", package)
    closure = keys.import_closure("transferlab.a")
    assert [p.name for p in closure] == ["__init__.py", "a.py"]  # b.py is not there yet
    (package / "b.py").write_text("X = 1\n")
    keys._parsed_imports.cache_clear()
    assert [p.name for p in keys.import_closure("transferlab.a")] == \
        ["__init__.py", "a.py", "b.py"]
    (package / "a.py").write_text("import transferlab.c\n")
    (package / "c.py").write_text("")
    keys._parsed_imports.cache_clear()
    assert [p.name for p in keys.import_closure("transferlab.a")] == \
        ["__init__.py", "a.py", "c.py"]
