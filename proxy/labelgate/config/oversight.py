"""The sections of what people see and decide with: ``audit`` (durable records of every
call), ``approvals`` (calls the policy holds for approvers, and the webhooks that tell
them) and ``admin`` (the listener with the approvals inbox, and its OpenID Connect
sign-in).

Apart from the sections on a call's path (``sections``) because none of these
changes what a call is answered; whether approvals can work with the rest of the config is
a check across sections (``cross_checks``).
"""

# These sections are pydantic models (``Section``), which copy a mutable default for each
# instance; ruff knows a class for one only when its pydantic base is defined in the same file.
# ruff: noqa: RUF012

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from labelgate.config.sections import Section, ServerTlsSettings, refuse, without_credentials
from labelgate.config_paths import ConfigPath
from labelgate.retry import RetrySettings

# The audit commit delay's default (AuditSettings.commit_delay_ms): off. Measured on the bench
# machine it saves throughput at saturation (c=32) and costs it at moderate load (c=4);
# docs/OPERATING.md has the figures. An opt-in for gateways that run saturated.
COMMIT_DELAY_MS = 0.0


class AuditSettings(Section):
    """Durable audit records through the audit-writer process (unset: structured logs only)."""

    socket: ConfigPath | None = None
    timeout_seconds: float = Field(2.0, gt=0, le=60)
    # Group commit across calls (PostgreSQL's commit_delay / commit_siblings): with at least
    # commit_siblings other calls in flight, a record may wait this long for theirs so that one
    # write and one fsync serve them all (0, the default: never wait). A lone call never waits.
    commit_delay_ms: float = Field(COMMIT_DELAY_MS, ge=0, le=50)
    commit_siblings: int = Field(2, ge=1, le=10_000)
    # Let calls through when the writer is unreachable. Loud on purpose: records are lost.
    fail_open: bool = False
    # Every distinct decision input (names, labels, paths, subject; never a data value), kept
    # once by its hash in this SQLite file for ``labelgate policy impact`` (unset: not kept).
    inputs_file: ConfigPath | None = None
    inputs_retention_days: int = Field(30, ge=1, le=3650)
    # The inputs' text is kept within this many bytes: past it, the least recently seen go first
    # (counted as labelgate_errors_total{kind="INPUT_STORE_TRIMMED"}). A caller can make every
    # call, refused ones too, a new input of up to ~80 KiB. The file adds SQLite's overhead.
    inputs_max_bytes: int = Field(1 << 30, ge=1 << 20, le=1 << 40)

    @model_validator(mode="after")
    def _commit_delay_within_the_deadline(self) -> AuditSettings:
        if self.commit_delay_ms / 1000 > self.timeout_seconds / 2:
            refuse(["audit.commit_delay_ms must be at most half of audit.timeout_seconds"])
        return self

    @model_validator(mode="after")
    def _fail_open_needs_a_writer(self) -> AuditSettings:
        if self.fail_open and self.socket is None:
            refuse(["audit.fail_open is set but audit.socket is not: there is no writer to fail open from"])
        return self


ApprovalEvent = Literal["requested", "granted", "denied", "expired", "abandoned"]


class WebhookSettings(Section):
    """Where approval notifications go. ``slack``: text + blocks with the deep link (Slack
    incoming webhooks, Mattermost); ``generic``: the request as JSON."""

    url: str = Field(pattern=r"^https?://[^\s/]+")
    format: Literal["slack", "generic"] = "generic"
    events: list[ApprovalEvent] = ["requested"]
    timeout_seconds: float = Field(5.0, gt=0, le=60)
    max_attempts: int = Field(5, ge=1, le=20)
    backoff_seconds: float = Field(0.5, gt=0, le=60)
    # The one retry policy (labelgate/retry.py); set, it replaces max_attempts and backoff_seconds.
    retry: RetrySettings | None = None


