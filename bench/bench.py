"""pop3d benchmark: pop3d against popa3d, Dovecot and GNU mailutils.

    /usr/bin/python3 bench/bench.py [--quick] [--runs N] [--peers a,b]
        [--sizes 10000] [--big 100000] [--no-scaling]
        [--scaling-sizes 1000,10000,100000] [--pop3d PATH] [--out FILE]

All four servers run on 127.0.0.1 with the same system user, the same PAM
stack and the same generated mailboxes (bench/peers.py, bench/gen.py); the
measurements come from bench/client.py.  Every value is the median of
--runs runs (default 3); the runs of one row are interleaved across the
peers.  By default: the main table at 10,000 messages, the two mailbox-open
rows at 100,000 messages, and the scaling table at 1,000, 10,000 and
100,000 messages.  --quick: one run, 1,000 messages, no scaling table.

Progress goes to stderr, the tables to stdout and to --out (default
bench/results/latest.md).  Exit status 1 if a peer fails to start or a
measurement fails (the message names the peer), after cleanup; 2 on bad
usage or when another benchmark holds the lock.
"""

import argparse
import datetime
import fcntl
import os
import platform
import poplib
import statistics
import sys
import time
import traceback

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import floors   # noqa: E402
import gen      # noqa: E402
import peers    # noqa: E402
import xfs      # noqa: E402

HOST = peers.HOST
USER = peers.USER
PW = peers.PASSWORD

# key, label (N = the mailbox's message count), unit, higher is better
ROWS = [
    ("greet", "connect → greeting", "ms", False),
    ("sess", "login+STAT+QUIT, mailbox of 10 msgs", "sessions/s", True),
    ("open_fresh", "open N msgs, PASS → STAT, fresh", "ms", False),
    ("open_warm", "open N msgs, PASS → STAT, mailbox unchanged since "
     "last session", "ms", False),
    ("retr_each", "RETR one at a time (first R msgs), per message", "ms",
     False),
    ("retr_mbs", "RETR pipelined, whole mailbox", "MB/s", True),
    ("retr_cpu", "server CPU for that download session", "ms", False),
    ("dele1", "DELE 1 + QUIT, QUIT → +OK", "ms", False),
    ("deleall", "DELE all + QUIT, QUIT → +OK", "ms", False),
    ("quit", "QUIT with nothing deleted, QUIT → +OK", "ms", False),
    ("rss", "peak RSS with N msgs open", "MiB", False),
    ("login", "login alone, PASS → STAT, mailbox of 10 msgs, fresh", "ms",
     False),
]
# Derived from the rows above (render): open fresh less login alone, and
# the mailbox's bytes over that.
DERIVED = [
    ("open_net", "open N msgs fresh, net of login", "ms", False),
    ("parse_gbs", "parse rate, net of login (bytes / that time)", "GB/s",
     True),
]
ROW = {r[0]: r for r in ROWS}
# Which task measures which rows.
TASK_ROWS = {
    "greet": ("greet",),
    "sess": ("sess",),
    "open": ("open_fresh", "open_warm", "rss"),
    "retr_each": ("retr_each",),
    "retr_pipe": ("retr_mbs", "retr_cpu"),
    "dele1": ("dele1",),
    "deleall": ("deleall",),
    "quit": ("quit",),
    "login": ("login",),
}
TASK_ORDER = ("greet", "sess", "login", "open", "retr_each", "retr_pipe",
              "quit", "dele1", "deleall")
# Rows that write the mailbox's directory or the state directory: with no
# -S, a session cannot write a journal in a spool only the mail group may
# write.
NEEDS_S = ("dele1", "deleall")
SCALING_ROWS = ("open_fresh", "open_warm", "retr_mbs", "retr_cpu", "dele1",
                "rss")
BIG_ROWS = ("open_fresh", "open_warm")
REFUSED = "refused"
NEEDS = "needs -S"   # a state directory the session can write
# Targets of issue 14: row -> (what it is compared with, bound, text).
GOALS = {
    "open_net": ("popa3d", 0.5, "≤ 0.5× popa3d"),
    "open_fresh@big": ("popa3d", 0.6, "≤ 0.6× popa3d"),
    "parse_gbs": ("value", 6.0, "≥ 6 GB/s"),
    "retr_cpu": ("best", 0.5, "≤ 0.5× best peer"),
    "greet": ("popa3d", 1.0, "≤ 1.0× popa3d"),
    "dele1": ("floor", 1.2, "≤ 1.2× floor"),
}
DEFAULT_POP3D = os.path.join(os.path.dirname(BENCH_DIR), "pop3d")


class BenchError(Exception):
    pass


def log(msg):
    peers.log(msg)


