"""
UIDLs that survive a migration (pop3d -U, pop3d -l), against the real
peers from Debian on the same mailboxes: popa3d 1.0.3 (unpacked from its
.deb, never installed) and Dovecot (dovecot-pop3d, started here as its own
daemon on 127.0.0.1).  The mailboxes are bench/gen.py's realistic ones plus
the cases the schemes differ on: exact duplicates, messages without
Received: or Message-ID:, folded and over-long stable headers, a lowercase
x-delivery-id:, UW's FOLDER INTERNAL DATA pseudo-message.

Runs as root: popa3d and Dovecot serve /var/mail/USER of a real account
through PAM.  Everything made here is removed afterwards, each thing only
if this module made it: the account USER, the PAM services, the popa3d
account and its chroot /var/lib/popa3d, the scratch directory (Dovecot's
configuration, state and index), the mailbox and its locks; processes are
stopped by PID.  dovecot-pop3d is installed when missing (it is in
tools/deps.sh's test list); popa3d is fetched with apt-get download.
"""
import glob
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import POP3D, REPO, SANITIZER_MARKS

sys.path.insert(0, str(REPO / "bench"))
import gen  # noqa: E402  (bench/gen.py: deterministic realistic mailboxes)

USER = "p3migr"
PASSWORD = "migr-Pass-4711"
GECOS = "pop3d migration test user (temporary)"
MAILBOX = "/var/mail/" + USER
MARK = "# Temporary PAM service of tests/e2e/test_migrate.py"
PAM_BODY = MARK + "; removed after the run.\n@include common-auth\n" \
    "@include common-account\n"
POP3D_PAM = "p3migr-pop3d"
DOVECOT_PAM = "p3migr-dovecot"
DEB_CACHE = "/var/tmp/pop3d-bench/debs"     # bench/peers.py's, if there
HOST = "127.0.0.1"
SEED = int(os.environ.get("POP3D_MIGRATE_SEED", "7"))
COUNT = 300
HEX16 = re.compile(r"[0-9a-f]{16}")
HEX32 = re.compile(r"[0-9a-f]{32}(-[0-9]+)?")

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="needs root (real accounts and PAM)")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          **kw)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---- a POP3 client -------------------------------------------------------

class Client:
    def __init__(self, sock):
        self.sock = sock
        self.sock.settimeout(30)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise AssertionError("connection closed: %r" % self.buf)
            self.buf += d
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln.decode("latin-1")

    def cmd(self, c):
        self.sock.sendall(c.encode() + b"\r\n")
        return self.line()

    def multi(self, c):
        st = self.cmd(c)
        assert st.startswith("+OK"), (c, st)
        out = []
        while (ln := self.line()) != ".":
            out.append(ln)
        return out

    def uidl_session(self):
        """Logs in, lists the UIDLs (checking UIDL n for each), quits."""
        assert self.line().startswith("+OK")
        assert self.cmd("USER " + USER).startswith("+OK")
        r = self.cmd("PASS " + PASSWORD)
        assert r.startswith("+OK"), r
        out = [tuple(ln.split(" ")) for ln in self.multi("UIDL")]
        for n, u in out[:5] + out[-5:]:
            assert self.cmd("UIDL " + n) == "+OK %s %s" % (n, u)
        assert self.cmd("QUIT").startswith("+OK")
        return [(int(n), u) for n, u in out]

    def dele_session(self, msns):
        """Logs in, deletes the messages msns, quits (UPDATE)."""
        assert self.line().startswith("+OK")
        assert self.cmd("USER " + USER).startswith("+OK")
        r = self.cmd("PASS " + PASSWORD)
        assert r.startswith("+OK"), r
        for n in msns:
            assert self.cmd("DELE %d" % n).startswith("+OK")
        r = self.cmd("QUIT")
        assert r.startswith("+OK"), r
        return []


