"""
The multi-host harness: one GlusterFS volume, two FUSE mounts standing for
two hosts, a pop3d launcher per host, and HAProxy in front.  Everything
runs on loopback addresses, is started here and is stopped by the PID it
was started with; scratch files live under one temporary directory.

    glusterd          127.0.0.5:24007, working, run and log directories in
                      the scratch directory (glusterd -f COPY -N)
    volume            one brick, SCRATCH/brick, created with "force"
    mount A, mount B  SCRATCH/hostA, SCRATCH/hostB (glusterfs FUSE clients)
    host A, host B    a private mount namespace each, in which the host's
                      mount is bound onto SCRATCH/srv: both hosts see the
                      spool and state directory at the same path, as real
                      hosts mounting /var/mail do (pop3d names a maildrop's
                      session lock after its path)
    launcher          systemd-socket-activate --inetd -a on 127.0.0.2
                      (host A) and 127.0.0.3 (host B), inside the host's
                      namespace; pop3d -d logs to the launcher's stderr
    HAProxy           127.0.0.1, mode tcp, send-proxy-v2 to both hosts

On the volume: spool/ (root:mail 2775, the mailboxes) and state/ (-S).
On each host, not shared: run/ (-R) and empty/ (-C).
"""
import errno
import fcntl
import os
import pwd
import grp
import random
import re
import signal
import shutil
import socket
import struct
import subprocess
import threading
import time
import warnings
import zlib
from pathlib import Path

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # deprecated in 3.11, still present; for the -f hashes

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
POP3D = os.environ.get("POP3D_BIN", str(REPO / "pop3d"))
FAULT = REPO / "tests" / "fault" / "fault.so"
OUT = REPO / "tests" / "out"

GLUSTER_ADDR = "127.0.0.5"
GLUSTER_PORT = 24007     # the bricks reach glusterd on this port only
HAPROXY_ADDR = "127.0.0.1"
HOST_ADDRS = {"a": "127.0.0.2", "b": "127.0.0.3"}
UNTRUSTED_ADDR = "127.0.0.9"
TRUSTED = "127.0.0.1/32"
VOLUME = "pop3dmh"
ACCOUNT = "pop3dmh"      # the system account the virtual users map to
PRELOGIN = "nobody"
IO_TIMEOUT = 15.0
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}

# What glusterd writes outside its working directory whatever it is told
# (checked on Debian 12's GlusterFS 10.3); new entries are removed at the
# end, so the machine is left as it was found.
GLUSTER_LEFTOVER_DIRS = ("/var/lib/glusterd", "/var/run/gluster",
                         "/var/log/glusterfs")

# GlusterFS's client-side caches are per mount: across two mounts they
# serve stale sizes and contents, which a mailbox shared by several hosts
# cannot afford.  The locks translator (features/locks) is always in a
# brick's graph.
VOLUME_OPTIONS = (
    ("performance.write-behind", "off"),
    ("performance.flush-behind", "off"),
    ("performance.quick-read", "off"),
    ("performance.io-cache", "off"),
    ("performance.read-ahead", "off"),
    ("performance.stat-prefetch", "off"),
    ("performance.open-behind", "off"),
    ("performance.readdir-ahead", "off"),
    ("performance.nl-cache", "off"),
    ("network.ping-timeout", "10"),
)
# The FUSE kernel caches as well: attributes and directory entries are
# kept 1 s by default.
MOUNT_OPTIONS = ("--attribute-timeout=0", "--entry-timeout=0",
                 "--negative-timeout=0")


class Unavailable(Exception):
    """GlusterFS or FUSE cannot run here: the suite skips with this."""


def log(msg):
    print(f"multihost: {msg}", flush=True)


