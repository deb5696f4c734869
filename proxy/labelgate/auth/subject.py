"""The verified caller, as every later stage (policy, approvals, audit) sees it.

``Subject.id`` is *qualified* by how the identity was proven, so that names proven by
different means can never meet in one namespace (approvals, grants, separation of duties,
audit, policy input):

- ``jwt:<issuer>#<sub>``: a bearer token, its verified ``iss`` and subject claim. Issuers
  never contain ``#`` (the settings refuse one), so the split is unambiguous; a
  development-key token has issuer ``labelgate-dev``, which no production issuer may use;
- ``mtls:<name>``: the identity read from a verified client certificate (URI/DNS SAN or CN);
- ``api_key:<id>``: the id of the matching entry in the API keys file.

``Subject.name`` is the short form (``sub``, certificate name, key id), for policies and
people to read; it is never used to decide *who* someone is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from labelgate.expiry import ALSO_VERIFIED

AuthMethod = Literal["mtls", "jwt", "api_key"]
AUTH_METHODS: tuple[AuthMethod, ...] = ("mtls", "jwt", "api_key")


def qualified_id(auth: AuthMethod, name: str, issuer: str | None = None) -> str:
    """The qualified subject id: ``jwt:<issuer>#<name>``, ``mtls:<name>``, ``api_key:<name>``."""
    if auth not in AUTH_METHODS:
        raise ValueError(f"unknown auth method {auth!r}")
    if not isinstance(name, str) or not name:
        raise ValueError("a subject needs a non-empty name")
    if auth == "jwt":
        if not issuer or "#" in issuer:
            raise ValueError("a JWT subject needs an issuer without '#'")
        return f"jwt:{issuer}#{name}"
    return f"{auth}:{name}"


def short_name(subject_id: str) -> str:
    """The name part of a qualified id (the id itself when it is not qualified)."""
    method, colon, rest = subject_id.partition(":")
    if not colon or method not in AUTH_METHODS:
        return subject_id
    if method == "jwt":
        _, hash_mark, name = rest.partition("#")
        return name if hash_mark and name else subject_id
    return rest or subject_id


