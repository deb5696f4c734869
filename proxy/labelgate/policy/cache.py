"""A decision cache in front of any PolicyEngine.

The key is the decision-relevant part of the input: everything except the values that
differ on every call (``request.request_id``, ``request.digest``, ``context.time_ns``) or
on every connection (``request.session_id``: a client that names no session gets one per
connection, so a REST client without keep-alive would never hit): keying on them would make
keys unique. So a policy must not decide on them unless its result's ``cache_ttl_seconds``
is 0; a policy that decides on time sets a TTL that fits (the contract says so:
``schema/README.md``, ``input.json``). Everything else is in the key:
``request.peer`` (a policy may decide on where a call comes from; it is the caller's
address without its port, ``calls.peer_address``, so a client's calls share a key) and all
of ``subject.attributes``, the token's ``jti``, ``iat``, ``exp`` and ``nbf`` included (a
policy may keep a revocation list of token ids, or want a minimum lifetime left): a new
token is a miss, never another one's answer. An entry also never outlives the
token it was decided for, nor any credential presented beside it: an entry expires by the
first ``exp`` of the subject's and of ``also_verified_credentials`` (a JWT's, seconds since
the epoch; ``expiry.earliest_expiry``), whatever the TTL (``_lifetime``).

Two keys. The cache itself keys on a pickle of that part (``memo_key``), several times
cheaper than a JSON walk and exact. ``cache_key`` names an input for what is stored and
compared later (the decision-input store, audit records, ``labelgate policy impact``):
canonical JSON (sorted keys), stable across processes and key order, of that part without
the per-token claims (``jti``, ``iat``, ``exp``, ``nbf``, the subject's and its other
credentials') as well, so one person's calls
are one stored input across tokens. Each ``memo_key`` has one
``cache_key``, not the other way round. The pickle is exact: equal bytes load
back as equal values of equal types, so a hit is never a different input. The pickler runs
in fast mode (nothing is memoised, so no back-references: the bytes never depend on which
equal objects happen to be shared) and takes the exact builtin types only, anything else is
refused (no key: the cache is bypassed), as ``marshal`` did. Its memo starts with the
contract's own words (``_KEY_VOCABULARY``), written as two-byte references. It replaced
``marshal`` format 2 (the last format without back-references), which encodes every string
into a temporary UTF-8 copy: pickle writes ASCII strings as they are, ~1.5x faster for a
default-pack input, with shorter bytes to hash. Key order can still split one input into two
keys, which costs a miss, never a wrong answer (the gateway builds every input the same way).
The bytes are the key as they are, not a digest of them: the dict compares them byte for
byte on a hit (exact without a collision argument), and hashing them costs ~0.3 µs against
~2 µs for a sha256 (an entry then holds ~1 KB for a default-pack input). The gateway
computes them once per decision (``cache_keys``) and hands them to ``CachingEngine.decide``,
so a hit costs one pickle of the input (``python -m bench.cache_key``), and not even the hash
when the input is one of the last two this thread keyed: ``memo_key`` then hands back the
earlier, equal bytes object, whose hash is kept and which the dicts hold themselves.

A decision served from the cache was not evaluated for the call it serves: it carries no
``decision_id`` of its own (OPA's id names the evaluation of an earlier call), only
``cached_from``, that evaluation's id (``cached_copy``), so a record can say it was cached and
still be joined to the decision-log event that made it, and nothing built on the decision
(an approval stage's refusal copies ``decision_id``) can pass another call's id off as its own.

The policy says how long its answer holds (``cache_ttl_seconds``; 0 means never cache; at
most ``MAX_CACHE_TTL_SECONDS``, which the result schema enforces and the cache clamps to
again) and fail-closed denies are never cached, so an outage is not remembered after it
ends. The cache holds at most ``max_entries`` entries whose keys add up to at most
``max_bytes`` (one caller's large inputs cannot pin the memory of 10,000 of them); the
least recently used go first, and a key larger than ``max_bytes`` is not stored. The
whole cache is dropped the moment the inner engine reports a new revision (checked on
every call: one string comparison). For OPA the revision is what the answer to its newest
request reported (``opa.py``, revision order: an answer that arrives late never sets it
back), so a bundle update is seen on the next miss; entries cached before it live at most
their TTL.

A decision is stored only if the revision did not move while it was being made: ``decide``
notes the revision changes seen (the cache's own count, and the engine's
``revision_generation`` when it has one) before it waits on the engine, and stores nothing
if they moved by the time the answer is in, even when the revision is back to the one the
decision names: what was decided across a change is answered to its caller, not to later
ones. All of that is on the miss path; a hit only compares the revision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from labelgate.expiry import ALSO_VERIFIED_CREDENTIALS, earliest_expiry
from labelgate.logs import get_logger
from labelgate.policy import reasons
from labelgate.policy.contract import CONTRACT_VERSION, MAX_CACHE_TTL_SECONDS, PHASES, Decision
from labelgate.policy.engine import PolicyEngine

log = get_logger(__name__)

# Left out of every key, as they differ on every call or connection (``context.time_ns``
# too): keying on them would make keys unique. ``request_id`` names the call; ``session_id``
# the caller's session, one per connection when the caller names none (review: keyed, a
# REST client without keep-alive never hit the cache); ``digest`` identifies the query for
# approval grants (input values included). The contract tells policies not to decide on them
# unless the result's ``cache_ttl_seconds`` is 0. Spelt out name by name in ``_relevant`` (a
# test holds the two to each other).
_VOLATILE_REQUEST_KEYS = frozenset({"request_id", "session_id", "digest"})
# Left out of the canonical key (``cache_key``), never out of the cache's own: a policy may
# decide on the token (a revocation list of ``jti``, a minimum lifetime left), so the cache
# keys on it; what is stored for impact analysis names one person's calls as one input
# across tokens. Spelt out in ``canonical_part`` (a test holds them to it).
_TOKEN_ATTRIBUTES = frozenset({"jti", "iat", "exp", "nbf"})
# Protocol 4 and later write short ASCII strings with a one-byte length (shorter keys).
_PICKLE_PROTOCOL = 5
# The words every input spells: the contract's names and fixed values (input.json). Each
# pickler starts with these very string objects in its memo, so it writes each of them as a
# two-byte reference (``BINGET`` and its position here) rather than as text: ~15% less
# pickling and ~30% shorter keys for a default-pack input. Still exact: a reference stands
# for one fixed string, so a key loads back as its input with this table as the memo. The
# gateway's inputs spell these names with literals, which Python interns, so they are these
# objects; an equal string that is another object is written out in full (another key for
# an equal input: a miss, never a hit for another input). Positions are memo indices: only
# append, and keep under 256 (one-byte references).
_KEY_VOCABULARY: tuple[str, ...] = (
    CONTRACT_VERSION,
    *PHASES,
    "version",
    "phase",
    "subject",
    "fields",
    "labels",
    "approval",
    "context",
    "id",
    "name",
    "groups",
    "auth",
    "attributes",
    "service",
    "method",
    "model",
    "model_version",
    "requested_outputs",
    "opaque",
    "inputs",
    "datatype",
    "shape",
    "path",
    "sources",
    "state",
    "grant_id",
    "approved_by",
    "recorded_call",
    "outcome",
    "time",
    "none",
    "granted",
    "mtls",
    "jwt",
    "api_key",
    "public",
    "internal",
    "confidential",
    "restricted",
    "catalog",
    "backend",
    "default",
)
# What ``Pickler.memo`` takes: id -> (memo index, object); the pickler holds the objects.
_VOCABULARY_MEMO = {id(word): (index, word) for index, word in enumerate(_KEY_VOCABULARY)}
# The canonical JSON (what ``json.dumps`` with these options writes, byte for byte), by
# encoders made once rather than per new input (~1.2x); the second leaves out the cycle
# check (~1.25x), for inputs already known to be acyclic.
_canonical_json = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_canonical_json_of_plain_data = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
).encode
# ``cache_key`` answers remembered by ``memo_key`` (inputs come from data: bounded, in
# entries and in the bytes of the keys held; emptied when either is reached).
CANONICAL_MEMO_SIZE = 4096
CANONICAL_MEMO_BYTES = 16 * 2**20
_canonical_keys: dict[bytes, bytes] = {}
_canonical_bytes = 0  # the length of the keys in ``_canonical_keys`` (approximate across threads)


@dataclasses.dataclass(frozen=True, slots=True)
class CachedDecision(Decision):
    """A decision as the cache serves it: ``cached``, no ``decision_id`` of its own, and
    ``cached_from`` the id of the evaluation it was stored from (None when the engine names
    none, as the embedded engines do)."""

    cached_from: str | None = None


def cached_copy(decision: Decision) -> CachedDecision:
    """``decision`` as the cache stores and serves it."""
    fields = {field.name: getattr(decision, field.name) for field in dataclasses.fields(Decision)}
    fields.update(decision_id=None, cached=True)
    return CachedDecision(**fields, cached_from=decision.decision_id)


def cached_from(decision: Decision) -> str | None:
    """The id of the evaluation a cached decision was stored from; None for any other."""
    return decision.cached_from if isinstance(decision, CachedDecision) else None


# The bound on the length of the keys a cache holds (``policy.cache_max_bytes``): 64 MiB is
# ~60,000 default-pack inputs, more than ``max_entries`` (10,000) admits; it binds when keys
# are large (64 requested outputs of 500 bytes: ~68 KB each, ~1,000 entries).
DEFAULT_MAX_BYTES = 64 * 2**20

# Fail-closed reasons that are about one input, not about the engine's health.
_INPUT_REFUSALS = frozenset({reasons.EMBEDDED_INPUT_UNSUPPORTED})


def cache_key(doc: dict[str, Any]) -> bytes | None:
    """sha256 of the canonical decision-relevant input; None when it is not JSON.

    The gateway asks this for every decision (the decision-input store and the audit record
    name inputs by it) and its inputs repeat: the canonical JSON is remembered by the cheap
    exact ``memo_key``, so a repeated input costs a pickle, not a JSON walk.
    """
    return cache_keys(doc)[1]


def cache_keys(doc: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    """``(memo_key(doc), cache_key(doc))`` for the price of one pickle when ``doc`` repeats."""
    global _canonical_bytes
    fast = memo_key(doc)
    if fast is not None:
        known = _canonical_keys.get(fast)
        if known is not None:
            return fast, known
    # The pickler took an input only if it is plain and acyclic: no cycle check needed then.
    encode = _canonical_json if fast is None else _canonical_json_of_plain_data
    try:
        # Not JSON (TypeError, ValueError), or text UTF-8 cannot encode (a lone surrogate:
        # UnicodeEncodeError, a ValueError): no canonical key, as for any input not JSON.
        key = hashlib.sha256(encode(canonical_part(doc)).encode()).digest()
    except (TypeError, ValueError):
        return fast, None
    if fast is not None:
        size = len(fast)
        if len(_canonical_keys) >= CANONICAL_MEMO_SIZE or _canonical_bytes + size > CANONICAL_MEMO_BYTES:
            _canonical_keys.clear()
            _canonical_bytes = 0
        if size <= CANONICAL_MEMO_BYTES:
            _canonical_keys[fast] = key
            _canonical_bytes += size
    return fast, key


def memo_key(doc: dict[str, Any]) -> bytes | None:
    """The cache's own exact key for ``doc`` (in this process only): the pickle of its
    decision-relevant part; None when ``doc`` holds something other than plain data (exact
    ``dict``, ``list``, ``tuple``, ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``,
    sets), or is cyclic or too deeply nested."""
    relevant = _relevant(doc)
    writer: _KeyWriter = _per_thread.writer
    try:
        writer.dump(relevant)
    except Exception:
        # Not plain data, cyclic or too deep; or CPython's fast-mode pickler tripping over its
        # own nesting count, which ``save_frozenset`` raises and never lowers (a KeyError or a
        # false "cyclic" error after some dozens of frozensets). Either way: no key, a fresh
        # pickler, and the decision is made uncached.
        writer.renew()
        return None
    except BaseException:
        writer.renew()
        raise
    chunks = writer.chunks
    if len(chunks) == 1:  # one write unless the pickle outgrows a frame (64 KiB)
        key = chunks.pop()
    else:
        key = b"".join(chunks)
        chunks.clear()
    # A repeated input gets back the bytes object it got last time (equal bytes: the same
    # key), which already knows its hash and is the very object the dicts hold: their
    # look-ups then neither hash ~1 KB again nor compare it. Two are kept, for the two
    # phases of one caller's calls; another input's key costs two bytes comparisons, which
    # stop at the length or at the first byte that differs.
    last = writer.last
    if last == key:
        return last
    prior = writer.prior
    if prior == key:
        writer.prior, writer.last = last, prior
        return prior
    writer.prior, writer.last = last, key
    return key


class _PlainDataPickler(pickle.Pickler):
    """Pickles exact builtin types only: the C pickler writes those itself and hands every
    other object (subclasses such as enums included) to ``reducer_override``, which refuses
    it, so no class's own ``__reduce__`` can make two different values pickle alike."""

    def reducer_override(self, obj: Any) -> Any:
        raise ValueError(f"not plain data: {type(obj).__name__}")


