"""The classify stage (pure): catalog, content detectors, and the classifiers for inference
outputs (``classifier``) and generic protobuf messages (``messages``)."""

from labelgate.classify.catalog import Catalog, CatalogEntry
from labelgate.classify.classifier import Classifier, backend_labels, classify_outputs
from labelgate.classify.detectors import CustomPattern, Detection, DetectorSet
from labelgate.classify.fields import Classification, Field, LeafSpans, to_policy_fields, union_labels
from labelgate.classify.messages import classify_message

__all__ = [
    "Catalog",
    "CatalogEntry",
    "Classification",
    "Classifier",
    "CustomPattern",
    "Detection",
    "DetectorSet",
    "Field",
    "LeafSpans",
    "backend_labels",
    "classify_message",
    "classify_outputs",
    "to_policy_fields",
    "union_labels",
]
