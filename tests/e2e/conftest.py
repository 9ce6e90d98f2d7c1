"""
End-to-end harness for pop3d: the real binary, real PAM calls, faked
users and a faked setuid through the cwrap wrappers (pam_wrapper with
pam_matrix, nss_wrapper, uid_wrapper).  Nothing on the machine is touched:
every test gets its own directory with a PAM service directory, a passdb,
passwd and group files, a mail directory and a run directory.

The server speaks one session on a socketpair (fd 0 and 1 are the same
socket, as under xinetd or systemd); its stderr (pop3d -d logs there) goes
to a file that every test can read and that is checked for sanitizer
reports.
"""
import ctypes
import errno
import fcntl
import os
import select
import signal
import socket
import subprocess
import sysconfig
import time
import poplib
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated in 3.11, still present; used for -f hashes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
POP3D = os.environ.get("POP3D_BIN", str(REPO / "pop3d"))
FIXTURES = Path(os.environ.get("POP3D_FIXTURES",
                               str(REPO / "tests" / "fixtures")))

# Debian's multiarch library directory (x86_64-linux-gnu, aarch64-linux-gnu...).
LIBDIR = "/usr/lib/" + (sysconfig.get_config_var("MULTIARCH") or
                        subprocess.run(["gcc", "-print-multiarch"],
                                       capture_output=True, text=True)
                        .stdout.strip())
PAM_MATRIX = f"{LIBDIR}/pam_wrapper/pam_matrix.so"
PRELOAD = "libpam_wrapper.so libnss_wrapper.so libuid_wrapper.so"

ALICE_UID = 1000
BOB_UID = 1001
MAIL_GID = 8
NOBODY = 65534
PRELOGIN_UID = 998      # the unprivileged account of the pre-login process

IO_TIMEOUT = 10.0       # seconds a test waits for any single reply
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer", "Sanitizer has encountered",
                   "incompatible with sanitizer runtime")

CAPA_LIST = [b"TOP", b"UIDL", b"USER", b"RESP-CODES", b"AUTH-RESP-CODE",
             b"PIPELINING", b"SASL PLAIN", b"IMPLEMENTATION pop3d"]


def from_line(sender="sender@example.org", date="Mon Jan  1 12:00:00 2024"):
    return f"From {sender} {date}\n".encode()


def make_message(n, body=None, extra_headers=b"", sender=None):
    """One mbox chunk (From_ line, message, framing empty line) and the
    message as served (CRLF, before dot-stuffing)."""
    if body is None:
        body = f"Body of message {n}.\nSecond line.\n".encode()
    msg = (f"Received: from x by y with id {n}; Mon, 1 Jan 2024\n"
           f"From: sender{n}@example.org\n"
           f"To: alice@example.org\n"
           f"Subject: message {n}\n"
           f"Message-ID: <{n}@example.org>\n").encode() + extra_headers + \
        b"\n" + body
    chunk = from_line(sender or f"sender{n}@example.org") + msg + b"\n"
    wire = msg.replace(b"\n", b"\r\n")
    return chunk, wire


def build_mbox(n, bodies=None):
    """Returns (mbox bytes, [chunks], [served messages])."""
    chunks, wires = [], []
    for i in range(1, n + 1):
        body = bodies[i - 1] if bodies else None
        c, w = make_message(i, body)
        chunks.append(c)
        wires.append(w)
    return b"".join(chunks), chunks, wires


def unstuff(body):
    """Undoes RFC 1939 byte-stuffing of a multi-line body (without the
    terminating ".\\r\\n")."""
    out = []
    for line in body.split(b"\r\n"):
        out.append(line[1:] if line.startswith(b".") else line)
    return b"\r\n".join(out)