class ApprovalSettings(Section):
    """Just-in-time approvals: calls the policy holds wait here for approvers."""

    # false: a call the policy holds is refused at once (reason APPROVAL_REQUIRED).
    enabled: bool = True
    store: Literal["sqlite", "postgres"] = "sqlite"
    # None: an in-memory database, lost on restart (one gateway process only).
    sqlite_file: ConfigPath | None = None
    postgres_dsn: SecretStr | None = None
    hold_timeout_seconds: float = Field(120.0, gt=0, le=3600)
    # How long a request made with `x-labelgate-approval: async` stays open (nobody is held).
    async_timeout_seconds: float = Field(900.0, gt=0, le=7 * 86400)
    # A held call whose client deadline leaves less than this is refused at once (use async mode).
    min_hold_seconds: float = Field(1.0, ge=0, le=60)
    # Resolve a held call this long before the client's deadline, so the caller sees why.
    deadline_margin_seconds: float = Field(0.25, ge=0, le=10)
    # Decided requests are purged this long after they end; a granted one is kept while its
    # grant lives (a grant counts only in the groups its request asked for).
    retention_seconds: int = Field(7 * 86400, ge=0)
    sweep_interval_seconds: float = Field(1.0, gt=0, le=60)
    # Base URL of the web inbox in links (notifications, async answers); default: the admin listener.
    public_url: str | None = Field(None, pattern=r"^https?://[^\s/]+")
    _check_public_url = field_validator("public_url")(
        classmethod(lambda cls, v: without_credentials(v, why="it starts the links every approver is sent"))
    )
    # Names this gateway in held requests, so a restart can mark the calls it lost as abandoned.
    node_id: str | None = Field(None, min_length=1, max_length=200)
    # Viewer groups: may see every request and the recorded sessions, and never vote (neither
    # approve nor deny); only the approver groups the policy names vote.
    viewer_groups: list[str] = []
    # The former name of viewer_groups (same meaning, merged with it; both read the union).
    admin_groups: list[str] = []
    webhooks: list[WebhookSettings] = []
    # Pending requests one requester (qualified subject id) may have open at once; the next
    # call that would open one is refused with RESOURCE_EXHAUSTED (APPROVAL_REQUESTS_EXHAUSTED).
    max_open_per_requester: int = Field(100, ge=1, le=100_000)
    max_held_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        le=2**40,
        description="Bytes of the requests of all the calls one gateway process holds for approval "
        "at once (a held call keeps its request in memory, about 2.5 times its size with what the "
        "gateway made of it, until it is decided; held in its response phase, the upstream's reply "
        "too, which counts with it). A call that would hold more is refused with "
        "RESOURCE_EXHAUSTED (APPROVAL_HELD_BYTES_EXHAUSTED); `x-labelgate-approval: async` holds nothing",
    )
    max_held_bytes_per_requester: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        le=2**40,
        description="As max_held_bytes, for the calls of one requester (qualified subject id) in "
        "one gateway process; past it: RESOURCE_EXHAUSTED (APPROVAL_HELD_BYTES_EXHAUSTED)",
    )

    @model_validator(mode="after")
    def _one_set_of_viewers(self) -> ApprovalSettings:
        viewers = sorted(set(self.viewer_groups) | set(self.admin_groups))
        self.viewer_groups = viewers
        self.admin_groups = list(viewers)
        return self

    def usable(self, *, workers: int, has_jwt: bool, admin_listen: str | None) -> bool:
        return self.enabled and not self.problems(workers=workers, has_jwt=has_jwt, admin_listen=admin_listen)

    def problems(self, *, workers: int, has_jwt: bool, admin_listen: str | None) -> list[str]:
        found: list[str] = []
        if not self.enabled:
            return found
        if self.store == "postgres" and self.postgres_dsn is None:
            found.append("approvals.store is postgres but approvals.postgres_dsn is not set")
        if self.store == "sqlite" and self.postgres_dsn is not None:
            found.append("approvals.postgres_dsn is set but approvals.store is sqlite: it is never used")
        if self.store == "sqlite" and self.sqlite_file is None and workers > 1:
            found.append("approvals: workers > 1 need a shared store (sqlite_file or postgres), not memory")
        if not has_jwt:
            found.append("approvals need auth.jwt: approvers sign in with the gateway's JWT configuration")
        if self.public_url is None and admin_listen is None:
            found.append(
                "approvals need approvals.public_url (the approvals server's inbox), or admin_listen "
                "with admin.approvals on, for the inbox links"
            )
        return found


