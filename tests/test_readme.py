"""The README's code map names every package and module of the app."""

import re

from tests.harness.service import ROOT


def code_map() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("**Code map.**", 1)[1].split("\n\n", 2)[1]
    named: set[str] = set()
    for row in table.splitlines():
        first = row.split("|")[1] if row.startswith("|") else ""
        paths = re.findall(r"`([^`]+)`", first)
        # `imagecache/models.py`, `errors.py`: the later ones share the first's folder.
        paths = [path.rstrip("/") for path in paths]
        folder = paths[0].rsplit("/", 1)[0] if paths and "/" in paths[0] else ""
        for path in paths:
            named.add(path if "/" in path or not folder else f"{folder}/{path}")
    return named


def test_the_code_map_names_every_package_and_module_of_the_app():
    app = ROOT / "imagecache"
    parts = {
        f"imagecache/{path.name}"
        for path in app.iterdir()
        if (path.is_dir() and (path / "__init__.py").exists())
        or (path.suffix == ".py" and path.name != "__init__.py")
    }
    named = code_map()
    assert parts - named == set(), "missing from the README's code map"
    assert {name for name in named if name.startswith("imagecache/")} - parts == set(), (
        "in the code map, not in the tree"
    )
