"""Orders CSV -> daily totals in SQLite; returns a JSON summary as the run's result."""
from __future__ import annotations

import csv
import os
import sqlite3
from collections import defaultdict
from datetime import date
from decimal import Decimal
from pathlib import Path

import puppemon


def extract(path: Path, since: date) -> tuple[list[dict], int]:
    """Paid orders on or after `since`, and how many rows could not be read."""
    rows, rejected = [], 0
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                day = date.fromisoformat(row["date"])
                amount = Decimal(row["amount"])
                quantity = int(row["quantity"])
            except (KeyError, ValueError, ArithmeticError):
                rejected += 1
                continue
            if day >= since and row.get("status") == "paid":
                rows.append({"day": day, "customer": row["customer"], "amount": amount,
                             "quantity": quantity})
    return rows, rejected


def transform(rows: list[dict]) -> list[tuple[str, int, int, str]]:
    """(day, orders, items, revenue) per day, oldest first."""
    days: dict[date, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for row in rows:
        total = days[row["day"]]
        total[0] += 1
        total[1] += row["quantity"]
        total[2] += row["amount"]
    return [(d.isoformat(), n, items, str(revenue)) for d, (n, items, revenue) in sorted(days.items())]


def load(db_path: Path, totals: list[tuple[str, int, int, str]]) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS daily_sales "
                   "(day TEXT PRIMARY KEY, orders INTEGER, items INTEGER, revenue TEXT)")
        db.executemany("INSERT OR REPLACE INTO daily_sales VALUES (?, ?, ?, ?)", totals)
    db.close()


def main(since: str = "2026-11-01", currency: str = "EUR") -> dict:
    source = Path(os.environ.get("ORDERS_CSV", "data/orders.csv"))
    rows, rejected = extract(source, date.fromisoformat(since))
    totals = transform(rows)
    load(puppemon.output_dir() / "sales.sqlite", totals)
    revenue = sum((Decimal(t[3]) for t in totals), Decimal(0))
    best = max(totals, key=lambda t: Decimal(t[3]), default=None)
    print(f"{len(rows)} paid orders over {len(totals)} days; "
          f"skipped {rejected} unreadable row{'s' if rejected != 1 else ''}")
    return {
        "orders": len(rows),
        "days": len(totals),
        "rejected": rejected,
        "revenue": f"{revenue:.2f} {currency}",
        "best_day": best[0] if best else None,
        "customers": len({r["customer"] for r in rows}),
    }
