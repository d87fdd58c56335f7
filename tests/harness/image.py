"""The Docker image's decisions, read from the Dockerfile, .dockerignore and
compose.yaml the way Docker reads them, for the tests that cannot build the
image (tests/docker/smoke.sh builds and runs it where a Docker engine runs)."""

import json
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from tests.harness.service import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, as (keyword, arguments), with their
    continued lines joined and comments left out."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the image that runs: those after the last FROM."""
    every = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(every) if keyword == "FROM")
    return every[last_from + 1 :]


def build_args() -> dict[str, str]:
    """The default of each ARG declared before the first FROM."""
    args: dict[str, str] = {}
    for keyword, arguments in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = default
    return args


def base_images() -> list[str]:
    """The image each stage starts from, with the ARGs' defaults put in."""
    args = build_args()
    found = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            image = arguments.split()[0]
            found.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image))
    return found


def user() -> str:
    """The USER the running image starts as (the last one that says)."""
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    return users[-1] if users else "root"


def environment() -> dict[str, str]:
    """What the running image's ENV instructions set (PATH left out: it
    names the image's /venv)."""
    env: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                name, _, value = pair.partition("=")
                env[name] = value
    env.pop("PATH", None)
    return env


def healthcheck_argv() -> list[str]:
    """The HEALTHCHECK's command, as Docker runs it in the container."""
    [arguments] = [arguments for keyword, arguments in final_stage() if keyword == "HEALTHCHECK"]
    command = arguments.split(" CMD ", 1)[1].strip()
    argv: list[str] = json.loads(command) if command.startswith("[") else ["/bin/sh", "-c", command]
    return argv


def _ignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regular expression (Go's filepath.Match,
    with `**` for any number of directories)."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
    wildcards = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(wildcards.get(part, re.escape(part)) for part in parts))


def dockerignored(path: str) -> bool:
    """Whether the build context leaves out `path` (relative to the clone): the
    last pattern matching it or a directory above it decides."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    parents = [str(Path(*Path(path).parts[:n])) for n in range(1, len(Path(path).parts) + 1)]
    ignored = False
    for rule in rules:
        keep = rule.startswith("!")
        regex = _ignore_pattern(rule.lstrip("!"))
        if any(regex.fullmatch(parent) for parent in parents):
            ignored = not keep
    return ignored


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded
