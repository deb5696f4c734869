"""An opaque routed stream's replies (bytes in, bytes out) are released only once recorded, as a
typed stream's are: the session recorder's room is reserved first, so a recorder that cannot
write ends the stream with its own refusal, and the recording keeps each reply's bytes.

Found by review (thirteenth round): the replies went to the caller unrecorded and unchecked.
With the session's file pointed at ``/dev/full`` every other call was refused
``RECORDING_BACKLOG`` while the opaque stream went on delivering ``ssn 123-45-6789``, and the
recording held only the stream's admission, ``response: null``: a replay said nothing was
delivered. The store's failure is real (``tests/recording/test_store_failing.py``'s way).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from labelgate.auth import Subject, mint_dev_token
from labelgate.config import GatewaySettings
from labelgate.gateway.server import Gateway
from labelgate.gateway.status import error_info
from labelgate.recording.entries import decode_message, file_name, recording_key
from labelgate.recording.viewing import ReplayPolicy, view_call
from tests.gateway.harness import recorded_calls
from tests.gateway.test_routes import DIRECTORY, directory_serving, opaque_policy
from tests.recording.test_store_failing import WatchedStore
from tests.support.procs import REPO, free_port

WAIT = 30  # seconds: a bound on waiting, never a measure of speed
# Long enough for a failing write to show on any machine; only the unfixed gateway, which
# never writes the replies, waits it out (and then delivers them unrecorded).
STORE_FAILURE_WAIT = 10
SESSION = "opaque-recorded"
SESSION_KEY = recording_key(Subject.proven("jwt", "ann", issuer="labelgate-dev"), "", SESSION)
REPLIES = [f"ssn 123-45-6789 reply {number}".encode() for number in range(1, 6)]


def metadata() -> tuple[tuple[str, str], ...]:
    return (
        ("authorization", f"Bearer {mint_dev_token('ann', ['analysts'], 300)}"),
        ("x-labelgate-session", SESSION),
    )


@contextlib.asynccontextmanager
async def opaque_gateway(tmp_path: Path, upstream: str) -> AsyncIterator[tuple[Gateway, WatchedStore]]:
    """A gateway in this process relaying the directory's methods opaque to analysts, recording
    sessions to files under ``tmp_path/sessions``, its session store watched (``WatchedStore``)."""
    settings = GatewaySettings(
        listen=f"127.0.0.1:{free_port()}",
        admin_listen=None,
        upstream={"address": upstream, "timeout_seconds": WAIT},
        policy={"dir": str(opaque_policy(tmp_path))},
        classification={"catalog_file": str(REPO / "rego/labelgate/catalog/data.json")},
        masking={"hash_key": "opaque-recording-test-hash-key"},
        auth={"jwt": {"trust_dev_key": True}},
        routes=[{"method_prefix": DIRECTORY}],  # no descriptors: opaque
        recording={"dir": str(tmp_path / "sessions")},
    )
    gateway = Gateway(settings)
    recorder = gateway.sessions
    assert recorder is not None
    store = WatchedStore(recorder.store)
    recorder.store = store  # type: ignore[assignment]  # the real store, watched
    await gateway.start()
    try:
        yield gateway, store
    finally:
        await gateway.stop(0)


def open_stream(channel: grpc.aio.Channel) -> Any:
    """ListCustomers as bytes: what the gateway relays is not read as any message here either."""
    relay: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
        f"{DIRECTORY}ListCustomers"  # no (de)serializers: bytes
    )
    return relay(b"", metadata=metadata(), timeout=WAIT)


def recorded_responses(sessions: Path) -> list[bytes | None]:
    """Each recorded call's response of the session, as its bytes (None: none delivered),
    checked to say its own size."""
    found: list[bytes | None] = []
    for entry in recorded_calls(sessions, SESSION):
        stored = entry["response"]
        if stored is None:
            found.append(None)
            continue
        data = base64.b64decode(stored["base64"])
        assert stored["bytes"] == len(data)
        found.append(data)
    return found


async def test_an_opaque_streams_replies_stop_when_its_session_recorder_cannot_write(
    tmp_path: Path,
) -> None:
    sessions = tmp_path / "sessions"
    broken = asyncio.Event()
    watched: list[WatchedStore] = []  # the gateway's, once it is made

    async def replies(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        yield REPLIES[0]
        await broken.wait()
        # Reserved before the store's failure shows (nothing failed yet): the window the
        # design accepts, and recorded once the store works again.
        yield REPLIES[1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watched[0].failed.wait(), STORE_FAILURE_WAIT)
        for reply in REPLIES[2:]:  # the recorder is failing now: none of these may leave
            yield reply

    async with (
        directory_serving(replies) as upstream,
        opaque_gateway(tmp_path, upstream) as (gateway, store),
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel,
    ):
        recorder = gateway.sessions
        assert recorder is not None
        watched.append(store)
        stream = open_stream(channel)
        received = [await stream.read()]
        await asyncio.wait_for(recorder.flush(), WAIT)  # the admission and the first reply
        path = sessions / file_name(SESSION_KEY)
        path.rename(sessions / "before-failure.jsonl")  # kept to read; a name of its own
        os.symlink("/dev/full", path)  # every write of the session fails (ENOSPC)
        broken.set()
        refused: grpc.aio.AioRpcError | None = None
        try:
            while (reply := await stream.read()) is not grpc.aio.EOF:
                received.append(reply)
        except grpc.aio.AioRpcError as error:
            refused = error
        path.unlink()  # space is freed: the reply released in the window is written
        await asyncio.wait_for(recorder.flush(), WAIT)

    assert received == REPLIES[:2], "replies left the gateway while its session recorder was failing"
    assert refused is not None and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_info(refused)
    assert info is not None and info.reason == "RECORDING_BACKLOG"  # the recorder's own refusal
    # Every reply the caller received is in the recording, its bytes as delivered; the
    # stream's admission delivered nothing.
    assert recorded_responses(sessions) == [None, *received]


async def test_an_opaque_streams_replies_are_recorded_as_delivered_and_shown_to_no_viewer(
    tmp_path: Path,
) -> None:
    sessions = tmp_path / "sessions"

    async def replies(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[bytes]:
        for reply in REPLIES:
            yield reply

    async with (
        directory_serving(replies) as upstream,
        opaque_gateway(tmp_path, upstream) as (gateway, _),
        grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel,
    ):
        received = [reply async for reply in open_stream(channel)]
        assert gateway.sessions is not None
        await asyncio.wait_for(gateway.sessions.flush(), WAIT)

    assert received == REPLIES
    assert recorded_responses(sessions) == [None, *REPLIES]  # the admission, then each reply
    entries = recorded_calls(sessions, SESSION)
    assert [entry["decision"]["outcome"] for entry in entries] == ["allow"] * (1 + len(REPLIES))
    assert [entry["upstream_status"] for entry in entries[1:]] == ["OK"] * len(REPLIES)

    # Nothing is known of the bytes: no viewer decodes them, so none shows them (fail closed),
    # before any policy is asked.
    async def never_decided(_: dict[str, Any]) -> Any:
        raise AssertionError("an opaque reply reached a replay decision")

    def no_classifier() -> Any:
        raise AssertionError("an opaque reply was classified for a replay")

    policy = ReplayPolicy(never_decided, no_classifier, b"k", 1.0)
    viewer = Subject.proven("jwt", "auditor", issuer="labelgate-dev", groups=["auditors"])
    for entry in entries[1:]:
        assert decode_message(entry["response"]) is None
        shown = await view_call(policy, viewer, entry)
        assert shown["response"] is None and shown["replay"]["outcome"] == "error", shown["replay"]
