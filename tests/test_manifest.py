"""puppemon.yaml: the schema, exact error messages, durations, and fuzzing with random YAML."""
from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from puppemon.errors import PuppemonError
from puppemon.formats import DurationError, format_duration, parse_duration
from puppemon.project.manifest import Flow, ManifestError, Notify, load, parse
from puppemon.project.triggers import Cron, Interval, OnDeploy

DESIGN_EXAMPLE = """\
version: 1
defaults:            # apply to every flow unless it overrides them
  timezone: Asia/Taipei
  timeout: 30m
variables:           # plaintext, shared by all flows
  REGION: tw
flows:
  daily-report:
    entrypoint: reports/daily.py:main   # Python function, called with params as keyword arguments
    schedule: "0 8 * * 1-5"             # cron (5 fields), or a list of them
    params: {days: 1}
    retries: 2
    retry_delay: 30s
    secrets: [discord]                  # names; values live only on the server
  backup:
    command: ["./backup.sh", "--fast"]  # any program; a string runs through the shell
    every: 6h                           # interval schedule
    timeout: 2h
    overlap: skip                       # skip | queue | parallel, when the last run is still going
    catchup: latest                     # none | latest | all: runs missed while the daemon was down
  rebuild-index:
    command: make index
    run_on_deploy: true                 # also run whenever a new flows commit is deployed
"""


def test_design_example():
    manifest = parse(DESIGN_EXAMPLE)
    assert manifest.version == 1
    assert manifest.variables == {"REGION": "tw"}
    assert list(manifest.flows) == ["daily-report", "backup", "rebuild-index"]
    assert manifest.flows["daily-report"] == Flow(
        name="daily-report", entrypoint="reports/daily.py:main", command=None,
        triggers=(Cron(("0 8 * * 1-5",), "Asia/Taipei"),), timezone="Asia/Taipei", params={"days": 1},
        timeout=1800.0, retries=2, retry_delay=30.0, overlap="skip", catchup="latest", secrets=("discord",),
        env={}, workdir="fresh", notify=None, line=8)
    backup = manifest.flows["backup"]
    assert (backup.command, backup.triggers, backup.timeout, backup.line) == (
        ("./backup.sh", "--fast"), (Interval(21600.0, "Asia/Taipei"),), 7200.0, 15)
    index = manifest.flows["rebuild-index"]
    assert (index.command, index.triggers) == ("make index", (OnDeploy(),))


def test_defaults_and_overrides():
    manifest = parse("""\
version: 1
defaults:
  env: {A: 1.10, B: "x"}
  retries: 3
  notify: {webhook_secret: chat-hook}
  workdir: shared
flows:
  one:
    command: [run]
    env: {B: yes, C: 007}
    retries: 0
    notify: {on: [failed, succeeded], webhook_secret: other}
    timeout: null
    schedule: ["  0   8 * * *", "@Daily"]
    every: 1h30m
  two:
    command: run
    notify: null
""")
    one, two = manifest.flows["one"], manifest.flows["two"]
    assert one.env == {"A": "1.10", "B": "yes", "C": "007"}       # merged, values as written
    assert (one.retries, two.retries) == (0, 3)
    assert one.notify == Notify(on=("failed", "succeeded"), webhook_secret="other")
    assert two.notify is None
    assert (one.timeout, one.workdir, one.timezone) == (None, "shared", "UTC")
    assert one.trigger("cron").exprs == ("0 8 * * *", "@daily")
    assert one.trigger("interval").seconds == 5400.0
    assert two.env == {"A": "1.10", "B": "x"}


def test_defaults_notify_fills_in_statuses_and_yaml_merge_keys():
    manifest = parse("""\
version: 1
defaults:
  notify: {webhook_secret: hook}
flows:
  base: &base
    command: run
    every: 10m
  derived:
    <<: *base
    every: 1h
""")
    assert manifest.flows["base"].notify == Notify(on=("failed", "timed_out", "crashed"), webhook_secret="hook")
    assert (manifest.flows["derived"].command, manifest.flows["derived"].trigger("interval").seconds) == ("run", 3600.0)


