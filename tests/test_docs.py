"""README and docs/ stay true to the code: docs/controls.md is what docs/make_controls.py writes from the
CONTROLS table, every example names real commands, options, OSC addresses and ports, every link lands,
and README stays a ten-minute read that starts with the two commands CI runs."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest

from autoencoded.live.control.params import CONTROLS, N_CUES, Spec, register_control

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def make_controls():
    spec = importlib.util.spec_from_file_location("make_controls", DOCS / "make_controls.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bash_lines(page: Path) -> list[str]:
    """The commands of a page's bash blocks, one per `&&`, comments cut off."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.splitlines():
            out.extend(part.strip() for part in line.split(" #", 1)[0].split("&&") if part.strip())
    return out


def test_the_controls_page_is_what_the_script_writes():
    page = DOCS / "controls.md"
    assert page.read_text() == make_controls().render(), \
        "docs/controls.md is stale: run .venv/bin/python docs/make_controls.py and commit it"


def test_a_registered_control_reaches_every_table_of_the_page():
    register_control("docs_probe", Spec(float, 0.0, 2.0, 0.5, "a control made by the docs test"))
    try:
        page = make_controls().render()
    finally:
        del CONTROLS["docs_probe"]
    row = next(line for line in page.splitlines() if line.startswith("| `docs_probe` |"))
    assert "0..2" in row and "`live --docs-probe`" in row and "`render --docs-probe`" in row, row
    assert "| `/docs_probe` | float | 0..2 | a control made by the docs test |" in page


def test_readme_is_a_ten_minute_read_that_opens_with_the_two_commands_ci_runs():
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    firsts = [block.splitlines()[0] for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]
    ci = (REPO / ".ci" / "run").read_text()
    assert firsts[0].startswith("python3 -m venv .venv && ") and firsts[0].endswith(" && autoencoded live")
    assert f'"$readme_tests" != "{firsts[1]}"' in ci, "README's second bash block is not the test command .ci/run runs"


def test_readme_sends_the_reader_to_every_page_of_docs():
    text = README.read_text()
    missing = [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in text]
    assert missing == [], f"README links none of {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_lands(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(target)
        elif anchor and where.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", where.read_text(), flags=re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert broken == [], f"{page.name}: links that land nowhere: {broken}"


def _options(name: str) -> set[str]:
    from autoencoded.cli import cli

    command = cli.get_command(click.Context(cli), name)
    return {opt for p in command.get_params(click.Context(command)) for opt in (*p.opts, *p.secondary_opts)}


def test_every_example_is_a_real_command_with_real_options():
    from autoencoded.cli import COMMANDS

    wrong = []
    for page in PAGES:
        for line in bash_lines(page):
            words = shlex.split(line)
            if "autoencoded" not in words:
                continue
            words = words[words.index("autoencoded") + 1:]
            if not words or words[0] not in COMMANDS:
                wrong.append(f"{page.name}: {line}")
                continue
            known = _options(words[0])
            wrong += [f"{page.name}: {words[0]} has no {w}" for w in words[1:]
                      if re.match(r"--?[a-z]", w) and w.split("=", 1)[0] not in known]
    assert wrong == []


def test_osc_examples_send_to_the_port_and_addresses_live_listens_on():
    from autoencoded.live.control.osc import DEFAULT_PORT, base_routes

    sends = [shlex.split(line) for page in PAGES for line in bash_lines(page) if line.startswith("oscsend ")]
    assert sends, "no oscsend example left"
    for words in sends:
        assert words[2] == str(DEFAULT_PORT) and words[3] in base_routes(), words


def test_readme_names_the_web_remotes_address_and_the_cues_as_the_code_has_them():
    from autoencoded.live.web.server import DEFAULT

    text = README.read_text()
    assert f"http://{DEFAULT}/" in text
    assert f"{N_CUES} cues" in text
