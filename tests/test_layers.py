"""Imports run one way: core (the shared vocabulary) at the bottom, then definitions and store, the
pure rules, the journey instances' contract and starter, activities, workflows, channels and views,
triggers, and the CLI package `journeys` on top; no two layers import each other, views import no
activity and the rules import neither the store nor Temporal. The rules are the import-linter
contracts in pyproject.toml; `make test` runs `lint-imports` and so does this test, so a plain
`pytest` catches a wrong import too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_run_one_way():
    run = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout[-3000:]


def test_loading_the_configuration_loads_no_web_framework_or_provider_sdk():
    probe = (
        "import sys; from core.config import Settings; from core.temporal import connect; Settings(); "
        "print(sorted(m for m in ('fastapi', 'twilio', 'sendgrid', 'uvicorn', 'sqlalchemy') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"
