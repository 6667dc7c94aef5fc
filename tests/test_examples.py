"""The projects under examples/: each validates and runs once through `puppemon run`."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import sqlite3
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import git, make_repo, puppemon

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROJECTS = sorted(p.parent.name for p in EXAMPLES.glob("*/puppemon.yaml"))


def copy_example(name: str, tmp_path: Path) -> Path:
    """A copy of examples/<name>, so runs leave the repository's tree as it was."""
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / name, dest, symlinks=True)
    return dest


def run_in_process(project: Path, flow_name: str, params: dict | None = None):
    """Run a flow through the runner itself, to look at what it records (outputs, result)."""
    from puppemon.formats import new_id
    from puppemon.project import manifest
    from puppemon.run.runner import execute
    from puppemon.run.spec import RunSpec

    loaded = manifest.load(project)
    spec = RunSpec(run_id=new_id(), flow=loaded.flows[flow_name], code_dir=project,
                   params=params or {}, variables=dict(loaded.variables), workdir="shared")
    return execute(spec)


def outputs(result) -> dict[str, bytes]:
    return {o.path: o.data for o in result.outputs}


def test_the_examples_are_there():
    assert {"scraper", "backup", "notifier", "etl"} <= set(PROJECTS)
    for name in PROJECTS:
        readme = EXAMPLES / name / "README.md"
        assert readme.exists(), f"examples/{name} has no README.md"
        assert 3 <= len(readme.read_text().splitlines()) <= 20


@pytest.mark.parametrize("name", PROJECTS)
def test_example_validates(name):
    from puppemon.project import manifest

    loaded = manifest.load(EXAMPLES / name)
    assert loaded.flows
    pytest.importorskip("puppemon.commands.validate")
    proc = puppemon("validate", str(EXAMPLES / name))
    for flow in loaded.flows:
        assert flow in proc.stdout


def test_scraper_writes_csv_outputs(tmp_path):
    project = copy_example("scraper", tmp_path)
    proc = puppemon("run", "prices", "-C", str(project))
    assert proc.stdout == "5 products in 3 categories from data/catalog.html\n"
    assert proc.stderr.startswith("prices: succeeded in ")
    assert proc.stderr.endswith('result: {"products": 5, "categories": 3}\n')

    result = run_in_process(project, "prices")
    assert result.status == "succeeded", result.log.decode()
    files = outputs(result)
    assert sorted(files) == ["categories.csv", "products.csv"]
    products = list(csv.DictReader(io.StringIO(files["products.csv"].decode())))
    assert [p["sku"] for p in products] == ["TNT-2P", "SLP-BAG-5", "STV-GAS", "POT-1L", "HDL-300"]
    assert products[0] == {"sku": "TNT-2P", "name": "Two-person tent", "category": "camping",
                           "price_twd": "4290", "in_stock": "12"}
    assert products[1]["name"] == "Sleeping bag, 5 \N{DEGREE SIGN}C"
    assert files["categories.csv"].decode().splitlines() == [
        "category,products,min_price,max_price",
        "camping,2,2150.0,4290.0",
        "cooking,2,990.0,1380.0",
        "lighting,1,760.0,760.0",
    ]


def test_backup_writes_a_tarball(tmp_path):
    project = copy_example("backup", tmp_path)
    proc = puppemon("run", "backup", "-C", str(project))
    assert proc.stdout.startswith("archived 2 files from sample-data into backup-sample-data-")
    assert proc.stderr.startswith("backup: succeeded in ")

    result = run_in_process(project, "backup")
    assert result.status == "succeeded", result.log.decode()
    files = outputs(result)
    (archive,) = [name for name in files if name.endswith(".tar.gz")]
    assert sorted(files) == [archive, archive + ".sha256"]
    assert files[archive + ".sha256"].decode() == f"{hashlib.sha256(files[archive]).hexdigest()}  {archive}\n"
    with tarfile.open(fileobj=io.BytesIO(files[archive])) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        assert sorted(members) == ["sample-data/notes/2026-11-24.md", "sample-data/settings.ini"]
        assert tar.extractfile(members["sample-data/settings.ini"]).read() == \
            (project / "sample-data" / "settings.ini").read_bytes()
    # The knobs the example is there to show.
    from puppemon.project import manifest
    flow = manifest.load(project).flows["backup"]
    assert (flow.overlap, flow.retries, flow.timeout) == ("skip", 2, 20 * 60)


def test_backup_keeps_the_newest_local_copies(tmp_path):
    from puppemon.formats import new_id
    from puppemon.project import manifest
    from puppemon.run.runner import execute
    from puppemon.run.spec import RunSpec

    project = copy_example("backup", tmp_path)
    dest = tmp_path / "archives"
    dest.mkdir()
    old = dest / "backup-sample-data-20000101T000000Z.tar.gz"
    old.write_bytes(b"old")
    (dest / (old.name + ".sha256")).write_text("old\n")
    loaded = manifest.load(project)
    variables = {**loaded.variables, "BACKUP_KEEP_LOCAL": "1", "BACKUP_DIR": str(dest)}
    spec = RunSpec(run_id=new_id(), flow=loaded.flows["backup"], code_dir=project,
                   params={}, variables=variables, workdir="shared")
    result = execute(spec)
    assert result.status == "succeeded", result.log.decode()
    (archive,) = [name for name in outputs(result) if name.endswith(".tar.gz")]
    assert sorted(p.name for p in dest.iterdir()) == [archive, archive + ".sha256"]
    assert (dest / archive).read_bytes() == outputs(result)[archive]


