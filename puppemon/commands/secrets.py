"""`puppemon secrets check`: which flow gets which secret, by name only."""
from __future__ import annotations


def main(secrets_file: str, manifest: str | None = None, as_json: bool = False) -> int:
    """Print the secrets (names and grants) or, with a manifest, each flow's granted and refused secrets.

    Exit 1 when a flow asks for a secret it is not granted (its runs would fail).
    """
    from puppemon.secrets import load

    store = load(secrets_file)
    if as_json:
        return _json(store, manifest)
    if manifest is None:
        rows = [("secret", "granted to")] + [(name, ", ".join(store.secrets[name].flows))
                                             for name in store.names()]
        _table(rows)
        return 0
    rows = [("flow", "granted", "not granted")]
    refused = 0
    for name, ok, bad in _grants(store, manifest):
        refused += len(bad)
        rows.append((name, ", ".join(ok) or "-", ", ".join(bad) or "-"))
    _table(rows)
    if refused:
        print(f"{refused} secret request{'s' if refused != 1 else ''} not granted")
        return 1
    return 0


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def _grants(store, manifest: str) -> list[tuple[str, list[str], list[str]]]:
    """(flow, the secrets it asks for and is granted, those it is not) for each flow of `manifest`."""
    from pathlib import Path

    from puppemon.project.manifest import parse

    loaded = parse(Path(manifest).read_bytes(), manifest)
    found = []
    for name, flow in sorted(loaded.flows.items()):
        asked = list(flow.secrets)
        if flow.notify is not None and flow.notify.webhook_secret not in asked:
            asked.append(flow.notify.webhook_secret)
        ok = [s for s in asked if store.refusal(name, s) is None]
        found.append((name, ok, [s for s in asked if s not in ok]))
    return found


def _json(store, manifest: str | None) -> int:
    """`secrets check --json` (docs/json.md): names and grants, never values."""
    import json

    data: dict = {"secrets": [{"name": name, "granted_to": list(store.secrets[name].flows)}
                              for name in store.names()], "flows": None, "not_granted": 0}
    if manifest is not None:
        grants = _grants(store, manifest)
        data["flows"] = [{"name": n, "granted": ok, "not_granted": bad} for n, ok, bad in grants]
        data["not_granted"] = sum(len(bad) for _, _, bad in grants)
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 1 if data["not_granted"] else 0
