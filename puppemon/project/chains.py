"""`after:`: a flow runs when a run of another flow ends with one of the statuses it names.

    after: {flow: extract, status: [succeeded]}     # or a list of such entries, or `after: extract`

`status` defaults to [succeeded]; it may name any status a run that went through can end with
(formats.STATUSES but `skipped`, which never ran). The manifest as a whole must hold the upstream
flows and no cycle: `check` (called by manifest.py once every flow is read) refuses an upstream
that is no flow, a flow after itself, and a cycle (`a -> b -> c -> a`), at the `after:` that closes it.

The daemon side (hearing runs end, here or on another daemon) is puppemon/daemon/chains.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from puppemon.formats import FLOW_NAME_RE, STATUSES, did_you_mean, show
from puppemon.project.events import NoClock
from puppemon.project.schema import Invalid, choice, is_null, kind_of, list_of, named, record

if TYPE_CHECKING:
    from puppemon.project.manifest import Flow, Manifest

ENDED = tuple(s for s in STATUSES if s != "skipped")   # what a run that went through can end with
DEFAULT_STATUSES = ("succeeded",)
MAX_CHAINS = 20     # lines `validate` shows


@dataclass(frozen=True)
class Upstream:
    """One entry of `after:`: the upstream flow and the statuses of its runs that start this one."""

    flow: str
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    mark: Any = field(default=None, compare=False, repr=False)   # where it is written (a yaml.Mark)


_ENTRY_FIELDS = {
    "flow": named(FLOW_NAME_RE, "flow name", "the name of a flow of this manifest"),
    "status": list_of(choice(*ENDED), nonempty=True),
}


def _entry(node: yaml.Node, path: str) -> Upstream:
    if isinstance(node, yaml.ScalarNode) and not is_null(node):
        return Upstream(_ENTRY_FIELDS["flow"](node, path), mark=node.start_mark)
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, path, f"expected a flow name or a mapping with flow and status, got {kind_of(node)}")
    values = record(node, path, _ENTRY_FIELDS)
    if "flow" not in values:
        raise Invalid(node, path, "flow is missing (name the flow whose runs start this one)")
    flow_node = next(v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "flow")
    return Upstream(values["flow"], tuple(dict.fromkeys(values.get("status", DEFAULT_STATUSES))),
                    mark=flow_node.start_mark)


def _check(node: yaml.Node, path: str) -> tuple[Upstream, ...]:
    if isinstance(node, yaml.SequenceNode):
        return list_of(_entry, nonempty=True)(node, path)
    return (_entry(node, path),)


@dataclass(frozen=True)
class After(NoClock):
    """`after:`: one run of this flow for each run of an upstream flow that ends with one of the statuses."""

    kind: ClassVar[str] = "after"
    key: ClassVar[str] = "after"
    check = staticmethod(_check)
    upstreams: tuple[Upstream, ...]

    @classmethod
    def build(cls, value: tuple[Upstream, ...], timezone: str) -> After:
        return cls(tuple(value))

    def describe(self) -> str:
        return ", ".join(f"after {u.flow} ({', '.join(u.statuses)})" for u in self.upstreams)

    def preview(self, now: datetime) -> datetime | str:
        return "after " + " or ".join(u.flow for u in self.upstreams)

    def statuses(self, upstream: str) -> tuple[str, ...]:
        """The statuses of `upstream`'s runs that start this flow (empty: it is not an upstream)."""
        return tuple(s for u in self.upstreams if u.flow == upstream for s in u.statuses)


# --- the manifest as a whole ----------------------------------------------------------------

def upstreams(flow: Flow) -> tuple[Upstream, ...]:
    trigger = flow.trigger("after")
    return trigger.upstreams if trigger is not None else ()


def _at(mark) -> yaml.Node:
    return yaml.ScalarNode("tag:yaml.org,2002:str", "", start_mark=mark)


def check(flows: dict[str, Flow]) -> None:
    """Every upstream is a flow of the manifest, none is the flow itself, and `after:` makes no cycle."""
    for name, flow in flows.items():
        for entry in upstreams(flow):
            path = f"flows.{name}.after"
            if entry.flow == name:
                raise Invalid(_at(entry.mark), path, f"{name} cannot run after itself (name another flow)")
            if entry.flow not in flows:
                hint = did_you_mean(entry.flow, flows) or "flows: " + ", ".join(sorted(flows))
                raise Invalid(_at(entry.mark), path, f"no flow {show(entry.flow)} in this manifest ({hint})")
    cycle = find_cycle(flows)
    if cycle:
        names, closing, flow = cycle
        raise Invalid(_at(closing.mark), f"flows.{flow}.after",
                      f"after: makes a cycle, {' -> '.join(names)} (each waits for the one before it: "
                      "remove one of these after: entries)")


def find_cycle(flows: dict[str, Flow]) -> tuple[list[str], Upstream, str] | None:
    """A cycle of `after:` as the flows run (upstream first), beginning with the flow of the cycle that comes
    first in the file; the entry that closes it (the one written last) and the flow it is of. None: no cycle."""
    order = {name: i for i, name in enumerate(flows)}
    done: set[str] = set()
    for start in flows:
        stack: list[tuple[str, list[Upstream]]] = [(start, list(upstreams(flows[start])))]
        on_path = [start]
        while stack:
            name, todo = stack[-1]
            if not todo:
                stack.pop()
                on_path.pop()
                done.add(name)
                continue
            entry = todo.pop(0)
            if entry.flow in on_path:   # walking upstream: reversed, the loop is the order of the runs
                loop = list(reversed(on_path[on_path.index(entry.flow):]))
                first = min(range(len(loop)), key=lambda i: order[loop[i]])
                loop = loop[first:] + loop[:first]
                names = loop + loop[:1]
                edges = [(names[i], names[i + 1]) for i in range(len(loop))]
                entries = [next(u for u in upstreams(flows[down]) if u.flow == up) for up, down in edges]
                closing = max(entries, key=lambda u: (u.mark.line, u.mark.column) if u.mark else (0, 0))
                return names, closing, edges[entries.index(closing)][1]
            if entry.flow in done or entry.flow not in flows:
                continue
            stack.append((entry.flow, list(upstreams(flows[entry.flow]))))
            on_path.append(entry.flow)
    return None


def chains(manifest: Manifest) -> list[str]:
    """The chains `after:` makes, for people: `extract -> transform -> load`, one line per path from a flow
    that waits for none to one that none waits for (at most MAX_CHAINS)."""
    flows = manifest.flows
    down: dict[str, list[str]] = {name: [] for name in flows}
    for name, flow in flows.items():
        for entry in upstreams(flow):
            if entry.flow in down and name not in down[entry.flow]:
                down[entry.flow].append(name)
    found: list[str] = []
    for root in (n for n, f in flows.items() if not upstreams(f) and down[n]):
        paths = [[root]]
        while paths and len(found) < MAX_CHAINS:
            path = paths.pop()
            nexts = down[path[-1]]
            if not nexts:
                found.append(" -> ".join(path))
            paths.extend(path + [n] for n in reversed(nexts) if n not in path)
    return found
