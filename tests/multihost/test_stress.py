"""Deliveries through both mounts while sessions through HAProxy read,
delete, commit, drop the connection and get killed.

Four deliverers run at once, each delivery a process of its own: procmail
(-m, a ":0:" recipe: dotlock by link(), then fcntl) through host A's
mount and through host B's, and liblockfile's dotlockfile (-l, an
O_APPEND write under a fcntl lock, -u) through each mount.  Meanwhile
sessions, one after another, go through HAProxy (leastconn, so to either
host) with the PROXY v2 header: they identify every message (TOP n 0),
read some, delete a random share, and end with QUIT, RSET+QUIT, a dropped
connection, a SIGKILL of their pop3d before QUIT, or a SIGKILL right
after QUIT (the commit may or may not have happened: those deletions are
"asked", and either outcome is allowed).

At the end every delivered message is in the mailbox exactly once, byte
for byte, or was deleted by a session that asked; the mailbox keeps its
inode, owner, group and mode; no dotlock or journal is left.

POP3D_MH_SEED=N replays a run's choices (thread timing still varies).
The figures go to stdout and tests/out/multihost-stress*.txt.
"""
import os
import random
import re
import signal
import threading
import time

from harness import (DOTLOCKFILE, PROCMAIL, SUBJECT, dotlockfile_deliver,
                     identity, kill_pid, message,
                     procmail_deliver, split_mbox, summary, unstuff)

SEED = int(os.environ.get("POP3D_MH_SEED") or
           random.SystemRandom().randrange(1 << 31))
INITIAL = 30
COUNT = {("procmail", "hostA"): 8, ("procmail", "hostB"): 8,
         ("dotlockfile", "hostA"): 50, ("dotlockfile", "hostB"): 50}
PACE = {"procmail": (0.3, 1.0), "dotlockfile": (0.0, 0.3)}
MIN_SESSIONS = 100
HARD_LIMIT = 150.0
MAILDROP = re.compile(r"\+OK Maildrop has (\d+) messages \((\d+) octets\)")


class Ledger:
    def __init__(self):
        self.mu = threading.Lock()
        self.chunks, self.wires = {}, {}
        self.delivered = {}          # id -> deliverer
        self.deleted = {}            # id -> session whose QUIT said +OK
        self.asked = {}              # id -> killed right after QUIT
        self.failed = []
        self.errors = []


def deliverer(agent, mount, n, L, rng, stop, box, workdir):
    for k in range(n):
        if stop.is_set():
            return
        ident = f"{agent}-{mount}-{k}"
        chunk, wire = message(ident, rng.choice((1, 3, 10, 60)))
        with L.mu:
            L.chunks[ident], L.wires[ident] = chunk, wire
        if agent == "procmail":
            ok, err = procmail_deliver(box, chunk, workdir)
        else:
            ok, err = dotlockfile_deliver(box, chunk)
        with L.mu:
            if ok:
                L.delivered[ident] = agent
            else:
                L.failed.append((ident, err))
        time.sleep(rng.uniform(*PACE[agent]))


def run_session(number, rng, L, stats, haproxy, hosts, uid, name, pw, box):
    where = f"seed {SEED}, session {number}"
    # Sessions already running (a dropped one still ending) are not ours.
    earlier = set(hosts.la.sessions_of(uid) + hosts.lb.sessions_of(uid))
    c = haproxy.connect("lc")
    try:
        r = c.login(name, pw)
        if r.startswith("-ERR [IN-USE]"):
            # A killed session's lock is gone at once; count if not.
            stats["in_use"] += 1
            c.close()
            return 0
        m = MAILDROP.fullmatch(r)
        assert m, f"{where}: PASS answered {r!r}"
        n = int(m.group(1))
        ids = []
        for i in range(1, n + 1):
            st, head = c.multi(f"TOP {i} 0")
            assert st.startswith("+OK"), f"{where}: TOP {i}: {st}"
            mm = SUBJECT.search(unstuff(head))
            assert mm, f"{where}: TOP {i} 0: {head!r}"
            ident = mm.group(1).decode()
            with L.mu:
                assert ident in L.delivered or ident.startswith("initial"), \
                    f"{where}: never delivered {ident}"
                assert ident not in L.deleted, \
                    f"{where}: {ident} is back, deleted by session " \
                    f"{L.deleted[ident]}"
                L.asked.pop(ident, None)      # that commit did not happen
            ids.append(ident)
        assert len(set(ids)) == n, f"{where}: duplicates {ids}"
        share = rng.choices((0.0, 0.05, 0.2, 0.5, 1.0), (35, 25, 20, 12, 8))[0]
        dele = [i for i in range(1, n + 1) if rng.random() < share]
        for i in sorted(set(dele) | set(rng.sample(range(1, n + 1),
                                                   min(n, 2)))):
            st, raw = c.multi(f"RETR {i}")
            assert unstuff(raw) == L.wires[ids[i - 1]], \
                f"{where}: RETR {i} ({ids[i - 1]}) differs"
        for i in dele:
            assert c.cmd(f"DELE {i}") == f"+OK Message {i} deleted", where
        end = rng.choices(("quit", "rset", "drop", "kill", "killquit"),
                          (70, 5, 8, 9, 8))[0]
        stats[end] += 1
        if end == "drop":
            c.close()
            return n
        if end in ("kill", "killquit"):
            pids = [p for p in hosts.la.sessions_of(uid) +
                    hosts.lb.sessions_of(uid) if p not in earlier]
            assert len(pids) == 1, f"{where}: sessions running: {pids}"
            if end == "killquit":
                c.send("QUIT\r\n")
                with L.mu:
                    for i in dele:
                        L.asked[ids[i - 1]] = number
            kill_pid(pids[0], signal.SIGKILL)
            stats["kills"] += 1
            c.close()
            return n
        if end == "rset":
            assert c.cmd("RSET").startswith("+OK"), where
            dele = []
        r = c.cmd("QUIT")
        assert r == f"+OK pop3d signing off ({n - len(dele)} messages left)",\
            f"{where}: QUIT answered {r!r}"
        with L.mu:
            for i in dele:
                L.deleted[ids[i - 1]] = number
        stats["committed"] += bool(dele)
        return n
    finally:
        c.close()


