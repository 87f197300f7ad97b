"""The repository cites its own docs/, never the team's working folder (../shared, its
SEMANTICS.md, DESIGN.md or STYLE.md), which users do not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["README.md", "pyproject.toml", "examples", "cnnir", "backends", "frontend", "docs",
           "benchmarks", "tests", "tests_cuda"]
FORBIDDEN = re.compile(r"\.\./shared|/shared/|\b(SEMANTICS|DESIGN|STYLE)\.md|\bSEMANTICS\b")


def test_nothing_shipped_points_at_the_team_folder():
    found = []
    for part in SHIPPED:
        root = ROOT / part
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()
                                               and p.suffix in (".py", ".md", ".toml", ".txt")]
        for path in files:
            if path == Path(__file__).resolve():  # this file names what it forbids
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if FORBIDDEN.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
