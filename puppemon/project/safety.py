"""What a deploy must not carry by accident, checked before `puppemon push` writes anything.

Warnings (one line each; the push goes on): a Python virtual environment, a file
over 10 MiB, a snapshot over 50 MiB. Refusals (nothing is written): a puppemon
secrets file that holds values, a private key, a `.env` file that sets values.
Each names the `.gitignore` line that leaves the path out; `--allow PATH` deploys
a refused file knowingly. Only what the snapshot adds or changes against the
current flows tip is read (and no file over 1 MiB), so a push stays fast on a
large tree.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from puppemon.errors import PuppemonError
from puppemon.formats import format_size, plural
from puppemon.gitstore.objects import EXEC, FILE, Change

BIG_FILE = 10 * 1024**2
BIG_SNAPSHOT = 50 * 1024**2
SCAN_LIMIT = 1024**2          # a larger file is not read: keys and .env files are small
PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(.*)")
ENV_EXAMPLES = ("example", "sample", "template", "dist")


@dataclass
class Review:
    warnings: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)   # path -> what it holds


def review(store, changes: list[Change], total: tuple[int, int], allow: tuple[str, ...] = ()) -> Review:
    """Warnings and refusals for the files a push adds or changes (`total`: the snapshot's files and bytes);
    `store` reads a blob's content (`data(oid)`)."""
    found = Review()
    written = [c for c in changes if c.status != "removed"]
    venvs = sorted({str(PurePosixPath(c.path).parent) for c in written
                    if PurePosixPath(c.path).name == "pyvenv.cfg" and "/" in c.path})
    for venv in venvs:
        inside = [c for c in written if c.path.startswith(venv + "/")]
        found.warnings.append(f"{venv}/ is a Python virtual environment ({plural(len(inside), 'file')}, "
                              f"{format_size(sum(c.size for c in inside))}); to leave it out, add "
                              f"`/{venv}/` to .gitignore")
    for change in written:
        if change.size > BIG_FILE and not any(change.path.startswith(v + "/") for v in venvs):
            found.warnings.append(f"{change.path} is {format_size(change.size)} (over {format_size(BIG_FILE)}); "
                                  f"to leave it out, add `/{change.path}` to .gitignore")
        if change.mode in (FILE, EXEC) and change.size <= SCAN_LIMIT and change.path not in allow:
            why = _holds_secrets(change.path, store.data(change.oid))
            if why:
                found.refused[change.path] = why
    files, size = total
    if size > BIG_SNAPSHOT:
        top = _biggest_top(changes)
        found.warnings.append(f"the snapshot is {format_size(size)} in {plural(files, 'file')} (over "
                              f"{format_size(BIG_SNAPSHOT)}); list it with `puppemon push --dry-run`"
                              + (f"; the biggest part is {top}: add `/{top}` to .gitignore to leave it out"
                                 if top else ""))
    return found


def refusal(refused: dict[str, str]) -> PuppemonError:
    """One error naming every refused file, what it holds and the .gitignore lines that leave them out."""
    what = "; ".join(f"{path} {why}" for path, why in sorted(refused.items()))
    lines = ", ".join(f"`/{path}`" for path in sorted(refused))
    them = "it" if len(refused) == 1 else "them"
    return PuppemonError(f"refusing to push: {what}. Secret values belong on the server (puppemon daemon "
                         f"--secrets). Leave {them} out with the .gitignore line{'s' if len(refused) > 1 else ''} "
                         f"{lines}, or pass --allow PATH to deploy a file knowingly")


def _holds_secrets(path: str, data: bytes) -> str | None:
    name = PurePosixPath(path).name
    if PRIVATE_KEY.search(data):
        return "holds a private key"
    if name == ".env" or (name.startswith(".env.") and name[5:] not in ENV_EXAMPLES):
        keys = _env_values(data)
        if keys:
            return f"sets values ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
    if name.endswith((".yaml", ".yml")) and _is_secrets_file(data):
        return "looks like a puppemon secrets file holding values"
    return None


def _env_values(data: bytes) -> list[str]:
    """The names a .env file gives a non-empty value to."""
    keys = []
    for line in data.decode("utf-8", "replace").splitlines():
        match = ENV_LINE.match(line)
        if not match or line.lstrip().startswith("#"):
            continue
        value = match.group(2).strip()
        if value[:1] in ("'", '"'):
            value = value[1:value.find(value[0], 1)] if value.find(value[0], 1) > 0 else value[1:]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        if value:
            keys.append(match.group(1))
    return keys


def _is_secrets_file(data: bytes) -> bool:
    """A mapping of names to {value: <not empty>, flows: ...}; one that only names `env:` variables holds none."""
    import yaml

    try:
        loaded = yaml.safe_load(data)
    except (yaml.YAMLError, ValueError):
        return False
    if not isinstance(loaded, dict):
        return False
    return any(isinstance(entry, dict) and "flows" in entry and entry.get("value") not in (None, "", {}, [])
               for entry in loaded.values())


def _biggest_top(changes: list[Change]) -> str | None:
    """The top-level directory (or file) that the written changes put the most bytes in."""
    sizes: dict[str, int] = {}
    for change in changes:
        if change.status != "removed":
            top = change.path.split("/", 1)
            key = top[0] + "/" if len(top) > 1 else top[0]
            sizes[key] = sizes.get(key, 0) + change.size
    return max(sizes, key=sizes.get) if sizes else None
