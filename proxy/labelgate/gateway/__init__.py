"""The gRPC gateway: the pipeline (pipeline.py) and the edges around it."""
