"""Files shipped with the package: stream configs, SQL migrations, schemas.

In a source tree these are symlinks to the top-level ``streams/``, ``sql/`` and
``schemas/`` folders; a built wheel carries copies.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_dir(name: str) -> Path:
    return Path(str(files("mumu.resources") / name))
