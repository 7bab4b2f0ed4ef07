"""The repository's PROTOCOL.md is the team's shared contract, word for word."""

from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SHARED = ROOT.parent / "shared" / "PROTOCOL.md"


def test_protocol_matches_the_shared_contract() -> None:
    if not SHARED.exists():
        pytest.skip("no shared/ beside this checkout")
    assert (ROOT / "PROTOCOL.md").read_text(encoding="utf-8") == SHARED.read_text(encoding="utf-8")
