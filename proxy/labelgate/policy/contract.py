"""The ``labelgate.v1`` decision contract: what goes into the policy and what comes out.

Both engines hand the raw policy result to :func:`validate_result`, so a decision means the
same thing whichever engine produced it, and anything that does not match ``result.json``
becomes a deny. The schemas are the files in ``labelgate/schema/`` (a link to
``proto/labelgate/v1/schema/``), compiled once per process.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from labelgate.errors import InvalidInput
from labelgate.logs import get_logger
from labelgate.policy import reasons

log = get_logger(__name__)

CONTRACT_VERSION = "labelgate.v1"
PHASES = ("request", "response", "replay")
# Viewing a recorded call: the subject is the viewer, the fields are the recorded call's,
# and ``context.recorded_call`` says whose call it was (``labelgate.recording.viewing``).
REPLAY = "replay"

# Stable reasons for fail-closed denies (Decision.fail_reason), defined in reasons.py and
# re-exported here for the engines. POLICY_ERROR_<status> is built from OPA's HTTP status,
# e.g. POLICY_ERROR_500.
POLICY_UNAVAILABLE = reasons.POLICY_UNAVAILABLE
POLICY_TIMEOUT = reasons.POLICY_TIMEOUT
POLICY_UNDEFINED = reasons.POLICY_UNDEFINED
POLICY_RESULT_INVALID = reasons.POLICY_RESULT_INVALID
POLICY_ERROR = reasons.POLICY_ERROR
POLICY_REVISION_STALE = reasons.POLICY_REVISION_STALE
EMBEDDED_INPUT_UNSUPPORTED = reasons.EMBEDDED_INPUT_UNSUPPORTED

# What a caller sees when the policy could not decide: never the internal cause.
_FAIL_CLOSED_MESSAGES = {
    POLICY_UNAVAILABLE: "policy engine unavailable",
    POLICY_TIMEOUT: "policy engine did not answer in time",
    POLICY_UNDEFINED: "policy gave no decision",
    POLICY_RESULT_INVALID: "policy gave an invalid decision",
    POLICY_REVISION_STALE: "policy revision changed while deciding",
    EMBEDDED_INPUT_UNSUPPORTED: (
        'the embedded policy engine cannot decide an input holding a string with ", \\ or a '
        "control character, a number with more than 16 significant digits, or a whole number "
        "written as a float (1.0); the opa engine (--engine opa) decides such inputs"
    ),
}
# The largest values ``result.json`` admits (its ``maximum``s; a test holds the two to each
# other). Numbers from policy are JSON integers of any size: unbounded, a TTL of 401 digits
# overflowed the cache's clock arithmetic (an INTERNAL failure of every call it answered)
# rather than failing as the invalid result it is. A day for a cached decision; a year for
# an approval grant (Postgres keeps it in a 32-bit INTEGER column); 100 approvers.
MAX_CACHE_TTL_SECONDS = 86_400
MAX_GRANT_TTL_SECONDS = 31_536_000
MAX_MIN_APPROVALS = 100
# A result that allows the call and also holds it for approval (request and response phases).
CONTRADICTORY_MESSAGE = "policy gave a contradictory decision (allow with require_approval)"


@functools.cache
def _validator(name: str) -> jsonschema.protocols.Validator:
    text = resources.files("labelgate").joinpath("schema", name).read_text(encoding="utf-8")
    schema = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _where(error: jsonschema.ValidationError, root: str) -> str:
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)


def _describe(error: jsonschema.ValidationError, root: str) -> str:
    """Path and jsonschema's message (which quotes the offending value): for the input's sender."""
    return f"{_where(error, root)}: {error.message}"


def _describe_without_values(error: jsonschema.ValidationError, root: str) -> str:
    """Path and the schema rule that failed, never the value: fit for logs."""
    return f"{_where(error, root)}: fails {error.validator} {json.dumps(error.validator_value)}"


@dataclass(frozen=True, slots=True)
class DecidedMask:
    """Rewrite the data at ``path`` with ``strategy`` (redact, partial, hash, null)."""

    path: str
    strategy: str
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "strategy": self.strategy, "params": dict(self.params)}


GRANT_SCOPES = ("query", "model")


@dataclass(frozen=True, slots=True)
class ApprovalRequirement:
    """The call may proceed once ``min_approvals`` people from ``approver_groups`` approve.

    ``grant_scope``: what the grant then releases: ``query`` (default) only calls with the
    held call's request digest (same inputs and requested outputs), ``model`` any call of
    the subject to the model and label set. ``single_use``: the grant releases one call.
    ``row_budget``: the grant releases at most that many rows in total (each call is charged
    its row count, the first dimension of its inputs)."""

    approver_groups: tuple[str, ...]
    min_approvals: int
    grant_ttl_seconds: int
    reason: str
    grant_scope: str = "query"
    single_use: bool = False
    # The hold window the policy asks for (None: the config's approvals.hold_timeout_seconds).
    hold_seconds: int | None = None
    row_budget: int | None = None  # None: the grant releases any number of rows

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "approver_groups": list(self.approver_groups),
            "min_approvals": self.min_approvals,
            "grant_ttl_seconds": self.grant_ttl_seconds,
            "reason": self.reason,
        }
        # Defaults are left out, so results that do not use them read as the policy wrote them.
        if self.grant_scope != "query":
            out["grant_scope"] = self.grant_scope
        if self.single_use:
            out["single_use"] = True
        if self.hold_seconds is not None:
            out["hold_seconds"] = self.hold_seconds
        if self.row_budget is not None:
            out["row_budget"] = self.row_budget
        return out


@dataclass(frozen=True, slots=True)
class Decision:
    """One validated policy decision plus where it came from.

    ``fail_reason`` is None for a decision the policy actually made; a fail-closed deny
    carries a stable reason (POLICY_UNAVAILABLE, POLICY_TIMEOUT, POLICY_ERROR_500, ...).
    """

    allow: bool
    reason: str
    masks: tuple[DecidedMask, ...] = ()
    require_approval: ApprovalRequirement | None = None
    cache_ttl_seconds: int = 0
    engine: str = ""
    revision: str = ""
    decision_id: str | None = None
    fail_reason: str | None = None
    cached: bool = False  # served by CachingEngine rather than evaluated for this call

    @classmethod
    def deny(
        cls,
        reason_code: str,
        message: str | None = None,
        *,
        engine: str = "",
        revision: str = "",
        decision_id: str | None = None,
    ) -> Decision:
        """A fail-closed deny. ``message`` is caller-visible: keep internals in the logs."""
        if message is None:
            message = _FAIL_CLOSED_MESSAGES.get(reason_code, "policy engine error")
        return cls(
            allow=False,
            reason=message,
            engine=engine,
            revision=revision,
            decision_id=decision_id,
            fail_reason=reason_code,
        )

    @property
    def failed_closed(self) -> bool:
        return self.fail_reason is not None

    def to_result(self) -> dict[str, Any]:
        """The contract's result object (what ``data.labelgate.decision.result`` said)."""
        return {
            "allow": self.allow,
            "reason": self.reason,
            "mask": [m.to_json() for m in self.masks],
            "require_approval": self.require_approval.to_json() if self.require_approval else None,
            "cache_ttl_seconds": self.cache_ttl_seconds,
        }

    def provenance(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "revision": self.revision,
            "decision_id": self.decision_id,
            "fail_reason": self.fail_reason,
            "cached": self.cached,
        }


