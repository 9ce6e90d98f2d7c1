"""
Fixtures of the multi-host suite (the harness itself is harness.py).

One GlusterFS volume with two mounts, the system account, the two hosts
with their standard launchers (pop3d -P 127.0.0.1/32 -S SRV/state) and
HAProxy are made once per run; each test gets maildrops of its own.
Where FUSE or GlusterFS cannot run, every test here skips with the
reason.  Nothing is left behind: the mounts are unmounted, the volume
stopped and deleted, every process stopped by its PID, the account
removed, the scratch directory deleted.
"""
import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from harness import (Account, Gluster, HAProxy, Host, HOST_ADDRS,
                     Unavailable, log, make_mailbox, unmount_path)


@pytest.fixture(scope="session")
def scratch():
    # Not under pytest's 0700 tmp_path: the mail user must reach the
    # spool through it.
    d = Path(tempfile.mkdtemp(prefix="pop3d-mh-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    mounted = [p for p in d.iterdir() if not unmount_path(p)]
    if mounted:
        log(f"not removing {d}: still mounted: {mounted}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster(scratch):
    g = Gluster(scratch)
    try:
        try:
            g.start()
            g.mount("hostA")
            g.mount("hostB")
        except Unavailable as e:
            pytest.skip(f"GlusterFS/FUSE cannot run here: {e}")
        vol = g.mounts["hostA"][0]
        spool = vol / "spool"
        spool.mkdir()
        os.chown(spool, 0, 8)          # root:mail 2775, as /var/mail
        os.chmod(spool, 0o2775)
        state = vol / "state"
        state.mkdir()
        os.chmod(state, 0o755)
        yield g
    finally:
        g.stop()


@pytest.fixture(scope="session")
def account(scratch):
    a = Account(scratch)
    try:
        yield a
    finally:
        a.remove()


class Hosts:
    def __init__(self, a, b):
        self.a, self.b = a, b
        self.la = a.launch()
        self.lb = b.launch()

    def stop(self):
        self.a.stop()
        self.b.stop()


@pytest.fixture(scope="session")
def hosts(cluster, account, scratch):
    srv = scratch / "srv"
    srv.mkdir()
    made = []
    try:
        a = Host("a", HOST_ADDRS["a"], cluster.mounts["hostA"][0], srv,
                 scratch / "local-a", account)
        made.append(a)
        b = Host("b", HOST_ADDRS["b"], cluster.mounts["hostB"][0], srv,
                 scratch / "local-b", account)
        made.append(b)
        h = Hosts(a, b)
        yield h
    finally:
        for x in made:
            x.stop()


@pytest.fixture(scope="session")
def haproxy(hosts, scratch):
    hp = HAProxy(scratch, {"a": (hosts.a.addr, hosts.la.port),
                           "b": (hosts.b.addr, hosts.lb.port)})
    try:
        yield hp
    finally:
        hp.stop()


_names = itertools.count(1)


class Maildrops:
    """Virtual users of this test, each with a mailbox on the volume."""

    def __init__(self, account, cluster, prefix):
        self.account = account
        self.spool = cluster.mounts["hostA"][0] / "spool"
        self.prefix = prefix

    def new(self, data=b""):
        name = f"{self.prefix}{next(_names)}"
        self.account.add(name, f"pw-{name}")
        make_mailbox(self.spool / name, data, self.account)
        return name, f"pw-{name}"


@pytest.fixture
def maildrops(cluster, account):
    return Maildrops(account, cluster, "u")
