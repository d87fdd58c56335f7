"""`make outdated`: what has a newer release than the constraints pin, read
from a package index of the test's own (a PEP 503 directory)."""

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.harness.service import ROOT


def pinned(name: str) -> str:
    constraints = (ROOT / "requirements" / "constraints.txt").read_text()
    match = re.search(rf"^{re.escape(name)}==(\S+)$", constraints, re.MULTILINE | re.IGNORECASE)
    assert match, name
    return match[1]


def index_with(root: Path, releases: dict[str, str]) -> str:
    """A simple index offering each project's one release (its wheel's name is all pip reads)."""
    for project, wheel in releases.items():
        (root / project).mkdir(parents=True)
        (root / project / "index.html").write_text(f'<a href="{wheel}">{wheel}</a>\n')
    return root.as_uri()


def test_make_outdated_lists_what_is_behind_and_leaves_kentik_api_out(tmp_path):
    index = index_with(
        tmp_path / "simple",
        {
            "django": "Django-5.2.99-py3-none-any.whl",
            "kentik-api": "kentik_api-9.0.0-py3-none-any.whl",
        },
    )
    # Only that index: no configuration file, no other index or wheel directory.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=index, PIP_DISABLE_PIP_VERSION_CHECK="1")
    result = subprocess.run(
        # The venv running the suite, as it is (`-o`: no install first).
        ["make", "-s", "-o", "install-dev", "outdated", f"VENV={sys.prefix}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows[0] == ["Package", "Version", "Latest", "Type"]
    assert rows[2:] == [["Django", pinned("Django"), "5.2.99", "wheel"]]