class OidcSettings(Section):
    """Inbox sign-in with OpenID Connect (authorization code + PKCE, ``approvals/oidc.py``).

    The approver becomes ``jwt:<issuer>#<sub>``: the same person as their API bearer token
    when the identity provider issues both, which is why ``subject_claim`` must be
    ``auth.jwt.subject_claim`` when both name one issuer
    (``config.cross_checks._one_subject_claim_per_issuer``).
    Set, it replaces the token-paste sign-in.
    """

    # The provider's issuer URL (https; http only on loopback, for tests); discovery is read
    # from <issuer>/.well-known/openid-configuration and must name the same issuer.
    issuer: str = Field(pattern=r"^https?://[^\s#]+$")
    client_id: str = Field(min_length=1, max_length=500)
    # A confidential client's secret (client_secret_basic); unset: a public client (PKCE only).
    client_secret: SecretStr | None = None
    client_secret_file: ConfigPath | None = None
    # Where the provider sends approvers back; default: <approvals.public_url>/inbox/oidc/callback,
    # else the admin listener's own address as the browser reached it.
    redirect_url: str | None = Field(None, pattern=r"^https?://[^\s#]+/inbox/oidc/callback$")
    # Neither is a place for a password: the issuer names every approver (jwt:<issuer>#<sub>)
    # and must be the one discovery names; the provider sends browsers to the redirect URL.
    _check_issuer = field_validator("issuer")(
        classmethod(
            lambda cls, v: without_credentials(v, why="an issuer names every approver and holds no password")
        )
    )
    _check_redirect_url = field_validator("redirect_url")(
        classmethod(lambda cls, v: without_credentials(v, why="the provider sends browsers there"))
    )
    scopes: list[str] = ["openid", "groups"]
    # Where the approver's groups are: a claim name, or a dotted path into nested claims.
    groups_claim: str = Field(
        "groups",
        min_length=1,
        description="Claim name or dotted path; a list of group names taken as they are, or one "
        "string, which is one group name (never split). A name that is empty, starts or ends with "
        "a space, or holds other whitespace or invisible characters refuses the sign-in "
        "(OIDC_BAD_GROUPS)",
    )
    subject_claim: str = Field(
        "sub",
        min_length=1,
        description="The claim naming the approver; with auth.jwt's issuer, it must be "
        "auth.jwt.subject_claim (one person, one id)",
    )
    timeout_seconds: float = Field(10.0, gt=0, le=60)
    leeway_seconds: int = Field(30, ge=0, le=300)

    @model_validator(mode="after")
    def _coherent(self) -> OidcSettings:
        from urllib.parse import urlsplit

        if self.client_secret is not None and self.client_secret_file is not None:
            raise ValueError("admin.oidc.client_secret and client_secret_file are both set: choose one")
        parts = urlsplit(self.issuer)
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("admin.oidc.issuer must be https (http only for loopback)")
        if "openid" not in self.scopes:
            raise ValueError("admin.oidc: scopes must include openid")
        return self


class AdminSettings(Section):
    """The admin listener (``admin_listen``): health, metrics and (``approvals``) the approvals
    API and inbox.

    It runs on an event loop (and thread) of its own, so nothing sent to it delays inference.
    """

    # Request bodies larger than this are refused (413) while they are read, never buffered.
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # A body not complete by then is refused (408): a slow sender holds no connection for long.
    body_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Connections (and requests in progress) beyond this get 503 at once.
    max_connections: int = Field(64, ge=1, le=10_000)
    # HTTPS for the listener: then session cookies are ``__Host-`` + Secure and HSTS is sent.
    tls: ServerTlsSettings | None = None
    # Swagger UI and ReDoc at /api-docs/ (local, pinned assets). Off unless asked for.
    api_docs: bool = False
    # Inbox sign-ins last as long as the token did, at most this.
    session_max_seconds: int = Field(8 * 3600, ge=60, le=7 * 86400)
    # The key that signs inbox session cookies (32+ bytes). Share it (file or env) between the
    # replicas behind one inbox URL; unset: a random key per process (a restart signs everyone out).
    session_key_file: ConfigPath | None = None
    session_key: SecretStr | None = None
    # Approvers sign in to the inbox with OpenID Connect (then the token-paste form is off).
    oidc: OidcSettings | None = None
    # The approvals API (/api/v1/approvals) and the inbox (/inbox, with the recorded sessions'
    # pages) on the gateway's admin listener. Off where a separate approvals server serves
    # approvers (compose, the Helm chart): the admin port, open to metrics scrapers, then
    # answers 404 there and takes no votes. `labelgate approvals serve` serves them either way.
    approvals: bool = True

    @model_validator(mode="after")
    def _one_key(self) -> AdminSettings:
        if self.session_key is not None and self.session_key_file is not None:
            raise ValueError("admin.session_key and admin.session_key_file are both set: choose one")
        if self.session_key is not None and len(self.session_key.get_secret_value()) < 32:
            raise ValueError("admin.session_key must be at least 32 bytes")
        return self