def parse_sizes(s):
    try:
        out = [int(x.replace("_", "")) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("not a list of numbers: %r" % s)
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive: %r" % s)
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="one run, 1,000 messages, no 100,000-message rows, "
                    "no scaling table (unless --scaling)")
    ap.add_argument("--runs", type=int, help="runs per value, median "
                    "reported (default 3; 1 with --quick)")
    ap.add_argument("--peers", default=",".join(peers.ALL_PEERS),
                    help="comma-separated subset of %s (pop3d is always "
                    "measured)" % ",".join(peers.ALL_PEERS))
    ap.add_argument("--sizes", type=parse_sizes,
                    help="message counts of the main table (default 10000; "
                    "1000 with --quick); one table per size")
    ap.add_argument("--big", type=int,
                    help="also the mailbox-open rows at this many messages "
                    "in the main table (default 100000; 0 = none; none with "
                    "--quick)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--scaling", dest="scaling", action="store_true",
                   default=None, help="print the scaling table (default "
                   "unless --quick)")
    g.add_argument("--no-scaling", dest="scaling", action="store_false")
    ap.add_argument("--scaling-sizes", type=parse_sizes,
                    help="message counts of the scaling table (default "
                    "1000,10000,100000; 100,1000 with --quick)")
    ap.add_argument("--seed", type=int, default=1, help="mailbox generator "
                    "seed (default 1)")
    ap.add_argument("--pop3d", default=DEFAULT_POP3D,
                    help="the pop3d binary (default: the tree's)")
    ap.add_argument("--greetings", type=int, help="connections per greeting "
                    "value (default 50; 20 with --quick)")
    ap.add_argument("--sessions", type=int, help="sessions per sessions/s "
                    "value (default 50; 20 with --quick)")
    ap.add_argument("--retr-each", type=int, default=50, help="messages "
                    "of the RETR-one-at-a-time row (default 50)")
    ap.add_argument("--tasks", help="comma-separated subset of %s (default "
                    "all)" % ",".join(TASK_ORDER))
    ap.add_argument("--fs", choices=("native", "xfs"), default="native",
                    help="native: /var/mail as it is; xfs: the mailbox rows "
                    "on a loop-mounted XFS image made and removed here")
    ap.add_argument("--no-floors", dest="floors", action="store_false",
                    help="skip the floors (wc -l, dd, the commit floor)")
    ap.add_argument("--no-dotlock", dest="dotlock", action="store_false",
                    help="skip the dotlock helper rows")
    ap.add_argument("--dotlock-sessions", type=int, help="sessions per "
                    "spool and kind in the dotlock rows (default 40; 10 "
                    "with --quick)")
    ap.add_argument("--no-multihost", dest="multihost", action="store_false",
                    help="skip the several-hosts rows")
    ap.add_argument("--out", default=os.path.join(BENCH_DIR, "results",
                                                  "latest.md"),
                    help="also write the tables here (default "
                    "bench/results/latest.md; '' for none)")
    a = ap.parse_args(argv)
    q = a.quick
    if a.runs is None:
        a.runs = 1 if q else 3
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if a.sizes is None:
        a.sizes = [1000] if q else [10000]
    if a.big is None:
        a.big = 0 if q else 100000
    if a.scaling is None:
        a.scaling = not q
    if a.scaling_sizes is None:
        a.scaling_sizes = [100, 1000] if q else [1000, 10000, 100000]
    if a.greetings is None:
        a.greetings = 20 if q else 50
    if a.sessions is None:
        a.sessions = 20 if q else 50
    if a.dotlock_sessions is None:
        a.dotlock_sessions = 10 if q else 40
    if a.tasks is None:
        a.tasks = list(TASK_ORDER)
    else:
        a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
        bad = [t for t in a.tasks if t not in TASK_ORDER]
        if bad:
            ap.error("unknown task(s) %s; choose from %s" % (
                ",".join(bad), ",".join(TASK_ORDER)))
    names = [n.strip() for n in a.peers.split(",") if n.strip()]
    bad = [n for n in names if n not in peers.ALL_PEERS]
    if bad:
        ap.error("unknown peer(s) %s; choose from %s" % (
            ",".join(bad), ",".join(peers.ALL_PEERS)))
    if "pop3d" not in names:
        names.insert(0, "pop3d")
    a.peers = [n for n in peers.ALL_PEERS if n in names]
    return a


# ---------------------------------------------------------------- running

