"""The server's secrets: the file of values, which flows each is granted to, the grant check,
and redaction (every value given to a run is replaced by `***` in what is recorded).

Format (YAML, readable by its owner only)::

    discord:
      value: https://discord.com/api/webhooks/...
      flows: [daily-report, "backup-*"]
    db:
      value: {host: db.internal, password: hunter22}
      flows: ["*"]

Values never leave this module except as the dict handed to one run (and, for
notifications, the webhook URL); errors and `puppemon secrets check` name secrets only.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from puppemon.errors import PuppemonError
from puppemon.formats import SECRET_NAME_RE


@dataclass(frozen=True)
class Secret:
    name: str
    value: Any          # str, or a dict for a structured secret
    flows: tuple[str, ...]

    def granted_to(self, flow: str) -> bool:
        return any(fnmatch.fnmatchcase(flow, pattern) for pattern in self.flows)


class SecretStore:
    """Secrets loaded from a file; `for_flow` hands out what a flow asked for and is granted."""

    def __init__(self, secrets: dict[str, Secret], path: str = "<secrets>") -> None:
        self.secrets = secrets
        self.path = path

    def names(self) -> list[str]:
        return sorted(self.secrets)

    def granted(self, flow: str) -> list[str]:
        """Names of the secrets granted to `flow`."""
        return [name for name, s in sorted(self.secrets.items()) if s.granted_to(flow)]

    def refusal(self, flow: str, name: str) -> str | None:
        """Why `flow` may not have secret `name` (None when it may)."""
        secret = self.secrets.get(name)
        if secret is None:
            return (f"flow {flow!r} asks for secret {name!r}, which is not in the secrets file {self.path}")
        if not secret.granted_to(flow):
            return (f"flow {flow!r} asks for secret {name!r}, which the secrets file {self.path} "
                    f"does not grant to it (add {flow!r} to the secret's flows)")
        return None

    def everything(self) -> dict[str, Any]:
        """{name: value} of every secret, to redact what any flow may have printed."""
        return {name: secret.value for name, secret in self.secrets.items()}

    def for_flow(self, flow: str, asked) -> dict[str, Any]:
        """{name: value} for every secret `flow` asked for; PuppemonError naming both when one is refused."""
        refused = [reason for name in asked if (reason := self.refusal(flow, name))]
        if refused:
            raise PuppemonError("; ".join(refused))
        return {name: self.secrets[name].value for name in asked}


def for_flow(store: SecretStore | None, flow: str, asked) -> dict[str, Any]:
    """The secret values `flow` asked for and the server grants; PuppemonError naming both otherwise."""
    if not asked:
        return {}
    if store is None:
        raise PuppemonError(f"flow {flow!r} asks for secret{'s' if len(asked) > 1 else ''} "
                            f"{', '.join(asked)} but this daemon has no secrets file "
                            f"(start it with --secrets FILE)")
    return store.for_flow(flow, asked)


def check_permissions(path: str, holds_values: bool = True) -> None:
    """Refuse a secrets file that its group or others may read, or that another user owns (who could
    change its values and grants), as ssh does for private keys. A grants file whose secrets all come
    from `env:` holds no value: others may read it (it may be committed, as in docs/serverless.md)."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise PuppemonError(f"cannot read secrets file {path}: {exc.strerror}") from None
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077 and holds_values:
        raise PuppemonError(f"secrets file {path} is readable by others (mode {mode:04o}); "
                            f"run chmod 600 {path}")
    if info.st_uid != os.geteuid():
        me = _user_name(os.geteuid())
        raise PuppemonError(f"secrets file {path} is owned by {_user_name(info.st_uid)}, not by {me} "
                            f"(the user puppemon runs as); run chown {me} {path}")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)  # no name: chown takes the number too


