"""The Celery Beat schedule of pdftasks: an example to copy and edit.

Beat reads PDFTASKS_SCHEDULE_FILE, else ./beat_schedule.py (the directory it runs in), else
the packaged default pdftasks/contrib/default_schedule.py (the same entries as this file).

Times are wall-clock times in PDFTASKS_TIMEZONE (default UTC) and stay right across
daylight-saving changes. Re-time or switch off an entry without editing this file:
PDFTASKS_SCHEDULE_DAILY_REPORT=08:30, PDFTASKS_SCHEDULE_CLEANUP_OLD_PDFS=off.
Formats: "HH:MM" (daily), "mon HH:MM" (weekly), "1 HH:MM" (monthly, day 1-28),
"every Ns" (aligned interval, for tests and demos). `pdftasks schedule` shows the next runs.
"""

from pdftasks.contrib.beat import Entry

ENTRIES = [
    Entry("daily-report",     at="09:00",     kind="daily_report",     priority="high"),
    Entry("weekly-summary",   at="mon 10:00", kind="weekly_summary",   priority="high"),
    Entry("monthly-invoices", at="1 00:01",   kind="monthly_invoices", priority="normal"),
    Entry("cleanup-old-pdfs", at="02:00",     kind="cleanup",          priority="low"),
]
