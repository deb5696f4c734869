"""The demo backend: synthetic customers (data), its models, and the gRPC server (backend)."""