def load(path: str | os.PathLike) -> SecretStore:
    """Read and check a secrets file; PuppemonError (file:line:col) when it is loose or malformed."""
    import yaml

    path = str(path)
    check_permissions(path, holds_values=False)   # the owner first; the mode once it is known what it holds
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PuppemonError(f"cannot read secrets file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else path
        raise PuppemonError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if _holds_values(root):
        check_permissions(path)
    return SecretStore(_parse(root, path), path)


def _holds_values(root) -> bool:
    """Whether a secrets file gives any value itself (not only `env:` names)."""
    import yaml

    return isinstance(root, yaml.MappingNode) and any(
        isinstance(node, yaml.MappingNode) and any(getattr(k, "value", None) == "value" for k, _ in node.value)
        for _, node in root.value)


def _where(path: str, node) -> str:
    return f"{path}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _parse(root, path: str) -> dict[str, Secret]:
    import yaml

    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise PuppemonError(f"{_where(path, root)}: expected a mapping of secret names to "
                            f"{{value: ..., flows: [...]}}")
    secrets: dict[str, Secret] = {}
    for key_node, node in root.value:
        name = key_node.value if isinstance(key_node, yaml.ScalarNode) else ""
        if not SECRET_NAME_RE.match(name):
            raise PuppemonError(f"{_where(path, key_node)}: {name!r} is not a secret name "
                                f"(letters, digits, '.', '-', '_')")
        if name in secrets:
            raise PuppemonError(f"{_where(path, key_node)}: secret {name!r} is defined twice")
        if not isinstance(node, yaml.MappingNode):
            raise PuppemonError(f"{_where(path, node)}: {name}: expected a mapping with value and flows")
        fields = {}
        for k, v in node.value:
            if k.value not in ("value", "env", "flows"):
                raise PuppemonError(f"{_where(path, k)}: {name}: unknown key {k.value!r} "
                                    f"(allowed: env, flows, value)")
            fields[k.value] = v
        if ("value" in fields) == ("env" in fields):
            raise PuppemonError(f"{_where(path, node)}: {name}: give exactly one of value (the secret "
                                f"itself) or env (the daemon's environment variable that holds it)")
        if "flows" not in fields:
            raise PuppemonError(f"{_where(path, node)}: {name}: flows is missing")
        if "env" in fields:
            value = _from_environment(name, fields["env"], path)
        else:
            value_node = fields["value"]
            # A scalar keeps its text as written (a PIN such as 0123 stays "0123").
            value = (value_node.value if isinstance(value_node, yaml.ScalarNode)
                     else yaml.safe_load(yaml.serialize(value_node)))
        if not (isinstance(value, str) and value) and not (isinstance(value, dict) and value):
            raise PuppemonError(f"{_where(path, fields.get('value', fields.get('env')))}: {name}.value: "
                                f"expected a non-empty string or mapping")
        if isinstance(value, dict):
            value = {str(k): v for k, v in value.items()}
        flows_node = fields["flows"]
        flows = yaml.safe_load(yaml.serialize(flows_node))
        if isinstance(flows, str):
            flows = [flows]
        if not isinstance(flows, list) or not all(isinstance(f, str) and f for f in flows):
            raise PuppemonError(f"{_where(path, flows_node)}: {name}.flows: expected a list of flow "
                                f"names or globs")
        secrets[name] = Secret(name, value, tuple(flows))
    return secrets


def _from_environment(name: str, node, path: str) -> str:
    """A secret held in the daemon's environment, named by `env:` in the secrets file.

    Only PUPPEMON_* names are accepted: runs never inherit those (run/runner.py strips
    them), so the secret reaches only the flows it is granted to.
    """
    var = getattr(node, "value", None)
    if not isinstance(var, str) or not var.startswith("PUPPEMON_SECRET_") or not var.replace("_", "").isalnum():
        raise PuppemonError(f"{_where(path, node)}: {name}.env: {var!r} must be an environment variable "
                            f"named PUPPEMON_SECRET_* (runs never inherit those; any other name would "
                            f"reach every flow)")
    value = os.environ.get(var)
    if not value:
        raise PuppemonError(f"{_where(path, node)}: {name}.env: {var} is not set in the daemon's environment")
    return value


# --- redaction -------------------------------------------------------------

def _str_leaves(value: Any):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _str_leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _str_leaves(v)


def secret_text(value: str | dict) -> str:
    """A secret as a run's environment carries it: the string, or a mapping as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def needles(secrets: dict) -> list[str]:
    """The texts redaction replaces, longest first (so a secret that contains another goes whole)."""
    found: set[str] = set()
    for value in secrets.values():
        if isinstance(value, str):
            found.add(value)
        else:
            found.add(secret_text(value))
            found.update(leaf for leaf in _str_leaves(value) if len(leaf) >= 4)
    found.discard("")
    return sorted(found, key=lambda s: (-len(s.encode()), s))


def redact(data, secrets: dict):
    """`data` (bytes or str) with every secret value, and every str leaf of >= 4 characters
    of a mapping secret, replaced by `***`."""
    found = needles(secrets)
    if not found:
        return data
    if isinstance(data, str):
        return re.sub("|".join(map(re.escape, found)), "***", data)
    pattern = b"|".join(re.escape(n.encode()) for n in found)
    return re.sub(pattern, b"***", data if isinstance(data, bytes) else bytes(data))


def redact_json(value: Any, secrets: dict) -> Any:
    """A JSON value with every string (keys too) redacted."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {redact(k, secrets): redact_json(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_json(v, secrets) for v in value]
    return value
