"""The sample report source (``PDFTASKS_REPORT_SOURCE=pdftasks.contrib.reports:sample_source``).

A report source is any object with the three methods of ``pdftasks.contrib.beat.ReportSource``;
point ``PDFTASKS_REPORT_SOURCE`` at your own (``myapp.reports:source``) to report real data.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from pdftasks.samples import sample_invoice, sample_report


class SampleSource:
    """Made-up but plausible data, deterministic for a given date."""

    customers = ("acme", "globex", "initech")

    def daily_report(self, day: dt.date) -> Mapping[str, Any]:
        return sample_report("Daily Sales Report", day.isoformat())

    def weekly_summary(self, week_start: dt.date) -> Mapping[str, Any]:
        end = week_start + dt.timedelta(days=6)
        return sample_report("Weekly Summary", f"{week_start.isoformat()} to {end.isoformat()}")

    def monthly_invoices(self, month: dt.date) -> Iterable[Mapping[str, Any]]:
        for n, customer in enumerate(self.customers, start=1):
            invoice = sample_invoice(month.month * 100 + n, client=customer.title() + " Corp")
            invoice["invoice_number"] = f"INV-{month:%Y%m}-{n:03d}"
            yield {"customer": customer, **invoice}


sample_source = SampleSource()