@functools.lru_cache(maxsize=4096)
def _result_problem(canonical: str) -> str | None:
    """Schema verdict for one canonical result text, memoised.

    jsonschema needs ~300 µs for a result (measured: more than an embedded decision), while
    a policy gives the same few results over and over; keyed by canonical JSON the verdict
    is exact, and the schema stays the only definition of a valid result.
    """
    error = best_match(_validator("result.json").iter_errors(json.loads(canonical)))
    return None if error is None else _describe_without_values(error, "result")


def _mask_params(params: Mapping[str, Any]) -> Mapping[str, Any]:
    clean = dict(params)
    if "keep_last" in clean:
        clean["keep_last"] = int(clean["keep_last"])  # schema "integer" admits 4.0
    return MappingProxyType(clean)


def validate_result(
    raw: Any,
    *,
    phase: str | None = None,
    engine: str = "",
    revision: str = "",
    decision_id: str | None = None,
) -> Decision:
    """Turn a raw policy result into a Decision; anything off-contract is a deny.

    ``phase`` is the input's: outside ``replay`` (``None`` included) a result that allows and
    also requires approval is contradictory, see :func:`for_phase`.
    The validation error goes to the log (it describes the policy, not the caller's data)
    and the caller only sees POLICY_RESULT_INVALID.
    """
    try:
        canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        problem: str | None = f"result: not JSON ({type(error).__name__})"
    else:
        problem = _result_problem(canonical)
    if problem is not None:
        log.error(
            "policy_result_invalid", engine=engine, revision=revision, decision_id=decision_id, error=problem
        )
        return Decision.deny(POLICY_RESULT_INVALID, engine=engine, revision=revision, decision_id=decision_id)
    approval = raw["require_approval"]
    decision = Decision(
        allow=raw["allow"],
        reason=raw["reason"],
        masks=tuple(DecidedMask(m["path"], m["strategy"], _mask_params(m["params"])) for m in raw["mask"]),
        require_approval=None
        if approval is None
        else ApprovalRequirement(
            approver_groups=tuple(approval["approver_groups"]),
            min_approvals=int(approval["min_approvals"]),
            grant_ttl_seconds=int(approval["grant_ttl_seconds"]),
            reason=approval["reason"],
            grant_scope=approval.get("grant_scope", "query"),
            single_use=bool(approval.get("single_use", False)),
            hold_seconds=int(approval["hold_seconds"]) if "hold_seconds" in approval else None,
            row_budget=int(approval["row_budget"]) if "row_budget" in approval else None,
        ),
        # JSON Schema's "integer" also admits 5.0: keep the Python type an int.
        cache_ttl_seconds=int(raw["cache_ttl_seconds"]),
        engine=engine,
        revision=revision,
        decision_id=decision_id,
    )
    return for_phase(decision, phase)