def test_etl_returns_a_result(tmp_path):
    project = copy_example("etl", tmp_path)
    proc = puppemon("run", "daily-sales", "-C", str(project))
    assert proc.stdout == "5 paid orders over 4 days; skipped 1 unreadable row\n"
    assert proc.stderr.startswith("daily-sales: succeeded in ")
    expected = {"orders": 5, "days": 4, "rejected": 1, "revenue": "598.00 EUR",
                "best_day": "2026-11-03", "customers": 4}
    assert proc.stderr.endswith(f"result: {json.dumps(expected)}\n")

    result = run_in_process(project, "daily-sales", {"since": "2026-11-03"})
    assert result.status == "succeeded", result.log.decode()
    assert result.result == {"orders": 2, "days": 2, "rejected": 1, "revenue": "358.80 EUR",
                             "best_day": "2026-11-03", "customers": 2}
    db = tmp_path / "sales.sqlite"
    db.write_bytes(outputs(result)["sales.sqlite"])
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT day, orders, items, revenue FROM daily_sales ORDER BY day").fetchall()
    conn.close()
    assert rows == [("2026-11-03", 1, 10, "299.00"), ("2026-11-04", 1, 2, "59.80")]


@pytest.mark.parametrize("name, flow, recorded", [
    ("scraper", "prices", ["outputs/categories.csv", "outputs/products.csv", "result.json"]),
    ("etl", "daily-sales", ["outputs/sales.sqlite", "result.json"]),
])
def test_deployed_example_runs_on_deploy_and_lands_on_runs(tmp_path, bare_remote, name, flow, recorded):
    """push -> daemon --once -> `git log runs`: the flows marked run_on_deploy run and
    their outputs and result are committed to the runs branch."""
    project = copy_example(name, tmp_path / "src")
    make_repo(project)
    git("remote", "add", "origin", str(bare_remote), cwd=project)
    puppemon("push", "-C", str(project))
    puppemon("daemon", "--once", "--remote", str(bare_remote), "--state", str(tmp_path / "state"),
             "--name", "test")

    files = git("ls-tree", "-r", "--name-only", "runs", cwd=bare_remote).split()
    (run_json,) = [f for f in files if f.startswith(f"runs/{flow}/") and f.endswith("/run.json")]
    run_dir = run_json.rsplit("/", 1)[0]
    assert sorted(f.removeprefix(run_dir + "/") for f in files if f.startswith(run_dir + "/")) == \
        sorted(["log.txt", "run.json", *recorded])
    record = json.loads(git("show", f"runs:{run_json}", cwd=bare_remote))
    assert record["status"] == "succeeded"
    assert git("log", "-1", "--format=%(trailers:key=Puppemon-Status,valueonly)", "runs", "--",
               f"runs/{flow}", cwd=bare_remote).strip() == "succeeded"
    result = json.loads(git("show", f"runs:{run_dir}/result.json", cwd=bare_remote))
    if name == "scraper":
        assert result == {"products": 5, "categories": 3}
        products = git("show", f"runs:{run_dir}/outputs/products.csv", cwd=bare_remote)
        assert products.splitlines()[1] == "TNT-2P,Two-person tent,camping,4290,12"
    else:
        assert result["orders"] == 5 and result["revenue"] == "598.00 EUR"


@pytest.fixture
def webhook():
    """A chat webhook on 127.0.0.1 that keeps what is posted to it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append({"path": self.path, "type": self.headers.get("Content-Type"),
                             "json": json.loads(body)})
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/T000/B000", received
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def test_notifier_posts_to_its_webhook_secret(tmp_path, webhook):
    url, received = webhook
    project = copy_example("notifier", tmp_path)
    # The secret is delivered the way a run receives it: in the environment, as
    # puppemon.secret("webhook") reads it. warn_at=0 makes any disk worth a warning.
    proc = puppemon("run", "disk-alert", "-C", str(project), "--params-json", '{"channel": "#alerts"}',
                    "-p", "warn_at=0", env={"WEBHOOK": url})
    assert proc.stdout == "sent 1 warning(s) to #alerts (HTTP 200)\n"
    assert proc.stderr.startswith("disk-alert: succeeded in ")
    assert len(received) == 1
    post = received[0]
    assert post["path"] == "/hooks/T000/B000" and post["type"] == "application/json"
    assert post["json"]["channel"] == "#alerts"
    assert post["json"]["text"].startswith(":warning: disk space on ")
    assert "/ is " in post["json"]["text"]

    # Below the threshold nothing is sent.
    proc = puppemon("run", "disk-alert", "-C", str(project), "-p", "warn_at=101", env={"WEBHOOK": url})
    assert proc.stdout == "all below 101%: nothing to send\n"
    assert len(received) == 1


def test_notifier_without_its_secret_fails_clearly(tmp_path, webhook):
    _url, received = webhook
    project = copy_example("notifier", tmp_path)
    # A local run takes the secret from this environment; without it, nothing runs.
    proc = puppemon("run", "disk-alert", "-C", str(project), "-p", "warn_at=0", check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == ("Error: flow 'disk-alert' asks for secret 'webhook', not set here: to run it locally, "
                           "export WEBHOOK=... (on the server, the daemon's secrets file gives it)\n")
    assert received == []
