"""The one lock: uv.lock agrees with pyproject.toml, the project builds, `make
pins` keeps kentik-api's stale pins out, and `make outdated` lists what is
behind, read from a package index of the test's own (a PEP 503 directory)."""

import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests import pins
from tests.harness.service import ROOT


def uv(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(pins.UV), *argv],
        cwd=cwd,
        env=pins.uv_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_lock_is_up_to_date_with_pyproject():
    result = uv("lock", "--check", "--offline")
    assert result.returncode == 0, result.stderr


def test_the_project_builds_a_wheel_of_its_two_packages(tmp_path):
    result = uv("build", "--wheel", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        metadata = archive.read("kentik_image_cache-1.0.0.dist-info/METADATA").decode()
    assert tops == {"config", "imagecache", "kentik_image_cache-1.0.0.dist-info"}
    assert "Requires-Dist: kentik-api==1.0.7" in metadata
    assert "Requires-Dist: pillow>=13.0.0; extra == 'simulator'" in metadata


def pins_run(lock: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.pins", str(lock)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_pins_passes_on_the_lock_and_names_what_moved():
    result = pins_run(ROOT / "uv.lock")
    assert result.returncode == 0, result.stderr
    assert "urllib3 1.26.12 -> 2.8.0" in result.stdout
    assert "grpcio 1.51.3 -> 1.85.4" in result.stdout


def test_make_pins_fails_on_a_lock_with_an_old_pin_or_a_loose_protobuf(tmp_path):
    text = (ROOT / "uv.lock").read_text()
    back = re.sub(r'(name = "urllib3"\nversion = )"[^"]+"', r'\1"1.26.12"', text)
    loose = text.replace(
        '{ name = "protobuf", specifier = "==', '{ name = "protobuf", specifier = ">='
    )
    unpinned = re.sub(r'    \{ name = "dacite", specifier = "[^"]+" \},\n', "", text)
    assert len({text, back, loose, unpinned}) == 4
    cases = {
        "back": (back, "urllib3 is back at 1.26.12, kentik-api's own pin"),
        "loose": (loose, "protobuf is not pinned exactly ('>=7.36.2')"),
        "unpinned": (unpinned, "dacite: kentik-api's ==1.6.0 is not overridden"),
    }
    for name, (lock, message) in cases.items():
        path = tmp_path / f"{name}.lock"
        path.write_text(lock)
        result = pins_run(path)
        assert result.returncode == 1, name
        assert f"pins: {message}" in result.stderr.splitlines()


def locked(name: str) -> str:
    with (ROOT / "uv.lock").open("rb") as file:
        [version] = [p["version"] for p in tomllib.load(file)["package"] if p["name"] == name]
    return str(version)


def index_with(root: Path, releases: dict[str, str]) -> str:
    """A simple index offering each project's one release (its wheel's name is all uv reads)."""
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
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(UV_NO_CONFIG="1", UV_DEFAULT_INDEX=index)
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
    assert rows[2:] == [["django", locked("django"), "5.2.99", "wheel"]]
