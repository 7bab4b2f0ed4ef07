"""The repository's PROTOCOL.md is the team's shared contract, word for word, plus extensions.

Extensions (new events, new optional fields) are allowed and go in a section appended at the
end; changing or dropping what the shared contract says is not.
"""

from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SHARED = ROOT.parent / "shared" / "PROTOCOL.md"


def test_protocol_keeps_the_shared_contract() -> None:
    if not SHARED.exists():
        pytest.skip("no shared/ beside this checkout")
    ours = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
    assert ours.startswith(SHARED.read_text(encoding="utf-8").rstrip("\n"))
