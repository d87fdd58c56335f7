"""`make pins`: uv.lock holds kentik-api 1.0.7 but none of its own stale `==`
pins, and pins protobuf and grpcio exactly. kentik-api's pins are read from
the package's metadata in this venv, not copied here.

    python -m tests.pins [uv.lock]
"""

import os
import re
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
# The uv that the Makefile installs (its UV_HOME), the release pyproject.toml requires.
UV = ROOT / ".venv-uv" / "bin" / "uv"
KENTIK_API = ("kentik-api", "1.0.7")
# A new major release of either could reject kentik-api's generated stubs.
EXACT = ("protobuf", "grpcio")
# kentik-api's pins that hold: 0.0.1 is protoc-gen-openapiv2's only release.
KEPT = {"protoc-gen-openapiv2"}


def uv_env() -> dict[str, str]:
    """An environment for running uv on the clone: this interpreter, no
    download of another, no configuration but the project's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("UV_")}
    return {**env, "UV_PYTHON": sys.executable, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CONFIG": "1"}


def lock_load(path: Path = ROOT / "uv.lock") -> dict[str, Any]:
    with path.open("rb") as file:
        lock: dict[str, Any] = tomllib.load(file)
    return lock


def locked_versions(lock: dict[str, Any]) -> dict[str, set[str]]:
    """Every version the lock holds of each package (a universal lock may hold
    several, one per Python)."""
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        versions.setdefault(canonicalize_name(package["name"]), set()).add(package["version"])
    return versions


def kentik_api_pins() -> dict[str, str]:
    """kentik-api's own `name==version` requirements, extras left out."""
    pins: dict[str, str] = {}
    for line in requires(KENTIK_API[0]) or []:
        requirement = Requirement(line)
        if requirement.marker is not None:
            continue
        for spec in requirement.specifier:
            if spec.operator == "==":
                pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def pin_problems(lock: dict[str, Any], stale: dict[str, str]) -> list[str]:
    """What is wrong with `lock`, one sentence each: nothing when it is right."""
    versions = locked_versions(lock)
    problems = []
    name, version = KENTIK_API
    if versions.get(name) != {version}:
        problems.append(f"{name} is at {sorted(versions.get(name, ()))}, not {version}")
    overrides: dict[str, str] = {
        canonicalize_name(entry["name"]): entry.get("specifier", "")
        for entry in lock.get("manifest", {}).get("overrides", [])
    }
    for package, old in sorted(stale.items()):
        if package in KEPT:
            continue
        if package not in overrides:
            problems.append(f"{package}: kentik-api's =={old} is not overridden")
        if old in versions.get(package, set()):
            problems.append(f"{package} is back at {old}, kentik-api's own pin")
    for package in EXACT:
        if not re.fullmatch(r"==[^,*]+", overrides.get(package, "")):
            problems.append(f"{package} is not pinned exactly ({overrides.get(package)!r})")
    return problems


def main(argv: list[str]) -> int:
    lock = lock_load(Path(argv[0])) if argv else lock_load()
    stale = kentik_api_pins()
    problems = pin_problems(lock, stale)
    for problem in problems:
        print(f"pins: {problem}", file=sys.stderr)
    if problems:
        return 1
    versions = locked_versions(lock)
    moved = ", ".join(
        f"{package} {old} -> {'/'.join(sorted(versions.get(package, {'absent'})))}"
        for package, old in sorted(stale.items())
        if package not in KEPT
    )
    print(f"pins: uv.lock holds {' '.join(KENTIK_API)} and none of its own pins ({moved})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
