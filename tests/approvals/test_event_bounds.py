"""An approval event's log line bounds the texts a caller chose, as the call log does
(review: what leaves the gateway, finding 5).

Each input name and field path went into the ``labelgate.approvals`` line whole: a held call
naming thousands of fields at long paths made one event hundreds of KB of log line, and the
texts may be data. Each text is bounded (``untrusted_text.bounded``) and each list is cut to
its first within ``events.LISTED_CHARS`` characters, the others counted.
"""

from __future__ import annotations

import json
import logging
import time

import pytest

from labelgate.approvals import events
from labelgate.approvals.model import (
    ApprovalRequest,
    Binding,
    FieldAtStake,
    InputSummary,
    Query,
    Requirement,
    State,
)
from labelgate.untrusted_text import BOUNDED_TEXT, bounded

PLANTED = "078-05-1120"


def _request(fields: int, inputs: int, text: str) -> ApprovalRequest:
    return ApprovalRequest(
        id="apr-1",
        state=State.PENDING,
        mode="hold",
        binding=Binding("steve", f"/svc.S/{text}", f"model-{text}", ("confidential",)),
        requester_groups=("data-stewards",),
        phase="request",
        fields=tuple(FieldAtStake(f"outputs.f{n}.{text}", ("confidential",)) for n in range(fields)),
        requirement=Requirement(("data-owners",), 1, 900, "needs approval"),
        justification="ticket 7",
        created_at=time.time(),
        expires_at=time.time() + 60,
        node_id="n",
        call_request_id=f"r-{text}",
        session_id=f"s-{text}",
        query=Query(
            inputs=tuple(InputSummary(f"in{n}-{text}", "BYTES", (1,)) for n in range(inputs)),
            requested_outputs=tuple(f"out{n}-{text}" for n in range(inputs)),
        ),
    )


def _logged(caplog: pytest.LogCaptureFixture, request: ApprovalRequest) -> logging.LogRecord:
    with caplog.at_level(logging.INFO, logger="labelgate.approvals"):
        events.record("approval.requested", request)
    (line,) = [r for r in caplog.records if r.getMessage() == "approval.requested"]
    return line


def test_an_event_of_many_long_names_is_a_bounded_line(caplog: pytest.LogCaptureFixture) -> None:
    long_text = f"ssn {PLANTED} " + "x" * 60_000
    line = _logged(caplog, _request(fields=2000, inputs=300, text=long_text))
    fields = {key: value for key, value in vars(line).items() if key in events.summary(_request(1, 1, "a"))}
    size = len(json.dumps(fields))
    assert size < 64 * 1024, size  # was 156 MB of line for this request
    assert PLANTED not in json.dumps(fields)
    assert all(len(path) <= BOUNDED_TEXT + 60 for path in line.fields)  # type: ignore[attr-defined]
    # Each list keeps its first names and counts the others.
    query = line.query  # type: ignore[attr-defined]
    for kept, omitted, listed in (
        (line.fields, "fields_omitted", 2000),  # type: ignore[attr-defined]
        (query["inputs"], "inputs_omitted", 300),
        (query["requested_outputs"], "requested_outputs_omitted", 300),
    ):
        assert kept and len(kept) + getattr(line, omitted, 0) == listed, omitted
    assert line.fields_omitted > 0  # type: ignore[attr-defined]
    assert line.model == bounded(f"model-{long_text}")  # type: ignore[attr-defined]
    assert line.method == bounded(f"/svc.S/{long_text}")  # type: ignore[attr-defined]


def test_an_ordinary_event_is_logged_as_it_is(caplog: pytest.LogCaptureFixture) -> None:
    request = _request(fields=3, inputs=2, text="plain")
    line = _logged(caplog, request)
    assert line.fields == [f.path for f in request.fields]  # type: ignore[attr-defined]
    assert line.query == request.query.to_json()  # type: ignore[attr-defined]
    assert not {"fields_omitted", "inputs_omitted", "requested_outputs_omitted"} & set(vars(line))
