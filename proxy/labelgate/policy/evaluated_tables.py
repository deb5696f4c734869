"""The tables as the decision rules read them: ``data.labelgate.tables`` evaluated by OPA.

The rules read ``data.labelgate.tables`` (``import data.labelgate.tables``), and a module can
define that document as well as a data.json can: ``package labelgate.tables`` with
``opaque_methods := {...}``, or ``package labelgate`` with a ref head such as
``tables.replay.viewer_groups contains "contractors"``. OPA refuses a rule and data on one path,
but a candidate can drop keys from its data.json and define them by rules; the publish gate read
the data.json alone, so such a candidate (``"*"`` on an opaque method, a new replay viewer group)
read as a narrowing and was published (review). So the gate compares the document OPA evaluates
(``evaluated_tables``), from the modules and data the replay's engines load (``PolicySource``:
no test modules). The comparisons themselves stay pure (``table_impact``).

A document the gate cannot compare raises, which holds the candidate (``PublishGate.assess``)
and fails ``labelgate policy impact`` (exit 2):

- opa is missing, the evaluation errors (``--strict-builtin-errors``, as gateways ask OPA: a
  conflict, a builtin error) or takes longer than ``TIMEOUT_SECONDS``;
- the document does not hold the data.json's tables as written (OPA's conflict check makes
  this impossible; checked, not assumed);
- it depends on what differs between the gate and a gateway's call, as rules may and data
  cannot: the input (a rule giving ``"*"`` to ``opaque_methods[input.request.method]`` is
  empty without an input), data outside ``data.labelgate`` (other bundles or OPA's data API
  may fill it in a fleet), or a builtin whose value is not the policy's (``time.now_ns``,
  ``opa.runtime``, ``http.send``). ``opa deps`` names the first two; a partial evaluation with
  the input unknown, which leaves such builtins unevaluated, must come out as one constant.

Blocking (subprocesses): called from the replay's worker thread, like the replay itself.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from labelgate.bundle.source import default_opa_binary
from labelgate.errors import ConfigError, PolicyUnavailable
from labelgate.policy import reasons
from labelgate.policy.access_table_impact import same_json
from labelgate.policy.source import PolicySource

TABLES_PATH = ("labelgate", "tables")
TABLES = "data." + ".".join(TABLES_PATH)
# What the tables may read besides themselves: the bundle's own namespace (its manifest root;
# OPA lets no other bundle, nor its data API, write there).
OWN_DATA = ("data", "labelgate")
# The default pack evaluates in about 0.1 s; a minute is a policy that loops.
TIMEOUT_SECONDS = 60.0
# How many of OPA's errors, or of the references found, a message names.
NAMED = 3
MESSAGE_LIMIT = 600
# Where the modules go in the scratch folder.
MODULES = "modules"


def evaluated_tables(folder: Path, which: str) -> Any:
    """``data.labelgate.tables`` of the revision in ``folder`` as the rules read it (None when
    undefined: no tables); ``which`` names the revision in errors (``the candidate``).

    Raises ConfigError or PolicyUnavailable (module docstring) when it cannot be compared."""
    source = PolicySource.from_dir(folder)
    opa = default_opa_binary()
    where = f"{which}'s tables ({TABLES})"
    with tempfile.TemporaryDirectory(prefix="labelgate-tables-") as scratch:
        root = Path(scratch)
        _write(source, root)
        value = _evaluate(opa, root, where)
        _refuse_outside_reads(opa, root, where)
        _refuse_varying(opa, root, where)
    written = _data_at(source.data, TABLES_PATH)
    if written is not _ABSENT and not _holds(value, written):
        raise ConfigError(
            reasons.POLICY_DATA_CONFLICT,
            f"{where}: OPA's document does not hold the tables its data.json writes: not compared",
        )
    return None if value is _ABSENT else value


def _write(source: PolicySource, root: Path) -> None:
    """The modules as the engines load them and the data as one data.json (as ``opa_check``)."""
    for index, (name, text) in enumerate(source.modules):
        rel = PurePosixPath(name)
        plain = not rel.is_absolute() and all(part not in ("", ".", "..") for part in rel.parts)
        target = root / MODULES / (str(rel) if plain else f"module_{index}.rego")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        data = json.dumps(source.data, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except ValueError as error:
        raise ConfigError(
            reasons.POLICY_DATA_INVALID, f"{source.origin}: data is not JSON: {error}"
        ) from None
    (root / "data.json").write_text(data, encoding="utf-8", errors="surrogatepass")


def _evaluate(opa: str, root: Path, where: str) -> Any:
    output = _run(opa, ["eval", "--strict-builtin-errors", TABLES], root, where)
    results = output.get("result") or []
    if not results:
        return _ABSENT
    try:
        return results[0]["expressions"][0]["value"]
    except (KeyError, IndexError, TypeError):
        raise PolicyUnavailable(
            reasons.POLICY_RESULT_INVALID, f"{where}: `opa eval` answered without a value: not compared"
        ) from None


def _refuse_outside_reads(opa: str, root: Path, where: str) -> None:
    """The base documents the tables depend on (``opa deps``: through every rule they reach)
    are of the bundle's own namespace, never the input."""
    found = _run(opa, ["deps", TABLES], root, where).get("base") or []
    outside = sorted(
        {_shown_ref(ref) for ref in found if tuple(_plain(term) for term in ref[: len(OWN_DATA)]) != OWN_DATA}
    )
    if outside:
        more = f" and {len(outside) - NAMED} more" if len(outside) > NAMED else ""
        raise ConfigError(
            reasons.POLICY_DATA_INVALID,
            f"{where} read {', '.join(outside[:NAMED])}{more}: a gateway's call or the fleet's data "
            "can change them, so the gate cannot compare them (write the tables as data)",
        )


