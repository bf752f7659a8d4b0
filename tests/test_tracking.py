"""The tracking store's retry schedule (zfnet.tracking.retry, on tenacity): tries, waits, messages."""

from __future__ import annotations

import logging

import pytest

from zfnet import tracking


def flaky(failures: int, exc: BaseException = ConnectionError("connection refused\ndetails")):
    """A call that raises ``exc`` ``failures`` times, then returns ``"ok"``; ``calls`` counts them."""
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= failures:
            raise exc
        return "ok"

    return call, calls


def test_retry_waits_doubling_delays_then_succeeds(monkeypatch, caplog):
    monkeypatch.setenv("ZFNET_TRACKING_TRIES", "4")
    monkeypatch.setenv("ZFNET_TRACKING_DELAY", "0.01")
    slept = []
    monkeypatch.setattr("tenacity.nap.time.sleep", slept.append)
    call, calls = flaky(2)
    with caplog.at_level(logging.WARNING, "zfnet.tracking"):
        assert tracking.retry(call, "logging x") == "ok"
    assert len(calls) == 3 and slept == pytest.approx([0.01, 0.02])
    assert [r.getMessage() for r in caplog.records] == [
        "MLflow: logging x failed (connection refused); try 2 of 4 in 0 s",
        "MLflow: logging x failed (connection refused); try 3 of 4 in 0 s"]


def test_retry_gives_up_after_the_tries_with_one_line(monkeypatch):
    monkeypatch.setenv("ZFNET_TRACKING_DELAY", "0")
    call, calls = flaky(10)
    with pytest.raises(tracking.TrackingError, match=r"^MLflow tracking store '.*': logging x failed 3 time\(s\), "
                       r"last: connection refused$"):
        tracking.retry(call, "logging x", tries=3)
    assert len(calls) == 3


def test_retry_waits_at_most_a_minute_and_never_retries_an_interrupt(monkeypatch):
    monkeypatch.setenv("ZFNET_TRACKING_DELAY", "50")
    slept = []
    monkeypatch.setattr("tenacity.nap.time.sleep", slept.append)
    call, _ = flaky(3)
    assert tracking.retry(call, "x", tries=4) == "ok" and slept == [50, 60, 60]
    call, calls = flaky(5, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        tracking.retry(call, "x", tries=4)
    assert len(calls) == 1


@pytest.mark.parametrize("name, value", [("ZFNET_TRACKING_TRIES", "0"), ("ZFNET_TRACKING_TRIES", "two"),
                                         ("ZFNET_TRACKING_DELAY", "-1")])
def test_a_bad_schedule_is_refused_naming_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(tracking.TrackingError, match=f"environment variable {name}: must be"):
        tracking.retry(lambda: "ok", "x")
