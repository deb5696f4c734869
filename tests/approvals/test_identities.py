"""Qualified identities (issue 13, gap 3), through a real gateway with two ways to prove who
you are: development-key JWTs and API keys. Every id is qualified by how it was proven
(``jwt:<issuer>#<sub>``, ``api_key:<id>``), so ``olivia`` the API key and ``olivia`` the
dev token are two subjects: neither may approve the other's request (one name may be one
person), neither rides on the other's grant, and the dev token never *is* anyone else.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from labelgate.auth import new_key_entry
from tests.approvals.conftest import Api, dev_id, gateway_config, person, running_gateway, token
from tests.approvals.test_query_grants import ASYNC, approval_of, ask, clear_ssns
from tests.support.procs import free_port, labelgate_command, running


class KeyStack:
    def __init__(self, address: str, api: Api, keys: dict[str, str]) -> None:
        self.address, self.api, self.keys = address, api, keys


@pytest.fixture(scope="module")
def key_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyStack]:
    folder: Path = tmp_path_factory.mktemp("identities")
    keys, entries = {}, []
    for key_id, groups in (("olivia", ["data-stewards"]), ("otto", ["data-owners"])):
        keys[key_id], entry = new_key_entry(key_id, groups)
        entries.append(entry)
    keys_file = folder / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": entries}))
    backend_port = free_port()
    backend = f"127.0.0.1:{backend_port}"
    with running(
        labelgate_command("demo-backend", "--listen", backend), folder / "backend.log", port=backend_port
    ):
        config, address, admin = gateway_config(folder, backend, {"sqlite_file": str(folder / "a.db")})
        document = yaml.safe_load(config.read_text())
        document["auth"]["api_keys"] = {"keys_file": str(keys_file)}
        config.write_text(yaml.safe_dump(document))
        with running_gateway(config, address, folder / "gateway.log"):
            yield KeyStack(address, Api(admin), keys)


def test_a_colliding_name_across_auth_methods_cannot_self_approve_or_share_a_grant(
    key_stack: KeyStack,
) -> None:
    api, address = key_stack.api, key_stack.address
    owner = person("owner")
    owner_token = token(owner, "data-owners")
    # ``olivia`` the API key asks to see confidential data.
    approval = approval_of(ask(address, None, [7], **ASYNC, **{"x-api-key": key_stack.keys["olivia"]}))
    shown = api.show(approval, owner_token)
    assert shown["requester"] == "api_key:olivia"

    # Whoever can mint a dev token for sub=olivia (in data-owners, even) cannot approve it:
    # one name, proven two ways, may be one person.
    dev_olivia = token("olivia", "data-owners")
    refused = api.approve(approval, dev_olivia)
    assert refused.status_code == 403 and refused.json()["reason"] == "SELF_APPROVAL", refused.text
    # Nor does the dev token see olivia's request as its own: it is somebody else's.
    assert approval not in [i["id"] for i in api.get("/api/v1/approvals", token("olivia")).json()["items"]]

    granted = api.approve(approval, owner_token)
    assert granted.json()["state"] == "granted"
    assert granted.json()["votes"][0]["approver"] == dev_id(owner)
    key = {"x-api-key": key_stack.keys["olivia"]}
    assert clear_ssns(ask(address, None, [7], **key))

    # The dev-token olivia (data-stewards too) asking the very same query is not released by
    # the API key's grant, named or not.
    dev_steward = token("olivia", "data-stewards")
    named = ask(address, dev_steward, [7], **{"x-labelgate-approval-id": approval})
    assert (named.code, named.reason) == ("PERMISSION_DENIED", "APPROVAL_NOT_YOURS"), named
    assert approval_of(ask(address, dev_steward, [7], **ASYNC)) != approval