def test_keys_are_read_as_written():
    # YAML 1.1 would read `on` as true and `123` as a number: keys are taken as text
    manifest = parse("version: 1\nflows:\n  123:\n    command: x\n    params: {on: 1, 2: [a, {b: null}]}\n"
                     "    notify: {on: skipped, webhook_secret: h}\n")
    flow = manifest.flows["123"]
    assert flow.params == {"on": 1, "2": ["a", {"b": None}]}
    assert flow.notify.on == ("skipped",)


def test_bytes_with_bom_and_empty_flows():
    assert parse(b"\xef\xbb\xbfversion: 1\nflows: {}\n").flows == {}
    assert parse("version: 1\nflows:\n").flows == {}
    assert parse("version: 1\nflows:\n".encode("utf-16")).version == 1


BAD = [
    ("", "puppemon.yaml:1:1: the file is empty (start with `version: 1` and a `flows:` mapping)"),
    ("# only a comment\n", "puppemon.yaml:1:1: the file is empty (start with `version: 1` and a `flows:` mapping)"),
    ("- a\n- b\n", "puppemon.yaml:1:1: expected a mapping with version and flows at the top level, got a list"),
    ("just text\n", "puppemon.yaml:1:1: expected a mapping with version and flows at the top level, got a string"),
    ("flows: {}\n", "puppemon.yaml:1:1: version: missing (add `version: 1` at the top)"),
    ("version: 2\nflows: {}\n", "puppemon.yaml:1:10: version: 2 is not supported (this puppemon reads version 1)"),
    ("version: '1'\nflows: {}\n", "puppemon.yaml:1:10: version: '1' is not supported (this puppemon reads version 1)"),
    ("version: 1.0\nflows: {}\n", "puppemon.yaml:1:10: version: 1.0 is not supported (this puppemon reads version 1)"),
    ("version: 1\n", "puppemon.yaml:1:1: flows: missing (add a `flows:` mapping of flow names to flows)"),
    ("version: 1\nflow: {}\n", "puppemon.yaml:2:1: flow: unknown key (did you mean 'flows'?)"),
    ("version: 1\nflows: []\n", "puppemon.yaml:2:8: flows: expected a mapping, got a list"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    scheduel: '0 * * * *'\n",
     "puppemon.yaml:5:5: flows.backup.scheduel: unknown key (did you mean 'schedule'?)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    colour: red\n",
     "puppemon.yaml:5:5: flows.backup.colour: unknown key (allowed: after, catchup, command, concurrency, container, "
     "entrypoint, env, every, notify, on_file, overlap, params, python, retries, retry_delay, run_on_deploy, runs_on, "
     "schedule, secrets, slurm, timeout, "
     "timezone, "
     "user, workdir)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    every: often\n",
     "puppemon.yaml:5:12: flows.backup.every: 'often' is not a duration (use 30s, 10m, 2h, 1d)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    concurrency: 0\n",
     "puppemon.yaml:5:18: flows.backup.concurrency: 0 is not a positive count (use a whole number, 1 or more)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    concurrency: two\n",
     "puppemon.yaml:5:18: flows.backup.concurrency: 'two' is not a positive count (use a whole number, 1 or more)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    every: 0.5\n",
     "puppemon.yaml:5:12: flows.backup.every: 0.5 is too short (use at least 1s)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    every: 99999d\n",
     "puppemon.yaml:5:12: flows.backup.every: '99999d' is too long (use at most 3650d)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n    timeout: 0s\n",
     "puppemon.yaml:5:14: flows.backup.timeout: '0s' is too short (use more than 0s)"),
    ("version: 1\nflows:\n  backup:\n    command: x\n  backup:\n    command: y\n",
     "puppemon.yaml:5:3: flows.backup: duplicate key (already defined on line 3)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    command: y\n",
     "puppemon.yaml:5:5: flows.a.command: duplicate key (already defined on line 4)"),
    ("version: 1\nflows:\n  a: [\n", "puppemon.yaml:4:1: invalid YAML: expected the node content, but found '<stream end>'"),
    ("version: 1\nflows:\n\ta: 1\n", "puppemon.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token"),
    ("version: 1\n---\nversion: 1\n",
     "puppemon.yaml:2:1: invalid YAML: expected a single document in the stream, but found another document"),
    ("version: 1\x00\n", "puppemon.yaml:1:11: invalid YAML: character U+0000 is not allowed (remove it)"),
    ("[" * 3000, "puppemon.yaml:1:1: invalid YAML: nested too deeply"),
    ("version: 1\nflows:\n  a:\n    entrypoint: a.py:main\n    command: x\n",
     "puppemon.yaml:5:5: flows.a: has both entrypoint and command (use exactly one)"),
    ("version: 1\nflows:\n  a:\n    schedule: '@daily'\n",
     "puppemon.yaml:3:3: flows.a: needs an entrypoint (path/to/file.py:function) or a command"),
    ("version: 1\nflows:\n  a:\n", "puppemon.yaml:3:3: flows.a: needs an entrypoint (path/to/file.py:function) or a command"),
    ("version: 1\nflows:\n  Backup:\n    command: x\n",
     "puppemon.yaml:3:3: flows.Backup: 'Backup' is not a valid flow name (use lowercase letters, digits, '-' and '_', "
     "starting with a letter or digit, at most 100 characters)"),
    ("version: 1\nflows:\n  ../x:\n    command: x\n",
     "puppemon.yaml:3:3: flows.../x: '../x' is not a valid flow name (use lowercase letters, digits, '-' and '_', "
     "starting with a letter or digit, at most 100 characters)"),
    ("version: 1\nflows:\n  ? [a]\n  : 1\n", "puppemon.yaml:3:5: flows: keys must be strings, got a list"),
    ("version: 1\nflows:\n  a:\n    command: [echo, 1]\n",
     "puppemon.yaml:4:21: flows.a.command[1]: 1 is not a string (quote it: '1')"),
    ("version: 1\nflows:\n  a:\n    command: []\n", "puppemon.yaml:4:14: flows.a.command: the list is empty (give at least one item)"),
    ("version: 1\nflows:\n  a:\n    command: ' '\n", "puppemon.yaml:4:14: flows.a.command: the command is empty (give a program to run)"),
    ("version: 1\nflows:\n  a:\n    command: {run: x}\n", "puppemon.yaml:4:14: flows.a.command: expected a string or a list of strings, got a mapping"),
    ("version: 1\nflows:\n  a:\n    command: !shell x\n",
     "puppemon.yaml:4:14: flows.a.command: YAML tag !shell is not supported here (remove the tag)"),
    ("version: 1\nflows:\n  a:\n    command: !!python/object:os.system x\n",
     "puppemon.yaml:4:14: flows.a.command: YAML tag !!python/object:os.system is not supported here (remove the tag)"),
    ("version: 1\nflows:\n  a:\n    entrypoint: main.py\n",
     "puppemon.yaml:4:17: flows.a.entrypoint: 'main.py' is not an entrypoint "
     "(use path/to/file.py:function or package.module:function)"),
    ("version: 1\nflows:\n  a:\n    entrypoint: ../up.py:main\n",
     "puppemon.yaml:4:17: flows.a.entrypoint: '../up.py:main' is not an entrypoint "
     "(use path/to/file.py:function or package.module:function)"),
    ("version: 1\nflows:\n  a:\n    entrypoint: /abs/x.py:main\n",
     "puppemon.yaml:4:17: flows.a.entrypoint: '/abs/x.py:main' is not an entrypoint "
     "(use path/to/file.py:function or package.module:function)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    schedule: ['0 8 * * *', '0 25 * * *']\n",
     "puppemon.yaml:5:29: flows.a.schedule[1]: hour 25 is out of range in '0 25 * * *' (use 0-23)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    schedule: '@reboot'\n",
     "puppemon.yaml:5:15: flows.a.schedule: '@reboot' is not supported (use run_on_deploy: true to run on every deploy)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    schedule: 0 8 * *\n",
     "puppemon.yaml:5:15: flows.a.schedule: '0 8 * *' has 4 fields (cron needs 5: minute hour day-of-month month day-of-week)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    schedule: []\n",
     "puppemon.yaml:5:15: flows.a.schedule: the list is empty (give at least one item)"),
    ("version: 1\ndefaults:\n  timezone: Asia/Taipie\nflows: {}\n",
     "puppemon.yaml:3:13: defaults.timezone: 'Asia/Taipie' is not a known timezone (did you mean 'Asia/Taipei'?)"),
    ("version: 1\ndefaults:\n  timezone: ../../etc/passwd\nflows: {}\n",
     "puppemon.yaml:3:13: defaults.timezone: '../../etc/passwd' is not a known timezone "
     "(use an IANA name such as UTC, Europe/Paris, Asia/Taipei)"),
    ("version: 1\ndefaults:\n  schedule: '@daily'\nflows: {}\n",
     "puppemon.yaml:3:3: defaults.schedule: unknown key (allowed: catchup, container, env, notify, overlap, python, "
     "retries, retry_delay, runs_on, slurm, timeout, timezone, user, workdir)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    retries: true\n",
     "puppemon.yaml:5:14: flows.a.retries: true is not a count (use a whole number, 0 or more)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    retries: -1\n",
     "puppemon.yaml:5:14: flows.a.retries: -1 is not a count (use a whole number, 0 or more)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    run_on_deploy: 'true'\n",
     "puppemon.yaml:5:20: flows.a.run_on_deploy: 'true' is not a boolean (use true or false)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    overlap: wait\n",
     "puppemon.yaml:5:14: flows.a.overlap: 'wait' is not allowed (use skip | queue | parallel)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    catchup: some\n",
     "puppemon.yaml:5:14: flows.a.catchup: 'some' is not allowed (use none | latest | all)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    workdir: tmp\n",
     "puppemon.yaml:5:14: flows.a.workdir: 'tmp' is not allowed (use fresh | shared)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    python: {version: 3.10}\n",
     'puppemon.yaml:5:23: flows.a.python.version: 3.1 is not a string (quote the version: "3.10")'),
    ("version: 1\nflows:\n  a:\n    command: x\n    python: {version: '3.x'}\n",
     "puppemon.yaml:5:23: flows.a.python.version: '3.x' is not a Python version request "
     '(use a version such as "3.12" or ">=3.11")'),
    ("version: 1\nflows:\n  a:\n    command: x\n    python: {colour: 1}\n",
     "puppemon.yaml:5:14: flows.a.python.colour: unknown key (allowed: project, requirements, script, version)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    python: {requirements: r.txt, project: .}\n",
     "puppemon.yaml:5:13: flows.a.python: has both requirements and project (use one of requirements, project, "
     "script)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    python: {requirements: ../r.txt}\n",
     "puppemon.yaml:5:28: flows.a.python.requirements: '../r.txt' is not a path inside the project "
     "(use a relative path)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    python: venv\n",
     "puppemon.yaml:5:13: flows.a.python: expected `system` or a mapping (requirements, project, script, "
     "version), got 'venv'"),
    ("version: 1\nflows:\n  a:\n    command: x\n    user: 'root; id'\n",
     "puppemon.yaml:5:11: flows.a.user: 'root; id' is not a valid user name (use an OS user name: letters, "
     "digits, '_', '.' and '-')"),
    ("version: 1\ndefaults:\n  user: backup\nflows:\n  a:\n    command: x\n    workdir: shared\n",
     "puppemon.yaml:7:5: flows.a: has both user: and workdir: shared (a run as another user works in its own "
     "copy of the code: drop workdir: shared)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    params: [1]\n",
     "puppemon.yaml:5:13: flows.a.params: expected a mapping, got a list"),
    ("version: 1\nflows:\n  a:\n    command: x\n    params: {when: 2024-13-45}\n",
     "puppemon.yaml:5:20: flows.a.params.when: '2024-13-45' is not a valid date (quote it to make it a string)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    params: {when: 2024-01-05}\n",
     "puppemon.yaml:5:20: flows.a.params.when: '2024-01-05' is a date (quote it to make it a string)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    params: {x: .nan}\n",
     "puppemon.yaml:5:17: flows.a.params.x: '.nan' is not a JSON number (use a finite number)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    params: &p {x: *p}\n",
     "puppemon.yaml:5:13: flows.a.params.x: a YAML alias refers to itself (params must be plain JSON values)"),
    ("version: 1\nflows: &f\n  <<: *f\n", "puppemon.yaml:2:8: flows: a YAML merge (<<) refers to itself"),
    ("version: 1\nflows:\n  a:\n    command: x\n    env: {1X: a}\n",
     "puppemon.yaml:5:11: flows.a.env.1X: '1X' is not an environment variable name "
     "(use letters, digits and '_', not starting with a digit)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    env: {PUPPEMON_RUN_ID: a}\n",
     "puppemon.yaml:5:11: flows.a.env.PUPPEMON_RUN_ID: names starting with PUPPEMON_ are reserved (choose another name)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    env: {A: [1]}\n",
     "puppemon.yaml:5:14: flows.a.env.A: expected a single value, got a list"),
    ("version: 1\nvariables:\n  A:\nflows: {}\n", "puppemon.yaml:3:5: variables.A: has no value (use '' for an empty string)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    secrets: ['bad name']\n",
     "puppemon.yaml:5:15: flows.a.secrets[0]: 'bad name' is not a valid secret name (use letters, digits, '_', '.' and '-')"),
    ("version: 1\nflows:\n  a:\n    command: x\n    notify: {on: [failed, lost], webhook_secret: hook}\n",
     "puppemon.yaml:5:27: flows.a.notify.on[1]: 'lost' is not allowed "
     "(use succeeded | failed | timed_out | cancelled | crashed | skipped)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    notify: {on: [failed]}\n",
     "puppemon.yaml:5:13: flows.a.notify: webhook_secret is missing (name the secret that holds the webhook URL)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    notify: {webhook: x}\n",
     "puppemon.yaml:5:14: flows.a.notify.webhook: unknown key (did you mean 'webhook_secret'?)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    every: " + "9" * 100 + "\n",
     "puppemon.yaml:5:12: flows.a.every: 99999999999999999999999999999999999999999999999999999999... "
     "is not a duration (use 30s, 10m, 2h, 1d)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    slurm: {partition: 'bad one!'}\n",
     "puppemon.yaml:5:24: flows.a.slurm.partition: 'bad one!' is not a valid partition name "
     "(use letters, digits, '.', '_' and '-', as `sinfo` lists them)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    slurm: {gres: 'gpu::x'}\n",
     "puppemon.yaml:5:19: flows.a.slurm.gres: 'gpu::x' is not a valid generic resource "
     "(use NAME[:TYPE][:COUNT], e.g. gpu:1 or gpu:a100:2)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    slurm: {cpus: 0}\n",
     "puppemon.yaml:5:19: flows.a.slurm.cpus: 0 is not a number of CPUs (use a whole number, 1 or more)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    slurm: {mem: 2X}\n",
     "puppemon.yaml:5:18: flows.a.slurm.mem: '2X' is not an amount of memory (use a whole number with K, M, G "
     "or T, as Slurm does: 500M, 2G)"),
]


