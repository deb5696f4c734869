"""What the gateway forwards upstream of the caller's metadata."""

from __future__ import annotations

from labelgate.auth import DOCUMENTED_CLIENT_OPTIONS, strip_caller_metadata


def test_credentials_reserved_and_undocumented_gateway_keys_are_dropped() -> None:
    metadata = [
        ("authorization", "Bearer secret"),
        ("Authorization", "Bearer again"),
        ("x-api-key", "lgk_secret"),
        ("cookie", "session=1"),
        ("proxy-authorization", "Basic x"),
        ("x-labelgate-session", "s-1"),
        ("x-labelgate-justification", "ticket 42"),
        ("x-labelgate-approval", "granted"),
        ("x-labelgate-approval-id", "a-1"),
        ("x-labelgate-subject", "admin"),  # would look like a gateway-asserted identity
        ("x-labelgate-decision", "allow"),
        (":authority", "gateway"),
        ("grpc-timeout", "1S"),
        ("grpc-trace-bin", b"\x00\x01"),
        ("user-agent", "grpc-python"),
        ("te", "trailers"),
        ("connection", "close"),
        ("content-type", "application/grpc"),
        ("x-request-id", "r-1"),
        ("traceparent", "00-abc-def-01"),
        ("custom-bin", b"\xff"),
        ("X-Tenant", "acme"),
    ]
    assert strip_caller_metadata(metadata) == [
        ("x-labelgate-session", "s-1"),
        ("x-labelgate-justification", "ticket 42"),
        ("x-labelgate-approval", "granted"),
        ("x-labelgate-approval-id", "a-1"),
        ("x-request-id", "r-1"),
        ("traceparent", "00-abc-def-01"),
        ("custom-bin", b"\xff"),
        ("x-tenant", "acme"),
    ]


def test_the_documented_options_are_an_explicit_list() -> None:
    assert sorted(DOCUMENTED_CLIENT_OPTIONS) == [
        "x-labelgate-approval",
        "x-labelgate-approval-id",
        "x-labelgate-justification",
        "x-labelgate-session",
    ]


def test_empty_metadata() -> None:
    assert strip_caller_metadata([]) == []
    assert strip_caller_metadata(()) == []
