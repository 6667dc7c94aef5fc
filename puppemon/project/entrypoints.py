"""Entrypoints read, never run: each flow's entrypoint file is in the project and defines its
function, and the params given fit that function's signature.

User code is parsed with `ast` and never imported, so validating a deploy cannot run it.
An entrypoint `package.module:function` whose module is not in the project may come from
an installed package: it is left for the run to find.
"""
from __future__ import annotations

import ast
import difflib
import posixpath
from dataclasses import dataclass
from typing import Callable, Iterable

from puppemon.errors import PuppemonError
from puppemon.project.python import inputs

Reader = Callable[[str], "bytes | None"]   # a project path -> its content, None when there is no such file
UNKNOWN = b"\0unknown"                      # a reader's answer for a file that exists but cannot be read here


class EntryError(PuppemonError):
    """An entrypoint that cannot work: no such file, no such function, a file Python cannot parse."""


@dataclass(frozen=True)
class Signature:
    where: str                   # `reports/daily.py`
    function: str
    names: tuple[str, ...]       # the parameters it takes by keyword
    any_name: bool               # it has **kwargs


def candidates(entrypoint: str) -> tuple[list[str], str, bool]:
    """(project paths the code may be in, the function, whether it is a file path)."""
    target, _, function = entrypoint.rpartition(":")
    if target.endswith(".py") or "/" in target:
        return [target], function, True
    base = target.replace(".", "/")
    return [f"{base}.py", f"{base}/__init__.py"], function, False


def signature(entrypoint: str, read: Reader, where: str = "the project") -> Signature | None:
    """The signature of the function `entrypoint` names; None when it cannot be known here."""
    paths, function, is_file = candidates(entrypoint)
    found = next(((p, data) for p in paths if (data := read(p)) is not None), None)
    if found is None:
        if is_file:
            raise EntryError(f"{paths[0]} is not in {where}")
        return None
    path, data = found
    if data == UNKNOWN:
        return None
    try:
        tree = ast.parse(data, filename=path)
    except SyntaxError as exc:
        raise EntryError(f"{path}:{exc.lineno}:{exc.offset}: Python cannot parse it ({exc.msg})") from None
    except ValueError:  # NUL bytes: not Python source
        raise EntryError(f"{path} is not Python source") from None
    defined = _top_level(tree)
    node = defined.get(function)
    if node is None:
        functions = [n for n, d in defined.items() if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef))]
        close = difflib.get_close_matches(function, functions, n=1)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"it defines {', '.join(functions)}" if functions else "it defines no function")
        raise EntryError(f"{path} has no function {function!r} ({hint})")
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None  # a class, an assignment or an import: callable, perhaps, but not for ast to say
    args = node.args
    names = tuple(a.arg for a in [*args.args, *args.kwonlyargs])
    return Signature(path, function, names, args.kwarg is not None)


def _top_level(tree: ast.Module) -> dict[str, ast.AST]:
    """Names bound at the top level of a module (the last binding wins, as when it runs)."""
    bound: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bound[name.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, (ast.If, ast.Try)):   # `try: from x import f` / `if X: def f`
            for child in ast.walk(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    bound.setdefault(child.name, child)
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    for alias in child.names:
                        bound.setdefault((alias.asname or alias.name).split(".")[0], child)
    return bound


def unknown_params(sig: Signature, names: Iterable[str]) -> list[tuple[str, str]]:
    """(name, what to say) for each param the function does not take."""
    if sig.any_name:
        return []
    found = []
    for name in names:
        if name not in sig.names:
            close = difflib.get_close_matches(name, sig.names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else (
                f"it takes {', '.join(sig.names)}" if sig.names else "it takes none")
            found.append((name, f"{sig.function}() in {sig.where} takes no parameter {name!r} ({hint})"))
    return found


def check_manifest(manifest, read: Reader, filename: str, where: str) -> None:
    """ManifestError (file:line:col, key path) for the first entrypoint or params that cannot work."""
    from puppemon.project.manifest import ManifestError

    for flow in manifest.flows.values():
        if flow.python is not None:
            try:
                inputs(flow, read, UNKNOWN)
            except ValueError as exc:
                line, col = flow.marks.get("python", (flow.line, 1))
                raise ManifestError(f"{filename}:{line}:{col}: flows.{flow.name}.python: {exc}") from None
        if flow.container is not None and flow.container.build and read(flow.container.build) is None:
            line, col = flow.marks.get("container", (flow.line, 1))
            raise ManifestError(f"{filename}:{line}:{col}: flows.{flow.name}.container.build: "
                                f"{flow.container.build} is not in {where} (commit the Containerfile)")
        if not flow.entrypoint:
            continue
        try:
            sig = signature(flow.entrypoint, read, where)
        except EntryError as exc:
            line, col = flow.marks.get("entrypoint", (flow.line, 1))
            raise ManifestError(f"{filename}:{line}:{col}: flows.{flow.name}.entrypoint: {exc.message}") from None
        for name, message in unknown_params(sig, flow.params) if sig else []:
            line, col = flow.marks.get(f"params.{name}", (flow.line, 1))
            raise ManifestError(f"{filename}:{line}:{col}: flows.{flow.name}.params.{name}: {message}")


def check_params(flow, params: Iterable[str], read: Reader, where: str) -> None:
    """PuppemonError for a `-p` name the flow's function does not take (with a did-you-mean)."""
    if not flow.entrypoint:
        return
    try:
        sig = signature(flow.entrypoint, read, where)
    except EntryError:
        return  # validate and the run itself say what is wrong with the entrypoint
    for name, message in unknown_params(sig, params) if sig else []:
        raise PuppemonError(f"-p {name}: {message}")


def check_request(flows: dict, flow: str, params: Iterable[str], read: Reader, tip: str, where: str) -> None:
    """PuppemonError for a run request no daemon of the deploy `tip` could serve: a flow `flows` does not
    have (`where`: which deploy, for the message), or a param its function does not take."""
    from puppemon.formats import did_you_mean

    if flow not in flows:
        close = did_you_mean(flow, flows)
        raise PuppemonError(f"no flow {flow!r} in the deployed flows ({where}: {', '.join(flows) or 'none'}); "
                            + (close or "push it first"))
    check_params(flows[flow], params, read, f"the deployed flows commit {tip[:7]}")


def directory_reader(root) -> Reader:
    """Read project paths from a directory (`puppemon validate`, `puppemon run`)."""
    from pathlib import Path

    def read(path: str) -> bytes | None:
        file = Path(root, path)
        try:
            return file.read_bytes() if file.is_file() else None
        except OSError:
            return UNKNOWN
    return read


def tree_reader(store, tree: str) -> Reader:
    """Read project paths from a git tree (what `push` deploys, what the daemon deployed)."""
    from puppemon.gitstore import LINK

    def read(path: str, hops: int = 0) -> bytes | None:
        entry = store.lookup(tree, path)
        if entry is None or entry.is_tree:
            return None
        if entry.mode != LINK:
            return store.data(entry.oid)
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), store.data(entry.oid).decode()))
        if target.startswith(("..", "/")) or hops > 8:
            return UNKNOWN  # it points out of the project: the server's file, not ours to read
        return read(target, hops + 1)
    return read
