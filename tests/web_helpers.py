"""The dashboard's tests share these: a scrubbed environment for module-scoped fixtures, a headless
system Chromium (selenium), `puppemon ui` as a subprocess, screenshots as artefacts, and the checks
run in the browser (colours, contrast)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import IDENTITY, unavailable

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900"]
# The colours the style sheet gives each status (templates/static/dashboard.css), as the browser reports them.
COLOURS = {"succeeded": "rgba(26, 127, 55, 1)", "failed": "rgba(207, 34, 46, 1)", "cancelled": "rgba(89, 99, 110, 1)",
           "timed_out": "rgba(163, 63, 0, 1)", "crashed": "rgba(130, 80, 223, 1)", "skipped": "rgba(209, 217, 224, 1)"}


def scrubbed_env(home: Path) -> dict:
    """os.environ as tests/conftest.py's scrubbed_env makes it, for processes a module's fixture starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "PUPPEMON_"))}
    home.mkdir(parents=True, exist_ok=True)
    (home / "git-templates").mkdir(exist_ok=True)
    (home / ".gitconfig").write_text(
        f"[user]\n\tname = {IDENTITY['name']}\n\temail = {IDENTITY['email']}\n[init]\n\tdefaultBranch = main\n"
        f"\ttemplateDir = {home / 'git-templates'}\n[protocol \"file\"]\n\tallow = always\n")
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0", TZ="UTC", PYTHONPATH=str(ROOT))
    return env


def browser():
    """A headless Chromium of the system's, with a profile of its own; skips (fails in CI) without it."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        unavailable(f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        unavailable("selenium is needed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="puppemon-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    driver.profile_dir = profile
    return driver


def fetch(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    """(status, body) of a GET (or a POST of `data`), an HTTP error's too."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def close(driver) -> None:
    driver.quit()
    shutil.rmtree(driver.profile_dir, ignore_errors=True)


def artefacts() -> Path:
    path = Path(os.environ.get("PUPPEMON_ARTEFACTS") or ROOT / "tests" / "artefacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(driver, name: str) -> Path:
    """Save what the browser shows as an artefact: <artefacts>/<name>.png."""
    path = artefacts() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


class UiProcess:
    """`puppemon ui --port 0` in a project, its address read from what it prints."""

    def __init__(self, project: Path, env: dict, *args: str) -> None:
        self.log_path = project.parent / f"ui-{time.monotonic_ns()}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "puppemon", "ui", "--port", "0", *args], cwd=project,
                                     env=env, stdout=subprocess.PIPE, stderr=self.log_file)
        line = self.proc.stdout.readline().decode()
        found = re.search(r"(http://\S+/)", line)
        assert found, f"puppemon ui printed {line!r}\n{self.log}"
        self.url = found.group(1)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log_file.close()


# In the browser: the contrast of each text against what is behind it (WCAG 2: at least 4.5, 3 for large text).
CONTRAST = """
function lum(c) { var m = c.match(/[0-9.]+/g).map(Number); var a = m.length > 3 ? m[3] : 1;
  return [m.slice(0, 3).map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }), a]; }
function L(rgb) { return 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]; }
function behind(el) { while (el) { var b = getComputedStyle(el).backgroundColor; if (lum(b)[1] > 0) return b; el = el.parentElement; }
  return "rgba(255, 255, 255, 1)"; }
var bad = [];
document.querySelectorAll("body *").forEach(function (el) {
  var own = Array.prototype.some.call(el.childNodes, function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!own || !el.getClientRects().length || el.closest(".skip")) return;
  var s = getComputedStyle(el), fg = L(lum(s.color)[0]), bg = L(lum(behind(el))[0]);
  var ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  var large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && parseInt(s.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) bad.push(el.tagName + "." + el.className + " " + ratio.toFixed(2) + ": " + el.textContent.trim().slice(0, 40));
});
return bad;
"""
