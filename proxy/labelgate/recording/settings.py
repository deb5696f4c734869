"""The ``recording`` section of the gateway config.

    recording:
      dir: /var/lib/labelgate/sessions     # files (one JSONL file per session), or
      postgres_dsn: postgresql://...       # PostgreSQL; not both
      retention_days: 30
      max_session_bytes: 16777216
      record_input_values: false
      queue_size: 10000                    # entries waiting to be written, at most; and
      max_queue_bytes: 268435456           # their bytes (256 MiB): past either, calls are refused
      encryption_key_file: /run/secrets/recording.key   # AES-256-GCM at rest (sealing.py)
      decryption_key_files: [/run/secrets/recording-old.key]  # older keys, while rotating

Neither ``dir`` nor ``postgres_dsn``: sessions are not recorded. No ``encryption_key_file``:
entries are stored in clear (the gateway warns).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from labelgate.config_paths import ConfigPath


class RecordingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: ConfigPath | None = None
    postgres_dsn: SecretStr | None = None
    # Sessions with no call for this long are deleted by the sweeper.
    retention_days: float = Field(30.0, gt=0, le=3650)
    # Past this, one truncation marker is written and the session's later calls are refused
    # (RECORDING_SESSION_FULL); the calls already released are recorded after the marker.
    max_session_bytes: int = Field(16 << 20, ge=4096)
    # Off: only input names, datatypes and shapes are kept, never the values a caller sent.
    record_input_values: bool = False
    # Entries waiting to be written (or retried); when full, new calls are refused, never released unrecorded.
    queue_size: int = Field(10_000, ge=1)
    # The same queue in bytes (replies it holds, and requests with record_input_values): past it,
    # new calls are refused too. Counted as each entry's base64 messages plus a constant.
    max_queue_bytes: int = Field(256 << 20, ge=1 << 20)
    sweep_interval_seconds: float = Field(3600.0, gt=0)
    # AES-256-GCM at rest: 32 random bytes as base64 or hex (`labelgate sessions generate-key`).
    encryption_key_file: ConfigPath | None = None
    # Keys of earlier entries (rotation): read, never written with.
    decryption_key_files: list[ConfigPath] = []

    @property
    def enabled(self) -> bool:
        return self.dir is not None or self.postgres_dsn is not None

    @model_validator(mode="after")
    def _one_store(self) -> RecordingSettings:
        if self.dir is not None and self.postgres_dsn is not None:
            raise ValueError("recording.dir and recording.postgres_dsn are both set: choose one store")
        return self
