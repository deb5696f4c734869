"""The classify stage as the gateway runs it: the catalog follows its file without restart.

The catalog file is re-read when its modification time changes (checked at most once a
second, off the hot path by a background task); a catalog edit that does not validate is
logged and the last good one stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelgate.classify import Catalog, Classification, Classifier, CustomPattern, DetectorSet, Field
from labelgate.classify import backend_labels as read_backend_labels
from labelgate.classify.detectors import BUILTIN_LABELS
from labelgate.config import ClassificationSettings
from labelgate.errors import LabelgateError
from labelgate.logs import get_logger
from labelgate.oip.tensors import Tensor

log = get_logger(__name__)
RELOAD_INTERVAL_SECONDS = 1.0


def build_detectors(settings: ClassificationSettings) -> DetectorSet:
    config = settings.detectors
    builtins = {
        name: config.labels.get(name, label)
        for name, label in BUILTIN_LABELS.items()
        if name not in config.disabled
    }
    custom = [CustomPattern(c.name, c.pattern, c.label) for c in config.custom]
    return DetectorSet(builtins, custom)


class ClassifierStage:
    def __init__(self, catalog_file: Path, detectors: DetectorSet) -> None:
        self.catalog_file = catalog_file
        self._mtime = catalog_file.stat().st_mtime_ns
        self.classifier = Classifier(self._load(), detectors)
        self._watcher: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings: ClassificationSettings) -> ClassifierStage:
        if not settings.catalog_file.is_file():
            from labelgate.errors import ConfigError

            raise ConfigError(
                "CATALOG_MISSING", f"classification.catalog_file {settings.catalog_file} does not exist"
            )
        return cls(settings.catalog_file, build_detectors(settings))

    def _load(self) -> Catalog:
        return Catalog.from_file(self.catalog_file)

    def reload_if_changed(self) -> bool:
        mtime = self.catalog_file.stat().st_mtime_ns
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            catalog = self._load()
        except LabelgateError as error:
            log.error(
                "catalog reload refused; keeping the previous one", reason=error.reason, detail=error.message
            )
            return False
        self.classifier = Classifier(catalog, self.classifier.detectors)
        log.info("catalog reloaded", file=str(self.catalog_file))
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_SECONDS)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.reload_if_changed)

    def start(self) -> None:
        self._watcher = asyncio.create_task(self.watch())

    def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    # -- the stage interface used by the pipeline ----------------------------------
    def expected_fields(self, model: str, requested_outputs: Sequence[str]) -> list[Field]:
        return self.classifier.expected_fields(model, requested_outputs)

    def classify_outputs(self, model: str, response: Any, tensors: Sequence[Tensor]) -> Classification:
        return self.classifier.classify_response(model, tensors, backend=read_backend_labels(response))

    def classify_message(self, message: Any) -> Classification:
        return self.classifier.classify_message(message)