@pytest.mark.parametrize("text, message", BAD, ids=[message.split(": ", 1)[1][:60] for _, message in BAD])
def test_error_messages(text, message):
    with pytest.raises(ManifestError) as info:
        parse(text)
    assert str(info.value) == message


def test_invalid_utf8_and_alias_bombs():
    with pytest.raises(ManifestError) as info:
        parse(b"version: 1\nflows: {a: \xff}\n")
    assert str(info.value) == "puppemon.yaml:2:12: not valid UTF-8 (save the file as UTF-8)"
    bomb = "version: 1\nflows:\n  a:\n    command: x\n    params:\n      a: &a [1,1,1,1,1,1,1,1,1,1]\n"
    for level, prev in zip("bcdef", "abcde"):
        bomb += f"      {level}: &{level} [{', '.join(['*' + prev] * 10)}]\n"
    with pytest.raises(ManifestError, match=r"too large \(YAML aliases expand to more than 100000 values\)"):
        parse(bomb)


def test_filename_is_used_in_messages():
    with pytest.raises(ManifestError) as info:
        parse("version: 3\nflows: {}\n", filename="project/puppemon.yaml")
    assert str(info.value) == "project/puppemon.yaml:1:10: version: 3 is not supported (this puppemon reads version 1)"


def test_load(tmp_path):
    with pytest.raises(ManifestError) as info:
        load(tmp_path)
    assert str(info.value) == f"no puppemon.yaml in {tmp_path}; run `puppemon init` to create one"
    (tmp_path / "puppemon.yaml").write_text("version: 1\nflows:\n  a: {command: x}\n")
    assert list(load(tmp_path).flows) == list(load(str(tmp_path)).flows) == ["a"]
    assert isinstance(info.value, PuppemonError)


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1h 30m", 5400),
    ("1d2h3m4s", 93784), ("90", 90), ("10", 10), ("1.5h", 5400), (45, 45), (2.5, 2.5), ("0s", 0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["often", "", "1x", "-5s", "5 s s", "m", "1m1h", True, None, -1,
                                  float("inf"), "١٠s"])
