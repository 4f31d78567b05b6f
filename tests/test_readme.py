"""The README's Python API snippet runs as written."""

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_api_snippet_runs():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    result = subprocess.run([sys.executable, "-c", snippet], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 1, 3, 64, 64]) 1" in result.stdout


def test_readme_names_the_test_command_ci_runs():
    text = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in text
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
