"""What a candidate catalog takes from fields, compared by what each catalog labels.

A replay cannot show it: the stored inputs carry the labels the served catalog gave, and
re-labelling them with the candidate's is not exact (their paths were spelled with the served
catalog's key names, and detectors that did not run on a field would run on it). Nor can the
catalogs be compared entry by entry: naming a JSON key in any entry of a model changes how that
key is spelled in every path of the model (``Catalog.key_names``: a key no entry names is
``<key:xxxxxxxx>``), so an entry added for one output may stop a served ``<key:*>`` glob from
matching in another.

So every field either catalog names is looked up in both (``catalog_changes``): per model (and
per message), every path of either catalog's entries, a glob's wildcard segments also filled
with every key and output either catalog names (and one neither does), each spelled as each
catalog spells it and labelled by the catalog's own lookup (``Catalog.labels_for``), the
default label where no entry matches. A field that loses a label is a change (the kinds of
``labelgate.bundle.gate``). Pure: the caller loads the catalogs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from labelgate.bundle import gate
from labelgate.classify.catalog import (
    OUTPUTS_PREFIX,
    Catalog,
    CatalogEntry,
    compile_glob,
    is_glob,
    tensor_part,
)
from labelgate.classify.jsonpaths import KeyNames
from labelgate.classify.labels import rank

# An entry segment written as a placeholder stands for the key one gateway's secret hashes so:
# it is kept as written in both catalogs, never spelled again.
PLACEHOLDER = re.compile(r"<key:[0-9a-f]{8}>")
# What fills a wildcard besides the names the catalogs give: a key and an output neither names,
# so a glob that matches only some names (``outputs.?``) is not taken for one matching all.
FRESH_KEY = "labelgate-probe-key"
FRESH_OUTPUT = "labelgate-probe-output"
# How the report writes them.
_SHOWN = {
    ("key", FRESH_KEY): ".<another key>",
    ("text", OUTPUTS_PREFIX + FRESH_OUTPUT): OUTPUTS_PREFIX + "<another output>",
    ("text", FRESH_KEY): "<another field>",
    ("text", "." + FRESH_KEY): ".<another field>",
}
# A path with more combinations of filled wildcards than this fills one wildcard at a time.
MAX_COMBINATIONS = 256
# Past this many fields of one model or message the catalogs are not compared there: the
# change holds for every label the served catalog gives it (fail closed).
MAX_FIELDS = 20_000
TOO_MANY_FIELDS = "(too many fields to compare)"

# A path piece: ("key", name) is a JSON key spelled by each catalog (``KeyNames.segment``),
# ("text", text) is written as is (an output, ``[]``, a glob, a message's field name).
Piece = tuple[str, str]
Field = tuple[Piece, ...]
# (model, message): exactly one is set
Scope = tuple[str | None, str | None]


def catalog_changes(served: Catalog | None, proposed: Catalog | None) -> list[dict[str, Any]]:
    """Every field to which ``served`` gives a label that ``proposed`` does not (``None``: the
    bundle has no catalog; none served compares nothing, none proposed loses every label)."""
    if served is None or (proposed is not None and proposed.same_as(served)):
        return []
    changes: list[dict[str, Any]] = []
    if proposed is not None and proposed.default_label != served.default_label:
        changes.append(
            _change(
                (None, None), gate.DEFAULT_LABEL_PATH, {served.default_label}, {proposed.default_label}, []
            )
        )
    for scope in _scopes(served, proposed):
        changes += _scope_changes(scope, served, proposed)
    return changes


def _scopes(*catalogs: Catalog | None) -> list[Scope]:
    found: dict[Scope, None] = {}
    for catalog in catalogs:
        for entry in catalog.entries if catalog is not None else ():
            found[_scope_of(entry)] = None
    return list(found)


def _scope_of(entry: CatalogEntry) -> Scope:
    return (entry.model, None) if entry.model is not None else (None, entry.message)


def _scope_changes(scope: Scope, served: Catalog, proposed: Catalog | None) -> list[dict[str, Any]]:
    catalogs = [served] if proposed is None else [served, proposed]
    paths = [e.path for c in catalogs for e in c.entries if _scope_of(e) == scope]
    served_view = _View(served, scope)
    proposed_view = _View(proposed, scope) if proposed is not None else None
    changes: dict[str, dict[str, Any]] = {}
    seen: set[Field] = set()
    written: tuple[Any, Any] | None = None  # (was, now) of the path as written, if it changes
    for field, as_written in _fields(scope, paths, catalogs):
        if field in seen and not as_written:
            continue
        seen.add(field)
        if len(seen) > MAX_FIELDS:
            given = {label for e in served.entries if _scope_of(e) == scope for label in e.labels}
            return [_change(scope, TOO_MANY_FIELDS, given | {served.default_label}, (), [])]
        change = _field_change(scope, field, served_view, proposed_view)
        if as_written:
            written = (change["was"], change["now"]) if change is not None else None
        elif (
            change is not None
            and not change.get("respelled_keys")
            and written == (change["was"], change["now"])
        ):
            continue  # a filled glob losing what the glob as written loses says nothing more
        if change is not None:
            changes.setdefault(change["path"], change)
    return list(changes.values())


def _fields(scope: Scope, paths: Sequence[str], catalogs: Sequence[Catalog]) -> Iterator[tuple[Field, bool]]:
    """The fields ``paths`` (of one model or message, in ``catalogs``) stand for, and whether
    each is a path as written."""
    model = scope[0]
    if model is None:
        segments = {piece for path in paths for piece in re.split(r"\[\]|\.|\{", path) if piece}
        names = [*sorted(s for s in segments if not is_glob(s)), FRESH_KEY]
        return _filled(map(_message_field, paths), _message_fill(names))
    keys = {key for c in catalogs for key in c.key_names(model) if not PLACEHOLDER.fullmatch(key)}
    outputs = {tensor_part(path) for path in paths if not is_glob(tensor_part(path))}
    fill = _model_fill(model, [*sorted(keys), FRESH_KEY], [*sorted(outputs), FRESH_OUTPUT], catalogs)
    return _filled(map(_model_field, paths), fill)


class _View:
    """How one catalog spells and labels the fields of one model or message."""

    def __init__(self, catalog: Catalog, scope: Scope) -> None:
        self.catalog, (self.model, self.message) = catalog, scope
        self.keys = KeyNames(catalog.key_names(self.model)) if self.model is not None else None

    def spelled(self, field: Field) -> str:
        return "".join(
            self.keys.segment(text) if kind == "key" and self.keys is not None else text
            for kind, text in field
        )

    def spelled_key(self, key: str) -> str:
        return self.spelled((("key", key),))

    def labels(self, field: Field) -> frozenset[str]:
        """The labels of the entries matching ``field`` (none: the default label's)."""
        if self.model is not None:
            return self.catalog.labels_for(self.model, self.spelled(field))
        return self.catalog.labels_for_message(self.message or "", self.spelled(field))


def _field_change(scope: Scope, field: Field, served: _View, proposed: _View | None) -> dict[str, Any] | None:
    was_entries = served.labels(field)
    now_entries = proposed.labels(field) if proposed is not None else frozenset()
    if not was_entries and (not now_entries or proposed is None):
        # The default label's both times (another default is a change of its own), or with no
        # catalog proposed, of a field no served entry labels: the served entries say it all.
        return None
    was = was_entries or {served.catalog.default_label}
    now = now_entries or ({proposed.catalog.default_label} if proposed is not None else set())
    if not set(was) - set(now):
        return None
    keys = [text for kind, text in field if kind == "key"]
    respelled = sorted(
        key for key in keys if proposed is not None and served.spelled_key(key) != proposed.spelled_key(key)
    )
    path = "".join(_SHOWN.get(piece, "." + piece[1] if piece[0] == "key" else piece[1]) for piece in field)
    if respelled:
        kind = gate.CATALOG_RESPELLED
    elif not now_entries:
        kind = gate.CATALOG_REMOVED
    elif not was_entries:
        kind = gate.CATALOG_ADDED_WITHOUT_DEFAULT
    else:
        kind = None
    return _change(scope, path, was, now, respelled, kind=kind)


def _change(
    scope: Scope,
    path: str,
    was: Iterable[str],
    now: Iterable[str],
    respelled: list[str],
    *,
    kind: str | None = None,
) -> dict[str, Any]:
    before, after = sorted(was, key=rank), sorted(now, key=rank)
    if kind is None:
        if not after:
            kind = gate.CATALOG_REMOVED
        elif rank(after[-1]) < rank(before[-1]):
            kind = gate.CATALOG_LOWERED
        else:
            kind = gate.CATALOG_REPLACED
    model, message = scope
    change = {"kind": kind, "model": model, "message": message, "path": path, "was": before, "now": after}
    if respelled:
        change["respelled_keys"] = respelled
    return change


# -- the fields an entry's path stands for ------------------------------------------------


def _model_field(path: str) -> Field:
    """``outputs.doc[].contact.email{us_ssn}`` -> the output, then ``[]``, the keys (spelled by
    each catalog), the span as written. Glob and placeholder segments stay as written."""
    tensor = tensor_part(path)
    head = OUTPUTS_PREFIX + tensor
    body, brace, span = path[len(head) :].partition("{")
    pieces: list[Piece] = [("text", head)]
    for piece in _pieces(body):
        name = piece[1:]
        if piece.startswith(".") and name and not is_glob(name) and not PLACEHOLDER.fullmatch(name):
            pieces.append(("key", name))
        else:
            pieces.append(("text", piece))
    if brace:
        pieces.append(("text", brace + span))
    return tuple(pieces)


def _message_field(path: str) -> Field:
    return tuple(("text", piece) for piece in _pieces(path))


def _pieces(body: str) -> list[str]:
    """``[].a.b*`` -> ``[]``, ``.a``, ``.b*``: cut before each ``.`` and around each ``[]``."""
    return [piece for piece in re.split(r"(\[\]|\.[^.\[]*)", body) if piece]


Fill = Callable[[int, Piece], list[Piece]]


def _model_fill(model: str, keys: Sequence[str], outputs: Sequence[str], catalogs: Sequence[Catalog]) -> Fill:
    """A glob piece's fillings: the outputs it matches (the first piece), or the keys whose
    spelling in some catalog it matches."""
    spellers = [KeyNames(c.key_names(model)) for c in catalogs]

    def fill(position: int, piece: Piece) -> list[Piece]:
        kind, text = piece
        if kind != "text" or not is_glob(text):
            return []
        glob = compile_glob(text)
        if position == 0:  # the output: its name is written as is
            heads = (OUTPUTS_PREFIX + name for name in outputs)
            return [("text", head) for head in heads if glob.fullmatch(head)]
        return [("key", key) for key in keys if any(glob.fullmatch(s.segment(key)) for s in spellers)]

    return fill


def _message_fill(segments: Sequence[str]) -> Fill:
    def fill(position: int, piece: Piece) -> list[Piece]:
        text = piece[1]
        if not is_glob(text):
            return []
        glob, dot = compile_glob(text), "." if text.startswith(".") else ""
        return [("text", dot + name) for name in segments if glob.fullmatch(dot + name)]

    return fill


def _filled(fields: Iterable[Field], fill: Fill) -> Iterator[tuple[Field, bool]]:
    """Each field as written (True), then with its glob pieces filled: every combination, or
    past ``MAX_COMBINATIONS`` one glob at a time (the others as written)."""
    for field in fields:
        yield field, True
        choices = [[piece, *fill(position, piece)] for position, piece in enumerate(field)]
        combinations = 1
        for options in choices:
            combinations *= len(options)
        if combinations <= MAX_COMBINATIONS:
            filled = itertools.islice(itertools.product(*choices), 1, None)  # the first: as written
            yield from ((combination, False) for combination in filled)
            continue
        for position, options in enumerate(choices):
            for option in options[1:]:
                yield (*field[:position], option, *field[position + 1 :]), False
