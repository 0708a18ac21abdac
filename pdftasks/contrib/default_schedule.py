"""The default Celery Beat schedule of pdftasks (shipped in the package).

Used when neither PDFTASKS_SCHEDULE_FILE nor ./beat_schedule.py exists. To customise it,
copy this file (`pdftasks schedule` prints its path) to ./beat_schedule.py in the directory
beat runs in, or anywhere with PDFTASKS_SCHEDULE_FILE pointing at it, and edit ENTRIES.
The repository's beat_schedule.py is the same schedule.

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
