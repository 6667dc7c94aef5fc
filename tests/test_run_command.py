"""`puppemon run FLOW`: params, streaming, the summary line and exit codes, through the real CLI."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import click
import pytest

from puppemon.commands.common import parse_params
from tests.conftest import puppemon

MANIFEST = """\
version: 1
variables:
  REGION: tw
flows:
  hello:
    command: echo hello
  types:
    entrypoint: flows/types.py:main
    params: {days: 1, name: default}
  fails:
    command: "echo about to fail; echo oops >&2; exit 3"
  slow:
    command: "echo ready; sleep 1000"
    timeout: 0.5
  region:
    command: ["sh", "-c", "echo $REGION > made-here.txt"]
"""

TYPES = """\
def main(**params):
    for key in sorted(params):
        print(key, type(params[key]).__name__, repr(params[key]))
    return params
"""


@pytest.fixture
def proj(tmp_path) -> Path:
    root = tmp_path / "proj"
    (root / "flows").mkdir(parents=True)
    (root / "puppemon.yaml").write_text(MANIFEST)
    (root / "flows" / "types.py").write_text(TYPES)
    return root


# --- parse_params ---------------------------------------------------------------

def test_p_values_are_yaml_scalars():
    pairs = ["n=3", "on=true", "ratio=1.5", "nothing=null", "name=hello world", "day=2024-01-01",
             "list=[1, 2]", "empty=", "eq=a=b", "quoted='3'", "channel=#alerts", "msg=a #b"]
    assert parse_params(pairs, None) == {
        "n": 3, "on": True, "ratio": 1.5, "nothing": None, "name": "hello world", "day": "2024-01-01",
        "list": "[1, 2]", "empty": "", "eq": "a=b", "quoted": "3", "channel": "#alerts", "msg": "a #b"}


def test_params_json_first_then_p_over_it():
    assert parse_params(["n=3"], '{"n": 1, "tags": ["a", "b"]}') == {"n": 3, "tags": ["a", "b"]}


@pytest.mark.parametrize("pairs, params_json, message", [
    (["n"], None, "expected key=value, got 'n'"),
    (["=3"], None, "expected key=value, got '=3'"),
    ([], "{nope", "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ([], "[1, 2]", "must be a JSON object, like '{\"days\": 2}'"),
    ([], '{"a": ' * 33 + "1" + "}" * 33, "nests deeper than 32 levels"),   # what a daemon would refuse
    ([], "[" * 100_000 + "]" * 100_000, "nests deeper than 32 levels"),   # deeper than Python parses
])
def test_bad_params_are_bad_parameters(pairs, params_json, message):
    with pytest.raises(click.BadParameter) as info:
        parse_params(pairs, params_json)
    assert info.value.message == message


# --- the command ------------------------------------------------------------------

def test_run_streams_output_and_prints_a_summary(proj):
    proc = puppemon("run", "hello", cwd=proj)
    assert proc.stdout == "hello\n"
    assert re.fullmatch(r"hello: succeeded in \d+\.\ds\n", proc.stderr)


def test_params_are_typed_and_the_result_is_printed(proj):
    proc = puppemon("run", "types", "-p", "days=3", "-p", "on=true", "--params-json", '{"tags": ["x"]}',
                    "-C", str(proj))
    assert proc.stdout == ("days int 3\n"
                           "name str 'default'\n"
                           "on bool True\n"
                           "tags list ['x']\n")
    lines = proc.stderr.splitlines()
    assert re.fullmatch(r"types: succeeded in \d+\.\ds", lines[0])
    assert lines[1:] == ['result: {"days": 3, "name": "default", "tags": ["x"], "on": true}']


def test_failing_flow_exits_with_its_code(proj):
    proc = puppemon("run", "fails", cwd=proj, check=False)
    assert proc.returncode == 3
    assert proc.stdout == "about to fail\noops\n"   # stderr of the flow is in its one log
    assert re.fullmatch(r"fails: failed in \d+\.\ds: exited with code 3\n", proc.stderr)


def test_timeout_exits_124(proj):
    proc = puppemon("run", "slow", cwd=proj, check=False)
    assert proc.returncode == 124
    assert proc.stdout == "ready\n"
    assert re.fullmatch(r"slow: timed_out in \d+\.\ds: timed out after 0\.5s\n", proc.stderr)


def test_runs_in_place_with_the_manifest_variables(proj):
    puppemon("run", "region", "-C", str(proj))
    assert (proj / "made-here.txt").read_text() == "tw\n"


def test_unknown_flow(proj):
    proc = puppemon("run", "nope", cwd=proj, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == "Error: no flow 'nope' in puppemon.yaml (flows: fails, hello, region, slow, types)\n"


def test_bad_p_is_a_usage_error(proj):
    proc = puppemon("run", "hello", "-p", "n", cwd=proj, check=False)
    assert proc.returncode == 2
    assert proc.stderr.endswith("Error: Invalid value for '-p': expected key=value, got 'n'\n")


def test_ctrl_c_cancels_the_flow_and_exits_130(proj):
    (proj / "puppemon.yaml").write_text(MANIFEST.replace("timeout: 0.5", "timeout: 1h"))
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "run", "slow"], cwd=proj,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.startswith("\npuppemon: cancelling slow (up to 10s)...\n")
    assert re.search(r"^slow: cancelled in \d+\.\ds$", err, re.M)  # not "...: cancelled" again


def test_run_has_help():
    proc = puppemon("run", "--help")
    assert "Run FLOW here and now" in proc.stdout
    assert "--params-json JSON" in proc.stdout and "-p, --param KEY=VALUE" in proc.stdout