def wait_for(pred, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(step)


def stop_pid(proc, sig=signal.SIGTERM, timeout=10):
    """Stops a process this harness started (a Popen), by its PID."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# pop3d's -L: how long a dotlock without a pid (another host's, as far as
# pop3d can tell) must stay untouched before it is broken.  Short here, so
# that a commit killed on one host does not hold the others for 120 s.
DOTLOCK_STALE = 3


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def kill_pid(pid, sig=signal.SIGTERM, timeout=10):
    """Stops a process this harness started but is not the parent of."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def free_port(addr):
    s = socket.socket()
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(addr, port):
    s = socket.socket()
    s.settimeout(1)
    try:
        s.connect((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def snapshot(dirs):
    seen = set()
    for d in dirs:
        for root, subdirs, files in os.walk(d):
            seen.add(root)
            seen.update(os.path.join(root, n) for n in subdirs + files)
    return seen


def remove_new(dirs, before):
    """Removes what appeared under dirs since snapshot(): files, sockets
    and then the directories, deepest first."""
    new = sorted(snapshot(dirs) - before, key=len, reverse=True)
    for p in new:
        try:
            if os.path.isdir(p) and not os.path.islink(p):
                os.rmdir(p)
            else:
                os.unlink(p)
        except OSError as e:
            log(f"could not remove {p}: {e}")


# ---- GlusterFS ---------------------------------------------------------

def is_mounted(path):
    """From the mount table: os.path.ismount() cannot stat a FUSE mount
    whose client is dead (ENOTCONN) and says False."""
    want = os.path.abspath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            point = re.sub(r"\\([0-7]{3})",
                           lambda m: chr(int(m.group(1), 8)), point)
            if point == want:
                return True
    return False


def unmount_path(path):
    """umount, else (a dead or busy FUSE mount) umount -l, until path is
    no longer a mount point."""
    for lazy in ([], ["-l"], ["-l"]):
        if not is_mounted(path):
            return True
        r = subprocess.run(["umount", *lazy, str(path)], capture_output=True,
                           text=True, env=CHILD_ENV, timeout=30)
        if r.returncode != 0:
            log(f"umount {' '.join(lazy)} {path}: {r.stderr.strip()}")
            time.sleep(0.5)
    return not is_mounted(path)


class Gluster:
    """glusterd, one volume on a scratch brick, and its FUSE mounts."""

    def __init__(self, scratch):
        self.scratch = Path(scratch)
        self.work = self.scratch / "glusterd"
        self.rundir = self.scratch / "glusterd-run"
        self.logdir = self.scratch / "glusterd-log"
        self.sock = self.scratch / "glusterd.socket"
        self.brick = self.scratch / "brick"
        self.volfile = self.scratch / "glusterd.vol"
        self.glusterd = None
        self.created = False
        self.started = False
        self.mounts = {}          # name -> (path, pid of its client)
        self.before = None
        self.extra_pids = []

    def cli(self, *args, check=True, timeout=60):
        argv = ["gluster", f"--glusterd-sock={self.sock}",
                f"--log-file={self.logdir}/cli.log", "--mode=script"] + \
            list(args)
        p = subprocess.run(argv, capture_output=True, text=True,
                           env=CHILD_ENV, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(argv)}: {p.stdout}{p.stderr}\n"
                                 f"{self.log_tail()}")
        return p

    def log_tail(self):
        try:
            return "glusterd.log:\n" + "".join(
                (self.logdir / "glusterd.log").read_text(
                    errors="replace").splitlines(True)[-15:])
        except OSError:
            return ""

    def start(self):
        if not os.path.exists("/dev/fuse"):
            raise Unavailable("no /dev/fuse: FUSE cannot run here")
        try:
            os.close(os.open("/dev/fuse", os.O_RDWR))
        except OSError as e:
            raise Unavailable(f"/dev/fuse cannot be opened: {e}")
        for exe in ("glusterd", "gluster", "glusterfs"):
            assert shutil.which(exe, path=CHILD_ENV["PATH"]), \
                f"{exe} missing: install glusterfs-server and " \
                f"glusterfs-client (tools/deps.sh test)"
        assert not port_open(GLUSTER_ADDR, GLUSTER_PORT), \
            f"{GLUSTER_ADDR}:{GLUSTER_PORT} is taken: another glusterd " \
            f"(or another run of this suite) is running"
        for d in (self.work, self.rundir, self.logdir, self.brick):
            d.mkdir()
        shipped = Path("/etc/glusterfs/glusterd.vol").read_text()
        own = (f"    option working-directory {self.work}\n"
               f"    option run-directory {self.rundir}\n"
               f"    option logging-directory {self.logdir}\n"
               f"    option glusterd-sockfile {self.sock}\n"
               f"    option transport.socket.bind-address {GLUSTER_ADDR}\n")
        text = re.sub(r"(?m)^\s*option (working-directory|"
                      r"transport\.socket\.listen-port|"
                      r"transport\.socket\.bind-address)\b.*\n", "", shipped)
        text = re.sub(r"(?m)^(\s*type mgmt/glusterd\n)",
                      lambda m: m.group(1) + own +
                      f"    option transport.socket.listen-port "
                      f"{GLUSTER_PORT}\n", text, count=1)
        assert str(self.work) in text, text
        self.volfile.write_text(text)
        self.before = snapshot(GLUSTER_LEFTOVER_DIRS)
        err = open(self.logdir / "glusterd.stderr", "wb")
        self.glusterd = subprocess.Popen(
            ["glusterd", "-f", str(self.volfile), "-N",
             "-l", str(self.logdir / "glusterd.log")],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=CHILD_ENV,
            start_new_session=True)
        err.close()
        try:
            wait_for(lambda: self.glusterd.poll() is not None or
                     (self.sock.exists() and
                      port_open(GLUSTER_ADDR, GLUSTER_PORT)), 30,
                     "glusterd to listen")
        except AssertionError:
            raise Unavailable(f"glusterd did not start\n{self.log_tail()}")
        if self.glusterd.poll() is not None:
            raise Unavailable(f"glusterd exited with {self.glusterd.returncode}"
                              f"\n{self.log_tail()}")
        self.cli("volume", "create", VOLUME,
                 f"{GLUSTER_ADDR}:{self.brick}", "force")
        self.created = True
        for k, v in VOLUME_OPTIONS:
            self.cli("volume", "set", VOLUME, k, v)
        self.cli("volume", "start", VOLUME)
        self.started = True
        self.record_daemons()

    def daemon_pids(self):
        """The brick (and self-heal daemon, if any) processes glusterd
        started for this run: their pid files are in our run directory."""
        pids = []
        for pidfile in self.rundir.rglob("*.pid"):
            try:
                pids.append(int(pidfile.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        return pids

    def record_daemons(self):
        for pid in self.daemon_pids():
            if pid not in self.extra_pids:
                self.extra_pids.append(pid)

    def mount(self, name):
        """A FUSE client of the volume on SCRATCH/NAME; returns the path."""
        path = self.scratch / name
        path.mkdir(exist_ok=True)
        pidfile = self.scratch / f"{name}.fuse.pid"
        argv = ["glusterfs", f"--volfile-server={GLUSTER_ADDR}",
                f"--volfile-id={VOLUME}", f"--pid-file={pidfile}",
                f"--log-file={self.logdir}/mount-{name}.log",
                *MOUNT_OPTIONS, str(path)]
        p = subprocess.run(argv, capture_output=True, text=True,
                           env=CHILD_ENV, timeout=60)
        if p.returncode != 0:
            raise Unavailable(f"glusterfs FUSE mount failed: {p.stderr}")
        pid = int(wait_for(lambda: pidfile.exists() and
                           pidfile.read_text().strip(), 10,
                           "the FUSE client's pid file"))
        self.mounts[name] = (path, pid)
        try:
            wait_for(lambda: is_mounted(path), 10, f"{path} mounted")
            os.stat(path)
        except (AssertionError, OSError) as e:
            raise Unavailable(f"glusterfs FUSE mount of {path}: {e}\n"
                              f"{self.log_tail()}")
        return path

    def kill_client(self, name):
        """SIGKILLs the FUSE client of one mount (a host's file-system
        client dying); the mount stays until unmount()."""
        kill_pid(self.mounts[name][1], signal.SIGKILL)

    def unmount(self, name):
        path, pid = self.mounts.pop(name)
        unmount_path(path)
        kill_pid(pid)

    def stop(self):
        for name in list(self.mounts):
            self.unmount(name)
        if self.glusterd is not None and self.glusterd.poll() is None:
            self.record_daemons()
            if self.started:
                self.cli("volume", "stop", VOLUME, check=False)
            if self.created:
                self.cli("volume", "delete", VOLUME, check=False)
        stop_pid(self.glusterd)
        for pid in self.extra_pids:
            kill_pid(pid)
        if self.before is not None:
            remove_new(GLUSTER_LEFTOVER_DIRS, self.before)


# ---- the system account and the password file --------------------------

class Account:
    """One system account of the suite's own, made with useradd and
    removed at the end; virtual users of pop3d's -f file map to it."""

    def __init__(self, scratch):
        self.name = ACCOUNT
        self.made = False
        try:
            pwd.getpwnam(self.name)
            log(f"removing the account {self.name} left by an earlier run")
            subprocess.run(["userdel", self.name], env=CHILD_ENV)
        except KeyError:
            pass
        subprocess.run(["useradd", "--system", "-U", "-M", "-d",
                        "/nonexistent", "-s", "/usr/sbin/nologin", "-c",
                        "pop3d multi-host tests", self.name],
                       check=True, env=CHILD_ENV)
        self.made = True
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.mail_gid = grp.getgrnam("mail").gr_gid
        self.passwd = Path(scratch) / "passwd"
        self.users = {}
        self.passwd.write_text("")
        os.chmod(self.passwd, 0o600)

    def add(self, name, password):
        """A virtual user: name:hash:ACCOUNT: (mailbox from -m)."""
        if name not in self.users:
            self.users[name] = password
            h = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
            with open(self.passwd, "a") as f:
                f.write(f"{name}:{h}:{self.name}:\n")
        return name

    def remove(self):
        if self.made:
            subprocess.run(["userdel", self.name], env=CHILD_ENV)
            try:
                grp.getgrnam(self.name)
                subprocess.run(["groupdel", self.name], env=CHILD_ENV)
            except KeyError:
                pass


# ---- hosts ----------------------------------------------------------------

class Host:
    """A "host": a mount namespace of its own in which its GlusterFS mount
    is at the common path SRV, host-local run and chroot directories, and
    the pop3d launchers it runs."""

    def __init__(self, name, addr, mount, srv, local, account):
        self.name = name
        self.addr = addr
        self.mount = Path(mount)      # this host's mount, seen from here
        self.srv = Path(srv)          # the same, seen from the host
        self.local = Path(local)
        self.account = account
        self.run = self.local / "run"
        self.chroot = self.local / "empty"
        for d in (self.local, self.run):
            d.mkdir(exist_ok=True)
            os.chmod(d, 0o755)
        self.launchers = []
        self.logs = []
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh",
             "-c", 'mount --bind "$0" "$1" && echo ready && exec sleep 86400',
             str(self.mount), str(self.srv)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=CHILD_ENV)
        line = self.holder.stdout.readline()
        assert line == b"ready\n", f"host {name}: namespace not made"

    # -- running things on the host

    def argv(self, argv):
        """argv run inside this host's mount namespace (nsenter execs)."""
        return ["nsenter", "-t", str(self.holder.pid), "-m", "--"] + \
            [str(a) for a in argv]

    def pop3d_args(self, proxy=True, state=True, extra=()):
        a = [POP3D, "-d", "-f", str(self.account.passwd),
             "-m", f"{self.srv}/spool/%u", "-R", str(self.run),
             "-C", str(self.chroot), "-u", PRELOGIN, "-D", "0", "-t", "120",
             "-L", str(DOTLOCK_STALE)]
        if state:
            a += ["-S", f"{self.srv}/state"]
        if proxy:
            a += ["-P", TRUSTED]
        return a + list(extra)

    def launch(self, proxy=True, state=True, extra=()):
        """A systemd-socket-activate launcher on ADDR:PORT; returns it."""
        port = free_port(self.addr)
        n = len(self.logs) + 1
        logf = self.local / f"launcher-{n}.log"
        argv = ["systemd-socket-activate", "--inetd", "-a", "-l",
                f"{self.addr}:{port}"]
        for k, v in CHILD_ENV.items():
            argv += ["-E", f"{k}={v}"]
        argv += self.pop3d_args(proxy, state, extra)
        with open(logf, "wb") as err:
            proc = subprocess.Popen(self.argv(argv), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    env=CHILD_ENV)
        wait_for(lambda: proc.poll() is not None or
                 port_in_listen(self.addr, port), 10,
                 f"launcher on {self.addr}:{port}")
        assert proc.poll() is None, logf.read_text()
        la = Launcher(self, proc, port, logf)
        self.launchers.append(la)
        self.logs.append(logf)
        return la

    def session(self, env_extra=None, extra=(), state=True):
        """pop3d run directly on this host, over a socketpair (peer
        "local": not a trusted network, no PROXY header needed)."""
        env = dict(CHILD_ENV)
        if env_extra:
            env.update(env_extra)
        n = len(self.logs) + 1
        logf = self.local / f"session-{n}.log"
        self.logs.append(logf)
        argv = self.pop3d_args(proxy=True, state=state, extra=extra)
        return Direct(self.argv(["env"] + [f"{k}={v}" for k, v in
                                           env.items()] + argv), logf)

    def spool(self, user=None):
        p = self.mount / "spool"
        return p / user if user else p

    def stop(self):
        for la in self.launchers:
            la.stop()
        stop_pid(self.holder)


def port_in_listen(addr, port):
    """True when something listens on addr:port (without connecting:
    an accepted connection would start a pop3d)."""
    want = f"{socket.inet_aton(addr)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[1] == want and parts[3] == "0A":
                return True
    return False


class Launcher:
    def __init__(self, host, proc, port, logf):
        self.host = host
        self.proc = proc
        self.port = port
        self.logf = logf

    @property
    def log(self):
        return self.logf.read_text(errors="replace")

    def mark(self):
        return self.logf.stat().st_size

    def log_since(self, mark):
        with open(self.logf, "rb") as f:
            f.seek(mark)
            return f.read().decode(errors="replace")

    def children(self):
        """PIDs of the pop3d processes this launcher started."""
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/"
                      "children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def sessions_of(self, uid):
        """Children running as uid: logged-in sessions (the pre-login
        process runs as nobody, the monitor as root)."""
        out = []
        for pid in self.children():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                out.append(pid)
                            break
            except OSError:
                pass
        return out

    def stop(self):
        stop_pid(self.proc)


# ---- POP3 clients ----------------------------------------------------------

class Pop3:
    """A raw POP3 client: over TCP (optionally from a given source
    address, optionally sending a PROXY header first), or over the
    socketpair of a Direct session."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        sock.settimeout(IO_TIMEOUT)

    @classmethod
    def tcp(cls, addr, port, header=None, source="127.0.0.1"):
        s = socket.socket()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.bind((source, 0))
        s.settimeout(IO_TIMEOUT)
        s.connect((addr, port))
        if header:
            s.sendall(header)
        return cls(s)

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _fill(self):
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise EOFError(f"connection closed; have {self.buf!r}")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        i = self.buf.index(b"\r\n") + 2
        out, self.buf = self.buf[:i - 2], self.buf[i:]
        return out.decode("latin-1")

    def cmd(self, c):
        self.send(c + "\r\n")
        return self.line()

    def multi(self, c):
        st = self.cmd(c)
        if not st.startswith("+OK"):
            return st, None
        while b"\r\n.\r\n" not in self.buf and not self.buf.startswith(
                b".\r\n"):
            self._fill()
        if self.buf.startswith(b".\r\n"):
            body, self.buf = b"", self.buf[3:]
        else:
            i = self.buf.index(b"\r\n.\r\n")
            body, self.buf = self.buf[:i + 2], self.buf[i + 5:]
        return st, body

    def login(self, user, password):
        g = self.line()
        assert g.startswith("+OK"), g
        r = self.cmd(f"USER {user}")
        assert r.startswith("+OK"), r
        return self.cmd(f"PASS {password}")

    def until_eof(self):
        """Everything still sent before the server closes."""
        out, self.buf = self.buf, b""
        while True:
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                return out
            if not d:
                return out
            out += d

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class Direct(Pop3):
    """A pop3d started directly (on a host) with a socketpair as its
    stdin and stdout; stderr (pop3d -d) to a log file."""

    def __init__(self, argv, logf):
        parent, child = socket.socketpair()
        self.logf = Path(logf)
        with open(self.logf, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=child.fileno(),
                                         stdout=child.fileno(), stderr=err,
                                         env=CHILD_ENV, close_fds=True)
        child.close()
        super().__init__(parent)

    @property
    def log(self):
        return self.logf.read_text(errors="replace")

    def wait(self, timeout=60):
        return self.proc.wait(timeout)

    def finish(self, timeout=60):
        self.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# ---- PROXY protocol headers -----------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v1(src, dst="127.0.0.2", sport=40000, dport=110, family=None):
    family = family or ("TCP6" if ":" in src else "TCP4")
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def proxy_v2(src=None, dst=None, sport=40000, dport=110, local=False,
             tlvs=b""):
    """A v2 header: PROXY over TCP/IPv4 or TCP/IPv6, or LOCAL."""
    if local:
        return V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", len(tlvs)) \
            + tlvs
    if ":" in src:
        fam = 0x21
        addrs = socket.inet_pton(socket.AF_INET6, src) + \
            socket.inet_pton(socket.AF_INET6, dst or "::1")
    else:
        fam = 0x11
        addrs = socket.inet_aton(src) + socket.inet_aton(dst or "127.0.0.2")
    body = addrs + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


# ---- HAProxy -------------------------------------------------------------

class HAProxy:
    """haproxy -db with two frontends: "lc" (leastconn) and "rr"
    (roundrobin), both to host A and host B with send-proxy-v2."""

    def __init__(self, scratch, backends, name="haproxy", proxy="v2"):
        self.dir = Path(scratch)
        self.cfg = self.dir / f"{name}.cfg"
        self.logf = self.dir / f"{name}.log"
        self.ports = {"lc": free_port(HAPROXY_ADDR),
                      "rr": free_port(HAPROXY_ADDR)}
        send = {"v2": " send-proxy-v2", "v1": " send-proxy", None: ""}[proxy]
        servers = "".join(
            f"    server {h} {addr}:{port}{send} check inter 5s\n"
            for h, (addr, port) in backends.items())
        text = ("global\n"
                "    maxconn 200\n"
                "defaults\n"
                "    mode tcp\n"
                "    timeout connect 5s\n"
                "    timeout client 120s\n"
                "    timeout server 120s\n"
                "    option tcp-check\n"
                "    tcp-check expect string +OK\n")
        for fe, balance in (("lc", "leastconn"), ("rr", "roundrobin")):
            text += (f"listen {fe}\n"
                     f"    bind {HAPROXY_ADDR}:{self.ports[fe]}\n"
                     f"    balance {balance}\n" + servers)
        self.cfg.write_text(text)
        r = subprocess.run(["haproxy", "-c", "-q", "-f", str(self.cfg)],
                           capture_output=True, text=True, env=CHILD_ENV)
        assert r.returncode == 0, f"haproxy -c: {r.stdout}{r.stderr}"
        with open(self.logf, "wb") as err:
            self.proc = subprocess.Popen(
                ["haproxy", "-db", "-f", str(self.cfg)],
                stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                env=CHILD_ENV)
        for fe in self.ports:
            wait_for(lambda: self.proc.poll() is not None or
                     port_in_listen(HAPROXY_ADDR, self.ports[fe]), 10,
                     "haproxy to listen")
        assert self.proc.poll() is None, self.logf.read_text()

    def connect(self, fe="lc"):
        return Pop3.tcp(HAPROXY_ADDR, self.ports[fe])

    def stop(self):
        stop_pid(self.proc)


# ---- mailboxes and deliveries ---------------------------------------------

FROM_LINE = b"From sender@example.org Mon Jan  1 12:00:00 2024\n"
SUBJECT = re.compile(rb"^Subject: mh (\S+)\r?$", re.M)


def message(ident, lines=3):
    """(mbox chunk as delivered, message as RETR serves it, unstuffed)."""
    body = "".join(f"{ident} line {j}\n" for j in range(lines))
    if zlib.crc32(ident.encode()) % 3 == 0:
        body += ".a dotted line\n>From an escaped line\n"
    msg = (f"Received: from mh by test with id {ident}; "
           f"Mon, 1 Jan 2024 12:00:00 +0000\n"
           f"Subject: mh {ident}\n"
           f"Message-ID: <{ident}@mh.example.org>\n\n{body}").encode()
    return FROM_LINE + msg + b"\n", msg.replace(b"\n", b"\r\n")


def unstuff(body):
    return b"\r\n".join(l[1:] if l.startswith(b".") else l
                        for l in body.split(b"\r\n"))


def make_mailbox(path, data, account):
    path = Path(path)
    path.write_bytes(data)
    os.chown(path, account.uid, account.mail_gid)
    os.chmod(path, 0o600)
    return path


def identity(path):
    st = os.stat(path)
    return (st.st_ino, st.st_uid, st.st_gid, st.st_mode, st.st_nlink)


def split_mbox(data, known):
    """The ids of the messages in data, in order; asserts data is exactly
    a concatenation of known chunks."""
    ids, pos = [], 0
    while pos < len(data):
        m = SUBJECT.search(data, pos)
        assert m, f"no message at offset {pos}: {data[pos:pos + 200]!r}"
        ident = m.group(1).decode()
        chunk = known.get(ident)
        assert chunk is not None, f"unknown message {ident!r} at {pos}"
        assert data[pos:pos + len(chunk)] == chunk, \
            f"message {ident} at offset {pos} is torn"
        ids.append(ident)
        pos += len(chunk)
    return ids


def take_dotlock(mbox, timeout=30.0):
    """MBOX.lock by link() (NFS-safe, exclusive across the GlusterFS
    mounts), holding our pid; a lock whose pid is dead is broken at once
    (all "hosts" here share one pid space).  A lock without a pid (pop3d
    writes none on a shared file system, where a pid may be another
    host's) is broken, as procmail breaks locks, once it has been
    untouched for DOTLOCK_STALE seconds: pop3d's -L here."""
    lock = f"{mbox}.lock"
    tmp = f"{mbox}.lock.{os.getpid()}.{threading.get_ident()}"
    deadline = time.monotonic() + timeout
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        while True:
            try:
                os.link(tmp, lock)
                return lock
            except FileExistsError:
                pass
            try:
                pid = int(open(lock).read().split()[0])
                if pid > 0 and not pid_alive(pid):
                    os.unlink(lock)
                    continue
                if pid <= 0 and time.time() - os.stat(lock).st_mtime > \
                        DOTLOCK_STALE:
                    os.unlink(lock)
                    continue
            except (OSError, ValueError, IndexError):
                pass
            assert time.monotonic() < deadline, f"{lock} held too long"
            time.sleep(0.02)
    finally:
        os.unlink(tmp)


def deliver(mbox, chunk):
    """Appends chunk as procmail does: dotlock, O_APPEND, fcntl lock,
    write, fsync, unlock."""
    lock = take_dotlock(mbox)
    try:
        fd = os.open(mbox, os.O_WRONLY | os.O_APPEND)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    assert time.monotonic() < deadline
                    time.sleep(0.02)
            os.write(fd, chunk)
            os.fsync(fd)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        os.unlink(lock)


PROCMAIL = shutil.which("procmail", path=CHILD_ENV["PATH"])
DOTLOCKFILE = shutil.which("dotlockfile", path=CHILD_ENV["PATH"])


def procmail_deliver(mbox, chunk, workdir, timeout=60):
    """procmail -m with a ":0:" recipe: dotlock, F_SETLKW, append."""
    rc = Path(workdir) / f"procmailrc-{threading.get_ident()}"
    if not rc.exists():
        rc.write_text(f"SHELL=/bin/sh\nCOMSAT=no\nLOCKSLEEP=1\n:0:\n{mbox}\n")
    p = subprocess.run([PROCMAIL, "-m", str(rc)], input=chunk,
                       capture_output=True, env=CHILD_ENV, timeout=timeout)
    return p.returncode == 0, p.stderr.decode(errors="replace")


def dotlockfile_deliver(mbox, chunk, timeout=60):
    """liblockfile's dotlockfile -l, an O_APPEND write and fsync under a
    fcntl lock, dotlockfile -u."""
    lock = f"{mbox}.lock"
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run([DOTLOCKFILE, "-l", "-r", "0", lock],
                           capture_output=True, env=CHILD_ENV)
        if p.returncode == 0:
            break
        if time.monotonic() > deadline:
            return False, f"dotlockfile: exit {p.returncode}"
        time.sleep(random.uniform(0.01, 0.05))
    try:
        fd = os.open(mbox, os.O_WRONLY | os.O_APPEND)
        try:
            while True:
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as e:
                    if e.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    time.sleep(0.02)
            os.write(fd, chunk)
            os.fsync(fd)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    finally:
        subprocess.run([DOTLOCKFILE, "-u", lock], env=CHILD_ENV)
    return True, ""


# ---- OFD locks --------------------------------------------------------------

F_OFD_SETLK = 37


def ofd_lock(fd, kind=fcntl.F_WRLCK):
    """F_OFD_SETLK on the whole file; OSError EAGAIN when held."""
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", kind, 0, 0, 0, 0))


def summary(title, figures):
    w = max(len(k) for k in figures)
    text = f"{title}\n" + "".join(f"  {k:<{w}}  {v}\n"
                                  for k, v in figures.items())
    print(text)
    if OUT.is_dir():
        name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        (OUT / f"multihost-{name}.txt").write_text(text)
    return text