def test_deliveries_through_both_mounts_and_sessions_through_haproxy(
        cluster, hosts, haproxy, account, maildrops, scratch):
    assert PROCMAIL and DOTLOCKFILE, \
        "install procmail and liblockfile-bin (tools/deps.sh test)"
    rng = random.Random(SEED)
    L = Ledger()
    for k in range(INITIAL):
        ident = f"initial-{k}"
        L.chunks[ident], L.wires[ident] = message(ident, rng.choice((2, 20)))
        L.delivered[ident] = "initial"
    name, pw = maildrops.new(b"".join(L.chunks.values()))
    boxes = {m: cluster.mounts[m][0] / "spool" / name
             for m in ("hostA", "hostB")}
    before = identity(boxes["hostA"])
    stop = threading.Event()
    threads = [threading.Thread(
        target=deliverer,
        args=(agent, mount, n, L, random.Random(f"{SEED}-{agent}-{mount}"),
              stop, boxes[mount], scratch))
        for (agent, mount), n in COUNT.items()]
    stats = {k: 0 for k in ("quit", "rset", "drop", "kill", "killquit",
                            "kills", "committed", "in_use")}
    sessions = listed = 0
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads) or sessions < MIN_SESSIONS:
            assert time.monotonic() - t0 < HARD_LIMIT, \
                f"seed {SEED}: not done after {HARD_LIMIT}s"
            sessions += 1
            listed += run_session(sessions, rng, L, stats, haproxy, hosts,
                                  account.uid, name, pw, boxes["hostA"])
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    elapsed = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a deliverer hangs"

    # A last session, through host B directly, sees what the file holds
    # (and finishes any commit a kill interrupted).
    s = hosts.b.session()
    r = s.login(name, pw)
    assert r.startswith("+OK Maildrop"), r
    assert s.cmd("QUIT").startswith("+OK")
    s.finish()
    data = boxes["hostB"].read_bytes()
    remaining = split_mbox(data, L.chunks)
    kept = set(remaining)
    delivered = set(L.delivered)
    deleted = set(L.deleted)
    asked = set(L.asked) - kept
    lost = sorted(delivered - kept - deleted - asked)
    twice = sorted(kept & deleted)
    dups = sorted(i for i in kept if remaining.count(i) > 1)
    ghosts = sorted((kept | deleted) - delivered)
    figures = {
        "seed": SEED,
        "seconds": f"{elapsed:.1f}",
        "rounds (sessions)": sessions + 1,
        "messages at the start": INITIAL,
        "deliveries": len(delivered) - INITIAL,
        **{f"{a} through {m}": sum(1 for i in delivered
                                   if i.startswith(f"{a}-{m}-"))
           for a, m in COUNT},
        "deliveries failed": len(L.failed),
        "ended by QUIT, RSET+QUIT, drop, kill, kill after QUIT":
            ", ".join(str(stats[k]) for k in ("quit", "rset", "drop",
                                              "kill", "killquit")),
        "kills": stats["kills"],
        "commits with deletions": stats["committed"],
        "logins answered [IN-USE]": stats["in_use"],
        "messages listed per session, mean": f"{listed / sessions:.1f}",
        "deleted by sessions (QUIT +OK)": len(deleted),
        "deleted by a session killed after QUIT": len(asked),
        "remaining": len(remaining),
        "lost": len(lost),
        "duplicated": len(dups) + len(twice),
    }
    text = summary("stress: two mounts, sessions through HAProxy", figures)
    ctx = f"seed {SEED} (POP3D_MH_SEED={SEED} replays it)\n{text}"
    assert not lost, f"{ctx}\nlost: {lost}"
    assert not twice and not dups, f"{ctx}\nduplicated: {twice} {dups}"
    assert not ghosts, f"{ctx}\nghosts: {ghosts}"
    assert not L.failed, f"{ctx}\nnot delivered: {L.failed[:5]}"
    assert identity(boxes["hostB"]) == before, ctx
    spool = boxes["hostB"].parent
    assert sorted(p.name for p in spool.iterdir()
                  if p.name.startswith(name)) == [name], ctx
    state = cluster.mounts["hostB"][0] / "state"
    assert [p for p in state.rglob("*") if "journal" in p.name] == [], ctx
    assert stats["kills"] > 0 and sessions >= MIN_SESSIONS, ctx
