"""The store of trained results, shared by every run of a user or a cluster.

Variant results (the sweep) and pretraining checkpoints live under keys derived
from everything that makes them (transferlab.keys, runs.variant_context), so
any workspace, `dvc exp run --temp` copy, queued experiment or Ray worker that
needs a result already trained finds it. Where the store is, is configuration
of the machine, not a param: the environment variable TRANSFERLAB_STORE holds a
directory or any fsspec URL (`file://`, a shared filesystem's path, `s3://…`
with s3fs installed); unset, it is the user's cache directory
($XDG_CACHE_HOME/transferlab, else ~/.cache/transferlab).

Writes never leave a torn entry: on a filesystem, a temporary beside the entry
is renamed onto it (transferlab.io); on an object store an entry is one PUT,
which the store makes visible whole or not at all. Two runs writing the same
key write the same result, so the last one winning is harmless.

Trust: whoever can write the store can change results, as with DVC's run-cache
and remotes. Each entry (a variant's JSON, a pretraining checkpoint) carries the
sha256 of its own content, inside the entry so that the one atomic write that
stores it stores its digest too (a sidecar file would be a second write, which a
reader could see half done). On read, an entry whose content does not match its
digest, or that carries none, is a miss named on stderr, and the result is trained
again. This catches corruption and careless edits (a hand-edited score, a
checkpoint rewritten with torch.save); it does not stop a writer who recomputes
the digest, which anyone with the code can. Against that, keep write access to
the people whose results you accept; a store its users cannot write (a read-only
mount, a directory without their write permission, a bucket they may only read) is
used as a read-only cache (`open_store`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from pathlib import Path

from transferlab.config.spec import ConfigurationError

STORE_ENV = "TRANSFERLAB_STORE"


class StoreError(ConfigurationError):
    """The configured store cannot be used (unknown filesystem, not writable); like a bad
    param, it stops a stage before any work, with exit status 2."""


class EntryRejected(ValueError):
    """A stored entry that is not served: it carries no digest, or its content does not
    match the digest it carries. The message says which, to be printed with the entry."""


def content_digest(key: str, content: bytes) -> str:
    """The digest an entry carries: sha256 of its key and its content, so an entry copied
    under another key fails as an edited one does."""
    return hashlib.sha256(key.encode("utf-8") + b"\0" + content).hexdigest()


def check_digest(stored: object, actual: str) -> None:
    """Raise EntryRejected unless `stored` (the digest an entry carries) is `actual`."""
    if stored is None:
        raise EntryRejected("carries no digest (written before entries carried one)")
    if stored != actual:
        raise EntryRejected(f"fails its digest (it carries sha256 {str(stored)[:16]}..., its "
                            f"content hashes to {actual[:16]}...: edited or corrupted)")


def default_location() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "transferlab")


def configured_location() -> str:
    return os.environ.get(STORE_ENV) or default_location()


def _named(url: str) -> str:
    """How messages name a store: by the variable that chose it, or as the default."""
    if url == default_location() and not os.environ.get(STORE_ENV):
        return f"the default store ({STORE_ENV} unset)"
    return f"{STORE_ENV}={url!r}"


class Store:
    """Bytes under relative keys ("variants/<sha256>.json") at one location. A store
    that is not `writable` serves its entries and skips every write."""

    def __init__(self, url: str, writable: bool = True):
        from fsspec.core import url_to_fs

        self.url = url
        self.writable = writable
        try:
            self.fs, self.root = url_to_fs(url)
        except (ValueError, ImportError) as err:
            raise StoreError(f"{_named(url)}: cannot open this store ({err}); use a "
                             "directory path, file://, or a URL of an installed fsspec "
                             "filesystem (s3:// needs s3fs)") from None
        self.local = "file" in _protocols(self.fs)

    def __repr__(self) -> str:
        return f"Store({self.url!r}{'' if self.writable else ', writable=False'})"

    def __reduce__(self):  # a Ray task gets the location and opens it where it runs
        return (Store, (self.url, self.writable))

    def path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def local_path(self, key: str) -> Path | None:
        """The entry's path on this machine's filesystem; None on an object store."""
        return Path(self.path(key)) if self.local else None

    def where(self) -> str:
        """The location as a reader should see it: an absolute path, or the URL."""
        return os.path.abspath(self.root) if self.local else self.url

    def exists(self) -> bool:
        try:
            return bool(self.fs.isdir(self.root))
        except Exception:
            return False

    def check_writable(self) -> Store:
        """Write and delete a probe entry, so a bad location fails before any work. A
        location that exists but cannot be written gives a read-only store (one message
        says so); one that does not exist and cannot be created raises StoreError."""
        probe = f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            self.write(probe, b"probe")
            self.fs.rm(self.path(probe))
        except StoreError:
            raise
        except OSError as err:
            if not self.exists():
                raise StoreError(f"{_named(self.url)}: the store is not writable "
                                 f"({type(err).__name__}: {err})") from None
            print(f"{_named(self.url)}: the store at {self.where()} cannot be written "
                  f"({type(err).__name__}: {err}); using it as a read-only cache: results "
                  "stored in it are reused, what this run trains is not stored",
                  file=sys.stderr)
            return Store(self.url, writable=False)
        except Exception as err:
            raise StoreError(f"{_named(self.url)}: the store is not writable "
                             f"({type(err).__name__}: {err})") from None
        return self

    def read(self, key: str) -> bytes | None:
        """The entry's bytes, or None when it is absent; an unreadable one raises OSError."""
        try:
            return self.fs.cat_file(self.path(key))
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        if not self.writable:  # open_store said so, once
            return
        if self.local:
            from transferlab.io import write_bytes_atomic

            write_bytes_atomic(self.path(key), data)
            return
        # An object store has no rename; one PUT is visible whole or not at all.
        self.fs.pipe_file(self.path(key), data)

    def clean_stale(self, subdir: str) -> None:
        """Remove temporaries a killed writer left in a local store's `subdir`."""
        if self.local and self.writable:
            from transferlab.io import clean_stale_temporaries_in

            clean_stale_temporaries_in([self.path(subdir)])


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def open_store(url: str | None = None) -> Store:
    """The configured store (TRANSFERLAB_STORE or the user cache), checked before any work.

    A location that does not exist is created, after a message naming it, so a misspelt
    TRANSFERLAB_STORE does not start an empty store silently. One that exists but cannot
    be written is used read-only (`Store.check_writable`)."""
    store = Store(url or configured_location())
    if not store.exists():
        print(f"{_named(store.url)}: creating a new, empty store at {store.where()}",
              file=sys.stderr)
    return store.check_writable()


def checkpoint_dir(store: Store) -> Path | None:
    """Where pretraining checkpoints go: in the store when it is a writable filesystem (a
    checkpoint is rewritten every epoch and read by path); in the local default
    otherwise; nowhere (None: a killed pretraining starts over) when that is the store."""
    if store.local and store.writable:
        return Path(store.path("checkpoints"))
    why = "cannot be written" if store.local else "is not a filesystem"
    if store.local and store.where() == os.path.abspath(default_location()):
        print(f"store {store.url} {why}: pretraining writes no checkpoints (a killed run "
              "starts over)", file=sys.stderr)
        return None
    print(f"store {store.url} {why}: pretraining checkpoints stay in "
          f"{default_location()}", file=sys.stderr)
    return Path(default_location()) / "checkpoints"
