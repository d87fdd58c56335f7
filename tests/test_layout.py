"""Imports run one way: the edges call services, selectors and waits, which
use the models and the seams; leaves import nothing of the app. Read from the
code's own import statements (lazy ones included)."""

import ast
from pathlib import Path

from tests.harness.service import ROOT

APP = ROOT / "imagecache"
LEAVES = {
    "imagecache.media",
    "imagecache.ids",
    "imagecache.hashing",
    "imagecache.processes",
    "imagecache.ops.local_kentik",
    "imagecache.labels",
}
# The most lines a module of config/ or imagecache/ may have.
LONGEST = 450
EDGES = ("imagecache.api", "imagecache.admin", "imagecache.management", "imagecache.tasks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def app_imports() -> dict[str, set[str]]:
    """Each module of the app, and the modules of the app it imports."""
    graph: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = module_name(path)
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {imported for imported in found if imported.startswith("imagecache.")}
    modules = set(graph)
    # `from imagecache.services import fetching` names a module; a class is not one.
    return {name: {i for i in found if i in modules} - {name} for name, found in graph.items()}


def test_there_is_no_circle_of_imports():
    graph = app_imports()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError(" -> ".join([*path[path.index(name) :], name]))
        if name in done:
            return
        for imported in graph[name]:
            # A package's __init__ is imported by its modules' imports: not an edge.
            if not name.startswith(imported + "."):
                visit(imported, [*path, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_leaves_import_nothing_of_the_app():
    graph = app_imports()
    assert {leaf: graph[leaf] for leaf in LEAVES if graph[leaf]} == {}
    assert graph["imagecache.ops.metrics"] <= {"imagecache.ops.metrics_dir"}
    assert graph["imagecache.files.names"] <= {"imagecache.media"}


def test_selectors_only_read_and_services_never_call_an_edge():
    graph = app_imports()
    readers = {name for name in graph if name.startswith("imagecache.selectors")}
    assert len(readers) > 1  # a package, one module per reader
    for name in readers:
        assert graph[name] <= {
            "imagecache.models",
            "imagecache.errors",
            "imagecache.ids",
            *readers,
        }, name
    for name, imported in graph.items():
        if name.startswith(("imagecache.services", "imagecache.waiting", "imagecache.files")):
            assert not {i for i in imported if i.startswith(EDGES)}, name


def test_only_the_tasks_import_the_fetch_pipeline_and_only_it_the_kentik_seam():
    graph = app_imports()
    callers = {"imagecache.services.fetching", "imagecache.services.portal_fetch"}
    for caller in callers:
        assert {n for n, i in graph.items() if caller in i} == {"imagecache.tasks"}
    # The fetch pipeline's parts that the task's module does not import itself.
    pipeline = {
        "imagecache.services.claims": {"imagecache.services.fetching"},
        "imagecache.services.storing": {"imagecache.services.fetching"},
    }
    for part, importers in pipeline.items():
        assert {n for n, i in graph.items() if part in i} == importers, part
    seam = callers | {"imagecache.services.storing"}
    assert {n for n, i in graph.items() if "imagecache.kentik" in i} == seam
    assert {n for n, i in graph.items() if "imagecache.kentik_transport" in i} == {
        "imagecache.kentik"
    }


def test_the_simulator_needs_no_django():
    graph = app_imports()
    for name, imported in graph.items():
        if name.startswith("imagecache.simulator"):
            outside = {i for i in imported if not i.startswith("imagecache.simulator")}
            assert outside <= {"imagecache.media", "imagecache.hashing"}, name
            source = (APP / Path(*name.split(".")[1:])).with_suffix(".py")
            if not source.exists():
                source = APP / Path(*name.split(".")[1:]) / "__init__.py"
            assert "django" not in source.read_text().replace("Django", ""), name


def test_only_the_supervisor_starts_the_simulator():
    # The production image leaves the simulator out: only `make run` without
    # credentials starts it, and the supervisor imports it only then.
    graph = app_imports()
    importers = {
        name
        for name, imported in graph.items()
        if not name.startswith("imagecache.simulator")
        and any(i.startswith("imagecache.simulator") for i in imported)
    }
    assert importers == {"imagecache.ops.supervisor"}


def test_no_module_passes_450_lines():
    # Past that a module holds more than one role: split it along its seams.
    sources = [*APP.rglob("*.py"), *(ROOT / "config").rglob("*.py")]
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in sources
        if "migrations" not in path.parts
    }
    assert {path: lines for path, lines in lengths.items() if lines > LONGEST} == {}
