"""Stress: real delivery agents append to the mailbox while real pop3d
sessions read, delete and commit.

Three deliverers run concurrently, each in its own thread, each delivery
a process of its own:

- procmail (Debian's procmail, `procmail -m RCFILE` with a `:0:` recipe):
  dotlock `MAILBOX.lock` (link()) before it opens the file, then a
  blocking fcntl lock (F_SETLKW) from the end of the file on.  When the
  file was read in the same second it sleeps 1 s under both locks after
  its first byte (procmail's atime trick), so it delivers fewer messages;
- deliverers/fcntl_first.py: opens the mailbox, fcntl lock, then the
  dotlock on the already open file (Debian's Dovecot LDA and mutt), and
  checks under the locks that the path still names the inode it has open
  with one link (a rename() commit would lose its mail);
- dotlockfile (liblockfile-bin) `-l -r N -i 1 MAILBOX.lock`, an O_APPEND
  write and fsync, then `dotlockfile -u`.  Its own retries are a second
  apart: the stress runs `-r 0` again every few ms, the idle test uses
  `-r 1 -i 1`.

Meanwhile sequential pop3d sessions (real processes, real PAM through the
cwrap wrappers) list, read and delete a random subset, idle a little so
that mail arrives during the session, and QUIT (or RSET, or drop the
connection).  At the end every delivered message must be either in the
mailbox, byte for byte and exactly once, or deleted by a session whose
QUIT said +OK, and never both.  The mailbox keeps its inode, owner, group
and mode, and no lock or journal is left.

The second test keeps a session idle while every deliverer delivers with
a small retry budget: pop3d must hold no mailbox lock between the parse
and QUIT.

Seed: each test prints its seed; POP3D_TEST_SEED=N (or the older
POP3D_STRESS_SEED=N) reproduces a run's choices (thread timing still
varies).  The figures go to stdout and to tests/out/stress-summary.txt.
No assertion is on wall-clock time: the stress loop is bounded by a count
of sessions, and the idle test by the locks it sees.
"""
import mailbox
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import REPO, ALICE_UID, MAIL_GID, ServerError, unstuff

HERE = Path(__file__).resolve().parent
FCNTL_FIRST = HERE / "deliverers" / "fcntl_first.py"
OUT = REPO / "tests" / "out"

PROCMAIL = shutil.which("procmail", path="/usr/bin:/bin")
DOTLOCKFILE = shutil.which("dotlockfile", path="/usr/bin:/bin")

SEED = int(os.environ.get("POP3D_TEST_SEED") or
           os.environ.get("POP3D_STRESS_SEED") or
           random.SystemRandom().randrange(1 << 31))

DELIVERERS = ("procmail", "fcntl", "dotlockfile")
# procmail sleeps 1 s under both locks whenever the mailbox was read in
# the same second (NO_NFS_ATIME_HACK is not set in Debian's build), so it
# delivers fewer messages, further apart, and the others many.
COUNT = {"procmail": 20, "fcntl": 140, "dotlockfile": 140}
PACE = {"procmail": (0.2, 0.8), "fcntl": (0.0, 0.15),
        "dotlockfile": (0.0, 0.15)}      # seconds between deliveries
MIN_SESSIONS = 150
INITIAL = 100                # messages in the mailbox at the start
# The stress loop gives up after this many sessions (a count, not a time:
# a slower machine runs both the sessions and the deliverers slower).
MAX_SESSIONS = 20 * MIN_SESSIONS
FROM_LINE = b"From sender@example.org Mon Jan  1 12:00:00 2024\n"
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
SUBJECT = re.compile(rb"^Subject: stress (\S+)\r?$", re.M)
MAILDROP = re.compile(r"\+OK Maildrop has (\d+) messages \((\d+) octets\)")
CWRAP_NOISE = re.compile(r"[PNU]WRAP_(ERROR|WARN|DEBUG|TRACE)\[")
# What pop3d -d logs in a session that goes as it should; anything else
# (a lock or commit warning) is reported.
LOG_OK = re.compile(r"pop3d: (connection from local|login ok: alice from "
                    r"local|alice: \d+ messages \(\d+ octets\) loaded|"
                    r"alice: \d+ \(\d+\) deleted, \d+ \(\d+\) left|"
                    r"premature disconnect, alice from local|"
                    r"session end: user=alice peer=local "
                    r"end=(?:quit|disconnect) retr=\d+/\d+ top=\d+/\d+ "
                    r"dele=\d+/\d+ left=\d+/\d+ time=\d+\.\d{3}s)")


