"""`puppemon ui`, checked in a real browser (headless system Chromium): a real daemon's history on a real
remote, the pages read through the browser, actions written through git, the static export from file://."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_until
from tests.daemon_helpers import DaemonProcess, remote_records
from tests.web_helpers import COLOURS, CONTRAST, UiProcess, fetch, screenshot, scrubbed_env

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
flows:
  hello:
    command: [sh, hello.sh]
    params: {who: world}
  broken:
    command: "echo about to fail; exit 3"
  slow:
    command: [sh, slow.sh]
"""
HELLO = r"""printf 'hello \033[32mgreen\033[0m <script>window.pwned=1</script>\n'
echo "params $PUPPEMON_PARAMS"
printf 'value %s\n' "$PUPPEMON_RUN_ID" > "$PUPPEMON_OUTPUT_DIR/<script>x.txt"
"""
SLOW = 'i=0; while [ $i -lt 120 ]; do echo "line $i"; i=$((i+1)); sleep 0.25; done\n'
XSS_PARAM = "<script>window.pwned=2</script>"
JSON = {"Content-Type": "application/json"}   # what the pages' script sends an action with


def _run(env, *args, cwd=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert not check or proc.returncode == 0, f"{args} failed: {proc.stdout}\n{proc.stderr}"
    return proc


def _puppemon(env, *args, cwd=None, check=True) -> subprocess.CompletedProcess:
    return _run(env, sys.executable, "-m", "puppemon", *args, cwd=cwd, check=check)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A project deployed to a bare remote, a daemon that ran hello twice and broken once, `puppemon ui`."""
    tmp = tmp_path_factory.mktemp("web")
    env = scrubbed_env(tmp / "home")
    bare, project = tmp / "remote.git", tmp / "project"
    _run(env, "git", "init", "--quiet", "--bare", str(bare))
    project.mkdir()
    (project / "puppemon.yaml").write_text(MANIFEST)
    (project / "hello.sh").write_text(HELLO)
    (project / "slow.sh").write_text(SLOW)
    for args in (["init", "--quiet"], ["add", "-A"], ["commit", "--quiet", "-m", "flows"],
                 ["remote", "add", "origin", str(bare)]):
        _run(env, "git", *args, cwd=project)
    _puppemon(env, "push", cwd=project)
    daemon = DaemonProcess(str(bare), tmp / "state", "--live-interval", "1", env=env).start()
    try:
        for args in (["hello", "-p", f"who={XSS_PARAM}"], ["broken"], ["hello"]):
            _puppemon(env, "trigger", *args, "--wait", "--timeout", "30", cwd=project, check=False)
            assert daemon.proc.poll() is None, daemon.log
        records = remote_records(bare)
        assert [r["flow"] for r in records] == ["hello", "broken", "hello"], daemon.log
        ui = UiProcess(project, env)
        yield {"env": env, "bare": bare, "project": project, "daemon": daemon, "ui": ui, "records": records,
               "tmp": tmp}
        ui.stop()
    finally:
        daemon.stop()


def _cells(driver, flow: str) -> list:
    return driver.find_elements("css selector", f"tr[data-flow='{flow}'] a.cell")


def test_overview_shows_every_flow_with_the_right_colours(site, driver):
    driver.get(site["ui"].url)
    records = site["records"]
    for flow in ("hello", "broken"):
        mine = [r for r in records if r["flow"] == flow]
        cells = wait_until(lambda: driver.refresh() or (len(_cells(driver, flow)) == len(mine) and _cells(driver, flow)),
                           20, f"{flow}'s cells", on_fail=lambda: driver.page_source[:3000], interval=0.5)
        shown = [(c.get_attribute("href").rsplit("/", 1)[1], c.value_of_css_property("background-color"))
                 for c in cells]
        assert shown == [(f"{r['id']}.html", COLOURS[r["status"]]) for r in mine]
    rows = [row.get_attribute("data-flow") for row in driver.find_elements("css selector", "tr.flow-row")]
    assert rows == ["broken", "hello", "slow"]       # failing flows first
    assert "d1" in driver.find_element("css selector", "ul.daemons").text
    screenshot(driver, "overview")


def test_clicking_a_cell_opens_the_run_and_its_log(site, driver):
    driver.get(site["ui"].url)
    first = site["records"][0]
    driver.find_element("css selector", f"a.cell[href$='{first['id']}.html']").click()
    wait_until(lambda: first["id"] in driver.find_element("tag name", "h1").text, 10, "the run page")
    log = driver.find_element("id", "log")
    assert log.text.startswith("hello green <script>window.pwned=1</script>")
    green = log.find_element("css selector", "span.fg-green")
    assert green.text == "green" and green.value_of_css_property("color") == "rgba(17, 99, 41, 1)"
    screenshot(driver, "run")


def test_text_from_a_run_renders_as_text_and_no_script_of_it_runs(site, driver):
    first = site["records"][0]
    driver.get(f"{site['ui'].url}runs/{first['id']}.html")
    assert XSS_PARAM in driver.find_element("css selector", "code.params").text
    assert "<script>window.pwned=1</script>" in driver.find_element("id", "log").text
    assert driver.find_element("css selector", ".output-name").text == "<script>x.txt"
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    assert [s.get_attribute("src").rsplit("/", 1)[1] for s in driver.find_elements("tag name", "script")] == \
        ["dashboard.js"]


def test_an_output_is_diffed_against_the_previous_run_of_its_flow(site, driver):
    first, _broken, second = site["records"]
    driver.get(f"{site['ui'].url}runs/{second['id']}.html")
    diff = driver.find_element("css selector", "pre.diff").text
    assert f"-value {first['id']}" in diff and f"+value {second['id']}" in diff
    link = driver.find_element("link text", "download").get_attribute("href")
    with urllib.request.urlopen(link, timeout=30) as answer:   # a download, not a page
        assert answer.headers["Content-Disposition"].startswith("attachment; ")
        assert second["id"].encode() in answer.read()


def test_unknown_flows_and_runs_are_404_pages(site, driver):
    for path in ("flows/nope.html", "runs/20200101T000000Z-abcdef.html", "nothing/here"):
        code, _body = fetch(site["ui"].url + path)
        assert code == 404, path
    driver.get(site["ui"].url + "flows/nope.html")
    assert driver.find_element("tag name", "h1").text == "Not found"
    assert "no flow 'nope'" in driver.find_element("css selector", "p.error").text


def test_the_json_api_has_the_shapes_of_the_cli(site):
    first = site["records"][0]
    code, body = fetch(f"{site['ui'].url}api/runs/{first['id']}.json")
    assert code == 200 and json.loads(body)["run"] == first
    cli = json.loads(_puppemon(site["env"], "runs", "hello", "--json", cwd=site["project"]).stdout)
    code, body = fetch(f"{site['ui'].url}api/flows/hello.json")
    assert code == 200 and len(cli) == 2 and json.loads(body)["runs"] == cli


def test_run_with_params_from_the_flow_page(site, driver):
    driver.get(f"{site['ui'].url}flows/hello.html")
    field = driver.find_element("css selector", "input[data-key='who']")
    assert field.get_attribute("value") == "world"          # the manifest's default
    field.clear()
    field.send_keys("ana")
    screenshot(driver, "flow")
    driver.find_element("id", "run-button").click()
    wait_until(lambda: "/runs/" in driver.current_url, 30, "the new run's page")
    run_id = driver.current_url.rsplit("/", 1)[1].removesuffix(".html")
    record = wait_until(lambda: next((r for r in remote_records(site["bare"]) if r["id"] == run_id), None), 60,
                        "the run's record", interval=0.3)
    assert record["params"] == {"who": "ana"} and record["status"] == "succeeded"
    assert record["trigger"]["kind"] == "request"


def test_a_running_log_grows_on_the_page_and_cancel_stops_it(site, driver):
    run_id = _puppemon(site["env"], "trigger", "slow", cwd=site["project"]).stdout.strip()
    driver.get(f"{site['ui'].url}runs/{run_id}.html")
    log = lambda: driver.find_element("id", "log").text   # noqa: E731
    wait_until(lambda: "line 3" in log(), 30, "the first lines", interval=0.3,
               on_fail=lambda: driver.page_source[-2000:])
    driver.execute_script("window.stayed = true")
    wait_until(lambda: "line 12" in log(), 30, "more lines", interval=0.3)
    assert driver.execute_script("return window.stayed") is True   # grown in place, no reload
    screenshot(driver, "running")
    driver.find_element("id", "cancel-button").click()
    record = wait_until(lambda: next((r for r in remote_records(site["bare"]) if r["id"] == run_id), None), 60,
                        "the cancelled run's record", interval=0.3)
    assert record["status"] == "cancelled"


def test_pause_and_resume_a_flow(site, driver):
    driver.get(f"{site['ui'].url}flows/broken.html")
    driver.find_element("css selector", "input[name='reason']").send_keys("<b>disk</b> full")
    driver.find_element("id", "pause-button").click()
    state = ["git", "--git-dir", str(site["bare"]), "show", "runs:control/flows/broken.json"]
    paused = wait_until(lambda: _run(site["env"], *state, check=False).stdout, 30, "the control state")
    assert json.loads(paused)["paused"] is True and json.loads(paused)["reason"] == "<b>disk</b> full"
    wait_until(lambda: driver.refresh() or driver.find_elements("id", "resume-button"), 30, "the resume button",
               interval=0.5)
    assert "<b>disk</b> full" in driver.find_element("tag name", "main").text
    driver.find_element("id", "resume-button").click()
    wait_until(lambda: json.loads(_run(site["env"], *state).stdout)["paused"] is False, 30, "resumed")


def test_keyboard_navigation_and_contrast(site, driver):
    from selenium.webdriver.common.keys import Keys

    driver.get(site["ui"].url)
    body = driver.find_element("tag name", "body")
    body.send_keys(Keys.TAB)
    active = driver.switch_to.active_element
    assert active.text == "Skip to content" and active.value_of_css_property("left") != "-9999px"
    active.send_keys(Keys.ENTER)
    for _ in range(30):   # from the content, Tab reaches the first run's cell
        driver.switch_to.active_element.send_keys(Keys.TAB)
        if "cell" in (driver.switch_to.active_element.get_attribute("class") or ""):
            break
    cell = driver.switch_to.active_element
    assert "cell" in cell.get_attribute("class")
    assert cell.value_of_css_property("outline-style") == "solid"   # focus is visible
    cell.send_keys(Keys.ENTER)
    wait_until(lambda: "/runs/" in driver.current_url, 10, "the run page by keyboard")
    for path in ("", "flows/hello.html", "deploys.html", driver.current_url.split("/", 3)[3]):
        driver.get(site["ui"].url + path)
        assert driver.execute_script(CONTRAST) == [], path


def test_the_export_opens_from_file_urls_and_is_incremental(site, driver, tmp_path):
    out = tmp_path / "site"
    first = _puppemon(site["env"], "ui", "--export", str(out), cwd=site["project"]).stdout
    assert first.startswith("wrote ")
    driver.get((out / "index.html").as_uri())
    assert driver.find_element("tag name", "h1").text == "Overview"
    assert driver.find_elements("tag name", "script") == []
    driver.find_element("link text", "hello").click()
    assert driver.current_url == (out / "flows" / "hello.html").as_uri()
    driver.find_element("css selector", "table.runs a").click()
    assert driver.current_url.startswith((out / "runs").as_uri())
    assert "hello green" in driver.find_element("id", "log").text
    driver.find_element("link text", "hello").click()          # back up, through a relative link
    driver.find_element("link text", "Deploys").click()
    assert driver.current_url == (out / "deploys.html").as_uri()
    screenshot(driver, "export-deploys")
    again = _puppemon(site["env"], "ui", "--export", str(out), "--no-fetch", cwd=site["project"]).stdout
    assert again.startswith("wrote 0 pages"), again
    dead = [(page.relative_to(out), href) for page in out.rglob("*.html")
            for href in re.findall(r'href="([^"#]+)"', page.read_text())
            if not href.startswith(("http:", "https:")) and not (page.parent / href).exists()]
    assert not dead   # every flow the overview lists has its page (one with no run yet too), every run link its own
    assert sorted(p.name for p in Path(out).iterdir()) == [".puppemon-export", "deploys.html", "flows",
                                                          "index.html", "runs", "static"]


def test_deploys_show_each_deploys_files_diffed_against_the_one_before(site, driver):
    project, env = site["project"], site["env"]
    (project / "slow.sh").write_text(SLOW + "# <script>v2</script>\n")
    _run(env, "git", "commit", "--quiet", "-am", "slow: v2", cwd=project)
    _puppemon(env, "push", cwd=project)
    tip = _run(env, "git", "--git-dir", str(site["bare"]), "rev-parse", "flows").stdout.strip()

    def shown():
        driver.get(site["ui"].url + "deploys.html")
        section = driver.find_elements("id", f"d-{tip}")
        return section and "d1: succeeded deployed" in section[0].text and section[0]

    section = wait_until(shown, 30, "the new deploy and the daemon's record of it", interval=0.5)
    section.find_element("tag name", "summary").click()
    assert section.find_element("css selector", ".changes li").text.startswith("changed slow.sh")
    diff = section.find_element("css selector", "pre.diff").text
    assert "+# <script>v2</script>" in diff and "--- a/slow.sh" in diff
    assert driver.execute_script("return typeof window.pwned") == "undefined"
    screenshot(driver, "deploys")


def test_cancel_or_pause_of_a_run_that_has_ended_is_refused_and_writes_nothing(site):
    record = site["records"][0]
    before = _run(site["env"], "git", "--git-dir", str(site["bare"]), "rev-parse", "runs").stdout.strip()
    for verb in ("cancel", "pause"):
        code, body = fetch(f"{site['ui'].url}api/runs/{record['id']}/{verb}", b"{}", JSON)
        assert code == 409
        assert json.loads(body) == {
            "error": f"run {record['id']} ({record['flow']}) finished: {record['status']}: nothing to {verb}"}
    assert record["id"] not in _requests_since(site, before)   # no cancel or pause request was written


def _requests_since(site, before: str) -> str:
    """The subjects of the request commits on the remote's runs branch after `before` (other tests' too)."""
    return _run(site["env"], "git", "--git-dir", str(site["bare"]), "log", "--format=%s", f"{before}..runs",
                "--grep=^request: ").stdout


def test_a_run_of_a_flow_that_is_not_deployed_is_refused_and_writes_nothing(site):
    before = _run(site["env"], "git", "--git-dir", str(site["bare"]), "rev-parse", "runs").stdout.strip()
    code, body = fetch(f"{site['ui'].url}api/flows/nosuch/run", b"{}", JSON)
    assert code == 409
    error = json.loads(body)["error"]   # (the deploy the dashboard has read: another test pushes)
    assert error.startswith("no flow 'nosuch' in the deployed flows (flows ") \
        and error.endswith(": hello, broken, slow); push it first")
    assert "run nosuch" not in _requests_since(site, before)


def test_a_read_only_dashboard_shows_no_action_buttons(site, tmp_path):
    """A clone with no remote to write to: the same pages, without Run, Pause or Cancel."""
    clone = tmp_path / "clone"
    _run(site["env"], "git", "clone", "--quiet", str(site["bare"]), str(clone))
    for ref, branch in (("refs/heads/runs", "runs"), ("refs/puppemon/remote-flows", "flows")):
        _run(site["env"], "git", "update-ref", ref, f"refs/remotes/origin/{branch}", cwd=clone)
    _run(site["env"], "git", "remote", "remove", "origin", cwd=clone)
    ui = UiProcess(clone, site["env"])
    try:
        for url in (site["ui"].url, ui.url):
            code, page = fetch(url + "flows/hello.html")
            assert code == 200 and "<h1>Flow hello</h1>" in page.decode()
            assert ('id="run-button"' in page.decode()) == (url == site["ui"].url), url
    finally:
        ui.stop()


def test_a_local_dashboard_refuses_requests_for_another_host_name(site):
    """A page elsewhere whose name was pointed at 127.0.0.1 (DNS rebinding) reads and does nothing."""
    for method, path in (("GET", "index.html"), ("POST", "api/flows/hello/run")):
        request = urllib.request.Request(site["ui"].url + path, method=method, data=b"{}" if method == "POST" else None,
                                         headers={"Host": "rebound.example:8787", "Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403, path
    assert fetch(site["ui"].url + "index.html")[0] == 200   # its own name still works
