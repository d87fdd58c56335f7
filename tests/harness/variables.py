"""The environment variables the service reads, found in its code (config/,
imagecache/, the entry point) with `ast`: what the manifests may set, and
what .env.example and the configuration table must list."""

import ast
import re
from pathlib import Path

from config.settings.base import SECRET_FILE_VARIABLES
from tests.harness.service import ROOT

# Calls that read a variable, and which argument names it: django-environ's
# `env.<cast>(NAME)` (and `env.get` on a mapping called env), the settings'
# helpers, and os.environ / os.getenv.
READERS = {"env_str": 0, "env_number": 0, "env_flag": 0, "_read": 1, "getenv": 0}


def _names_read_in_python(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    # Module constants, typed (`NAME: Final = "X"`) or not.
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Constant)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }

    def literal(node: ast.expr) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    def is_environ(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id in ("env", "environ")
        )

    names = set()
    for node in ast.walk(tree):
        argument: ast.expr | None = None
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in READERS:
                position = READERS[func.id]
                argument = node.args[position] if len(node.args) > position else None
            elif isinstance(func, ast.Attribute) and (
                is_environ(func.value) or func.attr == "getenv"
            ):
                argument = node.args[0] if node.args else None
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            argument = node.slice
        if argument is not None and (name := literal(argument)) is not None:
            names.add(name)
    return names


def variables_the_service_reads() -> set[str]:
    """Every variable named in a read in config/ (settings, gunicorn.py),
    imagecache/ and the entry point; and NAME_FILE for each secret that may
    come from a file."""
    names = {f"{name}_FILE" for name in SECRET_FILE_VARIABLES}
    for path in [*(ROOT / "config").rglob("*.py"), *(ROOT / "imagecache").rglob("*.py")]:
        names |= _names_read_in_python(path)
    entrypoint = (ROOT / "config" / "entrypoint.sh").read_text()
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", entrypoint))
    return {name for name in names if re.fullmatch(r"[A-Z][A-Z0-9_]*", name)}