def inetd_session(argv, session=Client.uidl_session):
    """One session of an inetd-style server (fd 0 and 1 a TCP socket)."""
    with socket.socket() as ls:
        ls.bind((HOST, 0))
        ls.listen(1)
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
    with c, s:
        p = subprocess.Popen(argv, stdin=s, stdout=s, stderr=subprocess.PIPE)
        s.close()
        try:
            return session(Client(c))
        finally:
            c.close()
            try:
                _, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                err = b""
            err = err.decode("utf-8", "replace")
            assert not any(m in err for m in SANITIZER_MARKS), err


# ---- the machine: account, PAM, peers -----------------------------------

class System:
    def __init__(self):
        self.undo = []
        self.scratch = None
        self.dovecot = None

    def later(self, fn):
        self.undo.append(fn)

    def cleanup(self):
        errors = []
        while self.undo:
            try:
                self.undo.pop()()
            except Exception as e:      # keep undoing the rest
                errors.append(e)
        assert not errors, errors

    def setup(self):
        self.scratch = tempfile.mkdtemp(prefix="pop3d-migrate.",
                                        dir="/var/tmp")
        os.chmod(self.scratch, 0o755)
        self.later(lambda: shutil.rmtree(self.scratch, ignore_errors=True))
        self.later(self.remove_mailbox)
        self.account()
        for svc in ("popa3d", POP3D_PAM, DOVECOT_PAM):
            self.pam(svc)
        self.popa3d_account()
        self.popa3d = self.fetch_popa3d()
        self.ensure_dovecot()

    def account(self):
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            pw = None
        if pw is not None:
            assert pw.pw_gecos == GECOS, \
                "user %s exists and is not this test's" % USER
            run(["userdel", USER])          # left by an interrupted run
        self.later(self.del_user)
        run(["useradd", "-M", "-d", "/nonexistent", "-s",
             "/usr/sbin/nologin", "-c", GECOS, "-U", USER])
        subprocess.run(["chpasswd"], input="%s:%s\n" % (USER, PASSWORD),
                       text=True, check=True)
        pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.mail_gid = grp.getgrnam("mail").gr_gid

    def del_user(self):
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return
        subprocess.run(["userdel", USER], check=False)
        try:
            grp.getgrnam(USER)
            subprocess.run(["groupdel", USER], check=False)
        except KeyError:
            pass

    def pam(self, service):
        path = "/etc/pam.d/" + service
        if os.path.exists(path):
            with open(path) as f:
                if MARK not in f.read():
                    return              # the machine's own: used as is
        self.later(lambda: os.path.exists(path) and os.unlink(path))
        with open(path, "w") as f:
            f.write(PAM_BODY)

    def popa3d_account(self):
        """popa3d runs its pre-login part as "popa3d", chrooted to
        /var/lib/popa3d (fixed in the binary)."""
        comment = "popa3d for tests/e2e/test_migrate.py (temporary)"
        try:
            pw = pwd.getpwnam("popa3d")
        except KeyError:
            pw = None
        if pw is None or pw.pw_gecos == comment:
            def remove():
                subprocess.run(["userdel", "popa3d"], check=False)
                try:
                    grp.getgrnam("popa3d")
                    subprocess.run(["groupdel", "popa3d"], check=False)
                except KeyError:
                    pass
            self.later(remove)
            if pw is None:
                run(["useradd", "--system", "-U", "-d", "/var/lib/popa3d",
                     "-M", "-s", "/usr/sbin/nologin", "-c", comment,
                     "popa3d"])
        if not os.path.isdir("/var/lib/popa3d"):
            os.mkdir("/var/lib/popa3d", 0o755)
            self.later(lambda: os.rmdir("/var/lib/popa3d"))

    def fetch_popa3d(self):
        debs = sorted(glob.glob(os.path.join(DEB_CACHE, "popa3d_*.deb")))
        if not debs:
            d = os.path.join(self.scratch, "debs")
            os.mkdir(d)
            cmd = ["apt-get", "-o", "APT::Sandbox::User=root", "download",
                   "popa3d"]
            if subprocess.run(cmd, cwd=d, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode != 0:
                run(["apt-get", "update", "-q"])
                run(cmd, cwd=d)
            debs = sorted(glob.glob(os.path.join(d, "popa3d_*.deb")))
        dest = os.path.join(self.scratch, "popa3d")
        run(["dpkg-deb", "-x", debs[-1], dest])
        self.popa3d_version = run(["dpkg-deb", "-f", debs[-1],
                                   "Version"]).stdout.decode().strip()
        return os.path.join(dest, "usr", "sbin", "popa3d")

    def ensure_dovecot(self):
        if os.access("/usr/sbin/dovecot", os.X_OK) and \
                os.path.exists("/usr/lib/dovecot/pop3"):
            return
        made = not os.path.exists("/usr/sbin/policy-rc.d")
        if made:        # installing must not start Dovecot's own daemon
            with open("/usr/sbin/policy-rc.d", "w") as f:
                f.write("#!/bin/sh\nexit 101\n")
            os.chmod("/usr/sbin/policy-rc.d", 0o755)
        try:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            cmd = ["apt-get", "install", "-y", "-q",
                   "--no-install-recommends", "dovecot-pop3d"]
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode != 0:
                run(["apt-get", "update", "-q"], env=env)
                run(cmd, env=env)
        finally:
            if made:
                os.unlink("/usr/sbin/policy-rc.d")

    # -- the mailbox

    def put_mailbox(self, data):
        self.stop_dovecot()
        self.remove_mailbox()
        tmp = MAILBOX + ".p3migr-tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.chown(tmp, self.uid, self.mail_gid)
        os.chmod(tmp, 0o660)
        past = time.time() - 3600       # popa3d waits out a fresh mtime
        os.utime(tmp, (past, past))
        os.replace(tmp, MAILBOX)
        shutil.rmtree(os.path.join(self.scratch, "dindex"),
                      ignore_errors=True)

    def remove_mailbox(self):
        for p in [MAILBOX, MAILBOX + ".lock", MAILBOX + ".p3migr-tmp"] + \
                glob.glob(MAILBOX + ".pop3d-*"):
            if os.path.lexists(p):
                os.unlink(p)

    def mailbox_bytes(self):
        with open(MAILBOX, "rb") as f:
            return f.read()

    # -- the servers

    def popa3d_uidls(self):
        return inetd_session([self.popa3d])

    def pop3d_argv(self, scheme):
        rundir = os.path.join(self.scratch, "pop3d-run")
        os.makedirs(rundir, mode=0o755, exist_ok=True)
        return [POP3D, "-s", POP3D_PAM, "-R", rundir,
                "-S", self.state_dir(), "-U", scheme]

    def pop3d_uidls(self, scheme):
        return inetd_session(self.pop3d_argv(scheme))

    def pop3d_dele(self, scheme, msns):
        inetd_session(self.pop3d_argv(scheme),
                      lambda c: c.dele_session(msns))

    def state_dir(self):
        """pop3d's state directory, in the scratch directory (not the
        system's /var/lib/pop3d)."""
        return os.path.join(self.scratch, "pop3d-state")

    def pop3d_list(self, scheme, path=MAILBOX, check=True):
        r = subprocess.run([POP3D, "-S", self.state_dir(), "-U", scheme,
                            "-l", path],
                           stdin=subprocess.DEVNULL, capture_output=True)
        err = r.stderr.decode("utf-8", "replace")
        assert not any(m in err for m in SANITIZER_MARKS), err
        if not check:
            return r
        assert r.returncode == 0, r.stderr
        out = []
        for ln in r.stdout.decode().splitlines():
            n, u = ln.split(" ")
            out.append((int(n), u))
        return out

    def start_dovecot(self):
        if self.dovecot is not None:
            return
        s = self.scratch
        d = os.path.join(s, "dovecot")
        os.makedirs(d, mode=0o755, exist_ok=True)
        for sub in ("dmail", "dmail/" + USER, "dindex"):
            p = os.path.join(s, sub)
            os.makedirs(p, exist_ok=True)
            os.chown(p, self.uid, self.gid)
        self.dport = free_port()
        conf = os.path.join(s, "dovecot.conf")
        with open(conf, "w") as f:
            f.write("""# Dovecot for tests/e2e/test_migrate.py
protocols = pop3
listen = %(host)s
base_dir = %(d)s/run
state_dir = %(d)s/state
log_path = %(d)s/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
passdb {
  driver = pam
  args = %(pam)s
}
userdb {
  driver = passwd
}
mail_location = mbox:%(s)s/dmail/%%u:INBOX=/var/mail/%%u:INDEX=%(s)s/dindex/%%u
mail_privileged_group = mail
pop3_uidl_format = %%08Xu%%08Xv
service pop3-login {
  inet_listener pop3 {
    address = %(host)s
    port = %(port)d
  }
  inet_listener pop3s {
    port = 0
  }
}
""" % {"host": HOST, "d": d, "s": s, "pam": DOVECOT_PAM,
                "port": self.dport})
        with open(os.path.join(d, "stderr.log"), "ab") as lf:
            self.dovecot = subprocess.Popen(
                ["/usr/sbin/dovecot", "-F", "-c", conf],
                stdin=subprocess.DEVNULL, stdout=lf, stderr=lf,
                start_new_session=True)
        self.later(self.stop_dovecot)
        deadline = time.monotonic() + 30
        while True:
            assert self.dovecot.poll() is None, "dovecot exited"
            try:
                with socket.create_connection((HOST, self.dport), 5) as c:
                    c.settimeout(10)
                    if c.recv(512).startswith(b"+OK"):
                        c.sendall(b"QUIT\r\n")
                        c.recv(512)
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "no greeting from dovecot"
            time.sleep(0.1)

    def stop_dovecot(self):
        p = self.dovecot
        if p is None:
            return
        self.dovecot = None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
        # Its children share the session it leads: wait until they are gone.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.session_pids(p.pid):
            time.sleep(0.05)
        for pid in self.session_pids(p.pid):
            os.kill(pid, signal.SIGKILL)

    @staticmethod
    def session_pids(sid):
        out = []
        for st in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(st) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(rest[3]) == sid:
                out.append(int(st.split("/")[2]))
        return out

    def dovecot_uidls(self):
        self.start_dovecot()
        c = socket.create_connection((HOST, self.dport), 10)
        with c:
            out = Client(c).uidl_session()
        # Dovecot finishes its mbox sync after QUIT's reply.
        deadline = time.monotonic() + 30
        while any(self.is_pop3(pid) for pid in
                  self.session_pids(self.dovecot.pid)):
            assert time.monotonic() < deadline, "dovecot/pop3 still running"
            time.sleep(0.05)
        return out

    @staticmethod
    def is_pop3(pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                return f.read().startswith(b"dovecot/pop3")
        except OSError:
            return False


@pytest.fixture(scope="module")
def system():
    s = System()
    try:
        s.setup()
        yield s
    finally:
        s.cleanup()


# ---- the mailboxes -------------------------------------------------------

FID = (b"From MAILER-DAEMON Mon Jan  1 00:00:00 2024\n"
       b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n"
       b"From: Mail System Internal Data <MAILER-DAEMON@host>\n"
       b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
       b"Message-ID: <1704067200@host>\n"
       b"X-IMAP: 1704067200 0000000000\n"
       b"Status: RO\n\n"
       b"This text is part of the internal format of your mail folder.\n\n")


def crafted():
    """The messages the schemes treat differently, each distinct."""
    f = b"From someone@example.org Tue Jan  2 10:00:00 2024\n"
    long_rcvd = b"Received: from long by host with " + b"x" * 5000 + b"\n"
    return [
        # No Received: Date: and Message-ID: count.
        f + b"Date: Tue, 2 Jan 2024 10:00:00 +0000\n"
            b"Message-ID: <only-date-mid@example.org>\nSubject: a\n\nA\n\n",
        # No Received:, no Message-ID:.
        f + b"Date: Tue, 2 Jan 2024 10:00:01 +0000\nSubject: b\n\nB\n\n",
        # Nothing stable at all.
        f + b"Subject: c\n\nC\n\n",
        # A folded Received:, and a folded Subject: after it.
        f + b"Received: from a\n\tby b; Tue, 2 Jan 2024 10:00:02 +0000\n"
            b"Subject: d\n folded subject\nMessage-ID: <d@x>\n\nD\n\n",
        # Delivered-To: and X-Delivery-ID: in both cases.
        f + b"Delivered-To: alice@example.org\nX-Delivery-ID: 42\n"
            b"x-delivery-id: 43\nReceived: from e\nSubject: e\n\nE\n\n",
        # A Received: longer than pop3d's line buffer.
        f + long_rcvd + b"Subject: f\n\nF\n\n",
        # CR LF header lines (but LF framing, as popa3d reads them).
        f + b"Received: from g\r\nMessage-ID: <g@x>\r\nSubject: g\n\nG\n\n",
    ]


def base_mailbox(tmpdir, count=COUNT):
    path = os.path.join(tmpdir, "gen.mbox")
    print("bench/gen.py seed %d count %d (POP3D_MIGRATE_SEED replays)"
          % (SEED, count))
    gen.generate(path, count, seed=SEED)
    with open(path, "rb") as f:
        return f.read()


def split_messages(data):
    """The mbox chunks of gen.py's output (every From_ after a blank)."""
    parts = re.split(rb"(?:^|\n\n)(?=From \S+ \w{3} \w{3} [ \d]\d )", data)
    return [p if p.endswith(b"\n\n") else p + b"\n\n" for p in parts if p]


@pytest.fixture(scope="module")
def mailboxes(tmp_path_factory):
    d = tmp_path_factory.mktemp("migrate")
    base = base_mailbox(str(d))
    msgs = split_messages(base)
    assert len(msgs) == COUNT
    extra = crafted()
    # Exact duplicates: a message twice, another three times, apart.
    dup = msgs[:100] + [msgs[5]] + msgs[100:200] + [msgs[7], msgs[7]] + \
        msgs[200:] + extra + [msgs[5]]
    return {"plain": b"".join(dup), "fid": FID + b"".join(dup)}


def md5_map(system):
    """{n: UIDL} of the mailbox now, by pop3d's own scheme."""
    return dict(system.pop3d_list("md5"))


# ---- popa3d --------------------------------------------------------------

def expected_from_popa3d(popa3d):
    """popa3d shows repeats of a digest as they are; pop3d numbers them."""
    seen, out = {}, []
    for n, u in popa3d:
        seen[u] = seen.get(u, 0) + 1
        out.append((n, u if seen[u] == 1 else "%s-%d" % (u, seen[u])))
    return out


def test_popa3d_same_uidls(system, mailboxes):
    system.put_mailbox(mailboxes["plain"])
    theirs = system.popa3d_uidls()
    listed = system.pop3d_list("popa3d")
    served = system.pop3d_uidls("popa3d")
    n = COUNT + 4 + len(crafted())
    assert len(theirs) == n and len(listed) == n
    assert all(HEX16.fullmatch(u) for _, u in theirs)
    repeats = len(theirs) - len({u for _, u in theirs})
    print("popa3d %s: %d messages, %d repeated digests; pop3d -U popa3d "
          "identical on %d" % (system.popa3d_version, len(theirs), repeats,
                               sum(a == b for a, b in zip(theirs, listed))))
    assert repeats == 4           # message 6 twice more, message 8 twice
    assert listed == expected_from_popa3d(theirs)
    assert served == listed
    assert system.mailbox_bytes() == mailboxes["plain"]


def test_popa3d_folder_internal_data(system, mailboxes):
    """popa3d serves the pseudo-message as message 1; pop3d hides it, and
    the real messages keep popa3d's UIDLs."""
    system.put_mailbox(mailboxes["fid"])
    theirs = system.popa3d_uidls()
    listed = system.pop3d_list("popa3d")
    assert len(theirs) == len(listed) + 1
    shifted = [(n - 1, u) for n, u in theirs[1:]]
    assert listed == expected_from_popa3d(shifted)


# ---- Dovecot -------------------------------------------------------------

def test_dovecot_same_uidls(system, mailboxes):
    system.put_mailbox(mailboxes["plain"])
    system.dovecot_uidls()          # Dovecot writes X-IMAPbase and X-UIDs
    data = system.mailbox_bytes()
    assert b"\nX-IMAPbase: " in data and b"\nX-UID: " in data
    theirs = system.dovecot_uidls()
    listed = system.pop3d_list("dovecot")
    served = system.pop3d_uidls("dovecot")
    print("dovecot %s: %d messages; pop3d -U dovecot identical on %d" % (
        run(["/usr/sbin/dovecot", "--version"]).stdout.decode().strip(),
        len(theirs), sum(a == b for a, b in zip(theirs, listed))))
    assert len(theirs) == COUNT + 4 + len(crafted())
    assert listed == theirs
    assert served == listed
    # Dovecot forgot its index: it reads the same UIDs back from the file.
    system.stop_dovecot()
    shutil.rmtree(os.path.join(system.scratch, "dindex", USER))
    assert system.dovecot_uidls() == theirs


def test_dovecot_first_message_deleted(system, mailboxes):
    """pop3d deletes message 1, which carries X-IMAPbase: the others keep
    the UIDLs Dovecot gave them (pop3d kept the base in its state
    directory), where before they fell back to md5 and every "leave mail
    on server" client fetched them all again."""
    system.put_mailbox(mailboxes["plain"])
    system.dovecot_uidls()          # Dovecot writes X-IMAPbase and X-UIDs
    theirs = system.dovecot_uidls()
    system.stop_dovecot()
    first = split_messages(system.mailbox_bytes())[0]
    assert b"\nX-IMAPbase: " in first
    assert system.pop3d_uidls("dovecot") == theirs
    system.pop3d_dele("dovecot", [1])
    data = system.mailbox_bytes()
    assert b"\nX-IMAPbase: " not in data and data.startswith(b"From ")
    want = [(n - 1, u) for n, u in theirs[1:]]
    served = system.pop3d_uidls("dovecot")
    assert served == want
    assert system.pop3d_list("dovecot") == want
    ino = os.stat(MAILBOX).st_ino
    kept = glob.glob(os.path.join(system.state_dir(), "*",
                                  "%d.imapbase" % ino))
    assert len(kept) == 1
    st = os.stat(kept[0])
    assert st.st_uid == system.uid and st.st_mode & 0o077 == 0
    # Once more: the new first message has no base of its own either.
    system.pop3d_dele("dovecot", [1, 2])
    assert system.pop3d_uidls("dovecot") == [(n - 2, u) for n, u in
                                             want[2:]]
    # Without the state file, the scheme can only fall back to md5.
    os.unlink(kept[0])
    md5 = md5_map(system)
    assert system.pop3d_list("dovecot") == sorted(md5.items())


def test_dovecot_new_mail_falls_back(system, mailboxes):
    """Mail delivered after the migration has no X-UID: md5, and a
    sender's X-UID: bigger than Dovecot's next UID is not believed."""
    system.put_mailbox(mailboxes["plain"][:200000].rsplit(b"\nFrom ", 1)[0]
                       + b"\n")
    before = system.dovecot_uidls()
    system.stop_dovecot()
    with open(MAILBOX, "ab") as f:
        f.write(b"From new@example.org Wed Jan  3 10:00:00 2024\n"
                b"Received: from new\nX-UID: 999999\nSubject: new\n\nN\n\n"
                b"From new@example.org Wed Jan  3 10:00:01 2024\n"
                b"Received: from new2\nSubject: new2\n\nN\n\n")
    listed = system.pop3d_list("dovecot")
    md5 = md5_map(system)
    assert listed[:len(before)] == before
    assert listed[-2:] == [(n, md5[n]) for n, _ in listed[-2:]]
    assert all(HEX32.fullmatch(u) for _, u in listed[-2:])


def test_dovecot_folder_internal_data(system, mailboxes):
    """UW's pseudo-message carries X-IMAP: Dovecot and pop3d hide it and
    take its UIDVALIDITY."""
    system.put_mailbox(mailboxes["fid"])
    system.dovecot_uidls()
    theirs = system.dovecot_uidls()
    assert system.pop3d_list("dovecot") == theirs
    assert theirs[0][1].endswith("%08x" % 1704067200)


# ---- xuidl ---------------------------------------------------------------

def xmsg(n, xuidl_lines):
    return (b"From x@example.org Thu Jan  4 10:00:00 2024\n"
            b"Received: from x%d\n" % n + b"".join(xuidl_lines) +
            b"Subject: x%d\n\nbody %d\n\n" % (n, n))


def test_xuidl(system):
    cases = [
        ([b"X-UIDL: 1a2b3c4d5e6f\n"], "1a2b3c4d5e6f"),            # used
        ([b"X-UIDL:  <qpopper.7>  \n"], "<qpopper.7>"),           # trimmed
        ([b"X-UIDL: " + b"u" * 70 + b"\n"], "u" * 70),            # 70: ok
        ([b"X-UIDL: " + b"v" * 71 + b"\n"], None),                # too long
        ([b"X-UIDL: has space\n"], None),                         # malformed
        ([b"X-UIDL: caf\xc3\xa9\n"], None),                       # not ASCII
        ([b"X-UIDL:\n"], None),                                   # empty
        ([b"X-UIDL: fold\n", b" ed\n"], None),                    # folded
        ([b"X-UIDL: one\n", b"X-UIDL: two\n"], None),             # two
        ([b"X-UIDL: 1a2b3c4d5e6f\n"], None),                      # repeat
        ([], None),                                               # none
        ([b"x-uidl: lower-case-name\n"], "lower-case-name"),
    ]
    data = b"".join(xmsg(i, c) for i, (c, _) in enumerate(cases))
    system.put_mailbox(data)
    listed = system.pop3d_list("xuidl")
    md5 = md5_map(system)
    assert len(listed) == len(cases)
    for (n, u), (_, want) in zip(listed, cases):
        assert u == (want if want is not None else md5[n]), n
    served = system.pop3d_uidls("xuidl")
    assert served == listed


def test_xuidl_equal_to_an_md5_uidl(system):
    """An X-UIDL: that is another message's md5 UIDL is not used."""
    system.put_mailbox(xmsg(1, []))
    u1 = system.pop3d_list("md5")[0][1]
    system.put_mailbox(xmsg(1, []) + xmsg(2, [b"X-UIDL: %s\n" % u1.encode()])
                       + xmsg(3, [b"X-UIDL: fine\n"]))
    listed = system.pop3d_list("xuidl")
    md5 = md5_map(system)
    assert listed == [(1, u1), (2, md5[2]), (3, "fine")]


# ---- pop3d -l ------------------------------------------------------------

def test_list_is_read_only(system, mailboxes):
    system.put_mailbox(mailboxes["plain"])
    before = os.stat(MAILBOX)
    listed = system.pop3d_list("md5")
    assert listed == system.pop3d_uidls("md5")
    after = os.stat(MAILBOX)
    assert (before.st_mtime_ns, before.st_ctime_ns, before.st_size) == \
        (after.st_mtime_ns, after.st_ctime_ns, after.st_size)
    assert not os.path.exists(MAILBOX + ".lock")
    assert system.mailbox_bytes() == mailboxes["plain"]


def test_list_refuses_an_unfinished_commit(system):
    system.put_mailbox(xmsg(1, []))
    jnl = MAILBOX + ".pop3d-journal"
    with open(jnl, "wb") as f:
        f.write(b"\0" * 64)
    os.chown(jnl, system.uid, system.mail_gid)
    os.chmod(jnl, 0o600)    # as pop3d made it; any other is not its own
    try:
        r = system.pop3d_list("md5", check=False)
        assert r.returncode == 1
        assert b"pop3d -r" in r.stderr
        assert r.stdout == b""
        with open(jnl, "rb") as f:
            assert f.read() == b"\0" * 64
    finally:
        os.unlink(jnl)


def test_list_bad_arguments(system):
    r = subprocess.run([POP3D, "-U", "nonsense", "-l", MAILBOX],
                       capture_output=True)
    assert r.returncode == 2 and b"-U takes" in r.stderr
    r = subprocess.run([POP3D, "-l", MAILBOX, "-r", MAILBOX],
                       capture_output=True)
    assert r.returncode == 2