def gensalt(prefix):
    """A crypt setting from libxcrypt's crypt_gensalt (for $y$ and $2b$,
    which Python's crypt.mksalt cannot make)."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong,
                                  ctypes.c_char_p, ctypes.c_int]
    s = lib.crypt_gensalt(prefix, 0, None, 0)
    assert s, f"crypt_gensalt({prefix!r}) failed"
    return s.decode()


def hash_password(pw, method="yescrypt"):
    if method == "yescrypt":
        setting = gensalt(b"$y$")
    elif method == "bcrypt":
        setting = gensalt(b"$2b$")
    elif method == "sha512":
        setting = crypt.mksalt(crypt.METHOD_SHA512)
    else:
        raise ValueError(method)
    h = crypt.crypt(pw, setting)
    assert h and not h.startswith("*"), (method, h)
    return h


class ServerError(AssertionError):
    pass


class Server:
    """One pop3d process serving one session over a socketpair (or pipes)."""

    def __init__(self, argv, env, log_path, use_pipes=False, preexec=None):
        self.argv = argv
        self.log_path = Path(log_path)
        self.buf = b""
        self.rc = None
        self._errf = open(self.log_path, "wb")
        self.use_pipes = use_pipes
        if use_pipes:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._errf, env=env, close_fds=True,
                preexec_fn=preexec)
            self.sock = None
            self._wfd = self.proc.stdin.fileno()
            self._rfd = self.proc.stdout.fileno()
        else:
            parent, child = socket.socketpair()
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=child.fileno(), stdout=child.fileno(),
                    stderr=self._errf, env=env, close_fds=True,
                    preexec_fn=preexec)
            finally:
                child.close()
            parent.settimeout(IO_TIMEOUT)
            self.sock = parent
        self._errf.close()

    # ---- raw bytes -------------------------------------------------------

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.sock is not None:
            self.sock.sendall(data)
        else:
            os.write(self._wfd, data)

    def _recv(self, timeout=IO_TIMEOUT):
        """Returns the next bytes from the server, b'' at EOF."""
        if self.sock is not None:
            self.sock.settimeout(timeout)
            try:
                return self.sock.recv(65536)
            except ConnectionResetError:
                return b""
        r, _, _ = select.select([self._rfd], [], [], timeout)
        if not r:
            raise socket.timeout("no data from pop3d")
        return os.read(self._rfd, 65536)

    def readline(self, timeout=IO_TIMEOUT):
        """One reply line including its CRLF; ServerError at EOF."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"timed out waiting for a line; have "
                                  f"{self.buf!r}\nlog:\n{self.log}")
            try:
                data = self._recv(left)
            except socket.timeout:
                raise ServerError(f"timed out waiting for a line; have "
                                  f"{self.buf!r}\nlog:\n{self.log}")
            if not data:
                raise ServerError(f"EOF while waiting for a line; have "
                                  f"{self.buf!r}\nlog:\n{self.log}")
            self.buf += data
        i = self.buf.index(b"\n") + 1
        line, self.buf = self.buf[:i], self.buf[i:]
        return line

    def reply(self, timeout=IO_TIMEOUT):
        """One reply line as str, without its CRLF (which must be there)."""
        line = self.readline(timeout)
        assert line.endswith(b"\r\n"), f"reply not ended by CRLF: {line!r}"
        assert b"\r" not in line[:-2], f"stray CR in reply {line!r}"
        return line[:-2].decode("latin-1")

    def read_lines(self, n, timeout=IO_TIMEOUT):
        return [self.reply(timeout) for _ in range(n)]

    def read_body(self, timeout=IO_TIMEOUT):
        """The raw bytes of a multi-line body up to and including the
        terminating '.\\r\\n' line (still dot-stuffed)."""
        out = b""
        while True:
            line = self.readline(timeout)
            out += line
            if line == b".\r\n":
                return out

    def read_until_eof(self, timeout=IO_TIMEOUT):
        """Everything the server still sends until it closes."""
        deadline = time.monotonic() + timeout
        out, self.buf = self.buf, b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"no EOF within {timeout}s; got {out!r}")
            try:
                data = self._recv(left)
            except socket.timeout:
                raise ServerError(f"no EOF within {timeout}s; got {out!r}")
            if not data:
                return out
            out += data

    def cmd(self, line, timeout=IO_TIMEOUT):
        """Sends one command line (CRLF added) and returns the status line."""
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def multi(self, line, timeout=IO_TIMEOUT):
        """Sends a command expecting a multi-line answer; returns (status,
        body bytes without the final '.\\r\\n', still stuffed)."""
        st = self.cmd(line, timeout)
        if not st.startswith("+OK"):
            return st, None
        body = self.read_body(timeout)
        return st, body[:-3]

    def login(self, user="alice", password="secret"):
        greeting = self.reply()
        assert greeting == "+OK pop3d ready"
        assert self.cmd(f"USER {user}") == "+OK Send your password"
        return self.cmd(f"PASS {password}")

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        else:
            for f in (self.proc.stdin, self.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass

    def shutdown_write(self):
        if self.sock is not None:
            self.sock.shutdown(socket.SHUT_WR)
        else:
            self.proc.stdin.close()

    # ---- the process -----------------------------------------------------

    @property
    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def check_sanitizers(self):
        log = self.log
        for mark in SANITIZER_MARKS:
            if mark in log:
                raise ServerError(f"sanitizer report in pop3d's stderr:\n"
                                  f"{log}")

    def wait(self, expect=None, timeout=IO_TIMEOUT):
        """Waits for the process; asserts its exit status when expect is
        given.  Returns the status."""
        try:
            self.rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise ServerError(f"pop3d did not exit within {timeout}s\n"
                              f"log:\n{self.log}")
        self.check_sanitizers()
        if expect is not None:
            assert self.rc == expect, (f"exit status {self.rc}, expected "
                                       f"{expect}\nlog:\n{self.log}")
        return self.rc

    def finish(self, expect=None, timeout=IO_TIMEOUT):
        """Closes our end and waits for the process."""
        self.close()
        return self.wait(expect, timeout)

    def kill(self, sig=signal.SIGKILL):
        self.proc.send_signal(sig)

    def pop3(self):
        """A poplib client over this session (instead of the raw helpers)."""
        assert self.sock is not None and not self.buf
        return SocketPOP3(self.sock)


class PeerServer(Server):
    """A pop3d session whose stdin/stdout is `child`, one end of a real
    TCP connection whose other end, `client`, the test talks on."""

    def __init__(self, argv, env, log_path, client, child):
        self.argv = argv
        self.log_path = Path(log_path)
        self.buf = b""
        self.rc = None
        self.use_pipes = False
        with open(self.log_path, "wb") as errf:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=child.fileno(), stdout=child.fileno(),
                    stderr=errf, env=env, close_fds=True)
            finally:
                child.close()
        client.settimeout(IO_TIMEOUT)
        self.sock = client


