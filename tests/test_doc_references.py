"""The repository cites its own docs/, never the team's working folder or the notes kept
there, which users of a clone or a wheel do not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["README.md", "pyproject.toml", "examples", "cnnir", "backends", "frontend", "docs",
           "benchmarks", "tests", "tests_cuda"]
TEAM_FOLDER = "sha" + "red"
TEAM_NOTES = ("SEMAN" + "TICS", "DES" + "IGN", "ST" + "YLE")
FORBIDDEN = re.compile(rf"\.\./{TEAM_FOLDER}|/{TEAM_FOLDER}/|\b({'|'.join(TEAM_NOTES)})\.md"
                       rf"|\b{TEAM_NOTES[0]}\b(?!_)")


def test_nothing_shipped_points_at_the_team_folder():
    found = []
    for part in SHIPPED:
        root = ROOT / part
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()
                                               and p.suffix in (".py", ".md", ".toml", ".txt")]
        for path in files:
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if FORBIDDEN.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