class _KeyWriter:
    """A reusable pickler (building one costs about a third of a key) writing into a list
    rather than a file object; one per thread, as a pickler is not safe to share."""

    __slots__ = ("chunks", "dump", "last", "pickler", "prior", "write")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.last = self.prior = b""  # the last two keys made, as ``memo_key`` handed them out
        self.write = self.chunks.append  # the pickler's file: only ``write`` is used
        self.renew()

    def renew(self) -> None:
        """A new pickler: the state of one whose dump failed is not trusted."""
        self.chunks.clear()
        self.pickler = _PlainDataPickler(self, _PICKLE_PROTOCOL)
        # Fast mode: nothing is added to the memo, so no back-references (the bytes do not
        # depend on which equal objects are shared) and nothing is kept between keys.
        self.pickler.fast = True
        self.pickler.memo = _VOCABULARY_MEMO  # copied into the pickler's own table
        self.dump = self.pickler.dump  # bound once: on the path of every key


class _PerThread(threading.local):
    def __init__(self) -> None:
        self.writer = _KeyWriter()


_per_thread = _PerThread()


def _relevant(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` without its per-call values (a shallow copy: ``doc`` is not modified): what
    the cache keys on (``memo_key``).

    A part is copied only when it holds a per-call value (the gateway's ``request`` always
    does, so it is copied without asking first), and those are deleted from the copy (the
    order of what stays is kept): on the path of every decision, and of every cache hit, so
    the names are spelt out rather than looped over. The subject is kept whole.
    """
    relevant = dict(doc)
    request = relevant.get("request")
    if isinstance(request, dict):
        request = relevant["request"] = request.copy()
        if "request_id" in request:
            del request["request_id"]
        if "session_id" in request:
            del request["session_id"]
        if "digest" in request:
            del request["digest"]
    context = relevant.get("context")
    if isinstance(context, dict) and "time_ns" in context:
        context = relevant["context"] = context.copy()
        del context["time_ns"]
    return relevant


def canonical_part(doc: dict[str, Any]) -> dict[str, Any]:
    """What ``cache_key`` names: ``_relevant(doc)`` without the per-token claims as well, the
    subject's and those of the credentials presented beside it (``also_verified_credentials``;
    copied where they are deleted: ``doc`` is not modified). Only when ``cache_keys`` has not
    seen the input before, so off the path of a hit."""
    relevant = _relevant(doc)
    subject = relevant.get("subject")
    if isinstance(subject, dict):
        attributes = subject.get("attributes")
        if isinstance(attributes, dict):
            attributes = _without_token_claims(attributes)
            others = attributes.get(ALSO_VERIFIED_CREDENTIALS)
            if isinstance(others, dict):
                attributes = {**attributes, ALSO_VERIFIED_CREDENTIALS: _others_without_token_claims(others)}
            relevant["subject"] = {**subject, "attributes": attributes}
    return relevant


def _without_token_claims(attributes: dict[str, Any]) -> dict[str, Any]:
    if _TOKEN_ATTRIBUTES.isdisjoint(attributes):
        return attributes
    return {name: value for name, value in attributes.items() if name not in _TOKEN_ATTRIBUTES}


def _others_without_token_claims(others: dict[str, Any]) -> dict[str, Any]:
    canonical: dict[str, Any] = {}
    for method, credential in others.items():
        own = credential.get("attributes") if isinstance(credential, dict) else None
        if isinstance(own, dict):
            credential = {**credential, "attributes": _without_token_claims(own)}
        canonical[method] = credential
    return canonical


def _lifetime(input: dict[str, Any], ttl: int, wall_now: float) -> float:
    """How long a decision for ``input`` may be served: its ``ttl`` (at most
    ``MAX_CACHE_TTL_SECONDS``), and never past the first of the call's credentials to expire
    (``earliest_expiry`` of ``subject.attributes``: its ``exp`` and that of every credential in
    ``also_verified_credentials``, a token beside a client certificate; seconds since the
    epoch, ``wall_now`` is the wall clock's time; an ``exp`` that is not a number has passed).
    0 or less: not stored. On the store path only."""
    ttl = min(ttl, MAX_CACHE_TTL_SECONDS)
    subject = input.get("subject")
    if type(subject) is not dict:
        return ttl
    attributes = subject.get("attributes")
    if type(attributes) is not dict:
        return ttl
    expires = earliest_expiry(attributes)
    if expires is None:
        return ttl
    # Compared before subtracted: an int of any size compares exactly with a float, but one
    # beyond a float's range cannot be subtracted from one.
    if not expires > wall_now:
        return 0
    if expires >= wall_now + ttl:
        return ttl
    return expires - wall_now


class CachingEngine:
    """PolicyEngine wrapper: LRU of decisions, honouring each decision's TTL."""

    def __init__(
        self,
        inner: PolicyEngine,
        max_entries: int = 10_000,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.inner = inner
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._wall_clock = wall_clock  # what a token's ``exp`` is read against
        self._entries: OrderedDict[bytes, tuple[float, Decision]] = OrderedDict()
        self._bytes = 0  # the length of the keys in ``_entries``
        self._revision = inner.revision
        # Revision changes this cache has seen (``_sync_revision``), drops or not.
        self._revision_changes = 0
        self.hits = 0
        self.misses = 0
        self.revision_drops = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def revision(self) -> str:
        return self.inner.revision

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "entries": len(self._entries),
            "revision_drops": self.revision_drops,
        }

    @property
    def key_bytes(self) -> int:
        """The length of the keys held, which ``max_bytes`` bounds."""
        return self._bytes

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def start(self) -> None:
        await self.inner.start()
        self._sync_revision()

    async def close(self) -> None:
        await self.inner.close()

    async def healthy(self) -> bool:
        """The inner engine's health; an unhealthy engine also empties the cache (the
        gateway checks every couple of seconds), so an outage is not hidden by old answers."""
        ok = await self.inner.healthy()
        if not ok:
            self.clear()
        return ok

    async def decide(self, input: dict[str, Any], *, key: bytes | None = None) -> Decision:
        """The cached decision for ``input``, else the inner engine's. ``key``, when given, must
        be ``memo_key(input)`` (the gateway has it from ``cache_keys``: not computed twice)."""
        if key is None:
            key = memo_key(input)
        if key is not None:
            hit = self.cached(key)
            if hit is not None:
                return hit
        else:
            self._sync_revision()
        self.misses += 1
        # In sync with the engine here (``cached`` or the line above): what it has seen of
        # revision changes now, to tell afterwards whether the revision moved meanwhile.
        before = self._revision_marks()
        decision = await self.inner.decide(input)
        if decision.failed_closed:
            # Never stored. The engine is failing: stop answering from what it said while it
            # was well, so every caller sees the outage (fail closed) rather than only the new
            # ones; unless the engine only refused this one input (not an outage, and a caller
            # must not be able to empty everyone's cache with one).
            if decision.fail_reason not in _INPUT_REFUSALS:
                self.clear()
            return decision
        # The inner engine may have learnt of a new revision while deciding (OPA reports it
        # per answer): drop what the old one decided before storing anything, and store this
        # one only if the revision did not move at all while it was being made.
        self._sync_revision()
        if (
            key is not None
            and decision.cache_ttl_seconds > 0
            and decision.revision == self._revision
            and self._revision_marks() == before
            and len(key) <= self._max_bytes
        ):
            lifetime = _lifetime(input, decision.cache_ttl_seconds, self._wall_clock())
            if lifetime > 0:
                self._store(key, self._clock() + lifetime, cached_copy(decision))
        return decision

    def _store(self, key: bytes, expires: float, decision: Decision) -> None:
        """Keep ``decision`` under ``key`` as the most recent entry, then evict the least
        recently used while over either bound (``max_entries``, ``max_bytes``)."""
        entries = self._entries
        if key not in entries:  # another call may have stored it while this one was decided
            self._bytes += len(key)
        entries[key] = (expires, decision)
        entries.move_to_end(key)
        while len(entries) > self._max_entries or self._bytes > self._max_bytes:
            evicted, _ = entries.popitem(last=False)
            self._bytes -= len(evicted)

    def cached(self, key: bytes) -> Decision | None:
        """The unexpired decision stored under ``key`` (``memo_key`` of an input) for the current
        revision, counted as a hit; None (nothing counted) when ``decide`` must ask the engine.
        Synchronous, so the gateway can answer a hit without arming its decision deadline.
        The decision is the stored one itself: frozen all the way down, so safe to share."""
        if self.inner.revision != self._revision:  # inlined: on the path of every hit
            self._sync_revision()
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, decision = entry
        if self._clock() < expires:
            self._entries.move_to_end(key)
            self.hits += 1
            return decision
        del self._entries[key]
        self._bytes -= len(key)
        return None

    def _revision_marks(self) -> tuple[int, int]:
        """Revision changes seen so far: this cache's count and the engine's own
        (``revision_generation``; 0 for an engine that keeps none)."""
        return self._revision_changes, getattr(self.inner, "revision_generation", 0)

    def _sync_revision(self) -> None:
        revision = self.inner.revision
        if revision != self._revision:
            self._revision_changes += 1
            if self._entries:
                log.info(
                    "policy_cache_dropped", old_revision=self._revision, revision=revision, entries=len(self)
                )
                self.revision_drops += 1
            self.clear()
            self._revision = revision
