"""A small typed-schema kit: fields that carry their own bounds, and one reader.

A params section is a frozen dataclass deriving from `Section`; each field's
type, bounds and choices sit beside it as a spec (`Int(lo=1)`, `Choice(...)`).
`read_section` checks a mapping against the class and builds it, refusing
missing and unknown keys, so the values of a run all come from params.yaml
(where `dvc params diff` sees them) and a misspelt key is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from collections.abc import Iterator
from typing import Any, ClassVar


class ConfigurationError(Exception):
    """The run is configured in a way it cannot run with (params, store, executor,
    torchrun); a stage stops before any work with exit status 2."""


class ParamsError(ConfigurationError, ValueError):
    """A param has a value the pipeline cannot run with."""


def fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params: {key} = {value!r} is not allowed; expected {allowed}")


# ---------------------------------------------------------------------------- field specs


@dataclasses.dataclass(frozen=True)
class Spec:
    nullable: bool = False

    def check(self, key: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        return self._check(key, value)

    def _check(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def _allowed(self) -> str:
        return ("null or " if self.nullable else "") + self.describe()


@dataclasses.dataclass(frozen=True)
class Int(Spec):
    lo: int | None = None
    hi: int | None = None
    why: str = ""

    def describe(self) -> str:
        if self.lo is None and self.hi is None:
            text = "an integer"
        elif self.hi is None:
            text = f"an integer >= {self.lo}"
        elif self.lo is None:
            text = f"an integer <= {self.hi}"
        else:
            text = f"an integer from {self.lo} to {self.hi}"
        return text + (f" ({self.why})" if self.why else "")

    def _check(self, key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(key, value, self._allowed())
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise fail(key, value, self._allowed())
        return value


@dataclasses.dataclass(frozen=True)
class Float(Spec):
    lo: float | None = 0.0
    lo_open: bool = False
    hi: float | None = None
    hi_open: bool = False

    def describe(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"> {self.lo}" if self.lo_open else f">= {self.lo}")
        if self.hi is not None:
            parts.append(f"< {self.hi}" if self.hi_open else f"<= {self.hi}")
        text = "a finite number" + (" " + " and ".join(parts) if parts else "")
        return text + (" (positive)" if self.lo == 0 and self.lo_open and self.hi is None else "")

    def _check(self, key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise fail(key, value, self._allowed())
        low_bad = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high_bad = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low_bad or high_bad:
            raise fail(key, value, self._allowed())
        return float(value)


@dataclasses.dataclass(frozen=True)
class Bool(Spec):
    def describe(self) -> str:
        return "true or false"

    def _check(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise fail(key, value, self._allowed())
        return value


@dataclasses.dataclass(frozen=True)
class Choice(Spec):
    options: tuple[str, ...] = ()

    def describe(self) -> str:
        return "one of " + ", ".join(self.options)

    def _check(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise fail(key, value, self._allowed())
        return value


@dataclasses.dataclass(frozen=True)
class Text(Spec):
    what: str = "a non-empty string"

    def describe(self) -> str:
        return self.what

    def _check(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise fail(key, value, self._allowed())
        return value


@dataclasses.dataclass(frozen=True)
class List(Spec):
    item: Spec = dataclasses.field(default_factory=Spec)
    may_be_empty: bool = False
    increasing: bool = False
    length: int | None = None
    unique: bool = True

    def describe(self) -> str:
        notes = [f"{self.length} values" if self.length else
                 "may be empty" if self.may_be_empty else "non-empty"]
        notes += ["no repeats"] if self.unique else []
        return f"a list ({', '.join(notes)}) of: {self.item.describe()}"

    def _check(self, key: str, value: Any) -> tuple:
        if not isinstance(value, list):
            raise fail(key, value, self._allowed())
        if not value and not self.may_be_empty:
            raise fail(key, value, "a non-empty list")
        if self.length is not None and len(value) != self.length:
            raise fail(key, value, f"a list of {self.length} values")
        items = tuple(self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value))
        if self.unique and len(set(map(repr, items))) != len(items):
            raise fail(key, value, "a list without repeated values")
        if self.increasing and list(items) != sorted(items):
            raise fail(key, value, "increasing values")
        return items


@dataclasses.dataclass(frozen=True)
class OneOf(Spec):
    """The first of several specs that accepts the value (e.g. "all" or a list)."""

    specs: tuple[Spec, ...] = ()

    def describe(self) -> str:
        return " or ".join(s.describe() for s in self.specs)

    def _check(self, key: str, value: Any) -> Any:
        for spec in self.specs:
            try:
                return spec.check(key, value)
            except ParamsError:
                continue
        raise fail(key, value, self._allowed())


@dataclasses.dataclass(frozen=True)
class Literal(Spec):
    value: Any = None

    def describe(self) -> str:
        return json.dumps(self.value)

    def _check(self, key: str, value: Any) -> Any:
        if value != self.value or type(value) is not type(self.value):
            raise fail(key, value, self._allowed())
        return value


@dataclasses.dataclass(frozen=True)
class Mapping(Spec):
    """A mapping checked by a function of (key, value) -> value (used for model.<arch>).
    `items` names the specs the checker applies to the mapping's values ("<layer>" for
    any key), so a walk of the schema (`walk`) sees them too."""

    checker: Any = None
    items: tuple[tuple[str, Spec], ...] = ()

    def describe(self) -> str:
        return "a mapping"

    def _check(self, key: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise fail(key, value, "a mapping of keys to values")
        return self.checker(key, value)


def spec(s: Spec) -> Any:
    """A dataclass field whose value is checked by `s`; no default (params.yaml has it)."""
    return dataclasses.field(metadata={"spec": s})


# ---------------------------------------------------------------------------- sections

class Section:
    """Base of every params section (tests/read_recorder.py notes which fields a stage
    reads, to hold them against what the stage declares in dvc.yaml)."""

    _prefix: ClassVar[str] = ""  # set per instance by read_section ("data.", "heads.svm.")
    __dataclass_fields__: ClassVar[dict]


def check_keys(raw: dict, names: list[str], prefix: str) -> None:
    """Refuse a key of `raw` that is not in `names`, and a name missing from `raw`."""
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise ParamsError(f"params: unknown key {prefix + str(unknown[0])!r}; keys allowed in "
                          f"{prefix.rstrip('.') or 'the top level'}: " + ", ".join(names))
    for name in names:
        if name not in raw:
            raise ParamsError(f"params: missing key {prefix + name!r}; params.yaml and "
                              "recipe.yaml must set every key (they are the one place where "
                              "defaults live)")


def read_section(cls: type, raw: Any, prefix: str = "") -> Any:
    """Build section `cls` from mapping `raw`: every field present, none unknown, all valid."""
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, dict):
        raise fail(where, raw, "a mapping of keys to values")
    fields = dataclasses.fields(cls)
    check_keys(raw, [f.name for f in fields], prefix)
    values = {}
    for f in fields:
        key = prefix + f.name
        sub = _section_types(cls).get(f.name)
        if sub is not None:
            values[f.name] = read_section(sub, raw[f.name], key + ".")
        else:
            values[f.name] = f.metadata["spec"].check(key, raw[f.name])
    obj = cls(**values)
    object.__setattr__(obj, "_prefix", prefix)
    return obj


@functools.cache
def _section_types(cls: type) -> dict[str, type]:
    """The fields of `cls` that are sections themselves."""
    hints = typing.get_type_hints(cls)
    return {name: hint for name, hint in hints.items()
            if isinstance(hint, type) and issubclass(hint, Section)}


def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, Spec]]:
    """(dotted key, spec) of every spec in section `cls`, nested ones included: a list's
    items as `key[]`, each alternative of a OneOf under its key, a Mapping's items as
    `key.<name>`."""

    def inner(key: str, s: Spec) -> Iterator[tuple[str, Spec]]:
        yield key, s
        if isinstance(s, List):
            yield from inner(key + "[]", s.item)
        elif isinstance(s, OneOf):
            for alternative in s.specs:
                yield from inner(key, alternative)
        elif isinstance(s, Mapping):
            for name, item in s.items:
                yield from inner(f"{key}.{name}", item)

    for f in dataclasses.fields(cls):
        sub = _section_types(cls).get(f.name)
        if sub is not None:
            yield from walk(sub, f"{prefix}{f.name}.")
        else:
            yield from inner(prefix + f.name, f.metadata["spec"])


def plain(value: Any) -> Any:
    """A section or value as JSON-able data (sections as dicts, tuples as lists)."""
    if isinstance(value, Section):
        return {f.name: plain(object.__getattribute__(value, f.name))
                for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def value_at(root: Any, key: str) -> Any:
    """The plain value of dotted `key` ("data.crop", "model.convnet") in a section tree."""
    value = root
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else object.__getattribute__(value, part)
    return plain(value)
