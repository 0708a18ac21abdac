"""Beat settings: scheduled reports and cleanup (Celery Beat, :mod:`pdftasks.contrib.beat`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from pdftasks.settings.base import OtherVariable, TopicModel, shown


class BeatSettings(TopicModel):
    """The beat schedule: its file, time zone, report data, missed runs and cleanup age."""

    table_title = "Scheduled reports and cleanup (Celery Beat)"
    other_variables = (OtherVariable(
        "SCHEDULE_<NAME>", after="schedule_file", default="the entry's `at`",
        description="Re-time (`08:30`) or disable (`off`) one beat entry; `<NAME>` is the "
                    "entry's name in capitals, dashes as underscores (read by "
                    "`pdftasks.contrib.beat`)."),)

    timezone: str = Field(
        "UTC", description="IANA time zone of the schedule's wall-clock times.")
    schedule_file: Path | None = Field(
        None, json_schema_extra=shown(
            "`./beat_schedule.py`, else the packaged `pdftasks.contrib.default_schedule`"),
        description="The beat schedule file.")
    report_source: str = Field(
        "pdftasks.contrib.reports:sample_source",
        description="`module:object` giving the data of scheduled reports.")
    beat_grace_s: int = Field(
        3600, ge=0,
        description="Seconds: a missed entry still runs when beat returns within this "
                    "(Celery's `beat_cron_starting_deadline`).")
    cleanup_days: float = Field(
        30, gt=0,
        description="Age in days of PDFs, finished job records and results that the cleanup "
                    "entry deletes.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from exc
        return value