def test_parse_duration_refuses(text):
    with pytest.raises(DurationError) as info:
        parse_duration(text)
    assert str(info.value).endswith("is not a duration (use 30s, 10m, 2h, 1d)")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("seconds, text", [
    (0, "0.0s"), (1.23, "1.2s"), (59.9, "59.9s"), (59.96, "1m 00s"), (184, "3m 04s"), (7500, "2h 05m"),
    (3 * 86400 + 4 * 3600, "3d 04h"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --- fuzzing: whatever the input, only ManifestError comes out ----------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(["0 8 * * *", "@daily", "30s", "UTC", "Asia/Taipei", "a.py:main", "x", "1h",
                                     "skip", "all", "fresh", "2024-13-45", "on", "yes", "~", "<<"]))
KEYS = st.one_of(st.text(max_size=12), st.sampled_from(
    ["version", "flows", "defaults", "variables", "command", "entrypoint", "schedule", "every", "timezone",
     "params", "timeout", "retries", "retry_delay", "overlap", "concurrency", "catchup", "secrets", "env", "run_on_deploy",
     "workdir", "notify", "on", "webhook_secret", "hello", "backup"]))
TREES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(KEYS, children, max_size=5), max_leaves=25)
MANIFEST_LIKE = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), SCALARS)},
    optional={"defaults": TREES, "variables": TREES,
              "flows": st.dictionaries(KEYS, st.dictionaries(KEYS, TREES, max_size=6), max_size=3)})


