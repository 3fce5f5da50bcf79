"""``make bench``'s rate search for the local stack, on made-up demo outcomes (the real runs take
minutes): it finds the highest rate that kept up, and reads the demo's own output lines."""

from __future__ import annotations

from benchmarks import streaming

DEMO_OUTPUT = """\
simulator: published 60,000 messages ...
live run took 77 s; 581 dead letters (expected 581)
BACKLOG caught up 3.2 s after publishing ended (60,000 messages published)
LATENCY window end -> warehouse p50=11.3s p95=14.9s max=21.0s over 2 windows fired by the watermark
CONSERVATION published_valid=58226 counted=57676 dead_lettered=581 duplicates_dropped=1193 late_dropped=550 lost=0
"""


def test_the_demo_output_is_read_back():
    a = streaming.parse(DEMO_OUTPUT, 1000, 60)
    assert a.fields["counted"] == 57676 and a.lost == 0 and a.caught_up == 3.2
    assert a.latency == (11.3, 14.9, 21.0) and a.windows == 2 and a.took == 77
    assert a.kept_up
    assert "p95=14.9 s" in a.describe() and "caught up 3.2 s" in a.describe()
    assert not streaming.parse("Traceback ...", 1000, 60, 1).kept_up


def _fake(capacity: int, lost_above: int | None = None):
    """A machine that keeps up to ``capacity`` tx/s (and loses data above ``lost_above``)."""
    tried = []

    def attempt(rate: int) -> streaming.Attempt:
        tried.append(rate)
        behind = max(0.0, (rate - capacity) / capacity * 60)  # backlog left after 60 s
        lost = 1 if lost_above is not None and rate > lost_above else 0
        return streaming.Attempt(rate, 60, {"lost": lost}, 0.5 + behind, None, 0, 80, 0)

    return attempt, tried


def test_the_search_doubles_then_narrows_to_the_highest_rate_that_kept_up():
    attempt, tried = _fake(capacity=2800)
    found = streaming.best(streaming.search(attempt))
    # 3,000 tx/s leaves 4.3 s of backlog (kept up), 3,500 tx/s 15 s, 4,000 tx/s 26 s (not)
    assert tried == [1000, 2000, 4000, 3000, 3500]
    assert found.rate == 3000
    for rate in list(tried):  # nothing it reports as kept up was behind by more than the bound
        a = attempt(rate)
        assert a.kept_up == (a.caught_up <= streaming.KEEP_UP_SECONDS)


def test_loss_fails_a_rate_even_when_it_kept_up_and_a_slow_machine_searches_down():
    attempt, tried = _fake(capacity=100_000, lost_above=1500)
    assert streaming.best(streaming.search(attempt)).rate == 1500
    attempt, tried = _fake(capacity=600)
    assert streaming.best(streaming.search(attempt)).rate == 500
    assert tried[:2] == [1000, 500]
