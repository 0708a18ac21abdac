"""Sample data for the demo, the tests and the benchmarks (matches templates/)."""

from __future__ import annotations

import datetime as dt
from typing import Any

_PRODUCTS = [
    ("Consulting hours", 150.0),
    ("Software licence (annual)", 1200.0),
    ("Support plan", 300.0),
    ("Training session", 450.0),
    ("Hosting (monthly)", 89.9),
    ("Custom integration", 2500.0),
]
_CLIENTS = ["Acme Corp", "Globex Ltd", "Initech GmbH", "Umbrella SA", "Soylent Inc",
            "Stark Industries", "Wayne Enterprises", "Tyrell Corp"]


def sample_invoice(n: int = 1, items: int = 5, client: str | None = None) -> dict[str, Any]:
    """A realistic invoice; ``items`` line items (about 45 fit on one page)."""
    lines: list[dict[str, Any]] = []
    for i in range(items):
        desc, price = _PRODUCTS[(n + i) % len(_PRODUCTS)]
        lines.append({"description": f"{desc} #{i + 1}", "quantity": 1 + (n + i) % 4,
                      "unit_price": price})
    subtotal = round(sum(x["quantity"] * x["unit_price"] for x in lines), 2)
    tax_rate = 20.0  # percent, as templates/invoice.html expects
    return {
        "invoice_number": f"INV-2026-{n:04d}",
        "client_name": client or _CLIENTS[n % len(_CLIENTS)],
        "client_address": f"{10 + n} Market Street, Springfield",
        "issue_date": "2026-11-28",
        "due_date": "2026-12-28",
        "currency": "EUR",
        "items": lines,
        "tax_rate": tax_rate,
        "total": round(subtotal * (1 + tax_rate / 100), 2),
        "notes": "Thank you for your business.",
    }


def sample_report(title: str = "Daily Sales Report", period: str | None = None,
                  rows: int = 6) -> dict[str, Any]:
    """A short business report with two sections."""
    period = period or dt.date.today().isoformat()
    return {
        "title": title,
        "period": period,
        "generated_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "summary": f"Activity for {period}.",
        "sections": [
            {"heading": "Sales by region",
             "rows": [{"label": f"Region {chr(65 + i)}", "value": f"{1000 + 137 * i:,} EUR"}
                      for i in range(rows)]},
            {"heading": "Invoices",
             "rows": [{"label": "Issued", "value": str(40 + rows)},
                      {"label": "Paid", "value": str(31 + rows)}]},
        ],
    }
