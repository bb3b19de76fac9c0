"""Model pool: load on first use, keep-alive unloading, LRU eviction under a memory budget."""

import time

import pytest

from lmforge.errors import LmforgeError
from lmforge.home import Manifest, Registry
from lmforge.infer.pool import ModelPool, PoolConfig


class FakeBackend:
    kind = "fake"
    alive = True
    active = 0

    def __init__(self, name):
        self.model_name, self.closed = name, False

    def close(self):
        self.closed = True


@pytest.fixture()
def reg(tmp_path):
    r = Registry(tmp_path / "home")
    for name, size in (("a", 400), ("b", 400), ("c", 400), ("huge", 5000)):
        r.put(
            Manifest(name=name, kind="chat", format="hf", path="w", size_bytes=size),
            lambda s: (s / "w").write_bytes(b"x"),
        )
    return r


def make_pool(reg, **kw):
    loads = []

    def loader(registry, name, cfg):
        loads.append(name)
        return FakeBackend(name)

    pool = ModelPool(reg, PoolConfig(**kw), loader=loader)
    pool._estimate = lambda m: m.size_bytes  # sizes in the test are abstract units
    return pool, loads


def test_loads_once_and_reuses(reg):
    pool, loads = make_pool(reg)
    e1 = pool.acquire("a")
    e2 = pool.acquire("a")
    assert e1 is e2 and loads == ["a"] and e1.in_use == 2
    pool.release(e1)
    pool.release(e2)
    assert [p["name"] for p in pool.ps()] == ["a"]
    with pytest.raises(LmforgeError, match="unknown model"):
        pool.acquire("zzz")


def test_keep_alive_unloads_idle_models_only(reg):
    pool, _ = make_pool(reg, keep_alive_s=0.05)
    busy, idle = pool.acquire("a"), pool.acquire("b")
    pool.release(idle)
    time.sleep(0.1)
    assert pool.reap_idle() == ["b"]
    assert [p["name"] for p in pool.ps()] == ["a"]  # in use: kept however long
    pool.release(busy)


def test_lru_eviction_under_budget(reg):
    pool, loads = make_pool(reg, memory_budget_bytes=1000)
    for name in ("a", "b"):
        pool.release(pool.acquire(name))
    pool.release(pool.acquire("a"))  # a is now more recent than b
    pool.release(pool.acquire("c"))  # needs room: the least recently used (b) goes
    assert sorted(p["name"] for p in pool.ps()) == ["a", "c"]
    with pytest.raises(LmforgeError, match="not enough memory budget"):
        pool.acquire("huge")
    assert sorted(p["name"] for p in pool.ps()) == ["a", "c"] or pool.ps() == []
