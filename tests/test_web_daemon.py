"""The daemon's `--listen` serves the dashboard: on a loopback address its pages without the token, its
actions only with it (entered once, kept in the tab's session storage); in a real browser."""
from __future__ import annotations

import json
import re

import pytest

from tests.conftest import wait_until
from tests.daemon_helpers import DaemonProcess, remote_records
from tests.test_web import _puppemon, _run
from tests.web_helpers import fetch, screenshot, scrubbed_env

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token"


def _daemon(tmp, listen: str, token: str | None = TOKEN):
    """A project with one flow deployed to a bare remote, and a daemon listening at `listen`."""
    env = scrubbed_env(tmp / "home")
    bare, project = tmp / "remote.git", tmp / "project"
    _run(env, "git", "init", "--quiet", "--bare", str(bare))
    project.mkdir()
    (project / "puppemon.yaml").write_text("version: 1\nflows:\n  hello:\n    command: echo hello $PUPPEMON_PARAMS\n"
                                           "    params: {who: world}\n  slow:\n    command: sleep 60\n")
    for args in (["init", "--quiet"], ["add", "-A"], ["commit", "--quiet", "-m", "flows"],
                 ["remote", "add", "origin", str(bare)]):
        _run(env, "git", *args, cwd=project)
    _puppemon(env, "push", cwd=project)
    daemon = DaemonProcess(str(bare), tmp / "state", "--listen", listen,
                           env={**env, **({"PUPPEMON_HTTP_TOKEN": token} if token else {})}).start()
    found = wait_until(lambda: re.search(r"listening on http://\S+:([0-9]+)", daemon.log), 30, "the HTTP hook",
                       on_fail=lambda: daemon.log)
    return daemon, bare, f"http://127.0.0.1:{found.group(1)}/"


@pytest.fixture(scope="module")
def listening(tmp_path_factory):
    daemon, bare, url = _daemon(tmp_path_factory.mktemp("web-daemon"), "127.0.0.1:0")
    try:
        wait_until(lambda: "hello" in fetch(url + "api/overview.json")[1].decode(), 30, "the deploy")
        yield {"url": url, "bare": bare, "daemon": daemon}
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """A daemon on every address (not loopback): every page needs its token."""
    daemon, bare, url = _daemon(tmp_path_factory.mktemp("web-exposed"), "0.0.0.0:0")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        wait_until(lambda: "hello" in fetch(url + "api/overview.json", headers=auth)[1].decode(), 30, "the deploy")
        yield {"url": url, "bare": bare, "daemon": daemon}
    finally:
        daemon.stop()


def test_actions_without_the_token_are_refused_and_change_nothing(listening):
    before = remote_records(listening["bare"])
    for headers in ({"Content-Type": "application/json"},
                    {"Content-Type": "application/json", "Authorization": "Bearer wrong"}):
        code, body = fetch(listening["url"] + "api/flows/hello/run", b'{"params": {}}', headers)
        assert code == 401 and json.loads(body) == {"error": "missing or wrong bearer token"}
    code, _ = fetch(listening["url"] + "flows/hello.html")
    assert code == 200                                 # loopback: pages need no token
    assert remote_records(listening["bare"]) == before


def test_run_with_the_token_from_the_daemons_dashboard(listening, driver):
    driver.get(listening["url"] + "flows/hello.html")
    assert not driver.find_element("id", "run-button").is_displayed()   # no token: no action
    driver.find_element("link text", "Token").click()
    driver.find_element("id", "token-input").send_keys(TOKEN + "\n")
    wait_until(lambda: driver.current_url.endswith("index.html"), 10, "back to the overview")
    assert TOKEN not in driver.current_url   # the token went to session storage, not into a URL
    driver.get(listening["url"] + "flows/hello.html")
    field = driver.find_element("css selector", "input[data-key='who']")
    field.clear()
    field.send_keys("<i>bo</i>")
    screenshot(driver, "daemon-flow")
    driver.find_element("id", "run-button").click()
    wait_until(lambda: "/runs/" in driver.current_url, 30, "the run's page")
    run_id = driver.current_url.rsplit("/", 1)[1].removesuffix(".html")
    record = wait_until(lambda: next((r for r in remote_records(listening["bare"]) if r["id"] == run_id), None),
                        60, "the run's record", interval=0.3)
    assert record["params"] == {"who": "<i>bo</i>"} and record["status"] == "succeeded"
    wait_until(lambda: driver.refresh() or "hello" in driver.find_element("id", "log").text, 30, "its log",
               interval=0.5)


