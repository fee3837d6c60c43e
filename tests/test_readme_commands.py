"""CI runs what the README says: its install step, and its whole-suite command, of which the quick
tier is the same command with ``-m "not slow"``."""

from __future__ import annotations

import re

from conftest import REPO


def _readme_commands() -> tuple[str, str, str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md: no opening bash block"
    lines = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    assert len(lines) == 2, f"README.md: the opening block holds {len(lines)} commands, not 2"
    whole = re.search(r"The whole suite, end-to-end runs included, is `([^`]+)`", text)
    assert whole, "README.md: no sentence naming the whole suite's command"
    return lines[0], lines[1], whole.group(1)


def test_ci_installs_and_tests_as_the_readme_says() -> None:
    install_and_run, quick, whole = _readme_commands()
    ci = [ln.strip() for ln in (REPO / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    assert install_and_run.split("&&")[0].strip() in ci  # bash install.sh
    assert [ln for ln in ci if "pytest" in ln] == [whole]
    assert quick == f'{whole} -m "not slow"'
