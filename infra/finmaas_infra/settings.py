"""Per-environment settings, read from CDK context (``cdk deploy -c stage=prod``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STAGES = ("dev", "prod")
ARCHITECTURES = ("arm64", "x86_64")


@dataclass(frozen=True, kw_only=True)
class StageSettings:
    stage: str = "dev"
    architecture: str = "arm64"
    # One full vCPU (Lambda allots CPU in proportion to memory, one vCPU at 1,769 MB): the
    # text model's encoder is CPU-bound, so a smaller function is slower at the same cost
    # per token. Memory itself needs far less: about 300 MB with the text model loaded,
    # also after the largest text request the card allows (`make bench-text`, T3); about
    # 100 MB after a tabular model's largest request (T3 reports both).
    memory_mb: int = 1769
    # Lambda SnapStart on published versions: a restored snapshot, with the models open,
    # instead of an import and a model load on each cold start. It allows at most 512 MB
    # of /tmp (the bundled models take ~25 MB of it) and no provisioned concurrency.
    snap_start: bool = True
    ephemeral_storage_mb: int = 512
    timeout_seconds: int = 15
    reserved_concurrency: int | None = None
    provisioned_concurrency: int = 0
    log_retention_days: int = 30
    stage_rate_limit: int = 1000
    stage_burst_limit: int = 2000
    alarm_p99_latency_ms: int = 1000
    alarm_5xx_rate_percent: float = 1.0
    usage_retention_days: int = 400
    bundling: str = "pip"  # "pip": real Docker-free bundle; "skip": source only (tests)
    # Batch jobs: rows per chunk (one chunk-function invocation, one usage record) and
    # chunks scored at once by the Distributed Map (its child executions)
    batch_chunk_rows: int = 1000
    batch_max_concurrency: int = 40

    @property
    def is_prod(self) -> bool:
        return self.stage == "prod"

    @property
    def vcpus(self) -> int:
        """Lambda allots one vCPU per 1,769 MB; onnxruntime gets that many threads."""
        return max(1, min(6, -(-self.memory_mb // 1769)))

    @classmethod
    def from_context(cls, get: Any) -> StageSettings:
        """``get`` is ``node.try_get_context``. Every value may come as a string (-c k=v)."""
        defaults = cls()
        values: dict[str, Any] = {}
        for name, default in defaults.__dict__.items():
            raw = get(name)
            if raw is None:
                continue
            if name == "reserved_concurrency":
                values[name] = int(raw)
            elif isinstance(default, bool):
                values[name] = str(raw).lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                values[name] = int(raw)
            elif isinstance(default, float):
                values[name] = float(raw)
            else:
                values[name] = str(raw)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}")
        if not 128 <= self.memory_mb <= 10240:
            raise ValueError("memory_mb must be 128..10240")
        if not 512 <= self.ephemeral_storage_mb <= 10240:
            raise ValueError("ephemeral_storage_mb must be 512..10240")
        if not 1 <= self.timeout_seconds <= 29:
            raise ValueError("timeout_seconds must be 1..29 (API Gateway's limit)")
        if self.snap_start and self.provisioned_concurrency:
            raise ValueError("SnapStart and provisioned concurrency do not combine: set "
                             "snap_start=false to keep environments provisioned")
        if self.snap_start and self.ephemeral_storage_mb > 512:
            raise ValueError("SnapStart allows at most 512 MB of ephemeral storage: set "
                             "snap_start=false for more")
        if not 1 <= self.batch_chunk_rows <= 10_000:
            raise ValueError("batch_chunk_rows must be 1..10000")
        if not 1 <= self.batch_max_concurrency <= 10_000:
            raise ValueError("batch_max_concurrency must be 1..10000 (Distributed Map's)")
        if self.bundling not in ("pip", "skip"):
            raise ValueError("bundling must be 'pip' or 'skip'")
