"""`labelgate infer`: an Open Inference Protocol client for people, for any model.

Inputs come as ``--input name=value`` (a JSON value: number, string, nested lists; anything
that is not JSON is taken as a string) or a JSON file (``{"name": value}`` or KServe's
``{"inputs": [{"name", "data", ...}]}``); the model's metadata, asked of the server first,
gives each input its datatype and shape. Over gRPC (``--target``) or REST (``--rest URL``),
with TLS, a timeout, and a table or ``--json`` (KServe v2's response JSON, either way).

What the server sent is shown as text it cannot act with: the table's title, headers and
cells are rich ``Text`` (never markup) of ``untrusted_text.shown`` (no terminal controls);
messages quote the model's input and output names through ``shown`` too, so each stays one
line; and ``--json`` is strict JSON: NaN and the infinities, which JSON has no numbers for,
are written as the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (what ``float()``
in Python and ``Number()`` in JavaScript read back).

Held for approval: the call is made in async mode, so the gateway answers at once with the
approval's id; a spinner then shows the id, who must approve, when the request expires (from
the approvals API, where requesters may read their own requests) and how long it still waits,
for up to ``--wait`` seconds, and once granted the call is made again presenting the approval
(``--approval-id``). ``--wait 0`` stops at once, naming the id and that flag (exit 1).
"""

from __future__ import annotations

import http.client
import json
import math
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from labelgate import reasons
from labelgate._proto.inference import open_inference_pb2 as pb
from labelgate._proto.inference import open_inference_pb2_grpc as pb_grpc
from labelgate.approvals import reasons as approvals_reasons
from labelgate.approvals.service import APPROVAL_ID
from labelgate.errors import InvalidInput, LabelgateError, PermissionDenied
from labelgate.gateway.status import error_info
from labelgate.oip.tensor import Tensor
from labelgate.oip.tensors import decode_outputs, encode_inputs
from labelgate.shown_urls import shown_url
from labelgate.untrusted_text import bearer_token_problem, shown

MODE_HEADER = "x-labelgate-approval"
APPROVAL_ID_HEADER = "x-labelgate-approval-id"
PENDING_REASON = approvals_reasons.APPROVAL_PENDING
POLL_SECONDS = 1.0
INTEGER_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
FLOAT_TYPES = ("FP16", "FP32", "FP64", "BF16")
_INTEGER_RANGES = {
    name: (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if name.startswith("INT") else (0, 2**bits - 1)
    for name, bits in zip(INTEGER_TYPES, (8, 16, 32, 64, 8, 16, 32, 64), strict=True)
}


@dataclass(frozen=True)
class Tls:
    """TLS to the gateway: CA to trust (default: the system's), a name to expect, a client pair."""

    enabled: bool = False
    ca_file: Path | None = None
    server_name: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True)
class Spec:
    """One input as the model's metadata describes it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpecs:
    """A model's metadata as ``infer`` checks a call against it: its inputs and output names."""

    inputs: list[Spec]
    outputs: list[str]


@dataclass
class Answer:
    """A successful reply, whichever transport brought it."""

    model_name: str
    model_version: str
    outputs: list[Tensor] = field(default_factory=list)


class HeldForApproval(LabelgateError):
    """The gateway opened an approval request for this call (async mode)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    exit_code = 1


class CallFailed(LabelgateError):
    """The server refused or failed the call; the reason is the server's."""

    exit_code = 1


# -- inputs -----------------------------------------------------------------------------------
def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word or sentence: a string
    except RecursionError:
        raise InvalidInput(reasons.INPUT_INVALID, "an --input value is nested too deeply") from None


