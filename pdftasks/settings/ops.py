"""Operations settings: logs, worker heartbeat, Flower, Prometheus."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from pdftasks.settings.base import TopicModel, shown


class OpsSettings(TopicModel):
    """Log format, the worker heartbeat file, Flower's login and the metrics port."""

    table_title = "Operations: logs, heartbeat, Flower, Prometheus"

    log_format: str = Field(
        "text", pattern="^(text|json)$",
        description="`text`, or `json`: one JSON object per log line, with job id, priority, "
                    "template, duration and outcome for each finished attempt.")
    heartbeat_file: Path | None = Field(
        None, json_schema_extra=shown("unset (`/tmp/pdftasks/heartbeat` in the image)"),
        description="File a worker rewrites from its event loop; container probes check "
                    "its age.")
    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="Seconds between heartbeat writes.")
    flower_basic_auth: SecretStr | None = Field(
        None,
        description="`user:password` (comma-separated pairs) for `pdftasks flower`, which "
                    "does not start without it unless `--insecure-no-auth`.")
    task_events: str = Field(
        "on-demand", pattern="^(on-demand|always)$",
        description="Celery task events, which monitors such as Flower show jobs from. "
                    "`on-demand`: a worker sends them while a monitor asks for them (Flower "
                    "asks every 5 s; they stop 15 s after the last request) and for its first "
                    "15 s, so a running Flower sees every job; no cost per job otherwise. "
                    "A submitting process sends task-sent events while anything listens to "
                    "the event stream on Redis (it asks Redis at most once a second). "
                    "`always`: all the time, for monitors that never ask (`celery events`).")
    metrics_port: int = Field(
        9808, ge=1, le=65535, description="TCP port of `pdftasks metrics`.")