def _dump(tree, flow_style) -> str:
    return yaml.safe_dump(tree, default_flow_style=flow_style, allow_unicode=True)


def _check(text) -> None:
    try:
        parse(text)
    except ManifestError as exc:
        assert re.match(r"puppemon\.yaml:\d+:\d+: \S", str(exc)), str(exc)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=st.one_of(MANIFEST_LIKE, TREES), flow_style=st.sampled_from([None, True, False]))
def test_random_yaml_documents(tree, flow_style):
    _check(_dump(tree, flow_style))


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200),
                      st.text(alphabet="version: 1\nflows:{}[]-&*!<>|'\"#\t ,?", max_size=120)))
def test_random_text(text):
    _check(text)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=MANIFEST_LIKE, cut=st.integers(0, 400), junk=st.text(max_size=8))
def test_damaged_documents(base, cut, junk):
    text = _dump(base, None)
    _check(text[:cut] + junk + text[cut:])


def test_slurm_memory_is_read_in_megabytes_and_slurm_null_undoes_the_defaults():
    flows = parse("version: 1\ndefaults:\n  slurm: {mem: 2G}\nflows:\n  a:\n    command: x\n"
                  "  b:\n    command: x\n    slurm: {mem: 1536K}\n  c:\n    command: x\n    slurm: null\n").flows
    assert (flows["a"].slurm.mem, flows["b"].slurm.mem, flows["c"].slurm) == (2048, 2, None)