def read_inputs(pairs: Sequence[str], inputs_file: Path | None) -> dict[str, Any]:
    """Input name -> value (as given: scalars or nested lists), from the file then ``--input``s."""
    values: dict[str, Any] = {}
    if inputs_file is not None:
        try:
            document = json.loads(inputs_file.read_text())
        except OSError as error:
            raise InvalidInput(
                reasons.INPUTS_FILE_UNREADABLE, f"cannot read {inputs_file}: {error.strerror}"
            ) from None
        except json.JSONDecodeError as error:
            raise InvalidInput(
                reasons.INPUTS_FILE_INVALID, f"{inputs_file} is not JSON ({error.msg})"
            ) from None
        except UnicodeDecodeError:
            raise InvalidInput(reasons.INPUTS_FILE_INVALID, f"{inputs_file} is not UTF-8 text") from None
        except RecursionError:
            raise InvalidInput(reasons.INPUTS_FILE_INVALID, f"{inputs_file} is nested too deeply") from None
        if isinstance(document, dict) and isinstance(document.get("inputs"), list):
            for item in document["inputs"]:
                if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "data" not in item:
                    raise InvalidInput(
                        reasons.INPUTS_FILE_INVALID, f"{inputs_file}: every input needs a name and data"
                    )
                values[item["name"]] = item["data"]
        elif isinstance(document, dict):
            values.update(document)
        else:
            raise InvalidInput(
                reasons.INPUTS_FILE_INVALID,
                f'{inputs_file} must hold {{"name": value}} or {{"inputs": [...]}}',
            )
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(reasons.INPUT_INVALID, f"--input takes NAME=VALUE, got {pair!r}")
        values[name.strip()] = _value(text)
    if not values:
        raise InvalidInput(
            reasons.NO_INPUTS, "give the model's inputs with --input NAME=VALUE or --inputs-file"
        )
    return values


def _flatten(value: Any) -> tuple[list[Any], list[int]]:
    """Flat row-major values and the shape of a nested list (a scalar is one value, shape [1])."""
    if not isinstance(value, list):
        return [value], []
    if not value:
        return [], [0]
    parts = [_flatten(item) for item in value]
    inner = parts[0][1]
    if any(shape != inner for _, shape in parts):
        raise ValueError("the nested lists are ragged")
    return [v for flat, _ in parts for v in flat], [len(value), *inner]


def _shape(name: str, declared: tuple[int, ...], nested: list[int], count: int) -> list[int]:
    if not nested:
        nested = [count]
    if len(nested) == len(declared) and all(d in (-1, n) for d, n in zip(declared, nested, strict=True)):
        return nested
    if not declared:
        return nested
    free = [i for i, d in enumerate(declared) if d == -1]
    fixed = math.prod(d for d in declared if d != -1)
    if len(free) <= 1 and fixed and count % fixed == 0:
        shape = list(declared)
        if free:
            shape[free[0]] = count // fixed
        if math.prod(shape) == count:
            return shape
    raise InvalidInput(
        reasons.INPUT_SHAPE_MISMATCH,
        f"input {shown(name)}: {count} value(s) do not fit the model's shape {list(declared)}",
    )


def _convert(name: str, datatype: str, value: Any) -> Any:
    if datatype == "BYTES":
        if isinstance(value, str):
            return value.encode()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(reasons.INPUT_TYPE_MISMATCH, f"input {shown(name)} is BYTES: give strings")
        return json.dumps(value).encode()
    if datatype == "BOOL":
        if isinstance(value, bool):
            return value
        if value in (0, 1, "true", "false"):
            return value in (1, "true")
        raise InvalidInput(reasons.INPUT_TYPE_MISMATCH, f"input {shown(name)} is BOOL: give true or false")
    if datatype in INTEGER_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(
                reasons.INPUT_TYPE_MISMATCH, f"input {shown(name)} is {datatype}: give integers"
            )
        low, high = _INTEGER_RANGES[datatype]
        if not low <= value <= high:
            raise InvalidInput(
                reasons.INPUT_TYPE_MISMATCH,
                f"input {shown(name)} is {datatype}: {value} is outside {low}..{high}",
            )
        return value
    if datatype in FLOAT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(
                reasons.INPUT_TYPE_MISMATCH, f"input {shown(name)} is {datatype}: give numbers"
            )
        return float(value)
    raise InvalidInput(
        reasons.INPUT_TYPE_UNSUPPORTED,
        f"input {shown(name)} has datatype {shown(datatype)}, which infer cannot send",
    )


