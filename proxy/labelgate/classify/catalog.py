"""The classification catalog: which labels a model's outputs (or a message's fields) carry.

The data lives in the policy bundle (``rego/labelgate/catalog/data.json``, i.e.
``data.labelgate.catalog``) so policy and catalog travel together::

    {"default_label": "internal",
     "entries": [{"model": "customer-profile", "path": "outputs.ssn", "labels": ["confidential"]},
                 {"model": "sentiment", "path": "outputs.*", "labels": ["public"]},
                 {"message": "labelgate.v1.demo.Customer", "path": "notes", "labels": ["internal"]}]}

``path`` is an fnmatch-style glob in which only ``*`` (any run of characters, dots
included) and ``?`` (one character) are wildcards. ``[`` ``]`` ``{`` ``}`` are literal,
because they belong to the field-path grammar (``outputs.doc[].ssn``, ``outputs.notes{us_ssn}``)
and fnmatch would read them as character classes.

When several entries match a path their labels are unioned: a catalog that says
``outputs.*`` is public and ``outputs.ssn`` is confidential gives ``outputs.ssn`` both,
and the policy sees the most sensitive. That can only err towards protection.

Loading (``from_file``) is the only I/O here, done at start and on reload; lookups are pure.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelgate.classify import reasons
from labelgate.classify.fields import SOURCE_CATALOG, Field, FieldSet
from labelgate.classify.labels import LABELS, is_label
from labelgate.errors import ConfigError
from labelgate.unique_keys import DuplicateKeyError, unique_keys

CATALOG_INVALID = reasons.CATALOG_INVALID
OUTPUTS_PREFIX = "outputs."
# The request-phase field for "every output of a model the catalog does not know".
ALL_OUTPUTS = "outputs.*"

# Lookups are memoized per catalog; past this many distinct paths the memo starts over, so
# responses with ever-new tensor or key names cannot grow it without bound.
LOOKUP_MEMO_SIZE = 4096

_ENTRY_KEYS = frozenset({"model", "message", "path", "labels"})
_TOP_KEYS = frozenset({"default_label", "entries"})


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A glob where only ``*`` and ``?`` are wildcards, as a regex to ``fullmatch``."""
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern]
    return re.compile("".join(parts), re.DOTALL)


