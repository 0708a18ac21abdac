"""A user's own report source, as PDFTASKS_REPORT_SOURCE points to it in the beat test."""

import datetime as dt


class Source:
    def daily_report(self, day: dt.date):
        return {"title": "Zebra Logistics Daily", "period": day.isoformat(),
                "sections": [{"heading": "Parcels", "rows": [
                    {"label": "Delivered", "value": 4242}, {"label": "Lost", "value": 0}]}]}

    def weekly_summary(self, week_start: dt.date):
        return {"title": "Zebra Weekly", "period": week_start.isoformat(), "sections": []}

    def monthly_invoices(self, month: dt.date):
        for customer in ("north", "south"):
            yield {"customer": customer, "invoice_number": f"Z-{month:%Y%m}-{customer}",
                   "client_name": f"{customer.title()} Depot",
                   "items": [{"description": "Transport", "quantity": 1, "unit_price": 10}],
                   "total": 10}


source = Source()