def _refuse_varying(opa: str, root: Path, where: str) -> None:
    """With the input unknown and builtins such as ``time.now_ns`` left unevaluated, the
    tables come out as one constant (or nothing), with no rule OPA had to keep."""
    output = _run(opa, ["eval", "--partial", "--unknowns", "input", f"tables = {TABLES}"], root, where)
    partial = output.get("partial") or {}
    queries = partial.get("queries") or []
    constant = not partial.get("support") and (
        not queries or (len(queries) == 1 and len(queries[0]) == 1 and _binds_a_constant(queries[0][0]))
    )
    if not constant:
        raise ConfigError(
            reasons.POLICY_DATA_INVALID,
            f"{where} depend on more than the revision (the input, or a builtin such as "
            "time.now_ns, opa.runtime or http.send): the gate cannot compare them (write the tables "
            "as data)",
        )


# The operator of ``tables = <value>`` in OPA's JSON form of an expression.
_EQ = {"type": "ref", "value": [{"type": "var", "value": "eq"}]}


def _binds_a_constant(expression: Mapping[str, Any]) -> bool:
    terms = expression.get("terms")
    if not isinstance(terms, list) or len(terms) != 3 or terms[0] != _EQ:
        return False
    sides = terms[1:]
    return any(side.get("type") == "var" for side in sides) and any(_ground(side) for side in sides)


def _ground(term: Any) -> bool:
    """A JSON value written out: no variable, reference or call left in it."""
    if not isinstance(term, Mapping):
        return False
    kind, value = term.get("type"), term.get("value")
    if kind in ("null", "boolean", "number", "string"):
        return True
    if kind in ("array", "set"):
        return isinstance(value, list) and all(_ground(item) for item in value)
    if kind == "object":
        return isinstance(value, list) and all(
            isinstance(pair, list) and len(pair) == 2 and _ground(pair[0]) and _ground(pair[1])
            for pair in value
        )
    return False


def _run(opa: str, args: list[str], root: Path, where: str) -> dict[str, Any]:
    command = [opa, *args, "--format", "json", "--bundle", "."]
    if args[0] == "eval":
        command += ["--timeout", f"{TIMEOUT_SECONDS:g}s"]
    try:
        done = subprocess.run(
            command, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_SECONDS + 5
        )
    except subprocess.TimeoutExpired:
        raise PolicyUnavailable(
            reasons.POLICY_TIMEOUT,
            f"{where}: `opa {args[0]}` took longer than {TIMEOUT_SECONDS:g} s: not compared",
        ) from None
    except OSError as error:
        raise ConfigError(
            reasons.OPA_BINARY_MISSING,
            f"{where}: the gate evaluates them with opa, and {opa} did not run ({error}): put opa on "
            "PATH or set $LABELGATE_OPA",
        ) from None
    try:
        output = json.loads(done.stdout)
    except ValueError:
        output = None
    if done.returncode != 0 or not isinstance(output, dict) or output.get("errors"):
        said = _errors(output) or done.stderr.decode("utf-8", "replace").strip() or "no error text"
        raise PolicyUnavailable(
            reasons.POLICY_ERROR,
            f"{where} cannot be evaluated (`opa {args[0]}`, exit {done.returncode}): {said[:MESSAGE_LIMIT]}",
        )
    return output


def _errors(output: Any) -> str:
    """OPA's first errors, each with its place (paths within the scratch folder)."""
    errors = output.get("errors") if isinstance(output, dict) else None
    if not isinstance(errors, list):
        return ""
    shown = []
    for error in errors[:NAMED]:
        if not isinstance(error, Mapping):
            continue
        location = error.get("location")
        place: Mapping[str, Any] = location if isinstance(location, Mapping) else {}
        file = str(place.get("file") or "")
        at = f"{file}:{place.get('row')}: " if file else ""
        shown.append(f"{at}{error.get('code', 'error')}: {error.get('message', '')}")
    # One line, naming the files as the revision does (not within the scratch folder).
    return " ".join("; ".join(shown).replace(f"{MODULES}/", "").split())


def _shown_ref(ref: list[Any]) -> str:
    head, *rest = (_plain(term) for term in ref)
    return str(head) + "".join(f".{part}" if isinstance(part, str) else f"[{part}]" for part in rest)


def _plain(term: Any) -> Any:
    return term.get("value") if isinstance(term, Mapping) else term


class _Absent:
    """No value: undefined in OPA, or no key in the data."""


_ABSENT = _Absent()


def _data_at(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _ABSENT
        node = node[key]
    return node


def _holds(value: Any, written: Any) -> bool:
    """``value`` has every key ``written`` has, each with its value (rules may add keys)."""
    if isinstance(written, Mapping):
        return isinstance(value, Mapping) and all(
            key in value and _holds(value[key], item) for key, item in written.items()
        )
    return not isinstance(value, _Absent) and same_json(value, written)
