"""An inbox that scales (issue 13, gap 2), on SQLite and a real PostgreSQL: the list is
filtered in SQL by the viewer's approver groups (and own requests) and paginated, and one
requester cannot open more than ``max_open_per_requester`` requests."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import grpc
import pytest
from prometheus_client import REGISTRY

from labelgate.approvals.model import State
from labelgate.approvals.service import TOO_MANY_OPEN
from labelgate.auth import Subject
from labelgate.errors import InvalidInput, ResourceExhausted
from tests.approvals.test_service import OWNERS, SECURITY, draft, new_database, running_service  # noqa: F401

FLOOD = 500
SPAMMER = Subject.proven("api_key", "batch-job", groups=("data-stewards",))
STEVE = Subject.proven("jwt", "steve", issuer="labelgate-dev", groups=("data-stewards",))
OLIVIA = Subject.proven("jwt", "olivia", issuer="labelgate-dev", groups=("data-owners",))
SAM = Subject.proven("jwt", "sam", issuer="labelgate-dev", groups=("security",))
AUDITOR = Subject.proven("jwt", "audrey", issuer="labelgate-dev", groups=("auditors",))


def refused_count() -> float:
    return (
        REGISTRY.get_sample_value("labelgate_approval_requests_refused_total", {"reason": TOO_MANY_OPEN})
        or 0.0
    )


async def test_500_open_requests_from_one_requester_hide_nobody_and_the_501st_is_refused(
    new_database: Callable,  # noqa: F811
) -> None:
    async with running_service(new_database, max_open_per_requester=FLOOD) as service:
        # Steve asks first, then a batch job floods the store with newer requests of its own
        # (for the security group, so data-owners are not even shown them).
        steves = await service.open(draft(STEVE, mode="async"))
        for _ in range(FLOOD):
            await service.open(draft(SPAMMER, SECURITY, mode="async"))

        before = refused_count()
        with pytest.raises(ResourceExhausted) as caught:
            await service.open(draft(SPAMMER, SECURITY, mode="async"))
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.reason == TOO_MANY_OPEN
        assert f"{FLOOD} approval requests open" in caught.value.message
        assert refused_count() == before + 1
        # The cap is per requester: steve can still ask.
        await service.open(draft(STEVE, mode="async"))

        # Olivia (data-owners) sees steve's requests at once: the flood is filtered out in SQL.
        page = await service.page(OLIVIA, [State.PENDING], limit=10)
        assert [r.requester for r in page.items] == [STEVE.id, STEVE.id]
        assert page.items[-1].id == steves.id and page.next is None
        # Steve sees his own; the spammer sees its own, page by page, every one exactly once.
        assert len((await service.page(STEVE, [State.PENDING])).items) == 2
        seen: list[str] = []
        cursor = None
        while True:
            page = await service.page(SPAMMER, [State.PENDING], limit=120, cursor=cursor)
            seen += [r.id for r in page.items]
            if page.next is None:
                break
            cursor = page.next
        assert len(seen) == len(set(seen)) == FLOOD
        # An approver of the flooded group pages through it too; someone in no group sees nothing.
        first = await service.page(SAM, [State.PENDING], limit=100)
        assert len(first.items) == 100 and first.next is not None
        assert (await service.page(AUDITOR, [State.PENDING])).items == []

        # Resolving some frees room under the cap.
        await service.deny(SAM, seen[0], "not now")
        await service.open(draft(SPAMMER, SECURITY, mode="async"))


async def test_viewer_groups_see_everything_and_a_forged_cursor_is_refused(
    new_database: Callable,  # noqa: F811
) -> None:
    async with running_service(new_database, admin_groups=["auditors"]) as service:
        opened = [await service.open(draft(STEVE, mode="async")) for _ in range(3)]
        page = await service.page(AUDITOR, [State.PENDING], limit=2)
        assert [r.id for r in page.items] == [opened[2].id, opened[1].id]
        rest = await service.page(AUDITOR, [State.PENDING], limit=2, cursor=page.next)
        assert [r.id for r in rest.items] == [opened[0].id] and rest.next is None
        # Not even well-formed: bad base64, no "|", a NUL in the id, a time that is not finite.
        nul_id = base64.urlsafe_b64encode(b"1700000000.0|apr-\x00").decode()
        not_finite = base64.urlsafe_b64encode(f"inf|{opened[0].id}".encode()).decode()
        for bad in ("%%%", "bm90LWEtY3Vyc29y", dataclasses.__name__, nul_id, not_finite):
            with pytest.raises(InvalidInput):
                await service.page(AUDITOR, [State.PENDING], cursor=bad)
