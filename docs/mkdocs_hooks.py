"""mkdocs hooks: the site is the same Markdown files GitHub shows, with the README as its front page.

The pages live where GitHub renders them (README.md at the root, the reference in docs/, the benchmark
results in benchmarks/README.md) and link each other by relative paths. mkdocs reads only docs/, so
this hook adds the two files outside it as generated pages (README.md as ``index.md``,
benchmarks/README.md as ``benchmarks.md``) and, on every page, rewrites each relative link from the
file's place in the repository to the page's place in the site. A link to any other file of the
repository (a config, a script) has no page: mkdocs --strict then fails, so the docs link pages and name
files as code. See docs/architecture.md, "The docs and the site".
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]

# page in the site -> its file in the repository (pages not listed are docs/<page>)
OUTSIDE = {"index.md": "README.md", "benchmarks.md": "benchmarks/README.md"}
SITE_OF = {repo: page for page, repo in OUTSIDE.items()}

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"(\]\()([^)\s#]*)(#[^)\s]*)?(\))")


def repo_path(page: str) -> str:
    return OUTSIDE.get(page, f"docs/{page}")


def site_links(markdown: str, page: str) -> str:
    """``markdown`` of the repository file behind ``page``, its relative links pointing at site pages."""
    here = posixpath.dirname(repo_path(page))

    def rewrite(m: re.Match) -> str:
        target = m.group(2)
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return m.group(0)  # an anchor on this page, a URL, or an absolute path (mkdocs warns)
        in_repo = posixpath.normpath(posixpath.join(here, target))
        in_site = SITE_OF.get(in_repo, in_repo[len("docs/"):] if in_repo.startswith("docs/") else None)
        if in_site is None:
            return m.group(0)  # not a page of the site: left for mkdocs to report
        new = posixpath.relpath(in_site, posixpath.dirname(page) or ".")
        return f"{m.group(1)}{new}{m.group(3) or ''}{m.group(4)}"

    parts, last = [], 0
    for block in FENCE.finditer(markdown):  # links inside code blocks are text
        parts += [LINK.sub(rewrite, markdown[last:block.start()]), block.group(0)]
        last = block.end()
    parts.append(LINK.sub(rewrite, markdown[last:]))
    return "".join(parts)


def on_files(files, config):
    for page, source in OUTSIDE.items():
        files.append(File.generated(config, page, content=(ROOT / source).read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown, page, config, files):
    return site_links(markdown, page.file.src_uri)
