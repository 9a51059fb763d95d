"""Claims across executors and machines: an owner token, a heartbeat, and takeover of a
claim whose owner died (same host: its process is gone; another host: no heartbeat for
CLAIM_TTL_S)."""
import json
import os
import time

from bench import store as store_mod
from bench.store import Store


def test_claim_is_exclusive_and_released_only_by_its_token(tmp_path):
    store = Store(tmp_path, "s")
    token = store.claim("r1")
    assert token and store.claim("r1") is None          # live owner (this process)
    store.release("r1", "someone-else")                  # not the owner: kept
    assert store.claim_holder("r1")["token"] == token
    assert store.heartbeat("r1", token) and not store.heartbeat("r1", "other")
    store.release("r1", token)
    assert store.claim_holder("r1") is None and store.claim("r1")


def test_claim_of_another_host_is_taken_over_after_its_heartbeat_stops(tmp_path,
                                                                       monkeypatch):
    store = Store(tmp_path, "s")
    path = store.dir / "claims" / "r1"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "node-17", "pid": 1, "token": "t-node17"}))
    assert store.claim("r1") is None                     # fresh heartbeat: live
    live, stale = store.claims()
    assert list(live) == ["r1"] and stale == []
    old = time.time() - store_mod.CLAIM_TTL_S - 5
    os.utime(path, (old, old))                           # the owner stopped beating
    live, stale = store.claims()
    assert live == {} and stale == ["r1"]
    token = store.claim("r1")
    assert token and json.loads(path.read_text())["token"] == token
    assert not list(path.parent.glob(".*"))              # nothing left aside


def test_takeover_never_removes_a_claim_made_meanwhile(tmp_path):
    store = Store(tmp_path, "s")
    path = store.dir / "claims" / "r1"
    path.parent.mkdir(parents=True)
    fresh = {"host": "node-2", "pid": 5, "token": "new"}
    path.write_text(json.dumps(fresh))
    # a taker that judged an older claim stale puts back the one it moved by mistake
    store._take_over(path, {"host": "node-1", "pid": 4, "token": "old"})
    assert json.loads(path.read_text()) == fresh
