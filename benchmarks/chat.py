"""The end-to-end cost of a private message: latency p50/p99 at 50 concurrent pairs, messages/s.

Usage: python benchmarks/chat.py [--pairs 50] [--messages 20] [--quick]

Latency runs from the sender starting ``personal-message`` to the recipient's socket receiving
it: event layer, validation, the SQLite commit on the store's thread, and the fan-out, with all
simulated users in this process (so their work shares the CPU with the server's). Accounts use
argon2's real cost, so signing the crowd up is timed separately.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import labtools
from labtools.sim.chat_users import run_pairs, sign_up_pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20, help="messages each user sends")
    parser.add_argument("--quick", action="store_true", help="5 pairs, 5 messages each: a CI smoke run")
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.messages = 5, 5
    with tempfile.TemporaryDirectory() as folder:
        chat = labtools.serve("chat", name="bench-chat", db=str(Path(folder) / "chat.db"))
        start = time.perf_counter()
        labtools.run(sign_up_pairs(chat.url, 5, prefix="warm"))
        sign_up_s = (time.perf_counter() - start) / 10
        chat.stop()
        chat = labtools.serve("chat", name="bench-chat", db=str(Path(folder) / "load.db"), fast_hashing=True)
        result = labtools.run(run_pairs(chat.url, args.pairs, args.messages), timeout=600)
        chat.stop()
    summary = result.summary()
    print(f"sign-up (argon2 default cost): {sign_up_s * 1000:.0f} ms per account")
    print(f"{summary['pairs']} pairs, {summary['sent']} messages: delivered {summary['delivered']}, "
          f"duplicates {summary['duplicates']}, lost {summary['lost']}, out of order {summary['out_of_order']}")
    print(f"latency p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms; "
          f"{summary['messages_per_s']} messages/s")
    labtools.shutdown()
    # Every message delivered exactly once, in order: anything else is a failed run, not a figure.
    return 0 if summary["lost"] == summary["duplicates"] == summary["out_of_order"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
