"""A real OTLP trace receiver for the tracing tests, run as its own process.

    python -m tests.gateway.otlp_receiver PORT OUT_FILE [http|grpc]

http (default) accepts ``POST /v1/traces`` (``application/x-protobuf``); grpc serves
``opentelemetry.proto.collector.trace.v1.TraceService/Export``. Each export is decoded with
opentelemetry-proto's generated ``ExportTraceServiceRequest`` and one JSON line per span is
appended to OUT_FILE: service name, span name, ids (hex), parent id, trace state, kind and
attributes.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def spans_of(export: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    found = []
    for resource_spans in export.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(
                    {
                        "service": resource.get("service.name"),
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "trace_state": span.trace_state,
                        "kind": span.kind,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    }
                )
    return found


def serve(port: int, out: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            with out.open("a") as sink:
                for span in spans_of(export):
                    sink.write(json.dumps(span) + "\n")
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            return

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def serve_grpc(port: int, out: Path) -> None:
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
            with out.open("a") as sink:
                for span in spans_of(request):
                    sink.write(json.dumps(span) + "\n")
            return ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    mode = sys.argv[3] if len(sys.argv) > 3 else "http"
    (serve_grpc if mode == "grpc" else serve)(int(sys.argv[1]), Path(sys.argv[2]))