# ---- messages -----------------------------------------------------------

def make_message(ident, rng):
    """(mbox chunk as delivered, message as served by RETR before
    dot-stuffing).  The id is in the Subject, the Received line (so the
    UIDL is unique), the Message-ID and every body line."""
    n = rng.choice((1, 2, 3, 8, 30, 120, 600))
    lines = [f"{ident} line {j} " + "x" * rng.randrange(0, 70)
             for j in range(n)]
    if rng.random() < 0.3:
        lines.insert(rng.randrange(len(lines) + 1), f".dot {ident}")
    if rng.random() < 0.2:
        lines.insert(rng.randrange(len(lines) + 1), f">From {ident} quoted")
    if rng.random() < 0.2:
        lines.insert(rng.randrange(len(lines) + 1), "")
    if rng.random() < 0.1:
        lines.append(".")
    if rng.random() < 0.1:
        lines.append("")            # the message ends with an empty line
    msg = (f"Received: from stress by test with id {ident}; "
           f"Mon, 1 Jan 2024 12:00:00 +0000\n"
           f"From: sender@example.org\n"
           f"To: alice@example.org\n"
           f"Subject: stress {ident}\n"
           f"Message-ID: <{ident}@stress.example.org>\n"
           f"\n"
           f"stress id {ident}\n" + "".join(l + "\n" for l in lines)).encode()
    return FROM_LINE + msg + b"\n", msg.replace(b"\n", b"\r\n")


def split_mbox(data, known):
    """The ids of the messages in data, in order; asserts that data is
    exactly a concatenation of known chunks (nothing torn, nothing
    extra)."""
    ids, pos = [], 0
    while pos < len(data):
        m = SUBJECT.search(data, pos)
        assert m, f"no stress message at offset {pos}: {data[pos:pos+200]!r}"
        ident = m.group(1).decode()
        chunk = known.get(ident)
        assert chunk is not None, \
            f"unknown message {ident!r} at offset {pos}"
        got = data[pos:pos + len(chunk)]
        if got != chunk:
            at = next((i for i, (a, b) in enumerate(zip(got, chunk))
                       if a != b), min(len(got), len(chunk)))
            raise AssertionError(
                f"message {ident} at offset {pos} is not what was "
                f"delivered: first difference at +{at}: got "
                f"{got[max(0, at - 80):at + 80]!r}, delivered "
                f"{chunk[max(0, at - 80):at + 80]!r}")
        ids.append(ident)
        pos += len(chunk)
    return ids


def need_tools():
    missing = [name for name, path in (("procmail", PROCMAIL),
                                       ("liblockfile-bin", DOTLOCKFILE))
               if path is None]
    assert not missing, f"install the Debian packages {missing} " \
        f"(tools/deps.sh test)"


def identity(path):
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_uid, st.st_gid, st.st_mode,
            st.st_nlink)


