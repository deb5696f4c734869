"""mTLS against a real grpc.aio server that requires client certificates, on loopback.

The server's handler calls the authenticator with ``context.auth_context()`` exactly as the
gateway does, and answers with the subject it got (or aborts UNAUTHENTICATED with the reason).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import hashes

from labelgate.auth import (
    Authenticator,
    MtlsSettings,
    dev_token_command,
    mint_dev_token,
    reasons,
    server_credentials,
    strip_caller_metadata,
)
from labelgate.auth.jwt_verifier import JwtVerifier
from labelgate.auth.mtls import MtlsIdentifier, load_groups_file
from labelgate.auth.settings import JwtSettings
from labelgate.errors import ConfigError, Unauthenticated
from tests.support.pki import CertAuthority, IssuedCert, create_ca
from tests.support.procs import free_port

METHOD = "/labelgate.test.Identity/WhoAmI"
ALICE_URI = "spiffe://labelgate.test/ns/team-a/sa/alice"


@dataclass
class IdentityServer:
    port: int
    ca: CertAuthority
    handled: list[str] = field(default_factory=list)

    async def call(
        self,
        client: IssuedCert | None,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> dict:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.ca.cert_pem,
            private_key=client.key_pem if client else None,
            certificate_chain=client.cert_pem if client else None,
        )
        async with grpc.aio.secure_channel(f"localhost:{self.port}", credentials) as channel:
            reply = await channel.unary_unary(METHOD)(b"", metadata=tuple(metadata), timeout=10)
        return json.loads(reply)


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return create_ca()


@pytest.fixture(scope="module")
def alice(ca: CertAuthority) -> IssuedCert:
    return ca.issue("alice-cn", uris=[ALICE_URI], dns=["alice.test"])


@pytest.fixture
def mtls_settings(tmp_path: Path, ca: CertAuthority) -> MtlsSettings:
    groups = tmp_path / "groups.yaml"
    groups.write_text(yaml.safe_dump({ALICE_URI: ["analysts", "team-a"], "alice-cn": ["cn-group"]}))
    return MtlsSettings(ca_file=ca.write(tmp_path), groups_file=groups)


@contextlib.asynccontextmanager
async def identity_server(
    authenticator: Authenticator, settings: MtlsSettings, ca: CertAuthority, tmp_path: Path
) -> AsyncIterator[IdentityServer]:
    cert_file, key_file = ca.server_cert().write(tmp_path, "server")
    server = grpc.aio.server()
    running = IdentityServer(free_port(), ca)

    async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        running.handled.append(METHOD)
        metadata = context.invocation_metadata() or ()
        try:
            subject = authenticator.authenticate(metadata, context.auth_context())
        except Unauthenticated as error:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, error.reason)
        forwarded = [key for key, _ in strip_caller_metadata(metadata)]
        return json.dumps({"subject": subject.to_policy(), "forwarded": forwarded}).encode()

    handler = grpc.method_handlers_generic_handler(
        "labelgate.test.Identity", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)}
    )
    server.add_generic_rpc_handlers([handler])
    server.add_secure_port(f"127.0.0.1:{running.port}", server_credentials(settings, cert_file, key_file))
    await server.start()
    try:
        yield running
    finally:
        await server.stop(None)


def mtls_only(settings: MtlsSettings) -> Authenticator:
    return Authenticator(mtls=MtlsIdentifier.from_settings(settings))


async def test_identity_from_the_uri_san(tmp_path, ca, alice, mtls_settings) -> None:
    async with identity_server(mtls_only(mtls_settings), mtls_settings, ca, tmp_path) as server:
        reply = await server.call(alice)
    assert reply["subject"] == {
        "id": f"mtls:{ALICE_URI}",
        "name": ALICE_URI,
        "groups": ["analysts", "team-a"],
        "auth": "mtls",
        "attributes": {"cert_sha256": alice.cert.fingerprint(hashes.SHA256()).hex()},
    }


async def test_identity_from_the_common_name(tmp_path, ca, alice, mtls_settings) -> None:
    settings = mtls_settings.model_copy(update={"identity_from": "cn"})
    async with identity_server(mtls_only(settings), settings, ca, tmp_path) as server:
        reply = await server.call(alice)
    assert (reply["subject"]["id"], reply["subject"]["groups"]) == ("mtls:alice-cn", ["cn-group"])


async def test_identity_from_the_dns_san_without_a_group_mapping(tmp_path, ca, alice, mtls_settings) -> None:
    settings = mtls_settings.model_copy(update={"san_type": "dns"})
    async with identity_server(mtls_only(settings), settings, ca, tmp_path) as server:
        reply = await server.call(alice)
    assert (reply["subject"]["id"], reply["subject"]["groups"]) == ("mtls:alice.test", [])


@pytest.mark.parametrize(
    ("issue", "reason"),
    [
        ({"common_name": "no-uri", "dns": ["no-uri.test"]}, reasons.CERT_NO_IDENTITY),
        ({"common_name": "two", "uris": ["spiffe://t/a", "spiffe://t/b"]}, reasons.CERT_AMBIGUOUS_IDENTITY),
    ],
)
async def test_certificates_without_one_clear_identity_are_refused(
    tmp_path, ca, mtls_settings, issue, reason
) -> None:
    client = ca.issue(**issue)
    async with identity_server(mtls_only(mtls_settings), mtls_settings, ca, tmp_path) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(client)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == reason


@pytest.mark.parametrize(
    ("identity_from", "san_type", "issue"),
    [
        ("cn", "uri", {"common_name": "alice\u200b"}),  # zero-width space: looks like alice
        ("cn", "uri", {"common_name": "\u202eecila"}),  # right-to-left override: shows as alice
        ("cn", "uri", {"common_name": "alice\nINFO forged log line"}),
        ("cn", "uri", {"common_name": " alice"}),
        ("cn", "uri", {"common_name": "alice\u00a0"}),
        ("san", "uri", {"common_name": None, "uris": ["spiffe://t/alice\x1b[2J"]}),
        ("san", "uri", {"common_name": None, "uris": ["spiffe://t/alice\x00"]}),
        ("san", "dns", {"common_name": None, "dns": ["alice.test "]}),
        ("san", "dns", {"common_name": None, "dns": ["alice\x7f.test"]}),
    ],
)
def test_a_certificate_name_with_control_bidi_or_invisible_characters_is_refused(
    ca, identity_from, san_type, issue
) -> None:
    """The rule a JWT subject and group names follow: such a name is refused, never trimmed
    into another identity, and the refusal does not quote it."""
    client = ca.issue(**issue)
    identifier = MtlsIdentifier(identity_from, san_type)
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [client.cert_pem]}
    with pytest.raises(Unauthenticated) as caught:
        identifier.identify(context)
    assert caught.value.reason == reasons.CERT_BAD_IDENTITY
    assert "alice" not in caught.value.message and "ecila" not in caught.value.message


async def test_a_certificate_name_with_a_zero_width_space_is_refused_over_tls(
    tmp_path, ca, mtls_settings
) -> None:
    settings = mtls_settings.model_copy(update={"identity_from": "cn"})
    lookalike = ca.issue("alice-cn\u200b", uris=[ALICE_URI])  # alice-cn has groups; this is not alice-cn
    async with identity_server(mtls_only(settings), settings, ca, tmp_path) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(lookalike)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == reasons.CERT_BAD_IDENTITY


@pytest.mark.parametrize("name", ["Alice Smith", "Zoë", "team-a/alice"])
def test_a_printable_certificate_name_is_taken_as_it_is(ca, name) -> None:
    client = ca.issue(name)
    context = {"transport_security_type": [b"ssl"], "x509_pem_cert": [client.cert_pem]}
    assert MtlsIdentifier("cn").identify(context).id == f"mtls:{name}"


async def test_a_cn_less_certificate_has_no_cn_identity(tmp_path, ca, mtls_settings) -> None:
    settings = mtls_settings.model_copy(update={"identity_from": "cn"})
    client = ca.issue(None, uris=["spiffe://t/no-cn"])
    async with identity_server(mtls_only(settings), settings, ca, tmp_path) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(client)
    assert caught.value.details() == reasons.CERT_NO_IDENTITY


async def test_a_client_without_a_certificate_is_refused_at_tls(tmp_path, ca, mtls_settings) -> None:
    async with identity_server(mtls_only(mtls_settings), mtls_settings, ca, tmp_path) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(None)
        assert server.handled == []  # the handshake failed; no handler ran
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused_at_tls(tmp_path, ca, mtls_settings) -> None:
    impostor = create_ca("impostor CA").issue("alice-cn", uris=[ALICE_URI])
    async with identity_server(mtls_only(mtls_settings), mtls_settings, ca, tmp_path) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(impostor)
        assert server.handled == []
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def mtls_and_jwt(settings: MtlsSettings, order: Sequence[str]) -> Authenticator:
    return Authenticator(
        mtls=MtlsIdentifier.from_settings(settings),
        jwt=JwtVerifier.from_settings(JwtSettings(trust_dev_key=True)),
        order=order,  # type: ignore[arg-type]
    )


async def test_with_a_certificate_and_a_token_the_order_picks_the_subject(
    tmp_path, ca, alice, mtls_settings
) -> None:
    metadata = [("authorization", f"Bearer {dev_token_command('bob', 'analysts', '5m')}")]
    async with identity_server(
        mtls_and_jwt(mtls_settings, ["mtls", "jwt"]), mtls_settings, ca, tmp_path
    ) as server:
        workload_first = (await server.call(alice, metadata))["subject"]
    async with identity_server(
        mtls_and_jwt(mtls_settings, ["jwt", "mtls"]), mtls_settings, ca, tmp_path
    ) as server:
        user_first = (await server.call(alice, metadata))["subject"]
    assert (workload_first["id"], workload_first["auth"]) == (f"mtls:{ALICE_URI}", "mtls")
    assert workload_first["attributes"]["also_verified"] == {"jwt": "jwt:labelgate-dev#bob"}
    assert (user_first["id"], user_first["auth"]) == ("jwt:labelgate-dev#bob", "jwt")
    assert user_first["attributes"]["also_verified"] == {"mtls": f"mtls:{ALICE_URI}"}


async def test_a_bad_token_next_to_a_good_certificate_is_refused(tmp_path, ca, alice, mtls_settings) -> None:
    expired = mint_dev_token("bob", [], 60, now=0)
    async with identity_server(
        mtls_and_jwt(mtls_settings, ["mtls", "jwt"]), mtls_settings, ca, tmp_path
    ) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(alice, [("authorization", f"Bearer {expired}")])
    assert caught.value.details() == reasons.TOKEN_EXPIRED


async def test_only_forwardable_metadata_survives(tmp_path, ca, alice, mtls_settings) -> None:
    metadata = [
        ("x-api-key", "lgk_" + "a" * 43),
        ("x-labelgate-session", "s-1"),
        ("x-labelgate-internal", "smuggled"),
        ("x-request-id", "r-1"),
    ]
    # The API key header is refused because API keys are not enabled here...
    async with identity_server(mtls_only(mtls_settings), mtls_settings, ca, tmp_path) as server:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await server.call(alice, metadata)
        assert caught.value.details() == reasons.AUTH_METHOD_NOT_ENABLED
        # ...and without it, what grpc delivers (user-agent included) is filtered for the upstream.
        reply = await server.call(alice, metadata[1:])
    assert reply["forwarded"] == ["x-labelgate-session", "x-request-id"]


def test_server_credentials_need_readable_files(tmp_path, mtls_settings) -> None:
    with pytest.raises(ConfigError) as caught:
        server_credentials(mtls_settings, tmp_path / "missing.crt", tmp_path / "missing.key")
    assert caught.value.reason == "TLS_CONFIG_INVALID"


@pytest.mark.parametrize("name", [" analysts", "approvers\u3000", "a\x1fb", ""])
def test_a_groups_file_name_a_subject_cannot_hold_is_refused_at_load(tmp_path: Path, name: str) -> None:
    """Names are never trimmed (``approvers`` + U+3000 is another group): refused at start."""
    path = tmp_path / "groups.yaml"
    path.write_text(json.dumps({"alice": ["analysts", name]}))  # JSON is YAML, and keeps \u3000 exact
    with pytest.raises(ConfigError) as caught:
        load_groups_file(path)
    assert caught.value.reason == reasons.AUTH_CONFIG_INVALID and "alice: groups" in caught.value.message
