"""Several hosts for the pop3d benchmark (issue 12): sessions per second
and download MB/s through HAProxy to two hosts on a shared GlusterFS
spool, beside one host direct on a local disk, in the same run.

The set-up is the multi-host test suite's own (tests/multihost/harness.py,
imported, not copied): glusterd on 127.0.0.5 with a one-brick volume, two
FUSE mounts each in a mount namespace of its own ("host A", "host B"), a
pop3d launcher per host on 127.0.0.2 and 127.0.0.3 (pop3d -P 127.0.0.1/32
-S SRV/state -m SRV/spool/%u -f PASSWD), HAProxy on 127.0.0.1 (mode tcp,
leastconn, send-proxy-v2).  Beside them, with the same pop3d options:

  host A direct   a second launcher on host A without -P, reached without
                  HAProxy: the GlusterFS cost alone
  local disk      a third "host" (127.0.0.4) whose SRV is a plain
                  directory on the local disk, no HAProxy

The volume and account get names of the benchmark's own (p3benchmh), so
they never touch a run of the test suite; a run of the suite at the same
time holds glusterd's address, and these rows are then skipped with that
reason.  Everything is stopped by PID and removed in a finally.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
MH_DIR = os.path.join(REPO, "tests", "multihost")

NAME = "p3benchmh"
LOCAL_ADDR = "127.0.0.4"
# Sessions cycle over several maildrops, as a site's many users do: back
# to back, one maildrop's next session can find the last one's session
# lock not yet released through FUSE (the release is asynchronous) and
# is told -ERR [IN-USE]; such sessions are retried and counted.
USERS = ["mh%d" % i for i in range(1, 5)]
PASSWORD = "pw-mh-bench"
RETRY_MS = 20

ROWS = (
    ("sess", "login+STAT+QUIT, mailbox of 10 msgs", "sessions/s", True),
    ("retr", "RETR pipelined, whole mailbox of N msgs", "MB/s", True),
)
SETUPS = (
    ("local", "one host, local disk, direct"),
    ("direct", "one host, GlusterFS spool, direct"),
    ("haproxy", "HAProxy → 2 hosts, GlusterFS spool"),
)


class Skip(Exception):
    pass


def _harness(pop3d):
    os.environ["POP3D_BIN"] = pop3d
    if MH_DIR not in sys.path:
        sys.path.insert(0, MH_DIR)
    import harness
    harness.POP3D = pop3d
    harness.VOLUME = NAME
    harness.ACCOUNT = NAME
    return harness


def run(setup, client, gen_cached, size, runs, sessions, log):
    """Returns {"values": {(row, setup): [..]}, "size": N, "bytes": B,
    "notes": [...]} or {"skip": reason}."""
    for letter in ("P", "S"):
        if not setup.pop3d_has(letter):
            return {"skip": "needs -P/-S (this pop3d has no -%s)" % letter}
    for exe in ("glusterd", "glusterfs", "haproxy"):
        if shutil.which(exe, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            return {"skip": "%s is not installed" % exe}
    h = _harness(setup.pop3d_path)
    scratch = tempfile.mkdtemp(prefix="p3bench-mh-", dir="/tmp")
    os.chmod(scratch, 0o755)
    g = acct = hp = None
    hosts = []
    try:
        g = h.Gluster(scratch)
        try:
            g.start()
            g.mount("hostA")
            g.mount("hostB")
        except h.Unavailable as e:
            return {"skip": "GlusterFS/FUSE cannot run here: %s" % e}
        except AssertionError as e:
            return {"skip": "GlusterFS: %s" % str(e).splitlines()[0]}
        vol = g.mounts["hostA"][0]
        local = os.path.join(scratch, "localdisk")
        os.mkdir(local)
        for top in (str(vol), local):
            spool = os.path.join(top, "spool")
            os.mkdir(spool)
            os.chown(spool, 0, setup.mail_gid)
            os.chmod(spool, 0o2775)
            state = os.path.join(top, "state")
            os.mkdir(state)
            os.chmod(state, 0o755)
        acct = h.Account(scratch)
        for u in USERS:
            acct.add(u, PASSWORD)
        srv = os.path.join(scratch, "srv")
        os.mkdir(srv)
        a = h.Host("a", h.HOST_ADDRS["a"], g.mounts["hostA"][0], srv,
                   os.path.join(scratch, "local-a"), acct)
        hosts.append(a)
        b = h.Host("b", h.HOST_ADDRS["b"], g.mounts["hostB"][0], srv,
                   os.path.join(scratch, "local-b"), acct)
        hosts.append(b)
        lo = h.Host("l", LOCAL_ADDR, local, srv,
                    os.path.join(scratch, "local-l"), acct)
        hosts.append(lo)
        la, lb = a.launch(), b.launch()
        ladirect = a.launch(proxy=False)
        llocal = lo.launch(proxy=False)
        hp = h.HAProxy(scratch, {"a": (a.addr, la.port),
                                 "b": (b.addr, lb.port)})
        ends = {"local": (LOCAL_ADDR, llocal.port),
                "direct": (a.addr, ladirect.port),
                "haproxy": (h.HAPROXY_ADDR, hp.ports["lc"])}
        spools = {"local": os.path.join(local, "spool"),
                  "direct": os.path.join(str(vol), "spool")}
        spools["haproxy"] = spools["direct"]
        in_use = {}

        def put(where, src, users=USERS):
            data = open(src, "rb").read()
            for u in users:
                h.make_mailbox(os.path.join(spools[where], u), data, acct)

        def retried(where, fn, *a):
            for _ in range(500):
                try:
                    return fn(*a)
                except client.Pop3Error as e:
                    if "[IN-USE]" not in str(e):
                        raise
                    in_use[where] = in_use.get(where, 0) + 1
                    time.sleep(RETRY_MS / 1e3)
            raise RuntimeError("%s: maildrop still in use after 500 tries"
                               % where)

        values = {}
        small = gen_cached(10)
        big = gen_cached(size)
        for r in range(runs):
            for where in ("local", "direct", "haproxy"):
                addr, port = ends[where]
                put(where, small)
                for u in USERS:                                 # warm
                    retried(where, client.session_ms, addr, port, u,
                            PASSWORD)
                t0 = time.perf_counter()
                for i in range(sessions):
                    retried(where, client.session_ms, addr, port,
                            USERS[i % len(USERS)], PASSWORD)
                v = sessions / (time.perf_counter() - t0)
                values.setdefault(("sess", where), []).append(v)
                u = USERS[r % len(USERS)]
                put(where, big, [u])
                retried(where, client.session_ms, addr, port, u,
                        PASSWORD)                               # index
                res = retried(where, client.retr_pipelined, addr, port, u,
                              PASSWORD)
                if res["messages"] != size:
                    raise RuntimeError("%s: STAT said %d messages, expected "
                                       "%d" % (where, res["messages"], size))
                values.setdefault(("retr", where), []).append(
                    res["mb_per_s"])
                log("multihost run %d/%d, %s: %.1f sessions/s, %.0f MB/s"
                    % (r + 1, runs, where, v, res["mb_per_s"]))
        return {"values": values, "size": size, "in_use": in_use,
                "bytes": os.path.getsize(big),
                "hosts": "glusterfs %s, haproxy %s" % (
                    _version("glusterfs-server"), _version("haproxy"))}
    finally:
        if hp is not None:
            hp.stop()
        for x in hosts:
            x.stop()
        if g is not None:
            g.stop()
        if acct is not None:
            acct.remove()
        left = [p for p in os.listdir(scratch)
                if not h.unmount_path(os.path.join(scratch, p))]
        if left:
            log("not removing %s: still mounted: %s" % (scratch, left))
        else:
            shutil.rmtree(scratch, ignore_errors=True)


def _version(pkg):
    import subprocess
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True).stdout.strip() or "?"


def medians(values):
    return {k: statistics.median(v) for k, v in values.items()}


def spread(v):
    """(max - min) / median, in per cent."""
    if len(v) < 2:
        return None
    m = statistics.median(v)
    return 100.0 * (max(v) - min(v)) / m if m else None
