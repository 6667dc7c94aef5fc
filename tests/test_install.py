"""The README's first command works where a bare `pip install` is refused: a Python whose stdlib
holds EXTERNALLY-MANAGED (PEP 668), as Debian's and Ubuntu's do."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import PIP_CACHE
from tests.test_readme import blocks

ROOT = Path(__file__).resolve().parent.parent
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "puppemon-demo",
                                     ".pytest_cache", ".hypothesis")


def externally_managed_python(root: Path) -> Path:
    """A Python like a distribution's: this interpreter's own, in a prefix whose stdlib says
    EXTERNALLY-MANAGED, with pip (so that `python3 -m pip install` is refused, not missing)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = Path(sysconfig.get_path("stdlib"))          # the base interpreter's, also from a venv
    lib = root / "lib" / version
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (lib / entry.name).symlink_to(entry)
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python belongs to the system; install into a virtual environment.\n")
    (root / "bin").mkdir()
    python = root / "bin" / "python3"
    shutil.copy2(os.path.realpath(getattr(sys, "_base_executable", sys.executable)), python)
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert site.startswith(str(root)), site
    Path(site).mkdir(parents=True, exist_ok=True)
    import pip

    (Path(site) / "pip").symlink_to(Path(pip.__file__).parent)
    return python


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_first_readme_command_installs_where_bare_pip_is_refused(tmp_path):
    python = externally_managed_python(tmp_path / "system-python")
    project = tmp_path / "puppemon"
    shutil.copytree(ROOT, project, ignore=COPY_IGNORE)
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ['PATH']}", "PIP_CACHE_DIR": PIP_CACHE}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PIP_BREAK_SYSTEM_PACKAGES", None)
    bare = subprocess.run(["python3", "-m", "pip", "install", "."], cwd=project, env=env,
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "externally-managed-environment" in bare.stdout + bare.stderr, bare.stderr
    (command, _tests) = blocks("sh")[:2]
    proc = subprocess.run(["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "git log --oneline runs" in proc.stdout and "hello: succeeded" in proc.stdout
    venv_python = project / ".venv" / "bin" / "python"
    assert subprocess.run([str(venv_python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True,
                          text=True).stdout.strip() == str(python.parent.parent)
