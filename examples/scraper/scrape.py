"""Read a product listing page and write what it lists as CSV files.

The page is a local file (a mirror, an export, or a page saved by another job),
so the example runs without a network. Files written to puppemon.output_dir()
are recorded with the run and show up under outputs/ on the `runs` branch.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import puppemon


class ListingParser(HTMLParser):
    """Collects one dict per `<li class="product">`, from its `data-*` fields."""

    FIELDS = ("sku", "name", "category", "price", "stock")

    def __init__(self) -> None:
        super().__init__()
        self.products: list[dict[str, str]] = []
        self._field: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "li" and "product" in (attrs.get("class") or "").split():
            self.products.append({"sku": attrs.get("data-sku", "")})
        elif self.products and attrs.get("class") in self.FIELDS:
            self._field = attrs["class"]

    def handle_endtag(self, tag):
        self._field = None

    def handle_data(self, data):
        if self._field and data.strip():
            self.products[-1][self._field] = data.strip()


def parse(page: str) -> list[dict[str, str]]:
    parser = ListingParser()
    parser.feed(page)
    return [p for p in parser.products if p.get("name") and p.get("price")]


def main(source: str = "data/catalog.html", currency: str = "TWD") -> dict:
    products = parse(Path(source).read_text(encoding="utf-8"))
    out = puppemon.output_dir()

    with open(out / "products.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["sku", "name", "category", f"price_{currency.lower()}", "in_stock"])
        for p in products:
            writer.writerow([p["sku"], p["name"], p.get("category", ""),
                             p["price"].replace(",", ""), p.get("stock", "0")])

    by_category: dict[str, list[float]] = defaultdict(list)
    for p in products:
        by_category[p.get("category", "")].append(float(p["price"].replace(",", "")))
    with open(out / "categories.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["category", "products", "min_price", "max_price"])
        for category, prices in sorted(by_category.items()):
            writer.writerow([category, len(prices), min(prices), max(prices)])

    print(f"{len(products)} products in {len(by_category)} categories from {source}")
    return {"products": len(products), "categories": len(by_category)}
