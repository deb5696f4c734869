"""``serve --workers N``: each worker names its held calls with a node id of its own.

A gateway that starts marks the held calls of its node's previous run abandoned (their
callers saw the connection drop). Workers start one after another on one store: with one
node id between them, a later worker would abandon the live held calls of an earlier one.
Each worker slot has its own id, the same from one run to the next, so a restart still
abandons what that slot held before.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from labelgate.approvals.model import State
from labelgate.approvals.service import ApprovalService
from labelgate.config import GatewaySettings, load_settings
from labelgate.gateway.server import build_approvals, worker_node
from tests.approvals.test_service import draft, new_database  # noqa: F401 - a fixture


def settings(**approvals: object) -> GatewaySettings:
    return load_settings(
        listen="127.0.0.1:8001",
        admin_listen="127.0.0.1:8002",
        upstream={"address": "127.0.0.1:3"},
        auth={"jwt": {"trust_dev_key": True}},
        approvals={"sqlite_file": "/tmp/never-opened.db", **approvals},
        workers=3,
    )


def node_ids(configured: GatewaySettings) -> list[str]:
    found = []
    for index in range(configured.workers):
        service = build_approvals(worker_node(configured, index))
        assert service is not None
        found.append(service.node_id)
    return found


def test_each_worker_has_a_node_id_of_its_own_the_same_in_every_run() -> None:
    for configured in (settings(), settings(node_id="gw-eu-1")):
        ids = node_ids(configured)
        assert len(set(ids)) == 3, ids
        assert ids == node_ids(configured), "a restarted worker slot names its calls as before"
        single = build_approvals(configured)
        assert single is not None and ids[0] == single.node_id, "worker 0 is what one process is"
    assert node_ids(settings(node_id="gw-eu-1")) == ["gw-eu-1", "gw-eu-1/worker-1", "gw-eu-1/worker-2"]


def service_of(store: Callable, worker: int) -> ApprovalService:
    node_id = build_approvals(worker_node(settings(), worker)).node_id  # type: ignore[union-attr]
    return ApprovalService(store(), node_id=node_id, link_base="http://inbox.test")


async def test_a_later_worker_leaves_its_siblings_held_calls_and_a_restart_abandons_its_own(
    new_database: Callable,  # noqa: F811
) -> None:
    first = service_of(new_database, 0)
    await first.start(sweep=False)
    try:
        live = await first.open(draft())
        second = service_of(new_database, 1)
        await second.start(sweep=False)  # a moment later, on the same store
        assert (await first.get(live.id)).state is State.PENDING, "a sibling's live call is left alone"
        lost = await second.open(draft())
        await second.db.close()  # the worker dies: nothing is cleaned up
        restarted = service_of(new_database, 1)
        await restarted.start(sweep=False)
        try:
            assert (await restarted.get(lost.id)).state is State.ABANDONED
            assert (await restarted.get(live.id)).state is State.PENDING
        finally:
            await restarted.close()
        await first.expire(live.id, "test over")
        assert (await first.wait(live.id, time.time() + 5)).state is State.EXPIRED
    finally:
        await first.close()