def _h1(driver) -> str:
    """The page's heading, or "" while the page is being replaced."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return driver.find_element("tag name", "h1").text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def test_off_loopback_every_page_needs_the_token(exposed, driver):
    url = exposed["url"]
    for path in ("", "flows/hello.html", "api/overview.json", "api/flows/hello.json"):
        code, body = fetch(url + path)
        assert code == 401 and b"hello" not in body, path
    driver.get(url + "flows/hello.html")
    assert driver.find_element("tag name", "h1").text == "Token"
    driver.find_element("id", "token-input").send_keys(TOKEN + "\n")
    wait_until(lambda: _h1(driver) == "Flow hello", 15, "the flow page, with the token")
    assert driver.current_url == url + "flows/hello.html"           # the token is in no URL
    assert driver.find_element("id", "run-button").is_displayed()
    driver.find_element("link text", "Overview").click()
    wait_until(lambda: _h1(driver) == "Overview", 15, "the overview, with the token")
    assert driver.current_url == url + "index.html"
    assert driver.find_element("css selector", "tr[data-flow='hello']")
    screenshot(driver, "daemon-locked-overview")


def test_cancel_and_pause_from_the_daemons_dashboard(listening, driver):
    url, auth = listening["url"], {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    driver.get(url + "token.html")
    driver.find_element("id", "token-input").send_keys(TOKEN + "\n")
    wait_until(lambda: driver.current_url.endswith("index.html"), 10, "back to the overview")
    code, body = fetch(url + "api/flows/slow/run", b"{}", auth)
    assert code == 202, body
    run_id = json.loads(body)["id"]
    driver.get(f"{url}runs/{run_id}.html")
    driver.find_element("id", "cancel-button").click()
    record = wait_until(lambda: next((r for r in remote_records(listening["bare"]) if r["id"] == run_id), None),
                        60, "the cancelled run's record", interval=0.3)
    assert record["status"] == "cancelled"
    driver.get(url + "flows/hello.html")
    driver.find_element("css selector", "input[name='reason']").send_keys("maintenance")
    driver.find_element("id", "pause-button").click()
    show = ["git", "--git-dir", str(listening["bare"]), "show", "runs:control/flows/hello.json"]
    state = wait_until(lambda: _run(None, *show, check=False).stdout, 30, "the control state on the remote")
    assert json.loads(state)["paused"] is True and json.loads(state)["by"] == "dashboard on d1"
    code, body = fetch(url + "api/flows/hello/run", b"{}", auth)     # held at once
    assert code == 409 and "paused" in json.loads(body)["error"]


def test_a_daemon_without_a_token_serves_its_dashboard_to_loopback_host_names_only(tmp_path):
    """No token on 127.0.0.1: a page elsewhere whose name was pointed at 127.0.0.1 (DNS rebinding) can
    neither read nor act."""
    daemon, bare, url = _daemon(tmp_path, "127.0.0.1:0", token=None)
    try:
        wait_until(lambda: "hello" in fetch(url + "api/overview.json")[1].decode(), 30, "the deploy")
        rebound = {"Host": "rebound.example:8787", "Origin": "http://rebound.example:8787",
                   "Content-Type": "application/json"}
        assert fetch(url + "index.html", headers=rebound)[0] == 403
        assert fetch(url + "api/flows/hello/run", b"{}", rebound)[0] == 403
        assert fetch(url + "index.html")[0] == 200        # under its own name it answers
    finally:
        assert daemon.stop() == 0
    assert not [r for r in remote_records(bare) if r.get("flow") == "hello"]   # nothing ran
