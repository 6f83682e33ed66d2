"""Every relative link in README.md and docs/*.md points at a file or folder of the repository, a
link to a heading (``page.md#anchor``, ``#anchor``) names a heading that page has, and the README
stays short: the long material lives in docs/."""
import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.S)
INLINE_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def prose(text: str) -> str:
    """The text outside fenced code blocks and code spans (a code span becomes a placeholder, so a
    link whose text is code still parses)."""
    text = FENCE.sub("", text)
    return CODE_SPAN.sub("code", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-cased, without punctuation other
    than '-' and '_', spaces as '-'."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a markdown page defines: its headings' slugs (a repeated slug gets -1, -2, ...)
    and explicit ``<a name=...>`` / ``<a id=...>`` targets."""
    text = path.read_text()
    seen: dict[str, int] = {}
    out = set(HTML_ANCHOR.findall(text))
    for heading in HEADING.findall(FENCE.sub("", text)):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def links(path: Path) -> list[str]:
    """The targets of the page's inline links and link reference definitions, outside code."""
    text = prose(path.read_text())
    return INLINE_LINK.findall(text) + REFERENCE_DEF.findall(text)


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    """'target: why' for each relative link of ``path`` that does not resolve."""
    out = []
    for target in links(path):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path.resolve()
        if not dest.is_relative_to(root.resolve()):
            out.append(f"{target}: outside the repository")
        elif not dest.exists():
            out.append(f"{target}: no such file or folder")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            out.append(f"{target}: {dest.name} has no heading with anchor #{anchor}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    assert links(page) or page.name != "README.md", "the README links nothing"
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n  " + "\n  ".join(broken)


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move detail to a page in docs/")


def test_the_checker_finds_a_broken_file_link_and_a_missing_anchor(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# B page\n\n## The compiled step (`trainer.compile=true`)\n\n## Same\n\n## Same\n")
    page = tmp_path / "a.md"
    page.write_text(
        "# A\n\n[ok](docs/b.md) [ok](docs/b.md#the-compiled-step-trainercompiletrue) [ok](docs/b.md#same-1)\n"
        "[ok](#a) [ok](docs/) [`code text`](docs/b.md) [web](https://example.com/x.md)\n"
        "`[not a link](missing.md)`\n\n```\n[not a link](missing.md)\n```\n\n"
        "[bad](docs/missing.md) [bad](docs/b.md#nowhere) [bad](#nothing) [bad](../outside.md)\n"
        "[ref]: docs/gone.md\n")
    broken = [b.split(":")[0] for b in broken_links(page, root=tmp_path)]
    assert broken == ["docs/missing.md", "docs/b.md#nowhere", "#nothing", "../outside.md", "docs/gone.md"]