def _names(names: Iterable[str]) -> str:
    """Names for a message, the model's (its metadata) or the caller's, each through ``shown``:
    a control character in one is its escape, and a newline in one does not end the line."""
    return ", ".join(shown(name) for name in names)


def typed_inputs(values: dict[str, Any], specs: Sequence[Spec]) -> list[Tensor]:
    """The inputs as tensors typed and shaped by the model's metadata."""
    known = {spec.name: spec for spec in specs}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidInput(
            reasons.INPUT_UNKNOWN,
            f"the model has no input {_names(unknown)} (its inputs: {_names(known) or 'none'})",
        )
    missing = [name for name in known if name not in values]
    if missing:
        raise InvalidInput(reasons.INPUT_MISSING, f"the model also needs input {_names(missing)}")
    tensors = []
    for name, spec in known.items():
        try:
            flat, nested = _flatten(values[name])
        except ValueError as error:
            raise InvalidInput(reasons.INPUT_SHAPE_MISMATCH, f"input {shown(name)}: {error}") from None
        shape = _shape(name, spec.shape, nested, len(flat))
        tensors.append(Tensor(name, spec.datatype, shape, [_convert(name, spec.datatype, v) for v in flat]))
    return tensors


def check_outputs(asked: Sequence[str], outputs: Sequence[str]) -> None:
    """The outputs asked for (``--outputs``) are the model's, as its inputs are: else the
    upstream refuses the call, in words it may not repeat."""
    unknown = sorted(set(asked) - set(outputs))
    if unknown:
        raise InvalidInput(
            reasons.OPTION_INVALID,
            f"the model has no output {_names(unknown)} (its outputs: {_names(outputs) or 'none'})",
        )


