"""The layering is a contract: entry points, then subsystems, then the schema, then model and data,
then base helpers (.importlinter). import-linter checks it; no module directly in utils/ imports
model/, data/ or a subsystem, and model/ and data/ never import each other."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout
