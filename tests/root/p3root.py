"""
Helpers of the suite under real root (tests/root): scratch accounts made
with useradd and chpasswd, PAM services of the suite's own in /etc/pam.d
over the real pam_unix stack, a spool directory root:mail 2775 with
MDA-style deliveries, the real pop3d on a socketpair, and readers of
/proc.  No cwrap wrapper anywhere: every id below is the kernel's.

Everything the suite creates on the machine carries its names: accounts
"p3rt" + a random tag + a role letter, with the GECOS field below; PAM
files /etc/pam.d/p3rt-TAG*, whose first line is PAM_MARK.  A run that was
killed before its finalizers ran leaves them behind; the next run removes
exactly those (sweep_leftovers).
"""
import functools
import grp
import os
import pwd
import re
import secrets
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
POP3D = os.environ.get("POP3D_BIN", str(REPO / "pop3d"))
PAM_DIR = Path("/etc/pam.d")
PAM_EXEC = "pam_exec.so"
PREFIX = "p3rt"
GECOS = "pop3d tests-root scratch account"
PAM_MARK = "# pop3d tests/root scratch service, removed by the suite\n"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ENV = {"PATH": PATH, "LANG": "C", "LC_ALL": "C"}
IO_TIMEOUT = 15.0       # seconds any single reply or state may take
DOTLOCKFILE = "/usr/bin/dotlockfile"
PROCMAIL = "/usr/bin/procmail"
MAIL_GID = grp.getgrnam("mail").gr_gid
SIGSYS = int(signal.SIGSYS)
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer", "Sanitizer has encountered")


def run(argv, input=None, check=True, timeout=60, preexec_fn=None):
    """Runs a command with a clean environment; asserts exit 0 when
    check."""
    r = subprocess.run(argv, input=input, capture_output=True, text=True,
                       env=ENV, timeout=timeout, preexec_fn=preexec_fn)
    if check:
        assert r.returncode == 0, \
            f"{argv}: exit {r.returncode}\n{r.stdout}{r.stderr}"
    return r


def wait_for(pred, what, timeout=IO_TIMEOUT):
    """Polls pred() until it returns something true, and returns that; a
    state that never comes is a failure naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.02)


# ---- accounts -------------------------------------------------------------

class Account:
    def __init__(self, name, password):
        pw = pwd.getpwnam(name)
        self.name = name
        self.password = password
        self.uid = pw.pw_uid
        self.gid = pw.pw_gid

    def __repr__(self):
        return f"{self.name}({self.uid}:{self.gid})"

    def drop(self, groups=None):
        """A preexec_fn that becomes exactly this account, as a session
        does: setgroups, setresgid, setresuid."""
        gids = [self.gid] if groups is None else list(groups)

        def f():
            os.setgroups(gids)
            os.setresgid(self.gid, self.gid, self.gid)
            os.setresuid(self.uid, self.uid, self.uid)
        return f


class Accounts:
    """The suite's accounts, each with a group of its own; remove() takes
    them away again, groups included, and reports what it could not."""

    def __init__(self):
        self.tag = secrets.token_hex(3)
        self.names = []

    def add(self, role, password=None, groups=(), system=False):
        name = f"{PREFIX}{self.tag}{role}"
        assert len(name) <= 32
        argv = ["useradd", "-M", "-U", "-d", "/nonexistent",
                "-s", "/usr/sbin/nologin", "-c", GECOS]
        if system:
            argv.append("-r")
        if groups:
            argv += ["-G", ",".join(groups)]
        self.names.append(name)
        run(argv + [name])
        if password is not None:
            run(["chpasswd"], input=f"{name}:{password}\n")
        return Account(name, password)

    def remove(self):
        errors = []
        for name in reversed(self.names):
            errors += remove_account(name)
        self.names = []
        return errors


def remove_account(name):
    errors = []
    try:
        pwd.getpwnam(name)
        r = run(["userdel", name], check=False)
        if r.returncode != 0:
            errors.append(f"userdel {name}: {r.stderr.strip()}")
    except KeyError:
        pass
    try:
        grp.getgrnam(name)
        r = run(["groupdel", name], check=False)
        if r.returncode != 0:
            errors.append(f"groupdel {name}: {r.stderr.strip()}")
    except KeyError:
        pass
    return errors


def sweep_leftovers():
    """Removes what an earlier, killed run of this suite left: accounts
    with the suite's prefix and GECOS, PAM files with its mark."""
    name_re = re.compile(rf"{PREFIX}[0-9a-f]{{6}}[a-z]")
    for pw in pwd.getpwall():
        if name_re.fullmatch(pw.pw_name) and pw.pw_gecos == GECOS:
            remove_account(pw.pw_name)
    for p in PAM_DIR.glob(f"{PREFIX}-*"):
        try:
            if p.read_text().startswith(PAM_MARK):
                p.unlink()
        except OSError:
            pass


def add_service(name, lines):
    """Writes /etc/pam.d/NAME (the suite's mark first); returns its path."""
    p = PAM_DIR / name
    assert not p.exists(), f"{p} exists and is not ours"
    p.write_text(PAM_MARK + "".join(l + "\n" for l in lines))
    p.chmod(0o644)
    return p


# ---- /proc ----------------------------------------------------------------

def proc_status(pid, text=None):
    """The lines of /proc/PID/status (or of text, its contents), with the
    ids and groups as lists of numbers."""
    if text is None:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    for k in ("Uid", "Gid"):
        out[k] = [int(x) for x in out[k].split()]
    out["Groups"] = sorted(int(x) for x in out.get("Groups", "").split())
    return out


def proc_root(pid):
    return os.readlink(f"/proc/{pid}/root")


def proc_fds(pid):
    d = f"/proc/{pid}/fd"
    out = {}
    for n in os.listdir(d):
        try:
            out[int(n)] = os.readlink(f"{d}/{n}")
        except FileNotFoundError:
            pass
    return dict(sorted(out.items()))


def proc_stat(pid):
    """(ppid, pgid, state) from /proc/PID/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = s[s.rindex(")") + 2:].split()
    return int(fields[1]), int(fields[2]), fields[0]


def all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children(pid):
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st is not None and st[0] == pid:
            out.append(p)
    return sorted(out)


def group_members(pgid):
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st is not None and st[1] == pgid:
            out.append((p, st[2]))
    return sorted(out)


class Snapshot:
    """What one process of a session held when it was looked at."""

    def __init__(self, role, pid, fds=False, status=None, root=None):
        """Reads /proc/PID, or takes status (proc_status's shape) and root
        as another process reported them about itself."""
        self.role = role
        self.pid = pid
        st = status if status is not None else proc_status(pid)
        self.uid = st["Uid"]
        self.gid = st["Gid"]
        self.groups = st["Groups"]
        self.seccomp = st.get("Seccomp")
        self.nnp = st.get("NoNewPrivs")
        self.capeff = int(st["CapEff"], 16)
        self.capprm = int(st["CapPrm"], 16)
        self.root = root if root is not None else proc_root(pid)
        self.fds = proc_fds(pid) if fds else None

    def row(self):
        fds = "" if self.fds is None else " ".join(
            f"{n}={t}" for n, t in self.fds.items())
        return (f"{self.role:<10} {self.pid:>7}  "
                f"{','.join(map(str, self.uid)):<23} "
                f"{','.join(map(str, self.gid)):<23} "
                f"{','.join(map(str, self.groups)) or '-':<12} "
                f"{self.seccomp:<3} {self.nnp:<3} "
                f"{self.capeff:<16x} {self.capprm:<16x} {self.root}"
                + (f"\n{'':>20}fds: {fds}" if fds else ""))


def table(snaps):
    head = (f"{'process':<10} {'pid':>7}  {'uid r,e,s,fs':<23} "
            f"{'gid r,e,s,fs':<23} {'groups':<12} sec nnp "
            f"{'CapEff':<16} {'CapPrm':<16} root")
    return "\n".join([head] + [s.row() for s in snaps])


class Checks:
    """Checks that all run before the test fails, so that one missing
    wall does not hide the state of the others; done() fails with every
    problem found and the table of what was seen."""

    def __init__(self):
        self.problems = []

    def check(self, ok, what):
        if not ok:
            self.problems.append(what)
        return ok

    def ids(self, snap, uid, gid):
        """All four uids, all four gids, and the groups: just gid, or
        none."""
        self.check(snap.uid == [uid] * 4,
                   f"{snap.role}: uid (real, effective, saved, fs) "
                   f"{snap.uid}, expected {uid} in all four")
        self.check(snap.gid == [gid] * 4,
                   f"{snap.role}: gid (real, effective, saved, fs) "
                   f"{snap.gid}, expected {gid} in all four")
        self.check(snap.groups in ([], [gid]),
                   f"{snap.role}: supplementary groups {snap.groups}, "
                   f"expected [{gid}] or none")

    def done(self, seen):
        assert not self.problems, \
            "\n".join(["problems:"] + ["  " + p for p in self.problems] +
                      ["seen:", seen])


# ---- the server -------------------------------------------------------------

class ServerError(AssertionError):
    pass


class Server:
    """One pop3d as xinetd starts it: real root, the socket on fd 0 and 1,
    stderr (pop3d -d logs there) on a file."""

    def __init__(self, argv, log_path, env=None):
        self.argv = argv
        self.log_path = Path(log_path)
        self.buf = b""
        parent, child = socket.socketpair()
        with open(self.log_path, "wb") as errf:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=child.fileno(), stdout=child.fileno(),
                    stderr=errf, env=dict(ENV, **(env or {})),
                    close_fds=True)
            finally:
                child.close()
        self.sock = parent
        self.pid = self.proc.pid

    @property
    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def readline(self, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"no reply line within {timeout}s; have "
                                  f"{self.buf!r}\nlog:\n{self.log}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                raise ServerError(f"EOF waiting for a line; have "
                                  f"{self.buf!r}\nlog:\n{self.log}")
            self.buf += data
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def reply(self, timeout=IO_TIMEOUT):
        line = self.readline(timeout)
        assert line.endswith(b"\r\n"), line
        return line[:-2].decode("latin-1")

    def cmd(self, line, timeout=IO_TIMEOUT):
        self.send(line + "\r\n")
        return self.reply(timeout)

    def multi(self, line, timeout=IO_TIMEOUT):
        """(status, body lines) of a multi-line command."""
        st = self.cmd(line, timeout)
        if not st.startswith("+OK"):
            return st, None
        body = []
        while True:
            l = self.readline(timeout)
            if l == b".\r\n":
                return st, body
            body.append(l)

    def retr(self, n):
        """The message as stored (LF line ends, unstuffed)."""
        st, body = self.multi(f"RETR {n}")
        assert st.startswith("+OK"), f"RETR {n}: {st}\nlog:\n{self.log}"
        return b"".join((l[1:] if l.startswith(b".") else l)[:-2] + b"\n"
                        for l in body)

    def greeting(self):
        g = self.reply()
        assert g.startswith("+OK"), f"greeting {g!r}\nlog:\n{self.log}"
        return g

    def login(self, acct):
        """USER and PASS after the greeting; returns the PASS reply."""
        self.greeting()
        r = self.cmd(f"USER {acct.name}")
        assert r.startswith("+OK"), f"USER: {r}\nlog:\n{self.log}"
        return self.cmd(f"PASS {acct.password}")

    def read_until_eof(self, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        out, self.buf = self.buf, b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"no EOF within {timeout}s; got {out!r}"
                                  f"\nlog:\n{self.log}")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                return out
            out += data

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def wait(self, timeout=IO_TIMEOUT):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise ServerError(f"pop3d {self.pid} did not exit within "
                              f"{timeout}s\nlog:\n{self.log}")

    def finish(self, timeout=IO_TIMEOUT):
        self.close()
        return self.wait(timeout)

    def quit(self):
        r = self.cmd("QUIT")
        assert r.startswith("+OK"), f"QUIT: {r}\nlog:\n{self.log}"
        return self.finish()


# ---- messages ---------------------------------------------------------------

def message(n, to):
    """One mbox chunk as an MDA appends it (From_ line, headers, body,
    the framing empty line)."""
    return (f"From sender{n}@example.org Mon Jan  1 12:00:{n % 60:02d} 2024\n"
            f"Received: from x by y with id rt{n}; Mon, 1 Jan 2024\n"
            f"From: sender{n}@example.org\n"
            f"To: {to}@example.org\n"
            f"Subject: root suite message {n}\n"
            f"Message-ID: <rt{n}@example.org>\n"
            f"\n"
            f"Body of message {n}.\n"
            f"\n").encode()


def is_socket_link(target):
    return target.startswith("socket:[")


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---- one test's world -----------------------------------------------------

@functools.lru_cache(maxsize=None)
def pop3d_has_state_dir():
    """Whether this pop3d takes -S DIR (the per-user state directory):
    pop3d -S DIR -V prints its version when it does, its usage when not."""
    r = subprocess.run([POP3D, "-S", "/nonexistent", "-V"],
                       capture_output=True, text=True, env=ENV, timeout=10,
                       stdin=subprocess.DEVNULL)
    return r.returncode == 0 and r.stdout.startswith("pop3d ")


class World:
    """A scratch base directory (0755, so that the accounts can reach the
    spool) with the spool (root:mail 2775), pop3d's run directory, the
    pre-login chroot and the state directory, and a way to start pop3d
    in it."""

    def __init__(self, base, accounts, services):
        self.base = Path(base)
        self.base.chmod(0o755)
        self.acct = accounts
        self.services = services
        self.spool = self.base / "spool"
        self.spool.mkdir()
        os.chown(self.spool, 0, MAIL_GID)
        self.spool.chmod(0o2775)
        self.rundir = self.base / "run"
        self.chroot = self.base / "empty"
        self.chroot.mkdir()
        self.chroot.chmod(0o755)
        self.state = self.base / "state"
        self.state.mkdir()
        self.state.chmod(0o755)
        self.logs = self.base / "logs"
        self.logs.mkdir()
        self.servers = []
        self.nlog = 0
        self.state_option = pop3d_has_state_dir()

    def mailbox(self, acct, spool=None):
        return (Path(spool) if spool is not None else self.spool) / acct.name

    def make_mailbox(self, acct, mode=0o600):
        """An empty mailbox as Debian's MDAs create it: the user's, group
        mail."""
        p = self.mailbox(acct)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        os.close(fd)
        os.chown(p, acct.uid, MAIL_GID)
        os.chmod(p, mode)
        return p

    def deliver(self, acct, data, agent="dotlockfile"):
        """Appends data to acct's mailbox as an MDA running as that user
        would: dotlockfile (setgid mail) takes MAILBOX.lock in the spool
        the user cannot write, an O_APPEND write, dotlockfile -u; or
        procmail -m with a locking recipe (setuid root, setgid mail)."""
        mbox = self.mailbox(acct)
        if agent == "dotlockfile":
            script = ('dotlockfile -l -r 20 -i 1 "$1.lock" || exit 75\n'
                      'cat >>"$1"; rc=$?\n'
                      'dotlockfile -u "$1.lock" || rc=75\n'
                      'exit $rc\n')
            argv = ["sh", "-c", script, "sh", str(mbox)]
        else:
            rc = self.base / f"procmailrc-{acct.name}"
            rc.write_text(f"SHELL=/bin/sh\nCOMSAT=no\nLOCKSLEEP=1\n"
                          f":0:\n{mbox}\n")
            rc.chmod(0o644)
            argv = [PROCMAIL, "-m", str(rc)]
        r = subprocess.run(argv, input=data, capture_output=True, env=ENV,
                           timeout=60, preexec_fn=acct.drop())
        assert r.returncode == 0, (f"{agent} delivery to {mbox}: exit "
                                   f"{r.returncode}: {r.stderr!r}")
        assert not os.path.exists(f"{mbox}.lock")

    def argv(self, service=None, template=None, extra=(), debug=True):
        a = [POP3D]
        if debug:
            a += ["-d", "-v"]
        a += ["-m", template if template is not None else f"{self.spool}/%u",
              "-R", str(self.rundir), "-C", str(self.chroot),
              "-u", self.acct["prelogin"].name,
              "-s", service or self.services["plain"],
              "-t", "30", "-D", "0"]
        if self.state_option:
            a += ["-S", str(self.state)]
        return a + list(extra)

    def log_path(self):
        self.nlog += 1
        return self.logs / f"pop3d-{self.nlog}.log"

    def start(self, env=None, **kw):
        srv = Server(self.argv(**kw), self.log_path(), env=env)
        self.servers.append(srv)
        return srv

    def cleanup(self):
        """Ends every pop3d still running (by its pid) and the processes
        left in their groups; returns the complaints."""
        errors = []
        for srv in self.servers:
            srv.close()
            try:
                srv.proc.wait(5)
            except subprocess.TimeoutExpired:
                srv.proc.kill()
                srv.proc.wait()
                errors.append(f"{srv.argv}: still running at teardown")
            if any(m in srv.log for m in SANITIZER_MARKS):
                errors.append(f"sanitizer report from {srv.argv}:\n"
                              f"{srv.log}")
        return errors