@dataclass(frozen=True)
class Subject:
    """Who is calling. ``id`` is the qualified id (see the module docstring; the
    authenticators build it with ``Subject.proven``), ``name`` its short form (derived from
    ``id`` when not given). ``groups`` is normalised to sorted unique names; ``attributes``
    holds non-secret facts about the credential (JWT ``iss``/``kid``/``exp``, certificate
    fingerprint, key id) and, when the call proved several identities, about the others
    (``expiry.ALSO_VERIFIED``, ``expiry.ALSO_VERIFIED_CREDENTIALS``); it is read-only."""

    id: str
    groups: tuple[str, ...] = ()
    auth: AuthMethod = "jwt"
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    name: str = ""

    @classmethod
    def proven(
        cls,
        auth: AuthMethod,
        name: str,
        *,
        issuer: str | None = None,
        groups: Iterable[str] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> Subject:
        """A subject whose id is qualified by how it was proven (``qualified_id``)."""
        return cls(
            id=qualified_id(auth, name, issuer),
            groups=tuple(groups),
            auth=auth,
            attributes=dict(attributes or {}),
            name=name,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("a subject needs a non-empty id")
        if self.auth not in AUTH_METHODS:
            raise ValueError(f"unknown auth method {self.auth!r}")
        if not self.name:
            object.__setattr__(self, "name", short_name(self.id))
        object.__setattr__(self, "groups", normalise_groups(self.groups))
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def to_policy(self) -> dict[str, Any]:
        """The ``subject`` object of the ``labelgate.v1`` policy input: a new one on each
        call, sharing nothing with the last (each decision of a call asks for it)."""
        # The JSON-ready form of the (read-only) attributes is worked out once per subject and
        # copied from then on: a copy of plain dicts and lists skips _plain's ABC checks.
        plain = self.__dict__.get("_policy_attributes")
        if plain is None:
            plain = _plain(self.attributes)
            object.__setattr__(self, "_policy_attributes", plain)  # a memo, not a field
        return {
            "id": self.id,
            "name": self.name,
            "groups": list(self.groups),
            "auth": self.auth,
            "attributes": _copied(plain),
        }


def normalise_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """Sorted unique names, each exactly as given: a name ``group_name_problem`` refuses is a
    ValueError, never trimmed into another (``approvers`` + U+3000 is not ``approvers``)."""
    if isinstance(groups, str):  # a bare string would otherwise become one group per character
        raise ValueError("groups must be a collection of names, not a string")
    names = set(groups)
    for name in names:
        problem = group_name_problem(name)
        if problem is not None:
            raise ValueError(f"a group name {problem}")
    return tuple(sorted(names))


def group_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a group name (None: it can). Names are compared exactly, so one
    is refused rather than cleaned up: trimming or dropping what cannot be seen would make a
    different group at the identity provider (``approvers`` + U+3000, NBSP + ``break-glass``) the
    one the policy trusts. A name is printable text (no control or format characters, and no
    whitespace but the plain ASCII space) that neither starts nor ends with a space."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    # str.isprintable is False for every Unicode separator (NBSP, U+3000, ...) except " ", and
    # for controls (\x1c-\x1f, \x85), format characters (zero-width space) and unassigned ones.
    if not name.isprintable():
        return "holds a control character, an invisible character or whitespace other than a space"
    if name[0] == " " or name[-1] == " ":
        return "starts or ends with a space"
    return None


def _copied(value: Any) -> Any:
    """A copy of ``_plain``'s output (dicts, lists and immutable scalars) sharing no container."""
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied(item) for item in value]
    return value


# Whole floats below this are made integers for the policy (``_plain``); a larger one indexes no
# array, and its int() is not the number OPA reads from its text (policy/whole_numbers.py).
_WHOLE_FLOAT_LIMIT = 2**53


def _plain(value: Any) -> Any:
    """JSON-ready copy: read-only mappings and tuples become dicts and lists, and a whole number
    held as a float (a JWT's ``"exp": 1796490140.0``) becomes an integer.

    OPA indexes an array by ``1.0`` as by ``1``; rego-cpp and OPA's Wasm target index by
    integers only (a rule denying ``xs[subject.attributes.n] == "x"`` did not deny there). The
    integer is what every engine gets, OPA included, so they decide alike and write the number
    alike (OPA keeps ``1.0`` as written); worked out once per subject (``to_policy``'s memo).

    A float with a fraction is held to 16 significant digits, as rego-cpp holds one (an ``exp``
    of ``time.time() + 3600``, 17 digits, made the embedded engine deny every call of the
    token); every engine gets that float too."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        if value.is_integer() and -_WHOLE_FLOAT_LIMIT < value < _WHOLE_FLOAT_LIMIT:
            return int(value)
        if math.isfinite(value):
            return float(f"{value:.16g}")
    return value


def requester_of(subject: Subject) -> str:
    """Who asked, as approvals know them: the subject's id, or, when the call proved several
    identities (a user token on a workload certificate: ``attributes["also_verified"]``),
    all of them as a JSON list, primary first. A grant then binds to every identity the call
    proved (another user's token on the same workload is another requester), and none of
    them may vote on the request (separation of duties). A qualified id never starts with
    ``[``, so the two forms cannot be mistaken for each other."""
    also = subject.attributes.get(ALSO_VERIFIED)
    if not also:
        return subject.id
    return json.dumps([subject.id, *(str(other) for other in also.values())], ensure_ascii=False)


def requester_ids(requester: str) -> tuple[str, ...]:
    """The qualified ids ``requester`` (``requester_of``) stands for."""
    if requester.startswith("["):
        try:
            ids = json.loads(requester)
        except ValueError:
            return (requester,)
        if isinstance(ids, list) and ids and all(isinstance(one, str) for one in ids):
            return tuple(ids)
    return (requester,)
