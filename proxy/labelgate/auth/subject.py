"""The verified caller, as every later stage (policy, audit) sees it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

AuthMethod = Literal["mtls", "jwt", "api_key"]
AUTH_METHODS: tuple[AuthMethod, ...] = ("mtls", "jwt", "api_key")


@dataclass(frozen=True)
class Subject:
    """Who is calling. ``groups`` is normalised to sorted unique names; ``attributes`` holds
    non-secret facts about the credential (JWT ``iss``/``kid``, certificate fingerprint, key id)
    and is read-only."""

    id: str
    groups: tuple[str, ...] = ()
    auth: AuthMethod = "jwt"
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("a subject needs a non-empty id")
        if self.auth not in AUTH_METHODS:
            raise ValueError(f"unknown auth method {self.auth!r}")
        object.__setattr__(self, "groups", normalise_groups(self.groups))
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def to_policy(self) -> dict[str, Any]:
        """The ``subject`` object of the ``labelgate.v1`` policy input."""
        return {
            "id": self.id,
            "groups": list(self.groups),
            "auth": self.auth,
            "attributes": _plain(self.attributes),
        }


def normalise_groups(groups: Iterable[str]) -> tuple[str, ...]:
    if isinstance(groups, str):  # a bare string would otherwise become one group per character
        raise ValueError("groups must be a collection of names, not a string")
    names = {name.strip() for name in groups}
    if "" in names:
        raise ValueError("group names must not be empty")
    return tuple(sorted(names))


def _plain(value: Any) -> Any:
    """JSON-ready copy: read-only mappings and tuples become dicts and lists."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
