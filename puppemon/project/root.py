"""Where a project is: the directory that holds its puppemon.yaml (without loading YAML to say so)."""
from __future__ import annotations

import os
from pathlib import Path

MANIFEST_NAME = "puppemon.yaml"


def find_root(start) -> Path:
    """The project `start` is in: the nearest directory up from it that holds puppemon.yaml, not
    leaving its git repository; `start` itself, as given, when there is none (or no repository)."""
    here = Path(start).resolve()
    for directory in [here, *here.parents]:
        if (directory / MANIFEST_NAME).is_file():
            return directory
        if os.path.lexists(directory / ".git"):
            break  # the top of the repository: a project is inside it
    return Path(start)