# -- transports -------------------------------------------------------------------------------
class GrpcTransport:
    def __init__(self, target: str, tls: Tls, token: str | None, timeout: float) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout
        if tls.enabled:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls.ca_file),
                private_key=_read(tls.key_file),
                certificate_chain=_read(tls.cert_file),
            )
            options = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)

    def where(self) -> str:
        return shown_url(self.target)

    def _metadata(self, headers: dict[str, str]) -> list[tuple[str, str]]:
        auth = [("authorization", f"Bearer {self.token}")] if self.token else []
        return [*auth, *headers.items()]

    def _failed(self, error: grpc.RpcError) -> LabelgateError:
        info = error_info(error)
        code = error.code().name
        if info is not None and info.reason == PENDING_REASON:
            return HeldForApproval(PENDING_REASON, error.details() or "", **dict(info.metadata))
        reason = info.reason if info is not None else f"RPC_{code}"
        if error.code() is grpc.StatusCode.INVALID_ARGUMENT:  # the caller's input: exit 2
            return InvalidInput(reason, f"{code}: {error.details()}")
        return CallFailed(reason, f"{code}: {error.details()}")

    def specs(self, model: str) -> ModelSpecs:
        try:
            reply = self.stub.ModelMetadata(
                pb.ModelMetadataRequest(name=model), metadata=self._metadata({}), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise self._failed(error) from None
        inputs = [Spec(t.name, t.datatype, tuple(t.shape)) for t in reply.inputs]
        return ModelSpecs(inputs, [t.name for t in reply.outputs])

    def infer(self, model: str, tensors: list[Tensor], outputs: list[str], headers: dict[str, str]) -> Answer:
        request = pb.ModelInferRequest(model_name=model)
        for tensor in tensors:
            request.inputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        encode_inputs(request, tensors, raw=True)
        for name in outputs:
            request.outputs.add(name=name)
        try:
            reply = self.stub.ModelInfer(request, metadata=self._metadata(headers), timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._failed(error) from None
        return Answer(reply.model_name, reply.model_version, decode_outputs(reply))

    def close(self) -> None:
        self.channel.close()


class RestTransport:
    """KServe v2 JSON over HTTP(S), with the standard library (no binary tensors)."""

    def __init__(self, url: str, tls: Tls, token: str | None, timeout: float) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise InvalidInput(
                reasons.REST_URL_INVALID, f"--rest: {shown_url(url)!r} is not a URL ({error})"
            ) from None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise InvalidInput(
                reasons.REST_URL_INVALID, f"--rest takes http(s)://HOST:PORT, got {shown_url(url)!r}"
            )
        if "?" in url or "#" in url:  # the model's path goes after it
            raise InvalidInput(
                reasons.REST_URL_INVALID, f"--rest takes no ?query or #fragment, got {shown_url(url)!r}"
            )
        self.base = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self.context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
                if tls.cert_file is not None:
                    self.context.load_cert_chain(
                        str(tls.cert_file), str(tls.key_file) if tls.key_file else None
                    )
            except ssl.SSLError as error:  # a file that is not PEM, a key that does not match
                raise InvalidInput(
                    reasons.TLS_FILE_UNREADABLE, f"TLS files unusable: {error.reason or error}"
                ) from None
            except OSError as error:
                raise InvalidInput(reasons.TLS_FILE_UNREADABLE, f"cannot read a TLS file: {error}") from None

    def where(self) -> str:
        """The URL as messages show it: a password in its userinfo as ``***``."""
        return shown_url(self.base)

    def _request(self, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> dict[str, Any]:
        all_headers = {"accept": "application/json", **headers}
        if self.token:
            all_headers["authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["content-type"] = "application/json"
        request = urllib.request.Request(f"{self.base}{path}", data=data, headers=all_headers)  # noqa: S310 - http(s) checked
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as answer:  # noqa: S310
                return _json_object(answer.read())
        except urllib.error.HTTPError as error:
            problem = _json_object(error.read(), quiet=True)
            reason = str(problem.get("reason") or f"HTTP_{error.code}")
            message = str(problem.get("error") or error.reason)
            if reason == PENDING_REASON:
                details = {k: str(v) for k, v in problem.items() if k in ("approval_id", "link")}
                raise HeldForApproval(PENDING_REASON, message, **details) from None
            failure = InvalidInput if error.code == 400 else CallFailed  # the caller's input: exit 2
            raise failure(reason, f"HTTP {error.code}: {message}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            why = getattr(error, "reason", error)
            raise CallFailed(
                reasons.SERVER_UNREACHABLE, f"cannot reach {self.where()}: {shown_url(self.base, str(why))}"
            ) from None
        except http.client.HTTPException as error:  # e.g. a gRPC port: no HTTP/1 status line
            raise CallFailed(
                reasons.ANSWER_INVALID, f"{self.where()} did not answer in HTTP/1.1 ({type(error).__name__})"
            ) from None

    def _not_the_protocols(self, what: str) -> CallFailed:
        """A JSON object without the protocol's keys (KServe v2), in one line, not a KeyError."""
        return CallFailed(reasons.ANSWER_INVALID, f"{self.where()} did not answer with {what}")

    def specs(self, model: str) -> ModelSpecs:
        found = self._request(f"/v2/models/{quote(model, safe='')}", None, {})
        invalid = self._not_the_protocols(
            "the model's metadata (every input needs a name, a datatype and a shape; every output a name)"
        )
        inputs = []
        for item in _listed(found, "inputs", invalid):
            name, datatype, shape = _tensor_keys(item, invalid)
            inputs.append(Spec(name, datatype, tuple(shape)))
        outputs = []
        for item in _listed(found, "outputs", invalid):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise invalid
            outputs.append(item["name"])
        return ModelSpecs(inputs, outputs)

    def infer(self, model: str, tensors: list[Tensor], outputs: list[str], headers: dict[str, str]) -> Answer:
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": t.shape,
                    "data": [v.decode() if isinstance(v, bytes) else v for v in t.values],
                }
                for t in tensors
            ]
        }
        if outputs:
            body["outputs"] = [{"name": name} for name in outputs]
        found = self._request(f"/v2/models/{quote(model, safe='')}/infer", body, headers)
        invalid = self._not_the_protocols(
            "an inference reply (every output needs a name, a datatype, a shape and its data as a list)"
        )
        tensors_out = []
        for item in _listed(found, "outputs", invalid):
            name, datatype, shape = _tensor_keys(item, invalid)
            data = item.get("data", [])  # none: the outputs came as binary data, which infer does not ask for
            if not isinstance(data, list):
                raise invalid
            tensors_out.append(Tensor(name, datatype, shape, data))
        return Answer(str(found.get("model_name", model)), str(found.get("model_version", "")), tensors_out)

    def close(self) -> None:
        pass


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise InvalidInput(reasons.TLS_FILE_UNREADABLE, f"cannot read {path}: {error.strerror}") from None


def _listed(found: dict[str, Any], key: str, invalid: CallFailed) -> list[Any]:
    """``found[key]`` as a list: none (absent or null) is an empty one, anything else is ``invalid``."""
    items = found.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise invalid
    return items


def _tensor_keys(item: object, invalid: CallFailed) -> tuple[str, str, list[int]]:
    """A KServe v2 tensor's name, datatype and shape, each of the protocol's type, else ``invalid``."""
    if not isinstance(item, dict):
        raise invalid
    name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
    if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
        raise invalid
    if not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
        raise invalid
    return name, datatype, shape


def _json_object(raw: bytes, *, quiet: bool = False) -> dict[str, Any]:
    try:
        found = json.loads(raw)
    except (ValueError, RecursionError):
        found = None
    if isinstance(found, dict):
        return found
    if quiet:
        return {}
    raise CallFailed(reasons.ANSWER_INVALID, "the server's answer is not a JSON object")


# -- approvals --------------------------------------------------------------------------------
def _approval_api(link: str, approval_id: str) -> str | None:
    """The approvals API URL of a request, from its inbox link (``<base>/inbox/<id>``); none
    for an id not of the form approvals have (the gateway's answer puts it in a URL path)."""
    suffix = f"/inbox/{approval_id}"
    if not APPROVAL_ID.fullmatch(approval_id):
        return None
    if not link.endswith(suffix) or not link.startswith(("http://", "https://")):
        return None
    return f"{link.removesuffix(suffix)}/api/v1/approvals/{quote(approval_id, safe='')}"


def _fetch_approval(url: str, token: str | None, timeout: float) -> dict[str, Any] | None:
    headers = {"accept": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
    try:
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 - from the gateway's own link
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            return _json_object(answer.read(), quiet=True) or None
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, http.client.HTTPException):
        return None


def _duration(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 60} min {whole % 60:02d} s" if whole >= 60 else f"{whole} s"


def _left(expires_at: str) -> str:
    from datetime import datetime

    try:
        return _duration(datetime.fromisoformat(expires_at).timestamp() - time.time())
    except ValueError:
        return "?"


def describe(approval_id: str, request: dict[str, Any] | None, waited_left: float) -> str:
    """The spinner's line: the id, who must approve, when the request expires, and how long
    ``infer`` waits yet (``--wait``): two clocks, each named, since either may end first."""
    waiting = f"waiting up to {_duration(waited_left)} more (--wait)"
    if not request:
        return f"held for approval {approval_id} ({waiting})"
    groups = ", ".join(str(group) for group in request.get("approver_groups", [])) or "?"
    return (
        f"held for approval {approval_id}: {request.get('approvals', 0)} of "
        f"{request.get('min_approvals', '?')} approval(s) from {groups}; the request expires in "
        f"{_left(str(request.get('expires_at', '')))}, {waiting}"
    )


def _line(text: str) -> Text:
    """``text`` quoting what a server sent, for rich: not markup, and no terminal controls."""
    return Text(shown(text))


def not_waited_for(held: HeldForApproval) -> HeldForApproval:
    """``--wait 0``: the call is held and ``infer`` stops. One line with the approval's id and
    how to continue with this command's own flag; the gateway's text names the header a raw
    client would set instead. Still exit 1 (``APPROVAL_PENDING``): nothing was returned."""
    approval_id = held.details.get("approval_id", "")
    if not APPROVAL_ID.fullmatch(approval_id):  # not an answer of ours: its own words, as sent
        return held
    link = held.details.get("link", "")
    where = f" (approvers: {link})" if _approval_api(link, approval_id) else ""  # the inbox's form only
    return HeldForApproval(
        PENDING_REASON,
        f"held for approval {approval_id}, not waited for (--wait 0): once it is granted, run the "
        f"same command with --approval-id {approval_id}{where}",
        **held.details,
    )


def wait_for_approval(
    held: HeldForApproval,
    token: str | None,
    wait_seconds: float,
    console: Console,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Show a spinner until approvers decide (the approval's id on a grant) or ``wait_seconds`` pass."""
    approval_id = held.details.get("approval_id", "")
    api = _approval_api(held.details.get("link", ""), approval_id)
    until = clock() + wait_seconds
    first = _fetch_approval(api, token, 5.0) if api else None
    # One plain line first: a terminal that is not interactive (a log, CI) shows no spinner.
    console.print(_line(describe(approval_id, first, wait_seconds)))
    with console.status(_line(describe(approval_id, first, wait_seconds))) as status:
        while True:
            request = _fetch_approval(api, token, 5.0) if api else None
            state = (request or {}).get("state", "pending")
            if state == "granted":
                return approval_id
            if state != "pending":
                raise PermissionDenied(
                    f"APPROVAL_{str(state).upper()}",
                    f"approval {approval_id} {state}: {(request or {}).get('resolution', '')}",
                )
            left = until - clock()
            if left <= 0:
                raise CallFailed(
                    reasons.APPROVAL_STILL_PENDING,
                    f"approval {approval_id} is still pending after {wait_seconds:g} s; "
                    f"run again with --approval-id {approval_id} once it is granted "
                    f"({held.details.get('link', '')})",
                )
            status.update(_line(describe(approval_id, request, left)))
            time.sleep(min(POLL_SECONDS, left))


# -- the command ------------------------------------------------------------------------------
def _show(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _json_value(value: Any) -> Any:
    """``value`` as strict JSON holds it: BYTES as text, NaN and the infinities as the strings
    ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON has no numbers for them; a released reply
    is still shown), lists and objects (a REST server's data may nest) item by item."""
    if isinstance(value, bytes):
        return _show(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    return value


def as_json(answer: Answer) -> dict[str, Any]:
    """KServe v2's response JSON, whichever transport was used (``_json_value``: strict JSON)."""
    return {
        "model_name": answer.model_name,
        "model_version": answer.model_version,
        "outputs": [
            {
                "name": t.name,
                "datatype": t.datatype,
                "shape": list(t.shape),
                "data": [_json_value(v) for v in t.values],
            }
            for t in answer.outputs
        ],
    }


def result_table(answer: Answer, model: str, where: str) -> Table:
    """The reply as a table. Its title, headers and cells are the server's text (the model's
    name, output names, BYTES values): each is ``Text`` (markup would turn ``[link=...]`` into
    a terminal link, and ``[/]`` into an error after the call was released) of ``shown`` text
    (an escape in a value would write the clipboard, set the title, reorder the line)."""
    table = Table(title=_line(f"{answer.model_name or model} through {where}"))
    for tensor in answer.outputs:
        table.add_column(_line(tensor.name), overflow="fold")
    rows = max((len(t.values) for t in answer.outputs), default=0)
    for row in range(rows):
        table.add_row(*(_line(_show(t.values[row]) if row < len(t.values) else "") for t in answer.outputs))
    return table


@dataclass(frozen=True)
class InferRequest:
    model: str
    inputs: dict[str, Any]
    outputs: list[str]
    target: str
    rest: str | None = None
    token: str | None = None
    tls: Tls = Tls()
    timeout: float = 30.0
    wait_seconds: float = 300.0
    approval_id: str | None = None
    justification: str | None = None


def target_host_port(target: str) -> str:
    """``--target`` as grpc takes it, checked: grpc itself wraps a port past 65535 (83537 is
    18001) and calls whatever listens there."""
    if target.startswith(("unix:", "unix-abstract:")):  # a socket path, no port
        return target
    host, sep, port = target.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise InvalidInput(reasons.OPTION_INVALID, f"--target takes HOST:PORT (port 1-65535), got {target!r}")
    return target


def check_token(token: str | None) -> None:
    """A token travels in one header, as a bearer token is (``untrusted_text.bearer_token_problem``)."""
    problem = None if token is None else bearer_token_problem(token)
    if problem is not None:
        raise InvalidInput(reasons.OPTION_INVALID, problem)


def check_header_options(ask: InferRequest) -> None:
    """``--approval-id`` and ``--justification`` travel in headers too: an id of the form
    approvals have, a justification of printable ASCII (gRPC metadata carries no other)."""
    if ask.approval_id is not None and not APPROVAL_ID.fullmatch(ask.approval_id):
        raise InvalidInput(
            approvals_reasons.APPROVAL_ID_INVALID,
            f"--approval-id {ask.approval_id!r} is not an approval id (apr- and 16 hex digits)",
        )
    if ask.justification is not None and not all(" " <= char <= "~" for char in ask.justification):
        raise InvalidInput(
            reasons.OPTION_INVALID,
            "--justification travels in a header: printable ASCII only (no accents, emoji or newlines)",
        )


def run_infer(ask: InferRequest, console: Console) -> Answer:
    transport: GrpcTransport | RestTransport
    check_token(ask.token)
    check_header_options(ask)
    if ask.rest is not None:
        transport = RestTransport(ask.rest, ask.tls, ask.token, ask.timeout)
    else:
        transport = GrpcTransport(target_host_port(ask.target), ask.tls, ask.token, ask.timeout)
    try:
        specs = transport.specs(ask.model)
        tensors = typed_inputs(ask.inputs, specs.inputs)
        check_outputs(ask.outputs, specs.outputs)
        headers = {"x-labelgate-justification": ask.justification} if ask.justification else {}
        if ask.approval_id is not None:
            return transport.infer(
                ask.model, tensors, ask.outputs, {**headers, APPROVAL_ID_HEADER: ask.approval_id}
            )
        try:
            return transport.infer(ask.model, tensors, ask.outputs, {**headers, MODE_HEADER: "async"})
        except HeldForApproval as held:
            if ask.wait_seconds <= 0:
                raise not_waited_for(held) from None
            granted = wait_for_approval(held, ask.token, ask.wait_seconds, console)
            console.print(f"approval {granted} granted: calling again with it", style="green")
            return transport.infer(ask.model, tensors, ask.outputs, {**headers, APPROVAL_ID_HEADER: granted})
    finally:
        transport.close()


def infer_command(ask: InferRequest, json_output: bool) -> None:
    errors = Console(stderr=True)
    answer = run_infer(ask, errors)
    if json_output:
        # allow_nan=False: a non-finite float left unconverted fails here, never prints NaN.
        print(json.dumps(as_json(answer), indent=2, allow_nan=False))
        return
    Console().print(result_table(answer, ask.model, shown_url(ask.rest or ask.target)))