def tcp_pair(src):
    """A TCP connection on loopback from address src: (client, server)."""
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    with socket.socket(fam) as ls:
        ls.bind((src, 0))
        ls.listen(1)
        c = socket.socket(fam)
        c.bind((src, 0))
        c.connect(ls.getsockname()[:2])
        s, _ = ls.accept()
    return c, s


class SocketPOP3(poplib.POP3):
    """poplib.POP3 over an existing connected socket."""

    def __init__(self, sock):
        self.host = "local"
        self.port = 0
        self._tls_established = False
        sock.settimeout(IO_TIMEOUT)
        self.sock = sock
        self.file = sock.makefile("rb")
        self._debugging = 0
        self.welcome = self._getresp()


class Pop3dEnv:
    """A per-test world: PAM services, passdb, passwd/group, mail and run
    directories, and a way to start pop3d in it."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.tmp.chmod(0o755)
        self.pam_dir = self.tmp / "pam"
        self.passdb = self.tmp / "passdb"
        self.passwd = self.tmp / "passwd"
        self.group = self.tmp / "group"
        self.mail = self.tmp / "mail"
        self.run = self.tmp / "run"
        self.home = self.tmp / "home"
        self.servers = []
        self._nlogs = 0
        self.pam_dir.mkdir()
        self.mail.mkdir()
        self.mail.chmod(0o755)
        self.home.mkdir()
        self.pam_users = {}
        self.add_pam_user("alice", "secret")
        self.add_pam_user("bob", "bobpass")
        self.add_pam_user("toor", "toorpass")
        for service in ("pop3d", "other"):
            self.add_service(service)
        self.passwd.write_text(
            f"root:x:0:0:root:{self.home}/root:/bin/sh\n"
            f"alice:x:{ALICE_UID}:{ALICE_UID}:Alice:{self.home}/alice:/bin/sh\n"
            f"bob:x:{BOB_UID}:{BOB_UID}:Bob:{self.home}/bob:/bin/sh\n"
            f"toor:x:0:0:toor:{self.home}/toor:/bin/sh\n"
            f"pop3d:x:{PRELOGIN_UID}:{PRELOGIN_UID}:pop3d pre-login:"
            "/nonexistent:/usr/sbin/nologin\n")
        self.group.write_text(
            "root:x:0:\n"
            f"mail:x:{MAIL_GID}:\n"
            f"alice:x:{ALICE_UID}:\n"
            f"bob:x:{BOB_UID}:\n"
            f"pop3d:x:{PRELOGIN_UID}:\n")

    # ---- configuration -----------------------------------------------------

    def add_service(self, name):
        (self.pam_dir / name).write_text(
            f"auth required {PAM_MATRIX} passdb={self.passdb}\n"
            f"account required {PAM_MATRIX} passdb={self.passdb}\n")

    def add_pam_user(self, user, password, service="pop3d"):
        """Adds or replaces a pam_matrix entry (user:password:service)."""
        self.pam_users[user] = f"{user}:{password}:{service}"
        self.passdb.write_text("\n".join(self.pam_users.values()) + "\n")

    def env(self, wrappers=True):
        e = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C",
            "ASAN_OPTIONS": "verify_asan_link_order=0:detect_leaks=1",
            "UBSAN_OPTIONS": "print_stacktrace=1",
        }
        if wrappers:
            e.update({
                "LD_PRELOAD": PRELOAD,
                "PAM_WRAPPER": "1",
                "PAM_WRAPPER_SERVICE_DIR": str(self.pam_dir),
                "PAM_WRAPPER_DISABLE_DEEPBIND": "1",
                # The sanitizer runtime refuses RTLD_DEEPBIND, which the
                # other wrappers use too when they dlopen libc.
                "NSS_WRAPPER_DISABLE_DEEPBIND": "1",
                "UID_WRAPPER_DISABLE_DEEPBIND": "1",
                "NSS_WRAPPER_PASSWD": str(self.passwd),
                "NSS_WRAPPER_GROUP": str(self.group),
                "UID_WRAPPER": "1",
                "UID_WRAPPER_ROOT": "1",
            })
        return e

    # ---- mailboxes -----------------------------------------------------------

    def mailbox(self, user="alice"):
        return self.mail / user

    def write_mbox(self, data, user="alice", uid=None, gid=MAIL_GID,
                   mode=0o600, path=None):
        p = Path(path) if path is not None else self.mailbox(user)
        p.write_bytes(data)
        if uid is None:
            uid = {"alice": ALICE_UID, "bob": BOB_UID}.get(user, ALICE_UID)
        os.chown(p, uid, gid)
        os.chmod(p, mode)
        return p

    def leftovers(self, directory=None):
        """Lock and journal files left next to the mailboxes."""
        d = Path(directory) if directory is not None else self.mail
        return sorted(p.name for p in d.iterdir()
                      if p.name.endswith(".lock") or
                      ".pop3d-journal" in p.name)

    # ---- servers ---------------------------------------------------------------

    def argv(self, args=(), timeout=30, mailbox=None, rundir=None):
        return [POP3D, "-d",
                "-m", mailbox if mailbox is not None else f"{self.mail}/%u",
                "-R", str(rundir) if rundir is not None else str(self.run),
                "-t", str(timeout), "-D", "0"] + list(args)

    def start(self, args=(), timeout=30, **kw):
        self._nlogs += 1
        log = self.tmp / f"pop3d-{self._nlogs}.log"
        srv = Server(self.argv(args, timeout), self.env(), log, **kw)
        self.servers.append(srv)
        return srv

    def login(self, user="alice", password="secret", args=(), timeout=30,
              expect="+OK Maildrop has"):
        """Starts a session and logs in; asserts the PASS reply starts with
        expect."""
        srv = self.start(args, timeout)
        r = srv.login(user, password)
        assert r.startswith(expect), f"PASS answered {r!r}\nlog:\n{srv.log}"
        return srv

    def cleanup(self):
        errors = []
        for srv in self.servers:
            srv.close()
            if srv.proc.poll() is None:
                try:
                    srv.proc.wait(5)
                except subprocess.TimeoutExpired:
                    srv.proc.kill()
                    srv.proc.wait()
                    errors.append(f"{srv.argv}: still running at teardown")
            for mark in SANITIZER_MARKS:
                if mark in srv.log:
                    errors.append(f"sanitizer report:\n{srv.log}")
                    break
        return errors


@pytest.fixture
def pop3d_env(tmp_path):
    e = Pop3dEnv(tmp_path)
    yield e
    errors = e.cleanup()
    if errors:
        pytest.fail("\n".join(errors))


# ---- delivering like a Debian MDA --------------------------------------------

def take_dotlock(mbox, timeout=10.0):
    """Creates MBOX.lock holding our pid, as liblockfile does; a lock whose
    pid is dead (a killed pop3d's) is broken at once, as L_PID does."""
    lock = f"{mbox}.lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                pid = int(open(lock).read().split()[0])
                os.kill(pid, 0)
            except ProcessLookupError:
                os.unlink(lock)
                continue
            except (OSError, ValueError, IndexError):
                pass
            assert time.monotonic() < deadline, f"{lock} held too long"
            time.sleep(0.02)
            continue
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        return lock


def take_fcntl(fd, timeout=10.0):
    """A classic POSIX lock (as procmail, Postfix, Exim take it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            assert time.monotonic() < deadline, "fcntl lock held too long"
            time.sleep(0.02)


def deliver(mbox, data):
    """Appends a message the way procmail, Postfix and Exim do: dotlock,
    open O_APPEND, fcntl lock, write, unlock, remove the dotlock."""
    lock = take_dotlock(mbox)
    try:
        fd = os.open(mbox, os.O_WRONLY | os.O_APPEND)
        try:
            take_fcntl(fd)
            os.write(fd, data)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        os.unlink(lock)


# ---- the fixture corpus ------------------------------------------------------

def fixture_cases():
    """(name, mbox path, expect dir) for every tests/fixtures/NAME.mbox that
    has a NAME.expect directory, found at collection time."""
    cases = []
    if FIXTURES.is_dir():
        for mbox in sorted(FIXTURES.glob("*.mbox")):
            exp = mbox.with_suffix(".expect")
            if exp.is_dir():
                cases.append(pytest.param(mbox, exp, id=mbox.stem))
    return cases


def fixture_expectation(exp):
    """('notmbox', None) or ('ok', [message bytes...])."""
    err = exp / "ERROR"
    if err.exists():
        return err.read_text().strip(), None
    emls = {}
    for p in exp.iterdir():
        if p.name.startswith("."):
            continue
        if p.suffix == ".eml" and p.stem.isdigit():
            emls[int(p.stem)] = p.read_bytes()
    n = len(emls)
    assert sorted(emls) == list(range(1, n + 1)), \
        f"{exp}: .eml files are not 1..{n}: {sorted(emls)}"
    return "ok", [emls[i] for i in range(1, n + 1)]
