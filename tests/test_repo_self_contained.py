"""The repository carries its own design documents and never points at files outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"DESIGN\.md|field-notes|shared/reference|methods\.md|anchors-2\.md|seeds\.md|\.\./shared")


def test_architecture_and_papers_exist():
    assert (ROOT / "ARCHITECTURE.md").stat().st_size > 2000
    assert (ROOT / "docs" / "papers.md").stat().st_size > 2000


def test_no_file_points_outside_the_repository():
    offenders = []
    for path in ROOT.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(ROOT).parts) or "egg-info" in str(path):
            continue
        if path.suffix in {".py", ".md", ".toml", ".c", ".h", ".txt", ""} and path.is_file():
            if path.name == Path(__file__).name:
                continue
            for i, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
                if OUTSIDE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:80]}")
    assert not offenders, "\n".join(offenders)