def is_glob(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def may_extend(pattern: str, prefix: str) -> bool:
    """Whether ``pattern`` may match ``prefix`` or a path that extends it.

    Exact for a plain path; for a glob, an over-approximation from the text before its
    first wildcard, which errs towards "yes" (``outputs.*`` may extend anything).
    """
    if not is_glob(pattern):
        return pattern.startswith(prefix)
    literal = _WILDCARD.split(pattern, maxsplit=1)[0]
    return literal.startswith(prefix) or prefix.startswith(literal)


_WILDCARD = re.compile(r"[*?]")


def key_segments(path: str) -> list[str]:
    """The literal key names in a model entry's path: ``outputs.doc[].contact.email`` ->
    ``contact``, ``email``. Not the tensor name, not a ``{detector}``, not a glob segment."""
    rest = path[len(OUTPUTS_PREFIX) :] if path.startswith(OUTPUTS_PREFIX) else path
    tensor = tensor_part(path)
    if not is_glob(tensor):
        rest = rest[len(tensor) :]
    rest = rest.split("{", 1)[0]
    return [part for part in rest.replace("[]", ".").split(".") if part and not is_glob(part)]


def tensor_part(path: str) -> str:
    """``outputs.doc[].ssn`` -> ``doc``; ``outputs.notes{us_ssn}`` -> ``notes``."""
    rest = path[len(OUTPUTS_PREFIX) :] if path.startswith(OUTPUTS_PREFIX) else path
    cut = min((i for i in (rest.find("["), rest.find("{")) if i >= 0), default=len(rest))
    return rest[:cut]


@dataclass(frozen=True)
class CatalogEntry:
    model: str | None
    message: str | None
    path: str
    labels: frozenset[str]
    _regex: re.Pattern[str] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", compile_glob(self.path) if is_glob(self.path) else None)

    def matches(self, path: str) -> bool:
        if self._regex is None:
            return path == self.path
        return self._regex.fullmatch(path) is not None


class Catalog:
    """Validated catalog data with lookups by model or message name."""

    def same_as(self, other: Catalog) -> bool:
        """The same entries, in the same order, and the same default label: every field gets
        the labels it got."""
        return self.default_label == other.default_label and self.entries == other.entries

    def __init__(self, default_label: str, entries: Iterable[CatalogEntry]) -> None:
        self.default_label = default_label
        self.entries = tuple(entries)
        self._by_model: dict[str, list[CatalogEntry]] = {}
        self._by_message: dict[str, list[CatalogEntry]] = {}
        for entry in self.entries:
            if entry.model is not None:
                self._by_model.setdefault(entry.model, []).append(entry)
            else:
                self._by_message.setdefault(entry.message or "", []).append(entry)
        # The entries never change after construction (a reload builds a new catalog), so the
        # labels of a (model, path) can be remembered: every response asks for the same ones.
        self._memo: dict[tuple[str, str], frozenset[str]] = {}
        self._key_names = {
            model: frozenset(key for entry in entries for key in key_segments(entry.path))
            for model, entries in self._by_model.items()
        }
        self._under_memo: dict[tuple[str, str], frozenset[str]] = {}
        # Per model: its exact entry paths, sorted (``may_label_under`` bisects them), and the
        # text before the first wildcard of each glob entry (``may_extend``'s test).
        self._exact_paths = {
            model: sorted({entry.path for entry in entries if not is_glob(entry.path)})
            for model, entries in self._by_model.items()
        }
        self._glob_literals = {
            model: tuple(
                dict.fromkeys(
                    _WILDCARD.split(entry.path, maxsplit=1)[0] for entry in entries if is_glob(entry.path)
                )
            )
            for model, entries in self._by_model.items()
        }

    @classmethod
    def from_file(cls, path: str | Path) -> Catalog:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:  # strerror: "No such file or directory", not Python's [Errno 2] repr
            raise ConfigError(CATALOG_INVALID, f"cannot read catalog file {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(CATALOG_INVALID, f"catalog file {path} is not UTF-8 text") from None
        try:
            data = json.loads(text, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as error:
            raise ConfigError(CATALOG_INVALID, f"catalog file {path} is not valid JSON: {error}") from error
        except DuplicateKeyError as error:
            # json.loads would keep the last one: the file would not mean what a reviewer read.
            raise ConfigError(CATALOG_INVALID, f"catalog file {path}: {error}") from None
        except RecursionError:
            raise ConfigError(CATALOG_INVALID, f"catalog file {path} is nested too deeply") from None
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "catalog") -> Catalog:
        """Validate ``data`` and build a catalog; every problem is listed in one ``ConfigError``."""
        problems: list[str] = []
        if not isinstance(data, Mapping):
            raise ConfigError(CATALOG_INVALID, f"{source}: expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - _TOP_KEYS)
        if unknown:
            problems.append(f"unknown keys {unknown}; expected {sorted(_TOP_KEYS)}")
        default_label = data.get("default_label", "internal")
        if not is_label(default_label):
            problems.append(f"default_label {default_label!r} is not one of {list(LABELS)}")
        elif default_label == "public":
            problems.append("default_label must not be 'public': unlabelled data is never public")
        raw_entries = data.get("entries", [])
        entries: list[CatalogEntry] = []
        if not isinstance(raw_entries, list):
            problems.append(f"entries must be a list, got {type(raw_entries).__name__}")
            raw_entries = []
        for index, raw in enumerate(raw_entries):
            entry = _parse_entry(raw, f"entries[{index}]", problems)
            if entry is not None:
                entries.append(entry)
        if problems:
            raise ConfigError(CATALOG_INVALID, f"{source}: " + "; ".join(problems))
        return cls(default_label, entries)

    # --- lookups ------------------------------------------------------------------------

    def labels_for(self, model: str, path: str) -> frozenset[str]:
        """Union of the labels of every entry for ``model`` whose glob matches ``path``."""
        key = (model, path)
        labels = self._memo.get(key)
        if labels is None:
            labels = _union(self._by_model.get(model, ()), path)
            if len(self._memo) >= LOOKUP_MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = labels
        return labels

    def key_names(self, model: str) -> frozenset[str]:
        """Keys written literally in ``model``'s entry paths: only these appear verbatim in
        field paths (``labelgate.classify.jsonpaths.KeyNames``)."""
        return self._key_names.get(model, frozenset())

    def labels_at_or_under(self, model: str, tensor: str) -> frozenset[str]:
        """Every label an entry for ``model`` may give ``outputs.<tensor>`` or a path inside it
        (``outputs.<tensor>[]...``, ``outputs.<tensor>{...}``); globs count when they may."""
        key = (model, tensor)
        labels = self._under_memo.get(key)
        if labels is None:
            base = OUTPUTS_PREFIX + tensor
            found: set[str] = set()
            for entry in self._by_model.get(model, ()):
                if is_glob(entry.path):
                    reaches = may_extend(entry.path, base)
                else:
                    reaches = tensor_part(entry.path) == tensor
                if reaches:
                    found |= entry.labels
            labels = frozenset(found)
            if len(self._under_memo) >= LOOKUP_MEMO_SIZE:
                self._under_memo.clear()
            self._under_memo[key] = labels
        return labels

    def may_label_under(self, model: str, path: str) -> bool:
        """Whether some entry for ``model`` may give ``path`` or a path that extends it a
        label (``may_extend``: exact for a plain path, erring towards "yes" for a glob).
        A bisection and a few prefix tests: asked per node of a JSON element's skeleton
        (``json_elements``), so it is not memoized."""
        exact = self._exact_paths.get(model)
        if exact is None:
            return False
        # Exact paths starting with ``path`` sort right at or after it: look at that one.
        position = bisect_left(exact, path)
        if position < len(exact) and exact[position].startswith(path):
            return True
        literals = self._glob_literals[model]
        return bool(literals) and any(
            literal.startswith(path) or path.startswith(literal) for literal in literals
        )

    def labels_for_message(self, message: str, path: str) -> frozenset[str]:
        """Like ``labels_for`` for a generic message's full name and field path."""
        return _union(self._by_message.get(message, ()), path)

    def expected_fields(self, model: str, requested_outputs: Sequence[str] = ()) -> list[Field]:
        """The request-phase fields for ``model``, from the catalog alone.

        With ``requested_outputs``: one ``outputs.<name>`` field per requested name, labelled by
        every entry that matches it (so ``outputs.*`` expands to the names asked for; a
        name no entry covers gets the default label), plus nested entries
        (``outputs.doc[].ssn``) of the requested tensors.

        Without (the caller wants every output): each entry's path as written, globs
        included (``outputs.*`` stays ``outputs.*``), since the outputs are not known before
        the upstream answers. A model the catalog does not know gives one ``outputs.*``
        field with the default label, so the policy never sees an empty field list for data
        it knows nothing about.
        """
        entries = self._by_model.get(model, [])
        fields = FieldSet()
        if requested_outputs:
            names = list(dict.fromkeys(requested_outputs))
            for name in names:
                path = OUTPUTS_PREFIX + name
                fields.touch(path)
                fields.add(path, self.labels_for(model, path), SOURCE_CATALOG)
            for entry in entries:
                if not _is_tensor_level(entry.path) and _covers_any(tensor_part(entry.path), names):
                    fields.add(entry.path, entry.labels, SOURCE_CATALOG)
        elif not entries:
            fields.touch(ALL_OUTPUTS)
        else:
            for entry in entries:
                fields.add(entry.path, entry.labels, SOURCE_CATALOG)
        return fields.fields(self.default_label)


def _union(entries: Iterable[CatalogEntry], path: str) -> frozenset[str]:
    labels: set[str] = set()
    for entry in entries:
        if entry.matches(path):
            labels |= entry.labels
    return frozenset(labels)


def _is_tensor_level(path: str) -> bool:
    return "[" not in path and "{" not in path


def _covers_any(pattern: str, names: Iterable[str]) -> bool:
    if not is_glob(pattern):
        return pattern in names
    regex = compile_glob(pattern)
    return any(regex.fullmatch(name) for name in names)


def _parse_entry(raw: Any, where: str, problems: list[str]) -> CatalogEntry | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected an object, got {type(raw).__name__}")
        return None
    before = len(problems)
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        problems.append(f"{where}: unknown keys {unknown}; expected {sorted(_ENTRY_KEYS)}")
    model, message = raw.get("model"), raw.get("message")
    if model is None and message is None:
        problems.append(f"{where}: has neither 'model' nor 'message'")
    elif model is not None and message is not None:
        problems.append(f"{where}: has both 'model' and 'message'; an entry describes one of them")
    for key, value in (("model", model), ("message", message)):
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"{where}: '{key}' must be a non-empty string")
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        problems.append(f"{where}: 'path' must be a non-empty string")
    elif model is not None and not path.startswith(OUTPUTS_PREFIX):
        problems.append(f"{where}: path {path!r} of a model entry must start with {OUTPUTS_PREFIX!r}")
    elif model is not None and path.endswith("[]") and "." not in path[len(OUTPUTS_PREFIX) : -2]:
        # An output's elements are no field of their own (plain text has no path below the
        # output, and a JSON element's fields are its keys): such an entry would label nothing.
        problems.append(
            f"{where}: path {path!r} names an output's elements, which are no field of their own: "
            f"write {path[:-2]!r} to label the output (every element)"
        )
    labels = raw.get("labels")
    if not isinstance(labels, list) or not labels:
        problems.append(f"{where}: 'labels' must be a non-empty list")
    else:
        unknown_labels = [label for label in labels if not is_label(label)]
        if unknown_labels:
            problems.append(f"{where}: unknown labels {unknown_labels}; expected some of {list(LABELS)}")
    if len(problems) > before:
        return None
    assert isinstance(path, str) and isinstance(labels, list)  # for the type checker: checked above
    return CatalogEntry(model, message, path, frozenset(labels))
