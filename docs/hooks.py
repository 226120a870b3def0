"""mkdocs hook: build the site from the repository as it reads on GitHub.

Every page links files where they live in the repository (``../evals/results/easyvqa/pareto.png`` from ``docs/``,
``docs/fastv.md`` from the README), so each link also works when the page is read in the repository. The build adds
the repository's README as the home page and every markdown file and image under ``evals/`` and ``demo/`` (the
studies' READMEs, the committed model card, the plots) at its repository path, then rewrites each relative link from
the page's repository path to the target's path in the site. A link to anything else is left alone, so mkdocs'
strict mode reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
HOME = "README.md"
OUTSIDE_FOLDERS = ("evals", "demo")  # folders outside docs/ whose pages and images the site shows
OUTSIDE_SUFFIXES = (".md", ".png")
LINK = re.compile(r"(\]\()([^)\s]+)(\))")  # the target of an inline link or image

_repository_path: dict[str, str] = {}  # site path -> repository path, for every file added here


def on_files(files: Files, config: Any) -> Files:
    _repository_path.clear()
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / HOME)))
    _repository_path["index.md"] = HOME
    for folder in OUTSIDE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in OUTSIDE_SUFFIXES and path.is_file():
                relative = path.relative_to(ROOT).as_posix()
                files.append(File(relative, str(ROOT), config["site_dir"], config["use_directory_urls"]))
                _repository_path[relative] = relative
    return files


def repository_path(site_path: str) -> str:
    return _repository_path.get(site_path, "docs/" + site_path)


def site_path(repository: str) -> str | None:
    """Where a repository file lies in the site, or None if the site does not hold it."""
    for site, path in _repository_path.items():
        if path == repository:
            return site
    if repository.startswith("docs/"):
        return repository[len("docs/") :]
    return None


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    here = repository_path(page.file.src_uri)
    page_folder = posixpath.dirname(page.file.src_uri) or "."

    def relink(match: re.Match[str]) -> str:
        target = match.group(2)
        if "://" in target or target.startswith(("#", "mailto:", "/")):
            return match.group(0)
        path, hash_sign, anchor = target.partition("#")
        site = site_path(posixpath.normpath(posixpath.join(posixpath.dirname(here), path)))
        if site is None:
            return match.group(0)
        return match.group(1) + posixpath.relpath(site, page_folder) + hash_sign + anchor + match.group(3)

    return LINK.sub(relink, markdown)
