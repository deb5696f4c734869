"""The classify stage as the gateway runs it: the catalog follows its source without restart.

Either a file, re-read when its modification time changes (checked at most once a second,
off the hot path by a background task; an edit that does not validate is logged and the last
good one stays in force), or the policy bundle the embedded engine follows: ``bundle_hook``
takes ``data.labelgate.catalog`` from every new bundle revision, and a bundle whose catalog
does not validate is refused as a whole, so policy and catalog never drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labelgate.classify import (
    Catalog,
    Classification,
    Classifier,
    CustomPattern,
    DetectorSet,
    Field,
    classify_message,
)
from labelgate.classify import backend_labels as read_backend_labels
from labelgate.classify.classifier import names_detected
from labelgate.classify.detectors import BUILTIN_LABELS
from labelgate.config import ClassificationSettings
from labelgate.errors import ConfigError, LabelgateError
from labelgate.gateway import reasons
from labelgate.logs import get_logger
from labelgate.oip.tensor import Tensor
from labelgate.policy.source import PolicySource

log = get_logger(__name__)
RELOAD_INTERVAL_SECONDS = 1.0
# (model, requested outputs) whose request-phase fields are remembered per catalog.
MAX_EXPECTED_MEMO = 1024
# Where the catalog lives in the policy data (rego/labelgate/catalog/data.json).
CATALOG_DATA_PATH = ("labelgate", "catalog")


def build_detectors(settings: ClassificationSettings) -> DetectorSet:
    config = settings.detectors
    builtins = {
        name: config.labels.get(name, label)
        for name, label in BUILTIN_LABELS.items()
        if name not in config.disabled
    }
    custom = [CustomPattern(c.name, c.pattern, c.label) for c in config.custom]
    return DetectorSet(builtins, custom)


def bundle_catalog(source: PolicySource) -> Catalog:
    """The catalog inside a policy revision (``data.labelgate.catalog``); ConfigError if absent or bad."""
    node: Any = source.data
    for key in CATALOG_DATA_PATH:
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(
                reasons.BUNDLE_CATALOG_MISSING,
                f"{source.origin}: no data.{'.'.join(CATALOG_DATA_PATH)} in the bundle",
            )
        node = node[key]
    return Catalog.from_data(node, source=f"{source.origin} revision {source.revision[:12]}")


def _stamp(path: Path) -> tuple[int, ...]:
    """What tells a catalog file changed. Not the modification time alone: a file caught
    half-written (its load refused) and completed within the same tick of a coarse clock, or
    replaced with its old time kept (``cp -p``, ``rsync -a``), would stay unread for good; its
    size, its change time (set by any write, and by setting the modification time) and its
    inode (a new file renamed over it) tell those apart."""
    info = path.stat()
    return (info.st_mtime_ns, info.st_ctime_ns, info.st_size, info.st_ino)


class ClassifierStage:
    """The catalog comes from ``catalog_file``, or (None) from the bundle via ``bundle_hook``."""

    def __init__(
        self, catalog_file: Path | None, detectors: DetectorSet, key_secret: bytes | None = None
    ) -> None:
        # The secret of JSON key placeholders (``<key:xxxxxxxx>``) outlives catalog reloads, so
        # a path means the same key before and after one. None: random, once per process.
        self.key_secret = key_secret
        self.catalog_file = catalog_file
        if catalog_file is None:
            # Until the first bundle: nothing catalogued, so every field gets the default label
            # (internal, never public). The gateway does not serve before that bundle anyway.
            self._seen: tuple[int, ...] = ()
            catalog = Catalog.from_data({})
        else:
            self._seen = _stamp(catalog_file)
            catalog = self._load()
        self.classifier = Classifier(catalog, detectors, key_secret)
        self.revision: str | None = None  # the bundle revision the catalog came from
        # expected_fields' memo, and the classifier (catalog) it was worked out with.
        self._expected_by: Classifier | None = None
        self._expected: dict[tuple[str, tuple[str, ...]], list[Field]] = {}
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(
        cls, settings: ClassificationSettings, *, from_bundle: bool = False, key_secret: bytes | None = None
    ) -> ClassifierStage:
        """``key_secret``: the masking hash key when one is configured (placeholders then join
        across gateways and restarts, like hashed values), else None."""
        if from_bundle:
            return cls(None, build_detectors(settings), key_secret)
        if not settings.catalog_file.is_file():
            raise ConfigError(
                reasons.CATALOG_MISSING, f"classification.catalog_file {settings.catalog_file} does not exist"
            )
        return cls(settings.catalog_file, build_detectors(settings), key_secret)

    def _load(self) -> Catalog:
        assert self.catalog_file is not None
        return Catalog.from_file(self.catalog_file)

    def bundle_hook(self, source: PolicySource) -> Callable[[], None]:
        """An ``EmbeddedEngine`` revision hook: validate the bundle's catalog (raising refuses the
        whole revision), then take it in right after the policy swap."""
        catalog = bundle_catalog(source)

        def commit() -> None:
            self.use_catalog(catalog, source.revision)

        return commit

    def use_catalog(self, catalog: Catalog, revision: str | None = None) -> None:
        self.revision = revision
        if catalog.same_as(self.classifier.catalog):
            # A revision that changed the policy alone: the classifier stays, and with it what
            # calls held for approval were classified with (``DecideStage._hold``).
            log.info("catalog unchanged in bundle", revision=revision)
            return
        # One assignment: atomic.
        self.classifier = Classifier(catalog, self.classifier.detectors, self.key_secret)
        log.info("catalog loaded from bundle", revision=revision)

    def reload_if_changed(self) -> bool:
        if self.catalog_file is None:
            return False
        seen = _stamp(self.catalog_file)
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            catalog = self._load()
        except LabelgateError as error:
            log.error(
                "catalog reload refused; keeping the previous one", reason=error.reason, detail=error.message
            )
            return False
        if catalog.same_as(self.classifier.catalog):
            return False  # rewritten with the same entries (touched, copied): nothing changed
        self.classifier = Classifier(catalog, self.classifier.detectors, self.key_secret)
        log.info("catalog reloaded", file=str(self.catalog_file))
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_SECONDS)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.reload_if_changed)

    def start(self) -> None:
        if self.catalog_file is not None:  # a bundle's catalog arrives through bundle_hook
            self._watcher = asyncio.create_task(self.watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    # -- the stage interface used by the pipeline ----------------------------------
    def expected_fields(self, model: str, requested_outputs: Sequence[str]) -> list[Field]:
        """The catalog's request-phase fields, worked out once per model and requested outputs
        for each catalog in force (a reload or a new bundle makes a new ``Classifier``, and so
        a new memo). ``Field`` values are never changed after they are made: shared safely."""
        classifier = self.classifier
        if self._expected_by is not classifier:
            self._expected_by, self._expected = classifier, {}
        key = (model, tuple(requested_outputs))
        found = self._expected.get(key)
        if found is None:
            found = classifier.expected_fields(model, requested_outputs)
            if len(self._expected) >= MAX_EXPECTED_MEMO:  # model names come from callers
                self._expected.clear()
            self._expected[key] = found
        return list(found)

    def names_holding_values(self, names: Sequence[str]) -> set[str]:
        """The names among ``names`` (an upstream's, such as the models its index lists) that
        hold what a detector finds, as written, folded or unescaped (``names_detected``)."""
        return {names[index] for index in names_detected(names, self.classifier.detectors)}

    def classify_outputs(self, model: str, response: Any, tensors: Sequence[Tensor]) -> Classification:
        return self.classifier.classify_response(model, tensors, backend=read_backend_labels(response))

    def classify_message(self, message: Any, max_values: int) -> Classification:
        """A typed reply, refused past ``max_values`` values (``limits.max_message_values``):
        its walk runs on the event loop, a step per value."""
        classifier = self.classifier  # one catalog snapshot
        return classify_message(message, classifier.catalog, classifier.detectors, max_values=max_values)