class Bench:
    def __init__(self, args, setup, client):
        self.a = args
        self.setup = setup
        self.client = client
        self.names = args.peers
        self.values = {}        # (size, row) -> {peer: [values]}
        self.refused = {}       # (size, peer) -> reason
        self.mbox = {}          # size -> path
        self.mbytes = {}        # size -> bytes
        self.save_path = None
        self.save_size = None
        self.notes = []
        self.needs = set()      # (size, row) pop3d could not measure
        self.commit_error = None
        self.floor = {}         # size -> {"wc": (ms, GB/s), "commit": {}}
        self.dotlock = None
        self.multihost = None

    def port(self, name):
        return self.setup.peers[name].port

    def add(self, size, row, name, value):
        self.values.setdefault((size, row), {}).setdefault(name, []).append(
            value)

    def mailbox(self, size):
        if size not in self.mbox:
            self.mbox[size] = gen.cached(size, self.a.seed, log=log)
            self.mbytes[size] = os.path.getsize(self.mbox[size])
        return self.mbox[size]

    # -- checks

    def check(self, size):
        """One login+STAT+QUIT per peer on the SIZE mailbox: every peer logs
        in through PAM and counts SIZE messages.  popa3d refusing a mailbox
        above its compiled-in size limit is recorded, not an error."""
        src = self.mailbox(size)
        for name in self.names:
            if (size, name) in self.refused:
                continue
            self.setup.reset_mailbox(src)
            try:
                n = self._stat_session(name)
            except (poplib.error_proto, OSError) as e:
                if name == "popa3d" and self.mbytes[size] > peers.POPA3D_LIMIT:
                    why = ("popa3d refuses mailboxes over %d bytes "
                           "(MAX_MAILBOX_OPEN_BYTES in its params.h); this "
                           "one has %d: %s" % (peers.POPA3D_LIMIT,
                                               self.mbytes[size], e))
                    log(why)
                    self.refused[(size, name)] = why
                    continue
                raise BenchError("%s: login+STAT on the %d-message mailbox "
                                 "failed: %s" % (name, size, e))
            if n != size:
                raise BenchError("%s counts %d messages in the %d-message "
                                 "mailbox" % (name, n, size))

    def settle(self, name):
        """Untimed login+STAT+QUIT sessions until one leaves the mailbox
        as it found it (at most 3): Dovecot and mailutils add their
        X-IMAPbase/X-UID/Status headers to a new mbox in the first one
        or two sessions, and every server builds its indexes.  What is
        measured next sees a mailbox unchanged since the last session."""
        for _ in range(3):
            before = self.setup._sig()
            self._stat_session(name)
            self.setup.quiesce()
            if self.setup._sig() == before:
                return
        log("%s: the mailbox still changes after 3 sessions" % name)

    def _stat_session(self, name):
        """An untimed login+STAT+QUIT (poplib, not the measuring client);
        returns the message count."""
        m = poplib.POP3(HOST, self.port(name), timeout=600)
        try:
            m.user(USER)
            m.pass_(PW)
            n = m.stat()[0]
            m.quit()
        finally:
            m.close()
        return n

    # -- tasks: each measures one run of its rows for one peer

    def t_greet(self, name, size):
        c = self.client
        self.setup.quiesce()
        v = [c.greeting_ms(HOST, self.port(name))
             for _ in range(self.a.greetings)]
        self.setup.quiesce()
        self.add(size, "greet", name, statistics.median(v))

    def t_sess(self, name, size):
        self.setup.reset_mailbox(self.mailbox(10))
        self.settle(name)
        self.add(size, "sess", name, self.client.sessions_per_s(
            HOST, self.port(name), USER, PW, self.a.sessions))

    def t_open(self, name, size):
        self.setup.reset_mailbox(self.mailbox(size), fresh=True)
        probe = peers.Probe()
        fresh = self.client.open_ms(HOST, self.port(name), USER, PW,
                                    probe=probe)
        rss = probe.rss_mib("open")
        self.setup.quiesce()
        self.settle(name)
        warm = self.client.open_ms(HOST, self.port(name), USER, PW)
        self.add(size, "open_fresh", name, fresh)
        self.add(size, "open_warm", name, warm)
        self.add(size, "rss", name, rss)

    def t_retr_each(self, name, size):
        self.setup.reset_mailbox(self.mailbox(size))
        self.settle(name)
        self.add(size, "retr_each", name, self.client.retr_each_ms(
            HOST, self.port(name), USER, PW, min(self.a.retr_each, size)))

    def t_retr_pipe(self, name, size):
        self.setup.reset_mailbox(self.mailbox(size))
        self.settle(name)
        probe = peers.Probe()
        save = None
        if (name == "pop3d" and size == self.a.sizes[0]
                and self.save_path is None):
            save = os.path.join(self.setup.scratch, "pop3d-retr.bin")
        r = self.client.retr_pipelined(HOST, self.port(name), USER, PW,
                                       probe=probe, save=save)
        if r["messages"] != size:
            raise BenchError("%s: STAT said %d messages, expected %d" % (
                name, r["messages"], size))
        if save:
            self.save_path, self.save_size = save, size
        self.add(size, "retr_mbs", name, r["mb_per_s"])
        self.add(size, "retr_cpu", name, probe.cpu_between_ms("login",
                                                              "done"))

    def t_dele1(self, name, size):
        self.setup.reset_mailbox(self.mailbox(size))
        self.settle(name)
        self.add(size, "dele1", name, self.client.dele_quit_ms(
            HOST, self.port(name), USER, PW, "first"))

    def t_deleall(self, name, size):
        self.setup.reset_mailbox(self.mailbox(size))
        self.settle(name)
        self.add(size, "deleall", name, self.client.dele_quit_ms(
            HOST, self.port(name), USER, PW, "all"))

    def can_commit(self):
        """Whether pop3d can commit a deletion in /var/mail (root:mail
        2775): its session holds no mail group, so the journal must live
        in its state directory (-S).  Tried once on the 10-message
        mailbox."""
        if self.commit_error is None:
            self.setup.reset_mailbox(self.mailbox(10), force=True)
            try:
                self.client.session_ms(HOST, self.port("pop3d"), USER, PW,
                                       dele=True)
                self.commit_error = ""
            except self.client.Pop3Error as e:
                self.commit_error = (
                    "this pop3d cannot commit in a spool only the mail "
                    "group may write (%s%s)" % (
                        e, "" if self.setup.pop3d_has("S") else
                        "; it has no -S"))
                log("pop3d: " + self.commit_error)
            self.setup.reset_mailbox(self.mailbox(10), force=True)
        return self.commit_error == ""

    def t_login(self, name, size):
        self.setup.reset_mailbox(self.mailbox(10), fresh=True)
        self.settle(name)
        v = []
        for _ in range(5):
            v.append(self.client.open_ms(HOST, self.port(name), USER, PW))
        self.add(size, "login", name, statistics.median(v))

    def t_quit(self, name, size):
        self.setup.reset_mailbox(self.mailbox(size))
        self.settle(name)
        self.add(size, "quit", name, self.client.quit_ms(
            HOST, self.port(name), USER, PW))

    # -- plan

    def plan(self):
        """[(size, [tasks])] in the order they run."""
        want = {}
        for s in self.a.sizes:
            want.setdefault(s, set()).update(TASK_ROWS)
        if self.a.big:
            want.setdefault(self.a.big, set()).update(("open", "login"))
        if self.a.scaling:
            for s in self.a.scaling_sizes:
                want.setdefault(s, set()).update(("open", "retr_pipe",
                                                  "dele1"))
        plan = [(s, [t for t in TASK_ORDER if t in want[s]
                     and t in self.a.tasks]) for s in sorted(want)]
        return [(s, t) for s, t in plan if t]

    def run(self):
        plan = self.plan()
        for size, tasks in plan:
            self.mailbox(size)
        for size, tasks in plan:
            log("== %d messages (%.1f MB): %s" % (
                size, self.mbytes[size] / 1e6, ", ".join(tasks)))
            self.check(size)
            for task in tasks:
                fn = getattr(self, "t_" + task)
                for r in range(self.a.runs):
                    for name in self.names:
                        if (size, name) in self.refused and task not in (
                                "greet", "sess", "login"):
                            continue
                        if (name == "pop3d" and task in NEEDS_S
                                and not self.can_commit()):
                            if r == 0:
                                log("pop3d: %s skipped: %s" % (
                                    task, self.commit_error))
                            self.needs.update((size, row) for row in
                                              TASK_ROWS[task])
                            continue
                        t0 = time.monotonic()
                        try:
                            fn(name, size)
                        except (BenchError, peers.SetupError):
                            raise
                        except Exception as e:
                            raise BenchError(
                                "%s: %s at %d messages (run %d) failed: "
                                "%s: %s" % (name, task, size, r + 1,
                                            type(e).__name__, e)) from e
                        got = ", ".join(
                            "%s %s" % (row, fmt(self.values[(size, row)]
                                                [name][-1]))
                            for row in TASK_ROWS[task])
                        log("%d msgs, %s, run %d/%d, %s: %s (%.1f s)" % (
                            size, task, r + 1, self.a.runs, name, got,
                            time.monotonic() - t0))

    def ceiling(self, ceiling_mod):
        if not self.save_path:
            return None
        log("client ceiling on %s (%.1f MB)" % (
            self.save_path, os.path.getsize(self.save_path) / 1e6))
        self.setup.quiesce()
        try:
            return ceiling_mod.ceiling(self.save_path, self.save_size,
                                       runs=max(5, self.a.runs))
        finally:
            os.unlink(self.save_path)

    def median(self, size, row, name):
        if (size, name) in self.refused and row not in ("greet", "sess",
                                                        "login"):
            return REFUSED
        if name == "pop3d" and (size, row) in self.needs:
            return NEEDS
        if row == "open_net":
            a = self.median(size, "open_fresh", name)
            b = self.median(size, "login", name)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                # Below the noise of the login itself: no figure.
                return a - b if a - b > 0.02 * b else None
            return a if isinstance(a, str) else None
        if row == "parse_gbs":
            v = self.median(size, "open_net", name)
            if isinstance(v, (int, float)):
                return self.mbytes[size] / v / 1e6
            return v
        v = self.values.get((size, row), {}).get(name)
        return statistics.median(v) if v else None

    def spread(self, size, row, name="pop3d"):
        """Run-to-run spread of a row, (max - min) / median in per cent."""
        v = self.values.get((size, row), {}).get(name)
        if not v or len(v) < 2:
            return None
        m = statistics.median(v)
        return 100.0 * (max(v) - min(v)) / m if m else None

    # -- floors, dotlock, several hosts

    def measure_floors(self):
        spool = os.path.dirname(peers.MAILBOX)
        sizes = list(self.a.sizes) + ([self.a.big] if self.a.big else [])
        for size in sizes:
            if size not in self.mbox:
                continue
            self.setup.quiesce()
            src = self.mbox[size]
            f = self.floor.setdefault(size, {})
            ms, gbs, _ = floors.wc_l(src)
            f["wc"] = (ms, gbs)
            log("floor, %d msgs: wc -l %.1f ms, %.2f GB/s" % (size, ms, gbs))
            if size in self.a.sizes:
                c = floors.commit_floor(src, spool)
                f["commit"] = c
                log("floor, %d msgs: tail %d bytes on %s: %s = %.1f ms" % (
                    size, c["tail"], c["fs"], c["floor_how"], c["floor_ms"]))

    def measure_dotlock(self, base):
        import dotlock
        d = dotlock.Dotlock(self.setup, base, self.client)
        d.start()
        can = self.can_commit()
        vals = d.measure(self.mailbox(10), self.a.dotlock_sessions, can)
        helper = d.helper_ms()
        d.stop()
        self.dotlock = {"values": vals, "helper": helper, "commit": can,
                        "fs": floors.fs_type(base)}
        for k, v in sorted(vals.items()):
            log("dotlock %s %s: median %.2f ms over %d" % (
                k[0], k[1], statistics.median(v), len(v)))
        log("dotlockfile -l + -u: %.2f ms; /bin/true twice: %.2f ms" % helper)

    def measure_multihost(self):
        import multihost
        size = self.a.sizes[0]
        try:
            self.multihost = multihost.run(
                self.setup, self.client, self.mailbox, size,
                max(self.a.runs, 3), self.a.sessions, log)
        except Exception as e:
            traceback.print_exc()
            self.multihost = {"skip": "failed: %s: %s" % (
                type(e).__name__, str(e).splitlines()[0] if str(e) else "")}


