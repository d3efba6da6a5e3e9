"""The documentation site (mkdocs.yml, docs/) and the README, checked without building the site.

`mkdocs build --strict` in CI (.ci/run, `make docs`) finds broken links and pages missing from the nav; these checks
catch what it cannot: a results file, a module or an included file that no page of the nav shows, and a README that
grows back into the manual.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from medunlearn_monai.certificate import guarantee_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGE = ROOT / "medunlearn_monai"
README = ROOT / "README.md"
README_MAX_LINES = 150
INCLUDE = re.compile(r"""\{%\s*include-markdown\s+["']([^"']+)["']""")
API = re.compile(r"^:::\s*(medunlearn_monai(?:\.\w+)*)\s*$", re.MULTILINE)
# Markdown links and images with a relative target: [text](target) and ![alt](target), no scheme, no pure anchor.
RELATIVE_LINK = re.compile(r"!?\[[^\]]*\]\((?![a-z][a-z0-9+.-]*:|#)([^)\s]+)\)")


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [page for value in node.values() for page in _nav_pages(value)]
    if isinstance(node, list):
        return [page for item in node for page in _nav_pages(item)]
    return []


NAV = _nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
NAV_FILES = [DOCS / page for page in NAV]


def _included(page: Path) -> set[Path]:
    return {(page.parent / target).resolve() for target in INCLUDE.findall(page.read_text())}


def test_nav_pages_exist_and_every_page_is_in_the_nav():
    missing = [page for page in NAV if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml's nav names pages that do not exist: {missing}"
    left_out = sorted(str(path.relative_to(DOCS)) for path in set(DOCS.rglob("*.md")) - set(NAV_FILES))
    assert not left_out, f"pages under docs/ that mkdocs.yml's nav leaves out: {left_out}"


def test_included_files_exist():
    for page in NAV_FILES:
        for target in _included(page):
            assert target.is_file(), f"{page.relative_to(ROOT)} includes {target}, which does not exist"


def test_every_results_file_is_on_a_page_of_the_nav():
    included = set().union(*(_included(page) for page in NAV_FILES))
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    assert results
    forgotten = [path.name for path in results if path.resolve() not in included]
    assert not forgotten, (
        f"benchmarks/results files that no page of the site includes: {forgotten}; add a page under docs/results/ "
        "with an include-markdown of the file and list it in mkdocs.yml's nav"
    )


@pytest.mark.parametrize("readme", sorted(ROOT.glob("bundles/*/docs/README.md")), ids=lambda p: p.parts[-3])
def test_every_bundle_readme_is_on_a_page_of_the_nav(readme):
    assert readme.resolve() in set().union(*(_included(page) for page in NAV_FILES))


def test_every_module_has_an_api_page():
    documented = {name for page in NAV_FILES for name in API.findall(page.read_text())}
    modules = {f"medunlearn_monai.{path.stem}" for path in PACKAGE.glob("*.py") if not path.name.startswith("_")}
    packages = {f"medunlearn_monai.{path.parent.name}" for path in PACKAGE.glob("*/__init__.py")}
    missing = sorted((modules | packages) - documented)
    assert not missing, (
        f"modules without an API reference page: {missing}; add docs/reference/<name>.md with "
        "'::: medunlearn_monai.<name>' and list it in mkdocs.yml's nav"
    )


def test_readme_is_short_and_its_relative_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= README_MAX_LINES, "the README grew back: move the details into docs/"
    broken = [target for target in RELATIVE_LINK.findall(text) if not (ROOT / target.split("#", 1)[0]).exists()]
    assert not broken, f"README links to files that do not exist: {broken}"


def test_readme_states_the_commands_ci_runs():
    readme, ci = README.read_text(), (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.MULTILINE)
    assert "mkdocs build --strict" in readme and "mkdocs build --strict" in ci


def test_readme_and_every_bundle_readme_describe_the_two_guarantee_kinds():
    """The certificate's two words are explained where a user reads first: each bundle README and the README's link."""
    assert "(docs/concepts/exact-vs-approximate.md)" in README.read_text()
    readmes = sorted((ROOT / "bundles").glob("*/docs/README.md"))
    assert len(readmes) == 3
    for readme in readmes:
        text = " ".join(readme.read_text().split())
        assert 'Retraining and SISA certify `"guarantee": "exact"`' in text, readme
        assert 'every other strategy certifies `"approximate"`' in text, readme
    # the documented split is the code's: SISA exact, every other strategy approximate
    assert {guarantee_of(name) for name in ("retrain", "sisa")} == {"exact"}
    assert {guarantee_of(name) for name in ("rl", "salun", "ft")} == {"approximate"}
