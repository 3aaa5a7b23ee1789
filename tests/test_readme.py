"""README's and docs/'s examples run from the repository root write only where .gitignore keeps them out of
git, and README names what CI installs."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pages() -> str:
    """README and the pages it sends a reader on to (docs/*.md), where its examples now live too."""
    return "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def written_paths(readme: str) -> list[str]:
    """What the `autoencoded ...` lines of README's bash blocks write: -o/--out/--output files and folders,
    the reports (--json, --stats-json), render's OUTPUT, and the default live recordings."""
    paths = {"autoencoded-live.mp4", "autoencoded-live-2.mp4"}
    for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0]
            for command in line.split("&&"):
                words = shlex.split(command)
                if "autoencoded" not in words:
                    continue
                words = words[words.index("autoencoded"):]
                for i, w in enumerate(words[:-1]):
                    nxt = words[i + 1]
                    if w in ("-o", "--out", "--json", "--stats-json") or (w == "--output" and Path(nxt).suffix):
                        paths.add(nxt)
                if len(words) > 3 and words[1] == "render":
                    paths.add(words[3])
    return sorted(paths)


def test_readme_examples_write_only_ignored_paths():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = written_paths(pages())
    assert {"ds", "dataset", "runs/bbb", "models/bbb", "out.mp4", "demo.mp4", "eval.json", "stats.json"} <= \
        set(paths), paths
    # a name without an extension is a folder (a dataset, run or model): git matches `/ds/` only to one
    as_git_sees = [p if Path(p).suffix else p + "/" for p in paths]
    kept = [p for p in as_git_sees
            if subprocess.run(["git", "check-ignore", "-q", "--no-index", p], cwd=REPO).returncode]
    assert kept == [], f"README's or docs/'s examples would leave these in the repository: {kept}"


def test_readme_names_the_apt_packages_ci_installs():
    ci = (REPO / ".ci" / "run").read_text()
    line = re.search(r"apt-get install -y -qq --no-install-recommends ((?:[^>\n]|\\\n)+)", ci).group(1)
    wanted = set(line.replace("\\", " ").split())
    named = set(re.search(r"`sudo apt install ([^`]+)`", (REPO / "README.md").read_text().replace("\n", " "))
                .group(1).split())
    assert wanted <= named, f"README's test paragraph does not name {sorted(wanted - named)}"