def held_locks(path):
    """Lines of /proc/locks on path's inode (classic, OFD or flock)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with open("/proc/locks") as f:
        return [l.strip() for l in f if f" {dev} " in l]


# ---- the three deliverers -------------------------------------------------

class Delivery:
    """Delivers one chunk to one mailbox with one agent.  Each call returns
    (ok, problem, tries): problem is "" when all went as it should, tries
    the number of attempts at the dotlock (procmail, dotlockfile) or at
    both locks (fcntl_first)."""

    PROCMAIL_OK = re.compile(
        r'procmail: (\[\d+\] .*|Locking ".*"|Unlocking ".*"|Opening ".*"|'
        r'Assigning ".*"|Acquiring kernel-lock)|From \S+ .*| Subject: .*|'
        r'  Folder: .*')

    def __init__(self, mbox, workdir, procmail_timeout=60.0,
                 fcntl_budget=20.0, dotlock_retries=0, dotlock_budget=20.0):
        self.mbox = str(mbox)
        self.lock = self.mbox + ".lock"
        self.rc = Path(workdir) / "procmailrc"
        # LOCKSLEEP: seconds between dotlock attempts (8 by default);
        # VERBOSE logs every attempt.  LOCKTIMEOUT stays at its default
        # (1024 s): procmail must never force pop3d's lock away, which
        # would hide a lock held too long.  COMSAT=no: no biff datagram.
        self.rc.write_text("SHELL=/bin/sh\nCOMSAT=no\nLOCKSLEEP=1\n"
                           f"VERBOSE=on\n:0:\n{self.mbox}\n")
        self.procmail_timeout = procmail_timeout
        self.fcntl_budget = fcntl_budget
        self.dotlock_retries = dotlock_retries
        self.dotlock_budget = dotlock_budget
        self.jitter = random.Random(f"{SEED}-dotlockfile-jitter")

    def __call__(self, agent, chunk):
        return getattr(self, "_" + agent)(chunk)

    def _procmail(self, chunk):
        """procmail -m: dotlock MAILBOX.lock (link()), open, F_SETLKW from
        EOF on, write, fsync, unlock, remove the dotlock."""
        try:
            p = subprocess.run([PROCMAIL, "-m", str(self.rc)], input=chunk,
                               capture_output=True, env=CHILD_ENV,
                               timeout=self.procmail_timeout)
        except subprocess.TimeoutExpired as e:
            return False, (f"procmail still waiting after "
                           f"{self.procmail_timeout}s: "
                           f"{(e.stderr or b'').decode(errors='replace')}"), 0
        log = p.stderr.decode(errors="replace")
        tries = log.count(f'Locking "{self.lock}"')
        odd = [l for l in log.splitlines()
               if l and not self.PROCMAIL_OK.fullmatch(l)]
        # The abstract names the folder, cut to fit its column.
        folders = [l[10:].split("\t")[0].rstrip()
                   for l in log.splitlines() if l.startswith("  Folder: ")]
        ok = p.returncode == 0 and len(folders) == 1 and \
            len(folders[0]) > 20 and self.mbox.startswith(folders[0])
        if ok and not odd and not p.stdout:
            return True, "", tries
        return ok, (f"procmail exit {p.returncode}: "
                    f"{p.stdout.decode(errors='replace')}{log}"), tries

    def _fcntl(self, chunk):
        try:
            p = subprocess.run([sys.executable, str(FCNTL_FIRST), self.mbox,
                                str(self.fcntl_budget)], input=chunk,
                               capture_output=True, env=CHILD_ENV,
                               timeout=self.fcntl_budget + 30)
        except subprocess.TimeoutExpired:
            return False, "fcntl_first hangs", 0
        out = p.stdout.decode(errors="replace")
        m = re.fullmatch(r"tries (\d+)\n", out)
        if p.returncode == 0 and m and not p.stderr:
            return True, "", int(m.group(1))
        return p.returncode == 0, (f"fcntl_first exit {p.returncode}: {out}"
                                   f"{p.stderr.decode(errors='replace')}"), 0

    def _dotlockfile(self, chunk):
        """dotlockfile -l -r N -i 1 MAILBOX.lock (its retries are a second
        apart, so the stress retries -r 0 itself every few ms, up to
        dotlock_budget s), an O_APPEND write and fsync, dotlockfile -u."""
        deadline = time.monotonic() + self.dotlock_budget
        tries = 0
        while True:
            tries += 1
            p = subprocess.run([DOTLOCKFILE, "-l", "-r",
                                str(self.dotlock_retries), "-i", "1",
                                self.lock], capture_output=True,
                               env=CHILD_ENV, timeout=120)
            if p.returncode == 0:
                break
            if time.monotonic() >= deadline:
                return False, (f"dotlockfile -l exit {p.returncode} after "
                               f"{tries} runs: "
                               f"{p.stderr.decode(errors='replace')}"), tries
            time.sleep(self.jitter.uniform(0.005, 0.03))
        try:
            fd = os.open(self.mbox, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            u = subprocess.run([DOTLOCKFILE, "-u", self.lock],
                               capture_output=True, env=CHILD_ENV)
        if u.returncode != 0 or p.stderr or u.stderr:
            return True, (f"dotlockfile -u exit {u.returncode}: "
                          f"{(p.stderr + u.stderr).decode()}"), tries
        return True, "", tries


# ---- bookkeeping ------------------------------------------------------------

class Ledger:
    """What was delivered, seen and deleted; thread safe."""

    def __init__(self):
        self.mu = threading.Lock()
        self.chunks = {}        # id -> mbox chunk
        self.wires = {}         # id -> message as served
        self.delivered = {}     # id -> agent, only after success
        self.failed = {}        # id -> detail
        self.latency = {a: [] for a in DELIVERERS}
        self.tries = {a: [] for a in DELIVERERS}
        self.deleted = {}       # id -> session number whose QUIT said +OK
        self.uidl = {}          # id -> UIDL seen
        self.err_dele = {}      # id -> session whose QUIT said -ERR
        self.errors = []

    def error(self, text):
        with self.mu:
            self.errors.append(text)


class Deliverer(threading.Thread):
    def __init__(self, agent, count, pace, deliver, ledger, rng, stop):
        super().__init__(name=f"deliver-{agent}", daemon=True)
        self.agent, self.count, self.pace = agent, count, pace
        self.deliver, self.ledger, self.rng, self.stop = \
            deliver, ledger, rng, stop

    def run(self):
        L = self.ledger
        try:
            for n in range(1, self.count + 1):
                if self.stop.is_set():
                    return
                time.sleep(self.rng.uniform(*self.pace))
                ident = f"{self.agent}-{n}"
                chunk, wire = make_message(ident, self.rng)
                with L.mu:
                    L.chunks[ident], L.wires[ident] = chunk, wire
                t = time.monotonic()
                ok, detail, tries = self.deliver(self.agent, chunk)
                t = time.monotonic() - t
                with L.mu:
                    L.latency[self.agent].append(t)
                    L.tries[self.agent].append(tries)
                    if ok:
                        L.delivered[ident] = self.agent
                    else:
                        L.failed[ident] = detail
                if detail:
                    L.error(f"{ident}: {'' if ok else 'NOT DELIVERED: '}"
                            f"{detail}")
        except Exception as e:      # noqa: BLE001 - reported by the test
            L.error(f"deliverer {self.agent} crashed: {e!r}")


class Talk:
    """A session with a transcript for the failure messages."""

    def __init__(self, srv, number):
        self.srv, self.number, self.lines = srv, number, []

    def cmd(self, line):
        r = self.srv.cmd(line)
        self.lines.append(f"C: {line}\nS: {r}")
        return r

    def multi(self, line):
        st, body = self.srv.multi(line)
        self.lines.append(f"C: {line}\nS: {st}" +
                          (f" [{len(body)} bytes]" if body is not None
                           else ""))
        return st, body

    def transcript(self):
        return (f"session {self.number} transcript:\n" +
                "\n".join(self.lines[-40:]) +
                f"\npop3d log:\n{self.srv.log[-3000:]}")


def check_log(srv, where, L, talk):
    # The cwrap libraries' own complaints (pam_wrapper races other
    # processes for its /tmp/pam.X directories) are not pop3d's.
    odd = [l for l in srv.log.splitlines()
           if not LOG_OK.fullmatch(l) and not CWRAP_NOISE.match(l)]
    if odd:
        L.error(f"{where}: pop3d logged {odd}\n{talk.transcript()}")


def run_session(env, number, rng, L, stats):
    """One pop3d session: list, identify, read, delete, idle, end.
    Returns the number of messages it listed."""
    srv = env.start(timeout=30)
    t = Talk(srv, number)
    where = f"seed {SEED}, session {number}"
    try:
        r = srv.login()
        t.lines.append(f"C: USER alice / PASS secret\nS: {r}")
        m = MAILDROP.fullmatch(r)
        assert m, f"{where}: PASS answered {r!r}"
        n, octets = int(m.group(1)), int(m.group(2))
        size0 = env.mailbox().stat().st_size
        assert t.cmd("STAT") == f"+OK {n} {octets}", where
        st, body = t.multi("UIDL")
        assert st.startswith("+OK"), where
        uidls = [l.split(b" ", 1) for l in body.split(b"\r\n") if l]
        st, body = t.multi("LIST")
        assert st.startswith("+OK"), where
        sizes = [l.split(b" ", 1) for l in body.split(b"\r\n") if l]
        assert [int(i) for i, _ in uidls] == list(range(1, n + 1)), where
        assert [int(i) for i, _ in sizes] == list(range(1, n + 1)), where
        assert sum(int(s) for _, s in sizes) == octets, where

        # Identify every message with TOP n 0 and check size and UIDL.
        ids = []
        for i in range(1, n + 1):
            st, head = t.multi(f"TOP {i} 0")
            assert st == "+OK Top of message follows", f"{where}: {st}"
            mm = SUBJECT.search(unstuff(head))
            assert mm, f"{where}: TOP {i} 0 has no stress Subject: {head!r}"
            ident = mm.group(1).decode()
            ids.append(ident)
            with L.mu:
                wire = L.wires.get(ident)
                gone = L.deleted.get(ident)
                old_uidl = L.uidl.setdefault(ident, uidls[i - 1][1])
            assert wire is not None, f"{where}: never delivered {ident!r}"
            assert gone is None, \
                f"{where}: {ident} is back, deleted by session {gone}"
            assert int(sizes[i - 1][1]) == len(wire), \
                f"{where}: LIST {i} ({ident}) {sizes[i - 1][1]!r}, " \
                f"expected {len(wire)}"
            assert old_uidl == uidls[i - 1][1], \
                f"{where}: UIDL of {ident} changed from {old_uidl!r} to " \
                f"{uidls[i - 1][1]!r}"
        assert len(set(ids)) == len(ids), f"{where}: duplicates in {ids}"

        # Delete a random share (sometimes none, sometimes all); read
        # every message deleted and a few others.
        share = rng.choices((0.0, 0.02, 0.05, 0.1, 0.3, 1.0),
                            (40, 20, 20, 12, 6, 2))[0]
        dele = sorted(i for i in range(1, n + 1) if rng.random() < share)
        reads = set(dele) | set(rng.sample(range(1, n + 1), min(n, 2)))
        for i in sorted(reads):
            st, raw = t.multi(f"RETR {i}")
            assert st == f"+OK {len(L.wires[ids[i - 1]])} octets", \
                f"{where}: RETR {i} ({ids[i - 1]}): {st}"
            assert unstuff(raw) == L.wires[ids[i - 1]], \
                f"{where}: RETR {i} ({ids[i - 1]}) differs from what was " \
                f"delivered"
        for i in dele:
            r = t.cmd(f"DELE {i}")
            assert r == f"+OK Message {i} deleted", f"{where}: DELE {i}: {r}"
        time.sleep(rng.uniform(0, 0.04))     # mail arrives meanwhile

        end = rng.choices(("quit", "rset", "drop"), (90, 5, 5))[0]
        stats[end] += 1
        if end == "drop":
            # Connection lost: no UPDATE, nothing deleted.
            srv.finish()
            check_log(srv, where, L, t)
            return n
        if end == "rset":
            assert t.cmd("RSET").startswith("+OK"), where
            dele = []
        late = env.mailbox().stat().st_size > size0
        r = t.cmd("QUIT")
        if r.startswith("-ERR"):
            # Must have deleted nothing: if these go missing, they are
            # counted as lost (and named here).
            stats["quit_err"] += 1
            with L.mu:
                for i in dele:
                    L.err_dele[ids[i - 1]] = number
            L.error(f"{where}: QUIT answered {r!r}\n{t.transcript()}")
            srv.wait()
            return n
        assert r == f"+OK pop3d signing off ({n - len(dele)} messages left)",\
            f"{where}: QUIT answered {r!r}"
        srv.wait(0)
        check_log(srv, where, L, t)
        stats["quit_ok"] += 1
        if dele and late:
            stats["late"] += 1
        with L.mu:
            for i in dele:
                ident = ids[i - 1]
                assert ident not in L.deleted, \
                    f"{where}: {ident} deleted twice"
                L.deleted[ident] = number
        stats["deleted_max"] = max(stats["deleted_max"], len(dele))
        return n
    except (AssertionError, ServerError, OSError) as e:
        raise AssertionError(f"{e}\n{t.transcript()}") from None


def summary_text(title, figures):
    w = max(len(k) for k in figures)
    return f"{title}\n" + "".join(f"  {k:<{w}}  {v}\n"
                                  for k, v in figures.items())


def write_summary(name, text):
    print(text)
    if OUT.is_dir():
        (OUT / name).write_text(text)


# ---- the tests ----------------------------------------------------------

def test_deliverers_and_sessions_stress(pop3d_env):
    env = pop3d_env
    print(f"seed {SEED} (POP3D_TEST_SEED={SEED} repeats the choices)")
    rng = random.Random(SEED)
    L = Ledger()
    # Mail that was there before: the sessions have a sizeable file to
    # parse and rewrite from the start.
    for n in range(1, INITIAL + 1):
        ident = f"initial-{n}"
        L.chunks[ident], L.wires[ident] = make_message(ident, rng)
        L.delivered[ident] = "initial"
    need_tools()
    path = env.write_mbox(b"".join(L.chunks.values()))
    before = identity(path)
    assert before[2:] == (ALICE_UID, MAIL_GID, 0o100600, 1)
    initial_bytes = path.stat().st_size
    deliver = Delivery(path, env.tmp)
    stop = threading.Event()
    threads = [Deliverer(a, COUNT[a], PACE[a], deliver, L,
                         random.Random(f"{SEED}-{a}"), stop)
               for a in DELIVERERS]
    stats = {"quit": 0, "rset": 0, "drop": 0, "quit_ok": 0, "quit_err": 0,
             "deleted_max": 0, "late": 0, "listed": 0}
    sessions, biggest = 0, 0
    t0 = time.monotonic()
    for th in threads:
        th.start()
    try:
        while (any(th.is_alive() for th in threads) or
               sessions < MIN_SESSIONS):
            assert sessions < MAX_SESSIONS, \
                f"seed {SEED}: deliverers not done after {sessions} " \
                f"sessions ({len(L.delivered)} delivered, " \
                f"{time.monotonic() - t0:.0f}s)"
            sessions += 1
            listed = run_session(env, sessions, rng, L, stats)
            biggest = max(biggest, listed)
            stats["listed"] += listed
            time.sleep(rng.uniform(0, 0.01))
    finally:
        stop.set()
        for th in threads:
            th.join(120)
    elapsed = time.monotonic() - t0
    assert not any(th.is_alive() for th in threads), \
        f"seed {SEED}: a deliverer hangs"

    # A last session sees exactly what the file holds.
    final_session = env.login()
    last = final_session.cmd("QUIT")
    final_session.wait(0)

    data = path.read_bytes()
    try:
        remaining = split_mbox(data, L.chunks)
    except AssertionError as e:
        raise AssertionError(f"seed {SEED}: final mailbox: {e}\nerrors:\n" +
                             "\n".join(L.errors[:5])) from None
    delivered = set(L.delivered)
    deleted = set(L.deleted)
    kept = set(remaining)
    assert last == \
        f"+OK pop3d signing off ({len(remaining)} messages left)", \
        f"seed {SEED}: the last session answered {last!r}"
    # Python's own mbox reader agrees on the messages.
    box = mailbox.mbox(str(path), create=False)
    try:
        subjects = [m["Subject"] for m in box]
    finally:
        box.close()
    assert subjects == [f"stress {i}" for i in remaining], f"seed {SEED}"

    lost = sorted(delivered - kept - deleted)
    twice = sorted(kept & deleted)
    dups = sorted(i for i in kept if remaining.count(i) > 1)
    ghosts = sorted((kept | deleted) - delivered)
    per_agent = {a: sum(1 for v in L.delivered.values() if v == a)
                 for a in DELIVERERS}
    figures = {
        "seed": SEED,
        "seconds": f"{elapsed:.1f}",
        "messages at the start": f"{INITIAL} ({initial_bytes} bytes)",
        "deliveries attempted": len(L.chunks) - INITIAL,
        **{f"delivered by {a}": per_agent[a] for a in DELIVERERS},
        "not delivered (deferred/failed)": len(L.failed),
        **{f"{a}: slowest delivery, mean (s)":
           f"{max(L.latency[a]):.2f}, "
           f"{sum(L.latency[a]) / len(L.latency[a]):.2f}"
           for a in DELIVERERS if L.latency[a]},
        **{f"{a}: deliveries over 0.9 s": sum(t > 0.9 for t in L.latency[a])
           for a in DELIVERERS},
        **{f"{a}: lock attempts, most for one":
           f"{sum(L.tries[a])}, {max(L.tries[a], default=0)}"
           for a in DELIVERERS},
        "pop3d sessions": sessions + 1,
        "sessions ended by QUIT, by RSET+QUIT, dropped":
            f"{stats['quit']}, {stats['rset']}, {stats['drop']}",
        "QUIT answered +OK, -ERR": f"{stats['quit_ok']}, {stats['quit_err']}",
        "messages per session, mean, most":
            f"{stats['listed'] / sessions:.1f}, {biggest}",
        "commits with deletions while mail arrived": stats["late"],
        "deleted by sessions": len(deleted),
        "remaining in mailbox": len(remaining),
        "mailbox bytes at end": len(data),
        "lost": len(lost),
        "of which deleted after QUIT -ERR": len(set(lost) & set(L.err_dele)),
        "both kept and deleted": len(twice),
        "duplicated": len(dups),
        "not delivered but present": len(ghosts),
    }
    write_summary("stress-summary.txt",
                  summary_text("pop3d stress: deliverers against sessions",
                               figures))

    ctx = (f"seed {SEED} (POP3D_STRESS_SEED={SEED} repeats the choices)\n" +
           summary_text("figures:", figures) + "first errors:\n" +
           "\n".join(L.errors[:5]))
    assert not lost, f"{ctx}\nlost: {lost}\nafter QUIT -ERR: " \
        f"{ {i: L.err_dele[i] for i in lost if i in L.err_dele} }"
    assert not twice, f"{ctx}\nkept and deleted: {twice}"
    assert not dups, f"{ctx}\nduplicated: {dups}"
    assert not ghosts, f"{ctx}\nnot delivered but present: {ghosts}"
    assert len(kept) + len(deleted) == len(delivered), ctx
    assert identity(path) == before, \
        f"{ctx}\nmailbox (dev, ino, uid, gid, mode, nlink) was {before}, " \
        f"is {identity(path)}"
    # No lock, no journal, and nothing else (procmail's and liblockfile's
    # temporary names) left in the mail directory.
    assert env.leftovers() == [], f"{ctx}\nleft over: {env.leftovers()}"
    assert sorted(os.listdir(env.mail)) == ["alice"], ctx
    assert not L.errors, f"{ctx}\nall errors:\n" + "\n".join(L.errors)
    assert not L.failed, f"{ctx}\nnot delivered: {L.failed}"
    assert len(delivered) == INITIAL + sum(COUNT.values()), ctx
    assert sessions + 1 >= 100 and len(L.chunks) - INITIAL >= 300, ctx


def test_idle_session_does_not_defer_deliveries(pop3d_env):
    """A session logged in and idle holds no mailbox lock: each deliverer,
    with a retry budget of about a second or two, delivers at once.  The
    session then deletes its first message and the new mail survives."""
    env = pop3d_env
    print(f"seed {SEED} (POP3D_TEST_SEED={SEED} repeats the choices)")
    rng = random.Random(SEED)
    old = [make_message(f"old-{i}", rng) for i in range(1, 4)]
    need_tools()
    path = env.write_mbox(b"".join(c for c, _ in old))
    before = identity(path)
    # Each agent must get both locks at its first attempt (tries == 1),
    # and neither lock may be held by the session before or after each
    # delivery (/proc/locks and the dotlock's name): that, not a time, is
    # "delivers at once".  procmail blocks on the fcntl lock (F_SETLKW), so
    # a session that held it would keep procmail waiting until the 30 s
    # timeout; it may sleep 1 s by itself under both locks (its atime
    # trick, as the session has just read the file).  dotlockfile: one
    # retry, a second later (-r 1 -i 1).  fcntl_first: 2 s.
    deliver = Delivery(path, env.tmp, procmail_timeout=30.0,
                       fcntl_budget=2.0, dotlock_retries=1, dotlock_budget=0)
    srv = env.login()
    assert srv.cmd("STAT") == \
        f"+OK 3 {sum(len(w) for _, w in old)}"
    st, uidl_before = srv.multi("UIDL")
    assert st.startswith("+OK")
    t0 = time.monotonic()
    new, times = [], {}
    for rnd in range(3):
        for agent in DELIVERERS:
            # The session holds neither lock while it is idle.
            assert not os.path.exists(f"{path}.lock"), \
                f"seed {SEED}: dotlock held by an idle session"
            assert held_locks(path) == [], \
                f"seed {SEED}: fcntl lock held by an idle session: " \
                f"{held_locks(path)}"
            ident = f"idle-{agent}-{rnd}"
            chunk, _ = make_message(ident, rng)
            t = time.monotonic()
            ok, detail, tries = deliver(agent, chunk)
            t = time.monotonic() - t
            times[ident] = (t, tries)
            assert ok and not detail, \
                f"seed {SEED}: {agent} deferred during an idle session " \
                f"({t:.2f}s): {detail}\npop3d log:\n{srv.log}"
            # Both locks free at the first attempt, and still free.
            assert tries == 1, \
                f"seed {SEED}: {agent} needed {tries} lock attempts " \
                f"({t:.2f}s) during an idle session"
            assert not os.path.exists(f"{path}.lock"), \
                f"seed {SEED}: dotlock left after {agent}'s delivery"
            assert held_locks(path) == [], \
                f"seed {SEED}: fcntl lock held after {agent}'s delivery " \
                f"({t:.2f}s): {held_locks(path)}"
            new.append(chunk)
        # A round every 1.2 s: the session stays idle about 3.6 s.
        time.sleep(max(0.2, t0 + 1.2 * (rnd + 1) - time.monotonic()))
    idle = time.monotonic() - t0
    # Still the same session: it shows the maildrop as it was at login.
    assert srv.cmd("NOOP") == "+OK"
    assert srv.cmd("STAT") == f"+OK 3 {sum(len(w) for _, w in old)}"
    st, uidl_after = srv.multi("UIDL")
    assert uidl_after == uidl_before
    st, raw = srv.multi("RETR 2")
    assert unstuff(raw) == old[1][1]
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (2 messages left)"
    srv.wait(0)
    want = old[1][0] + old[2][0] + b"".join(new)
    assert path.read_bytes() == want, f"seed {SEED}: late mail not kept"
    assert identity(path) == before
    assert sorted(os.listdir(env.mail)) == ["alice"]
    # And the next session shows it.
    srv = env.login(expect=f"+OK Maildrop has {2 + len(new)} messages")
    assert srv.cmd("QUIT").startswith("+OK")
    srv.wait(0)
    figures = {"seed": SEED, "session idle (s)": f"{idle:.1f}"}
    figures.update({f"{k} delivery (s, lock attempts)": f"{v[0]:.3f}, {v[1]}"
                    for k, v in times.items()})
    write_summary("stress-idle-summary.txt",
                  summary_text("pop3d stress: deliveries during an idle "
                               "session", figures))