# ---------------------------------------------------------------- output

def fmt(v):
    if v is None:
        return "–"
    if v == REFUSED:
        return "refused¹"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 100:
        return "{:,.0f}".format(v)
    if a >= 10:
        return "%.1f" % v
    if a >= 1:
        return "%.2f" % v
    return "%.3f" % v


def fmt_ratio(r):
    if r is None:
        return "–"
    return ("%.2f×" % r) if r < 10 else ("%.1f×" % r)


def ratio(vals, higher):
    """pop3d / best other peer, or None."""
    mine = vals.get("pop3d")
    others = [v for n, v in vals.items()
              if n != "pop3d" and isinstance(v, (int, float))]
    if not isinstance(mine, (int, float)) or not others:
        return None
    best = max(others) if higher else min(others)
    if best == 0:
        return None
    return mine / best


def md_table(header, rows, align):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":---" if a == "l" else "---:" for a in align)
           + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def machine_info(setup, args):
    def cpuinfo():
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or "?"

    def ram():
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
        return "?"

    def fs(path):
        best = ("", "?", "?")
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, right = line.split(" - ", 1)
                mnt = left.split()[4]
                fstype, dev = right.split()[:2]
                if ((path == mnt or path.startswith(mnt.rstrip("/") + "/"))
                        and len(mnt) >= len(best[0])):
                    best = (mnt, fstype, dev)
        return "%s (%s on %s)" % (best[1], best[2], best[0])

    try:
        with open("/etc/debian_version") as f:
            deb = "Debian " + f.read().strip()
    except OSError:
        deb = "?"
    v = setup.versions
    names = args.peers
    out = [
        ("date", datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")),
        ("machine", "%s, %d cores, %s RAM" % (cpuinfo(), os.cpu_count(),
                                             ram())),
        ("system", "%s, Linux %s, /var/mail on %s%s" % (
            deb, platform.release(), fs("/var/mail"),
            " (--fs xfs: a loop-mounted XFS image, reflink=%d, bound on "
            "/var/mail in the benchmark's own mount namespace)" %
            getattr(args, "reflink", 0) if args.fs == "xfs" else "")),
        ("pop3d", v.get("pop3d", "?")),
    ]
    if "popa3d" in names:
        out.append(("popa3d", v.get("popa3d", "?")))
    if "dovecot" in names:
        out.append(("dovecot", v.get("dovecot", "?") + " (own daemon, one "
                    "pop3-login and one pop3 process per connection)"))
    if "mailutils" in names:
        out.append(("mailutils", v.get("mailutils", "?")))
    inetd = [n for n in names if n != "dovecot"]
    out.append(("launcher", v.get("launcher", "?") + " --inetd -a, one "
                "process per connection, for " + ", ".join(inetd)))
    return out


def render(b, setup, args, ceil, elapsed):
    names = b.names
    out = []
    out.append("## pop3d benchmark")
    out.append("")
    for k, v in machine_info(setup, args):
        out.append("- %s: %s" % (k, v))
    sizes_desc = ", ".join("%s msgs = %s MB" % ("{:,}".format(s),
                                               "{:,.1f}".format(
                                                   b.mbytes[s] / 1e6))
                           for s in sorted(b.mbytes) if s != 10)
    out.append("- method: 127.0.0.1 only; one user (%s, yescrypt password) "
               "and one PAM stack (common-auth + common-account) for all; "
               "mailboxes from bench/gen.py v%d seed %d (%s), copied to "
               "/var/mail/%s and read once (page cache warm) before each "
               "measurement that needs a pristine mailbox; median of %d "
               "run(s), the peers interleaved; total run time %.0f s" % (
                   USER, gen.GEN_VERSION, args.seed, sizes_desc, USER,
                   args.runs, elapsed))
    out.append("")
    for size in args.sizes:
        header = (["%s messages" % "{:,}".format(size), "unit", "better"]
                  + names + ["pop3d / best peer", "pop3d / popa3d", "floor",
                             "pop3d / floor", "goal (issue 14)",
                             "pop3d spread"])
        rows = []
        keys = [(size, k) for k, _, _, _ in ROWS] + \
            [(size, k) for k, _, _, _ in DERIVED]
        if args.big and args.big not in args.sizes:
            keys += [(args.big, k) for k in BIG_ROWS + ("open_net",
                                                        "parse_gbs")]
        for sz, key in keys:
            if key in ("login", "open_net", "parse_gbs") and \
                    "login" not in args.tasks:
                continue
            if all(b.median(sz, key, n) is None for n in names):
                continue        # not measured in this run (--tasks)
            rows.append(table_row(b, args, sz, key, ceil))
        out.append(md_table(header, rows, "lll" + "r" * (len(names) + 6)))
        out.append("")
        out.extend(floor_lines(b, size))
    if ceil:
        mine = b.median(b.save_size, "retr_mbs", "pop3d")
        out.append("client ceiling (trivial sender, same bytes, best of %d "
                   "runs): %s MB/s" % (len(ceil.get("runs_mb_per_s", [])),
                                          fmt(ceil["mb_per_s"])))
        out.append("")
        if isinstance(mine, (int, float)):
            pct = 100.0 * mine / ceil["mb_per_s"]
            out.append("pop3d at %.0f%% of the ceiling" % pct)
            out.append("")
            if pct > 100:
                out.append("(Above 100%%: the trivial sender (ceiling runs "
                           "%s MB/s) was itself slower than pop3d here, so "
                           "this ceiling is not the client's limit.)" % (
                               ", ".join(fmt(x) for x in
                                         ceil.get("runs_mb_per_s", []))))
                out.append("")
    out.extend(dotlock_lines(b, args))
    out.extend(multihost_lines(b, args))
    if args.scaling:
        ss = args.scaling_sizes
        header = ["scaling", "peer"] + [
            "%s msgs (%s MB)" % ("{:,}".format(s),
                                 "{:,.0f}".format(b.mbytes[s] / 1e6))
            for s in ss]
        rows = []
        for key in SCALING_ROWS:
            _, label, unit, higher = ROW[key]
            label = label.replace("open N msgs, ", "open, ").replace(
                "with N msgs open", "with the mailbox open")
            for n in names:
                cells = []
                for s in ss:
                    v = b.median(s, key, n)
                    cells.append(fmt(v) + norm(key, v, s, b.mbytes[s]))
                rows.append(["%s, %s" % (label, unit), n] + cells)
        out.append(md_table(header, rows, "ll" + "r" * len(ss)))
        out.append("")
        out.append("Normalised in parentheses: open per message, CPU and "
                   "DELE 1 + QUIT per MB of mailbox, RSS per message; "
                   "constant values mean linear scaling (MB/s is "
                   "already a rate).")
        out.append("")
    if b.needs:
        out.append("needs -S: " + b.commit_error + ".")
        out.append("")
    if b.refused:
        reasons = sorted({r.split(": -ERR")[0].split("; this one")[0]
                          for r in b.refused.values()})
        out.append("¹ " + "; ".join(reasons) + ".")
        out.append("")
    notes = [
        "CPU is the run time of the server-side processes holding the "
        "connection's socket (found through /proc/net/tcp and "
        "/proc/PID/fd), from after login+STAT to the last RETR reply; "
        "RSS is the largest VmHWM among them, sampled after STAT in the "
        "fresh open session.  Dovecot's shared processes (auth, "
        "auth-worker, log) are not counted.",
        "Each measurement starts from a pristine copy of the generated "
        "mailbox.  fresh: as delivered, the servers' indexes deleted "
        "(Dovecot's index dir, pop3d's /var/mail/%s.pop3d-* files).  All "
        "other rows: after untimed login+STAT+QUIT sessions until one "
        "leaves the mailbox unchanged (Dovecot and mailutils write "
        "X-IMAPbase/X-UID/Status headers into a new mbox in the first one "
        "or two), so the mailbox is unchanged since the last session and "
        "indexes exist." % USER,
    ]
    out.extend("Note: " + n for n in notes)
    out.extend("Note: " + n for n in b.notes)
    return "\n".join(out).rstrip() + "\n"


ALL_ROWS = {r[0]: r for r in ROWS + DERIVED}


def row_floor(b, size, key, ceil):
    """(floor value, its text) of a row, or (None, "")."""
    f = b.floor.get(size, {})
    wc = f.get("wc")
    if key == "open_net" and wc:
        return wc[0], "wc -l %s ms" % fmt(wc[0])
    if key == "parse_gbs" and wc:
        return wc[1], "wc -l %s GB/s" % fmt(wc[1])
    if key == "open_fresh" and wc:
        login = b.median(size, "login", "pop3d")
        if isinstance(login, (int, float)):
            return login + wc[0], "login + wc -l %s ms" % fmt(login + wc[0])
    if key == "retr_mbs" and ceil and size == b.save_size:
        return ceil["mb_per_s"], "client ceiling %s MB/s" % fmt(
            ceil["mb_per_s"])
    if key == "dele1" and f.get("commit"):
        c = f["commit"]
        return c["floor_ms"], "crash-safe floor (%s) %s ms" % (
            c["fs"], fmt(c["floor_ms"]))
    return None, ""


def goal_text(b, args, size, key, vals, higher, flo):
    gk = key + "@big" if (size == args.big and size not in args.sizes
                          and key == "open_fresh") else key
    if gk not in GOALS or (key == "open_fresh" and gk == key):
        return ""
    if key == "open_net" and size not in args.sizes:
        return ""
    against, bound, text = GOALS[gk]
    mine = vals.get("pop3d")
    if not isinstance(mine, (int, float)):
        return text
    if against == "value":
        r, ok = mine, mine >= bound
        got = "%s" % fmt(mine)
    else:
        if against == "popa3d":
            other = vals.get("popa3d")
            r = (mine / other if isinstance(other, (int, float)) and other
                 else None)
        elif against == "best":
            r = ratio(vals, higher)
        else:
            r = mine / flo if flo else None
        if r is None:
            return text
        ok = r <= bound
        got = fmt_ratio(r)
    return "%s: %s (%s)" % (text, "met" if ok else "missed", got)


def table_row(b, args, size, key, ceil):
    _, label, unit, higher = ALL_ROWS[key]
    lab = label.replace("N msgs", "{:,} msgs".format(size)).replace(
        "R msgs", "%d msgs" % min(args.retr_each, size))
    vals = {n: b.median(size, key, n) for n in b.names}
    mine, pa = vals.get("pop3d"), vals.get("popa3d")
    vs_popa3d = (mine / pa if isinstance(mine, (int, float))
                 and isinstance(pa, (int, float)) and pa else None)
    flo, ftext = row_floor(b, size, key, ceil)
    vs_floor = (mine / flo if flo and isinstance(mine, (int, float))
                else None)
    goal = goal_text(b, args, size, key, vals, higher, flo)
    if key == "dele1" and args.fs == "xfs":
        if isinstance(vs_popa3d, float):
            goal += "; on XFS ≤ 1.3× popa3d: %s (%s)" % (
                "met" if vs_popa3d <= 1.3 else "missed",
                fmt_ratio(vs_popa3d))
    sp = b.spread(size, key)
    return ([lab, unit, "higher" if higher else "lower"]
            + [fmt(vals[n]) for n in b.names]
            + [fmt_ratio(ratio(vals, higher)), fmt_ratio(vs_popa3d),
               ftext or "–", fmt_ratio(vs_floor), goal or "–",
               ("%.0f%%" % sp) if sp is not None else "–"])


def floor_lines(b, size):
    c = b.floor.get(size, {}).get("commit")
    if not c:
        return []
    dd = c["dd"]
    out = ["Floors of DELE 1 + QUIT, on %s (the spool's file system): the "
           "commit rewrites the tail, %s bytes.  `dd` of the tail from the "
           "page-cached mailbox: into a new file %s ms, with conv=fsync %s "
           "ms; in place over a file of that size %s ms, with conv=fsync %s "
           "ms.  Aligned clone of the tail into a new file + fsync: %s.  "
           "Crash-safe floor: %s = %s ms." % (
               c["fs"], "{:,}".format(c["tail"]), fmt(dd[(False, False)]),
               fmt(dd[(True, False)]), fmt(dd[(False, True)]),
               fmt(dd[(True, True)]),
               ("%s ms" % fmt(c["clone_ms"])) if c["clone_ms"] is not None
               else "not supported here (no shared extents)",
               c["floor_how"], fmt(c["floor_ms"])),
           ""]
    wc = b.floor.get(size, {}).get("wc")
    if wc:
        out += ["`wc -l` on the same page-cached mailbox (best of 5, less "
                "the exec of wc on /dev/null): %s ms, %s GB/s." % (
                    fmt(wc[0]), fmt(wc[1])), ""]
    return out


def dotlock_lines(b, args):
    d = b.dotlock
    if not d:
        return []
    v = d["values"]

    def med(k):
        x = v.get(k)
        return statistics.median(x) if x else None

    out = ["### Dotlocks: liblockfile's setgid helper against an in-process "
           "dotlock (issue 11)", "",
           "Same pop3d, same user, the same 10-message mailbox in two "
           "spools on %s, sessions alternating between them; the password "
           "is checked against a password file (-f, SHA-512 crypt with "
           "1,000 rounds), not PAM, whose yescrypt and its noise would "
           "hide a few milliseconds: "
           "**helper**: a spool root:mail 2775 as /var/mail, which the "
           "session (the user's uid and gid, no other group) cannot write, "
           "so /usr/bin/dotlockfile makes and removes the lock (a fork and "
           "an exec each); **own**: a spool the user may write, the lock "
           "made in-process.  Median of %d sessions each." % (
               d["fs"], args.dotlock_sessions), ""]
    rows = []
    kinds = [("stat", "login+STAT+QUIT (one lock and unlock, to parse), "
              "connect → QUIT's +OK", 1)]
    if d["commit"]:
        kinds += [("dele", "login+STAT+DELE 1+QUIT (two locks and "
                   "unlocks), connect → QUIT's +OK", 2),
                  ("dele_quit", "  of which QUIT → +OK (the commit's lock "
                   "and unlock)", 1)]
    for k, label, pairs in kinds:
        h, o = med((k, "helper")), med((k, "own"))
        diff = h - o if h is not None and o is not None else None
        rows.append([label, "ms", fmt(h), fmt(o), fmt(diff),
                     fmt(diff / pairs) if diff is not None else "–",
                     "%s / %s" % (iqr(v.get((k, "helper"))),
                                  iqr(v.get((k, "own"))))])
    if not d["commit"]:
        rows.append(["login+STAT+DELE 1+QUIT", "ms", NEEDS + "¹", "–", "–",
                     "–", "–"])
    out.append(md_table(["session", "unit", "helper", "own",
                         "helper − own, per session",
                         "per lock+unlock pair",
                         "p25–p75, helper / own"], rows, "llrrrrr"))
    out.append("")
    if not d["commit"]:
        out.append("¹ " + b.commit_error + ".")
        out.append("")
    out.append("The helper alone, run by the user with no supplementary "
               "group from sh: `dotlockfile -l` + `dotlockfile -u` %s ms "
               "per pair; `/bin/true` twice (the fork+exec alone) %s ms." % (
                   fmt(d["helper"][0]), fmt(d["helper"][1])))
    out.append("")
    return out


def iqr(v):
    if not v or len(v) < 4:
        return "–"
    q = statistics.quantiles(v, n=4)
    return "%s–%s" % (fmt(q[0]), fmt(q[2]))


def multihost_lines(b, args):
    m = b.multihost
    if m is None:
        return []
    out = ["### Several hosts: HAProxy to two hosts on a shared GlusterFS "
           "spool (issue 12)", ""]
    if "skip" in m:
        out += ["Skipped: %s." % m["skip"], ""]
        return out
    import multihost
    med = multihost.medians(m["values"])
    names = [n for n, _ in multihost.SETUPS]
    header = ["row", "unit"] + [t for _, t in multihost.SETUPS] + [
        "HAProxy / local", "spread (max)"]
    rows = []
    for key, label, unit, higher in multihost.ROWS:
        lab = label.replace("N msgs", "{:,} msgs (%s MB)".format(m["size"])
                            % fmt(m["bytes"] / 1e6))
        cells = [fmt(med.get((key, n))) for n in names]
        loc, hp = med.get((key, "local")), med.get((key, "haproxy"))
        sp = [multihost.spread(m["values"][(key, n)]) for n in names
              if (key, n) in m["values"]]
        sp = [x for x in sp if x is not None]
        rows.append([lab, unit] + cells + [
            fmt_ratio(hp / loc) if loc and hp else "–",
            ("%.0f%%" % max(sp)) if sp else "–"])
    out.append(md_table(header, rows, "ll" + "r" * (len(names) + 2)))
    out.append("")
    out.append("The multi-host suite's own set-up (tests/multihost/"
               "harness.py): glusterd on 127.0.0.5, one brick, two FUSE "
               "mounts in mount namespaces of their own, pop3d -P "
               "127.0.0.1/32 -S (state on the volume) -f (virtual user, "
               "SHA-512 crypt) under systemd-socket-activate on 127.0.0.2 "
               "and 127.0.0.3, HAProxy (leastconn, send-proxy-v2) on "
               "127.0.0.1; %s.  \"one host, GlusterFS, direct\" is host "
               "A without HAProxy; \"local disk\" the same pop3d options "
               "on a plain directory of the local disk (127.0.0.4).  "
               "Sessions one after another (as the sessions/s row above) "
               "over %d maildrops in turn, median of %d runs; every host "
               "shares this machine's cores, so two hosts show the cost of "
               "the path, not a scale-out.  Sessions told -ERR [IN-USE] "
               "(the last session's lock on the maildrop not yet released) "
               "were retried after %d ms, within the time measured: %s." % (
                   m["hosts"], len(multihost.USERS),
                   len(next(iter(m["values"].values()))), multihost.RETRY_MS,
                   ", ".join("%s %d" % (k, v) for k, v in
                             sorted(m["in_use"].items())) or "none"))
    out.append("")
    return out


def norm(key, v, size, nbytes):
    if not isinstance(v, (int, float)):
        return ""
    mb = nbytes / 1e6
    if key in ("open_fresh", "open_warm"):
        return " (%s µs/msg)" % fmt(v * 1000.0 / size)
    if key in ("retr_cpu", "dele1"):
        return " (%s ms/MB)" % fmt(v / mb)
    if key == "rss":
        return " (%s KiB/msg)" % fmt(v * 1024.0 / size)
    return ""


# ---------------------------------------------------------------- main

_LOCK = []


def take_lock():
    """One benchmark at a time: an flock held until the process exits."""
    os.makedirs(peers.CACHE, exist_ok=True)
    f = open(os.path.join(peers.CACHE, "bench.lock"), "w")
    _LOCK.append(f)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("bench.py: another benchmark is running (lock %s)" % f.name,
              file=sys.stderr)
        sys.exit(2)
    return f


def wait_for(path, what, timeout=300):
    """The lead may be rebuilding pop3d: wait a while for it."""
    deadline = time.monotonic() + timeout
    while not os.access(path, os.X_OK):
        if time.monotonic() > deadline:
            raise peers.SetupError("%s: %s is missing" % (what, path))
        log("waiting for %s (%s)" % (path, what))
        time.sleep(5)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.fs == "xfs" and not xfs.inner_active():
        take_lock()
        if os.geteuid() != 0:
            print("bench.py: --fs xfs needs root", file=sys.stderr)
            return 1
        return xfs.outer(os.path.abspath(__file__), argv)
    if xfs.inner_active():
        with xfs.Inner() as fs:
            args.reflink = fs.reflink
            return run_bench(args)
    take_lock()
    return run_bench(args)


def run_bench(args):
    try:
        import client
        import ceiling as ceiling_mod
    except ImportError as e:
        print("bench.py: bench/client.py or bench/ceiling.py missing: %s" % e,
              file=sys.stderr)
        return 1
    t0 = time.monotonic()
    setup = peers.Setup(args.peers, args.pop3d)
    status = 0
    try:
        if args.pop3d == DEFAULT_POP3D:
            wait_for(args.pop3d, "pop3d", 120)   # make may be relinking it
        setup.start()
        b = Bench(args, setup, client)
        b.run()
        if args.floors:
            b.measure_floors()
        ceil = b.ceiling(ceiling_mod)
        if args.dotlock:
            b.measure_dotlock(xfs.MNT if xfs.inner_active()
                              else setup.scratch)
        if args.multihost:
            b.measure_multihost()
        text = render(b, setup, args, ceil, time.monotonic() - t0)
        sys.stdout.write(text)
        sys.stdout.flush()
        if args.out:
            os.makedirs(os.path.dirname(os.path.abspath(args.out)),
                        exist_ok=True)
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, args.out)
            log("wrote " + args.out)
    except (BenchError, peers.SetupError) as e:
        print("bench.py: FAILED: %s" % e, file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("bench.py: interrupted", file=sys.stderr)
        status = 130
    except Exception:
        traceback.print_exc()
        print("bench.py: FAILED with an unexpected error (above)",
              file=sys.stderr)
        status = 1
    finally:
        log("cleaning up")
        setup.cleanup()
    log("done in %.0f s" % (time.monotonic() - t0))
    return status


if __name__ == "__main__":
    sys.exit(main())