def input_phase(input: Any) -> str | None:
    """The input's ``phase`` when it has one (a malformed input may not be an object)."""
    phase = input.get("phase") if type(input) is dict else None
    return phase if isinstance(phase, str) else None


def for_phase(decision: Decision, phase: str | None) -> Decision:
    """``decision``, unless it allows the call and requires approval in a phase other than replay.

    The gateway holds a call only when the policy does not allow it, so such a result would
    release the call without the hold it asks for: it fails closed (POLICY_RESULT_INVALID).
    Replay uses the combination on purpose (the viewer sees masked values and what seeing
    them in clear would need: recording/viewing.py), so it is valid there.
    """
    if decision.allow and decision.require_approval is not None and phase != REPLAY:
        log.error(
            "policy_result_invalid",
            engine=decision.engine,
            revision=decision.revision,
            decision_id=decision.decision_id,
            error=f"result: allow is true and require_approval is set in phase {phase!r}",
        )
        return Decision.deny(
            POLICY_RESULT_INVALID,
            CONTRADICTORY_MESSAGE,
            engine=decision.engine,
            revision=decision.revision,
            decision_id=decision.decision_id,
        )
    return decision


def validate_input(doc: Any) -> None:
    """Raise InvalidInput (INPUT_INVALID) naming the first bad path when ``doc`` is off-contract."""
    error = best_match(_validator("input.json").iter_errors(doc))
    if error is not None:
        where = _describe(error, "input")
        raise InvalidInput(reasons.INPUT_INVALID, f"policy input does not match labelgate.v1: {where}")


def build_input(
    *,
    phase: str,
    subject: dict[str, Any] | None,
    request: dict[str, Any],
    fields: Iterable[dict[str, Any]],
    approval: dict[str, Any] | None,
    time_ns: int,
    recorded_call: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble one labelgate.v1 input. ``labels`` is the sorted union of the fields' labels.

    ``recorded_call`` (the replay phase only, where it is required): the recorded call's
    original caller and facts, for ``context.recorded_call``.
    Not validated here (the data path should not pay for a schema walk per call); tests and
    the CLI call :func:`validate_input`.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    if (phase == REPLAY) != (recorded_call is not None):
        raise ValueError("recorded_call is given with the replay phase, and only with it")
    field_list = list(fields)
    labels = sorted({label for f in field_list for label in f["labels"]})
    context: dict[str, Any] = {"time_ns": time_ns}
    if recorded_call is not None:
        context["recorded_call"] = recorded_call
    return {
        "version": CONTRACT_VERSION,
        "phase": phase,
        "subject": subject,
        "request": request,
        "fields": field_list,
        "labels": labels,
        "approval": approval if approval is not None else {"state": "none"},
        "context": context,
    }
