"""Which params keys a block of code reads, by their dotted names ("transfer.lr").

Used by tests/test_declarations.py to hold each stage's reads against the params it
declares in dvc.yaml. Validation reads every key; those reads are not a stage's, so
they are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from transferlab.config import params as params_module
from transferlab.config.spec import Section


@contextmanager
def recording() -> Iterator[set[str]]:
    """Collect the dotted keys of every params field read inside the block."""
    reads: set[str] = set()
    on = [True]
    plain_get = Section.__getattribute__
    plain_parse = params_module.parse_params

    def get(self, name: str):
        value = plain_get(self, name)
        if on[0] and not name.startswith("_") and name in type(self).__dataclass_fields__ \
                and not isinstance(value, Section):
            reads.add(plain_get(self, "_prefix") + name)
        return value

    def parse(raw):
        on[0] = False
        try:
            return plain_parse(raw)
        finally:
            on[0] = True

    Section.__getattribute__ = get
    params_module.parse_params = parse
    try:
        yield reads
    finally:
        del Section.__getattribute__  # back to object's
        params_module.parse_params = plain_parse
