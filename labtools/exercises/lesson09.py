"""Lesson 09 (at scale): exercises and their solutions."""

from __future__ import annotations

from typing import Any

from .registry import call, exercise, not_a_function, number


def check_cores(answer: Any) -> None:
    assert number(answer), f"answer with a number of cores, not {answer!r}"
    assert abs(answer - 0.1) > 1e-9, (
        "0.1 cores counts each message once: a broadcast delivers it to 100 people, and each delivery costs"
    )
    assert abs(answer - 1000) > 1e-6, (
        "1,000 cores is one message per user per second: each user writes once every 100 s, so a million users "
        "send 10,000 messages per second"
    )
    assert abs(answer - 10_000) > 1e-6, "10 µs is 10 millionths of a second (1e-5 s), not 10 milliseconds"
    assert abs(answer - 10) <= 0.1, (
        f"{answer} cores? messages/s × fan-out = deliveries/s; × 10 µs each = CPU seconds per second, i.e. cores"
    )


@exercise("09.1", check_cores, value=True)
def cores_for_a_million() -> float:
    users = 1_000_000
    messages_per_s = users / 100  # each user writes once every 100 s
    deliveries_per_s = messages_per_s * 100  # each message goes to 100 people
    return deliveries_per_s * 10e-6  # 10 µs of CPU per delivery: CPU seconds per second = cores


def check_memory(answer: Any) -> None:
    assert number(answer), f"answer with a number of GB, not {answer!r}"
    assert abs(answer - 14) > 1e-6, "a KiB is 1,024 bytes and a GB 10⁹ bytes: 14 KiB is 14,336 bytes"
    assert not 0.01 < answer < 0.02, "that is in TB (or the KiB were taken as bytes): the answer is in GB"
    assert abs(answer - 14.336) <= 0.05, (
        f"{answer} GB? connections × bytes per connection (14 × 1,024), divided by 10⁹"
    )


@exercise("09.2", check_memory, value=True)
def gb_for_a_million_idle() -> float:
    connections = 1_000_000
    bytes_each = 14 * 1024  # 14 KiB per idle connection (websockets' documentation, no compression)
    return connections * bytes_each / 1e9


def check_max_users(answer: Any) -> None:
    assert callable(answer), not_a_function(answer, "max_users(cores, cpu_us, msgs_per_user_per_s, fanout)")
    cases = [((1, 10, 0.01, 100), 100_000), ((4, 5, 0.1, 10), 800_000), ((2, 20, 1, 4), 25_000)]
    for args, expected in cases:
        got = call(answer, *args)
        assert number(got), f"max_users{args} should be a number, not {got!r}"
        assert abs(got - expected) <= 1e-6 * expected, (
            f"max_users{args} should be {expected:,}, not {got!r}: every user brings msgs_per_user_per_s × fanout "
            "deliveries per second, each costing cpu_us µs; the cores give cores × 10⁶ µs per second"
        )


@exercise("09.3", check_max_users)
def max_users(cores: float, cpu_us: float, msgs_per_user_per_s: float, fanout: float) -> float:
    # How many users keep `cores` busy? One user costs msgs × fanout deliveries/s × cpu_us µs each.
    return cores * 1e6 / (cpu_us * msgs_per_user_per_s * fanout)
