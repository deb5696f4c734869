"""labelgate: a data-classification gateway for inference services."""

__version__ = "0.1.0"
