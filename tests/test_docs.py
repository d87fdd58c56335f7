"""The docs hold together: every relative link and #anchor between README.md,
docs/*.md and bench/README.md resolves, and the code map of
docs/architecture.md lists exactly the modules of config/ and imagecache/."""

import re
from pathlib import Path

import pytest

from tests.harness.service import ROOT

ARCHITECTURE = ROOT / "docs" / "architecture.md"
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`]*`")  # may run over a line end
# [text](target) and ![alt](target); a title after the target is allowed.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "README.md"]


def prose(text: str) -> str:
    """The text a reader sees as Markdown: no fenced blocks, no inline code."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text lower-cased, all but
    letters, digits, spaces, hyphens and underscores dropped, spaces made
    hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """A page's anchors; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links of a page whose file or #anchor does not exist."""
    broken = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked.read_text())):
            broken.append(f"{target}: no such anchor")
    return broken


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        (
            "Serving images through nginx (X-Accel-Redirect)",
            "serving-images-through-nginx-x-accel-redirect",
        ),
        ("Health, metrics and logs", "health-metrics-and-logs"),
        ("The Kentik budget's cost", "the-kentik-budgets-cost"),
        ("Speed: `make bench`", "speed-make-bench"),
        ("`GET /image/{id}`", "get-imageid"),
        ("`KT_AUTH_TOKEN` from a file", "kt_auth_token-from-a-file"),
        ("See [the API](api.md) — twice", "see-the-api--twice"),
    ],
)
def test_anchors_are_made_as_github_makes_them(heading, expected):
    assert slug(heading) == expected


def test_a_repeated_heading_gets_a_numbered_anchor():
    text = "# Docs\n\n## Notes\n\n```sh\n# not a heading\n```\n\n## Notes\n"
    assert anchors(text) == {"docs", "notes", "notes-1"}


def test_a_missing_page_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Some part\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n[ok](other.md#some-part) [ok](#page) [ok](https://example.com/x)\n"
        "[bad](other.md#no-part) [bad](missing.md) [bad](#nowhere)\n"
        "`[in code](missing.md)`\n\n```md\n[in a block](missing.md)\n```\n"
    )
    assert broken_links(page) == [
        "other.md#no-part: no such anchor",
        "missing.md: no such file",
        "#nowhere: no such anchor",
    ]


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_between_the_pages_resolves(page):
    assert broken_links(page) == []


def code_map() -> list[tuple[str, str]]:
    """The (module, runs in) rows of the code map."""
    section = ARCHITECTURE.read_text().split("\n## Code map\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and cells[0].endswith(".py`"):
            rows.append((cells[0].strip("`"), cells[-1]))
    return rows


def test_the_code_map_lists_exactly_the_modules_of_the_code():
    modules = sorted(
        str(path.relative_to(ROOT))
        for folder in ("config", "imagecache")
        for path in (ROOT / folder).rglob("*.py")
        if "migrations" not in path.parts and path.name != "__init__.py"
    )
    listed = [module for module, _ in code_map()]
    assert sorted(set(listed) - set(modules)) == [], "in the code map, not in the tree"
    assert sorted(set(modules) - set(listed)) == [], "in the tree, missing from the code map"
    assert len(listed) == len(set(listed)), "listed twice"


def test_each_module_of_the_code_map_runs_in_a_process_of_its_legend():
    section = ARCHITECTURE.read_text().split("\n## Code map\n", 1)[1]
    table = section.split("| process | what it is |\n|---|---|\n", 1)[1].split("\n\n", 1)[0]
    legend = {row.split("|")[1].strip() for row in table.splitlines()}
    assert {"web", "qcluster", "`manage.py worker`", "`manage.py serve`"} <= legend
    for module, runs_in in code_map():
        first = re.split(r"[,;(]| and ", runs_in, maxsplit=1)[0].strip()
        assert first in legend, f"{module}: {first!r} is no process of the legend"


def test_make_bench_finds_the_nginx_block_it_measures_and_the_tables_it_rewrites(tmp_path):
    from bench import run

    block = run.documented_proxy_block(8081, 8000, tmp_path)
    assert "listen 127.0.0.1:8081;" in block
    assert f"proxy_cache_path {tmp_path} " in block
    text = run.RESULTS_PAGE.read_text()
    assert text.count(run.RESULTS_START) == 1
    assert text.count(run.RESULTS_END) == 1
