"""p2p tickets: what a worker accepts from the proxy's signature, and what it refuses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from visionpool.client.wire import Forbidden, RateLimited, Unauthorized
from visionpool.serving.tickets import Tickets, issue, read_secret

SECRET = b"s" * 40


def ticket(**changes: object) -> str:
    fields = {"key": "alice", "model": "cat", "worker": "w1", "ttl": 60.0, "rate": 1000.0, "burst": 1000.0}
    return issue(SECRET, **{**fields, **changes})  # type: ignore[arg-type]


def test_a_ticket_lets_its_holder_in() -> None:
    assert Tickets(SECRET, "w1").admit(f"Bearer {ticket()}", "cat")["k"] == "alice"
    assert Tickets(SECRET, "w1").admit(f"Bearer {ticket(model=None)}", "dog")["m"] == ""  # any model


FORGED = {"secret": b"x" * 40}


@pytest.mark.parametrize(
    ("changes", "refusal", "words"),
    [
        pytest.param(None, Unauthorized, "ask the proxy's /lookup", id="none"),
        pytest.param("vp_1234_abc", Unauthorized, "ask the proxy's /lookup", id="an-api-key"),
        pytest.param(FORGED, Unauthorized, "signature is not the pool's", id="forged"),
        pytest.param({"ttl": -1}, Unauthorized, "expired", id="expired"),
        pytest.param({"worker": "w2"}, Forbidden, "for worker 'w2'", id="other-worker"),
        pytest.param({"model": "dog"}, Forbidden, "for model 'dog'", id="other-model"),
    ],
)
def test_refusals(changes: dict | str | None, refusal: type, words: str) -> None:
    if changes is None:
        authorization = None
    elif isinstance(changes, str):
        authorization = f"Bearer {changes}"
    elif changes is FORGED:  # made now, not at collection: a ticket lives 60 s
        authorization = f"Bearer {issue(FORGED['secret'], key='a', model='cat', worker='w1', ttl=60, rate=1, burst=1)}"
    else:
        authorization = f"Bearer {ticket(**changes)}"
    with pytest.raises(refusal, match=words):
        Tickets(SECRET, "w1").admit(authorization, "cat")


def test_a_tampered_ticket_is_refused() -> None:
    version, payload, signature = ticket().split(".")
    other = ticket(worker="w2").split(".")[1]
    with pytest.raises(Unauthorized, match="signature"):
        Tickets(SECRET, "w2").admit(f"Bearer {version}.{other}.{signature}", "cat")


def test_a_leaked_ticket_is_worth_its_keys_rate() -> None:
    tickets, leaked = Tickets(SECRET, "w1"), f"Bearer {ticket(rate=1.0, burst=2.0)}"
    tickets.admit(leaked, "cat")
    tickets.admit(leaked, "cat")
    with pytest.raises(RateLimited):
        tickets.admit(leaked, "cat")
    time.sleep(1.05)
    tickets.admit(leaked, "cat")


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short").write_bytes(b"too short")
    with pytest.raises(ValueError, match="at least 32 bytes"):
        read_secret(tmp_path / "short")
