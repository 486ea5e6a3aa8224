"""Node.js for the checks that need it: the official AsyncAPI parser and the kafkajs subscriber example.

``node_dir`` installs ``tests/node/package-lock.json`` once per session (``npm ci``: the exact
versions committed, no install scripts, see ``.npmrc``) and gives the folder, whose
``node_modules/`` the scripts import from. Without ``node`` and ``npm`` on PATH, or when the
install fails (no registry, say), the tests that need it are skipped with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent
#: A cold install downloads ~15 MB (170 packages); from npm's cache it takes seconds.
INSTALL_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="session")
def node_dir() -> Path:
    """``tests/node`` with its dependencies installed; skips when Node or the install is unavailable."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not on PATH: the AsyncAPI parser and kafkajs checks need Node.js >= 18")
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=INSTALL_TIMEOUT_SECONDS,
        )
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"npm ci failed in {NODE_DIR} (exit {exc.returncode}): {exc.stderr.strip()[-600:]}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci did not finish within {INSTALL_TIMEOUT_SECONDS} s in {NODE_DIR}")
    return NODE_DIR
