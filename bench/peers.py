"""Set up, start and stop the four POP3 servers of the benchmark.

Everything runs on 127.0.0.1 with one system user (USER, password PASSWORD,
set through chpasswd so the hash is Debian's default yescrypt) and one PAM
stack: a service file per peer in /etc/pam.d with identical contents
(common-auth and common-account).  Each peer gets a free loopback port.

  pop3d      the tree's binary (or --pop3d PATH), as root, -s p3bench-pop3d
             -R SCRATCH/pop3d-run, one process per connection under
             systemd-socket-activate --inetd -a (like xinetd or Accept=yes);
             no "pop3d" account is created, so its pre-login process runs
             as nobody
  popa3d     Debian's package, downloaded with apt-get download and
             unpacked with dpkg-deb -x (it conflicts with the others), run
             in inetd mode under the same launcher; PAM service and
             unprivileged user are fixed by the binary: "popa3d", chroot
             /var/lib/popa3d
  mailutils  GNU mailutils' pop3d --inetd with a private config file (PAM
             service p3bench-mailutils, mailbox /var/mail/${user}), same
             launcher
  dovecot    Dovecot as its own daemon (dovecot -F -c SCRATCH/dovecot.conf),
             base_dir, state_dir and log under SCRATCH, pop3 only, PAM
             service p3bench-dovecot, mbox INBOX=/var/mail/%u with the
             index under SCRATCH/dindex, default process model (one
             pop3-login and one pop3 process per connection)

Setup.cleanup() undoes everything it created, in reverse order: processes
(by PID, waited for), user, groups, PAM files, dirs, the mailbox; it runs
from bench.py's finally, from atexit and on SIGINT/SIGTERM/SIGHUP.  After
a run killed outright, the next one stops the launchers and Dovecot master
it left (PIDS_FILE: PID and start time), removes its scratch dir and
reuses or removes the user, PAM files and popa3d account it finds marked
as the harness's; anything else of that name makes it stop instead.

server_procs(sock) and Probe measure the server side of a client socket
through /proc.
"""

import atexit
import glob
import os
import pwd
import grp
import shutil
import signal
import stat
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"
USER = "p3bench"
PASSWORD = "bench-Pass-4711"
GECOS = "pop3d benchmark user (temporary)"
MAILBOX = "/var/mail/" + USER
CACHE = "/var/tmp/pop3d-bench"
DEB_DIR = os.path.join(CACHE, "debs")
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
PEERS_DIR = os.path.join(BENCH_DIR, ".peers")
PAM_MARK = "# Temporary PAM service of the pop3d benchmark (bench/peers.py)"
PAM_BODY = PAM_MARK + """; removed after the run.
@include common-auth
@include common-account
"""
PACKAGES = ("dovecot-pop3d", "mailutils-pop3d", "systemd", "procps",
            "liblockfile-bin", "util-linux", "xfsprogs", "haproxy",
            "glusterfs-server", "glusterfs-client")
LAUNCHER = "/usr/bin/systemd-socket-activate"
ALL_PEERS = ("pop3d", "popa3d", "dovecot", "mailutils")
# popa3d 1.0.3's compiled-in MAX_MAILBOX_OPEN_BYTES (params.h; Debian's
# README.Debian still quotes the 200,000,000 of older versions, and a
# 1.08 GB mailbox does open).  bench.py reports a refusal above it as
# "refused", not as an error.
POPA3D_LIMIT = 2000000000


class SetupError(Exception):
    """A peer could not be set up or started; the message names it."""


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


def run(cmd, check=True, quiet=False, **kw):
    """Run CMD; its output goes to stderr (progress), never stdout."""
    if not quiet:
        log("$ " + " ".join(cmd))
    out = subprocess.DEVNULL if quiet else sys.stderr
    r = subprocess.run(cmd, stdout=out, stderr=out if quiet else None,
                       stdin=subprocess.DEVNULL, **kw)
    if check and r.returncode != 0:
        raise SetupError("command failed (%d): %s" % (r.returncode,
                                                      " ".join(cmd)))
    return r


def output(cmd):
    return subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                          text=True).stdout.strip()


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---------------------------------------------------------------- /proc

def _tcp_rows():
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    yield line.split()
        except OSError:
            pass


def _addr(field):
    ip, port = field.split(":")
    return ip, int(port, 16)


def _is_loopback(ip_hex):
    if len(ip_hex) == 8:                       # IPv4, little-endian
        return ip_hex.endswith("7F")
    # IPv6: ::1 or ::ffff:127.x.y.z (32 hex digits, word-wise LE)
    return (ip_hex == "00000000000000000000000001000000"
            or (ip_hex.startswith("0000000000000000FFFF0000")
                and ip_hex.endswith("7F")))


def listeners():
    """[(ip_hex, port, inode)] of all listening TCP sockets."""
    out = []
    for r in _tcp_rows():
        if r[3] == "0A":
            ip, port = _addr(r[1])
            out.append((ip, port, r[9]))
    return out


def _inode_pids(inodes):
    """{pid: set(inodes)} of processes holding any of INODES."""
    want = {"socket:[%s]" % i: i for i in inodes}
    found = {}
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        pid = int(fd_dir.split("/")[2])
        for fd in fds:
            try:
                link = os.readlink(fd_dir + "/" + fd)
            except OSError:
                continue
            if link in want:
                found.setdefault(pid, set()).add(want[link])
    return found


# Processes started by Setup (launchers, Dovecot's master): they may hold
# an accepted socket for a moment but are not the per-connection server.
EXCLUDE_PIDS = set()


def server_procs(sock):
    """PIDs of the server-side process(es) of the client socket SOCK."""
    cport = sock.getsockname()[1]
    sport = sock.getpeername()[1]
    inodes = set()
    for r in _tcp_rows():
        lip, lport = _addr(r[1])
        rip, rport = _addr(r[2])
        if (rport == cport and lport == sport and _is_loopback(lip)
                and _is_loopback(rip) and r[9] != "0"):
            inodes.add(r[9])
    if not inodes:
        return []
    me = os.getpid()
    return sorted(p for p in _inode_pids(inodes)
                  if p != me and p not in EXCLUDE_PIDS)


_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_ms(pid):
    """CPU time (user+system) of PID in ms: /proc/PID/schedstat's run time
    in ns where the kernel has it (the same quantity as utime+stime without
    the clock-tick rounding), else utime+stime from /proc/PID/stat."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0]) / 1e6
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) * 1000.0 / _TCK
    except (OSError, ValueError, IndexError):
        return None


def proc_hwm_mib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return None


class Probe:
    """probe(sock, stage) for the client: records, per stage, the CPU time
    and VmHWM of every server-side process of the connection."""

    def __init__(self):
        self.stages = {}

    def __call__(self, sock, stage):
        snap = {}
        for pid in server_procs(sock):
            cpu = proc_cpu_ms(pid)
            hwm = proc_hwm_mib(pid)
            if cpu is not None:
                snap[pid] = (cpu, hwm)
        self.stages[stage] = snap

    def _need(self, stage):
        snap = self.stages.get(stage)
        if not snap:
            raise RuntimeError("no server process found for the client "
                               "socket at probe stage %r" % stage)
        return snap

    def rss_mib(self, stage):
        return max(h for _, h in self._need(stage).values() if h is not None)

    def cpu_ms(self, stage):
        return sum(c for c, _ in self._need(stage).values())

    def cpu_between_ms(self, first, last):
        a = self.stages.get(first, {})
        b = self._need(last)
        return sum(c - (a[p][0] if p in a else 0.0)
                   for p, (c, _) in b.items())


# ---------------------------------------------------------------- peers

class Peer:
    name = None
    pam_service = None
    version = "?"

    def __init__(self, setup):
        self.setup = setup
        self.port = None
        self.proc = None
        self.logfile = None

    def start(self):
        raise NotImplementedError

    def _spawn(self, cmd, logname):
        self.logfile = os.path.join(self.setup.scratch, logname)
        with open(self.logfile, "ab") as lf:
            log("%s: $ %s" % (self.name, " ".join(cmd)))
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=lf,
                                         start_new_session=True)
        _remember(self.proc.pid)

    def log_tail(self, n=15):
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except (OSError, TypeError):
            return ""

    def wait_ready(self, timeout=20.0):
        """Wait until a connection gets a +OK greeting."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SetupError("%s exited with status %s at start:\n%s" % (
                    self.name, self.proc.returncode, self.log_tail()))
            try:
                with socket.create_connection((HOST, self.port), 5) as s:
                    s.settimeout(10)
                    g = s.recv(512)
                    if g.startswith(b"+OK"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return g.decode("ascii", "replace").strip()
                    last = g
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise SetupError("%s: no +OK greeting on %s:%d within %.0f s (%r)\n%s"
                         % (self.name, HOST, self.port, timeout, last,
                            self.log_tail()))

    def busy_pids(self):
        """Per-connection processes of this peer still alive."""
        if self.proc is None:
            return []
        return [p for p in _session_pids(self.proc.pid) if p != self.proc.pid]

    def quiesce(self, timeout=60.0):
        """Wait until no connection of this peer is still being served (a
        server may go on working after its last reply)."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self.busy_pids()
            if not busy:
                return
            if time.monotonic() > deadline:
                raise SetupError("%s: processes %s still running %.0f s after "
                                 "the last session" % (self.name, busy,
                                                       timeout))
            time.sleep(0.01)

    def stop(self):
        """Stop the processes this peer started: its launcher or master by
        PID, then anything left in the session it leads (its per-connection
        children), and wait for them."""
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                log("%s: pid %d did not stop on SIGTERM, killing" % (
                    self.name, p.pid))
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
        deadline = time.monotonic() + 3.0
        while _session_pids(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        _reap_session(p.pid, self.name)
        _forget(p.pid)
        self.proc = None


# The launchers and Dovecot masters a run started, with their start times,
# so that a run after one that was killed (SIGKILL) can stop what it left.
PIDS_FILE = os.path.join(CACHE, "pids")


def _start_time(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_file(update):
    try:
        with open(PIDS_FILE) as f:
            rows = [tuple(line.split()) for line in f if line.strip()]
    except FileNotFoundError:
        rows = []
    rows = update(rows)
    if rows:
        os.makedirs(CACHE, exist_ok=True)
        with open(PIDS_FILE + ".tmp", "w") as f:
            f.writelines("%s %s\n" % r for r in rows)
        os.replace(PIDS_FILE + ".tmp", PIDS_FILE)
    elif os.path.exists(PIDS_FILE):
        os.unlink(PIDS_FILE)


def _remember(pid):
    EXCLUDE_PIDS.add(pid)
    st = _start_time(pid)
    _pid_file(lambda rows: rows + [(str(pid), st or "?")])


def _forget(pid):
    EXCLUDE_PIDS.discard(pid)
    _pid_file(lambda rows: [r for r in rows if r[0] != str(pid)])


def stop_leftovers():
    """Stop the launchers and Dovecot masters (and their sessions) that a
    killed run left, identified by PID and start time."""
    def update(rows):
        for pid, st in rows:
            pid = int(pid)
            if _start_time(pid) == st:
                log("stopping pid %d, left by an interrupted run" % pid)
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + 5
                while _start_time(pid) == st and time.monotonic() < deadline:
                    time.sleep(0.05)
                _reap_session(pid, "pid %d" % pid)
        return []
    _pid_file(update)


def _session_pids(sid):
    out = []
    for st in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(st) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(rest[3]) == sid:                  # field 6: session id
            out.append(int(st.split("/")[2]))
    return out


def _reap_session(sid, name):
    """Terminate what is left of the session SID (which this harness
    created with start_new_session) and wait until it is gone."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = _session_pids(sid)
        if not pids:
            return
        log("%s: stopping leftover processes %s" % (name, pids))
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _session_pids(sid):
            time.sleep(0.05)
    if _session_pids(sid):
        log("%s: processes %s would not stop" % (name, _session_pids(sid)))


class InetdPeer(Peer):
    """A peer run once per connection by systemd-socket-activate."""

    def command(self):
        raise NotImplementedError

    def start(self):
        self.port = free_port()
        self._spawn([LAUNCHER, "--inetd", "-a", "-l",
                     "%s:%d" % (HOST, self.port), "--"] + self.command(),
                    self.name + ".log")
        self.greeting = self.wait_ready()


class Pop3dPeer(InetdPeer):
    name = "pop3d"
    pam_service = "p3bench-pop3d"

    def command(self):
        run_dir = os.path.join(self.setup.scratch, "pop3d-run")
        cmd = [self.setup.pop3d_path, "-s", self.pam_service, "-R", run_dir]
        if self.setup.pop3d_has("S"):
            cmd += ["-S", os.path.join(self.setup.scratch, "pop3d-state")]
        return cmd


def has_option(binary, letter, arg="/"):
    """True when BINARY takes -LETTER ARG (then -V prints its version)."""
    r = subprocess.run([binary, "-" + letter, arg, "-V"],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                       stdin=subprocess.DEVNULL)
    return r.returncode == 0 and r.stdout.startswith(b"pop3d ")


class Popa3dPeer(InetdPeer):
    name = "popa3d"
    pam_service = "popa3d"            # fixed in the binary
    limit = POPA3D_LIMIT

    def command(self):
        return [self.setup.popa3d_path]


class MailutilsPeer(InetdPeer):
    name = "mailutils"
    pam_service = "p3bench-mailutils"

    def command(self):
        conf = os.path.join(self.setup.scratch, "mailutils.conf")
        with open(conf, "w") as f:
            f.write("""# GNU mailutils pop3d for the pop3d benchmark (bench/peers.py)
pam {
  service "%s";
};
auth {
  authentication pam;
  authorization system;
};
mailbox {
  mailbox-pattern "/var/mail/${user}";
  mailbox-type mbox;
};
""" % self.pam_service)
        return ["/usr/sbin/pop3d", "--inetd", "--config-file=" + conf]


class DovecotPeer(Peer):
    name = "dovecot"
    pam_service = "p3bench-dovecot"

    def start(self):
        s = self.setup.scratch
        d = os.path.join(s, "dovecot")
        os.makedirs(d, mode=0o755, exist_ok=True)
        self.port = free_port()
        conf = os.path.join(s, "dovecot.conf")
        with open(conf, "w") as f:
            f.write("""# Dovecot for the pop3d benchmark (bench/peers.py)
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
service pop3-login {
  inet_listener pop3 {
    address = %(host)s
    port = %(port)d
  }
  inet_listener pop3s {
    port = 0
  }
}
""" % {"host": HOST, "d": d, "s": s, "pam": self.pam_service,
                "port": self.port})
        self.logfile = os.path.join(d, "dovecot.log")
        open(self.logfile, "a").close()
        self.proc = None
        log("%s: $ dovecot -F -c %s" % (self.name, conf))
        with open(os.path.join(d, "stderr.log"), "ab") as lf:
            self.proc = subprocess.Popen(["/usr/sbin/dovecot", "-F", "-c",
                                          conf], stdin=subprocess.DEVNULL,
                                         stdout=lf, stderr=lf,
                                         start_new_session=True)
        _remember(self.proc.pid)
        self.greeting = self.wait_ready()

    def busy_pids(self):
        if self.proc is None:
            return []
        out = []
        for pid in _session_pids(self.proc.pid):
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    argv0 = f.read().split(b"\0")[0]
            except OSError:
                continue
            if argv0.startswith(b"dovecot/pop3"):     # pop3-login, pop3
                out.append(pid)
        return out

    def log_tail(self, n=15):
        t = super().log_tail(n)
        try:
            with open(os.path.join(self.setup.scratch, "dovecot",
                                   "stderr.log"), errors="replace") as f:
                t += "".join(f.readlines()[-n:])
        except OSError:
            pass
        return t


PEER_CLASSES = {"pop3d": Pop3dPeer, "popa3d": Popa3dPeer,
                "dovecot": DovecotPeer, "mailutils": MailutilsPeer}


# ---------------------------------------------------------------- setup

class Setup:
    """Packages, user, PAM services, scratch dir, peers; undone by
    cleanup(), which is safe to call more than once."""

    def __init__(self, peer_names, pop3d_path):
        self.peer_names = list(peer_names)
        self.pop3d_path = os.path.abspath(pop3d_path)
        self.undo = []            # (description, function), run LIFO
        self.peers = {}
        self.scratch = None
        self.popa3d_path = None
        self.uid = self.gid = None
        self.mail_gid = grp.getgrnam("mail").gr_gid
        self.mailbox_sig = None   # (src, stat signature) of MAILBOX
        self.versions = {}
        self.pam_note = None
        self._cleaned = False
        self.started = time.time()
        self._opts = {}
        atexit.register(self.cleanup)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def pop3d_has(self, letter):
        """Whether the pop3d under test has option -LETTER (-S: a state
        directory; -P: PROXY networks)."""
        if letter not in self._opts:
            arg = "127.0.0.1/32" if letter == "P" else "/"
            self._opts[letter] = has_option(self.pop3d_path, letter, arg)
        return self._opts[letter]

    def _on_signal(self, signum, frame):
        signal.signal(signum, signal.SIG_IGN)
        raise KeyboardInterrupt("signal %d" % signum)

    # -- packages

    def _installed(self, pkg):
        return output(["dpkg-query", "-W", "-f=${db:Status-Status}",
                       pkg]) == "installed"

    def ensure_packages(self):
        missing = [p for p in PACKAGES if not self._installed(p)]
        if not missing:
            return
        before = {(ip, port) for ip, port, _ in listeners()}
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        created_policy = False
        if not os.path.exists("/usr/sbin/policy-rc.d"):
            with open("/usr/sbin/policy-rc.d", "w") as f:
                f.write("#!/bin/sh\n# pop3d benchmark: no service starts "
                        "during its apt-get install\nexit 101\n")
            os.chmod("/usr/sbin/policy-rc.d", 0o755)
            created_policy = True
        try:
            log("installing " + " ".join(missing))
            r = run(["apt-get", "install", "-y", "--no-install-recommends"]
                    + missing, check=False, env=env)
            if r.returncode != 0:
                run(["apt-get", "update"], env=env)
                run(["apt-get", "install", "-y", "--no-install-recommends"]
                    + missing, env=env)
        finally:
            if created_policy:
                os.unlink("/usr/sbin/policy-rc.d")
        new = [(ip, port) for ip, port, _ in listeners()
               if port in (110, 995) and (ip, port) not in before]
        if new:
            raise SetupError(
                "after apt-get install something listens on port(s) %s that "
                "this harness did not start: a package started its daemon "
                "despite policy-rc.d.  Stop it yourself (systemctl stop "
                "dovecot mailutils-pop3d, or find it with ss -ltnp) and run "
                "the benchmark again." % sorted({p for _, p in new}))

    def fetch_popa3d(self):
        os.makedirs(DEB_DIR, exist_ok=True)
        debs = sorted(glob.glob(os.path.join(DEB_DIR, "popa3d_*.deb")))
        if not debs:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            r = run(["apt-get", "-o", "APT::Sandbox::User=root", "download",
                     "popa3d"], check=False, cwd=DEB_DIR, env=env)
            if r.returncode != 0:
                run(["apt-get", "update"], env=env)
                run(["apt-get", "-o", "APT::Sandbox::User=root", "download",
                     "popa3d"], cwd=DEB_DIR, env=env)
            debs = sorted(glob.glob(os.path.join(DEB_DIR, "popa3d_*.deb")))
            if not debs:
                raise SetupError("popa3d: apt-get download left no .deb in "
                                 + DEB_DIR)
        deb = debs[-1]
        ver = output(["dpkg-deb", "-f", deb, "Version"])
        dest = os.path.join(PEERS_DIR, "popa3d_" + ver)
        binary = os.path.join(dest, "usr", "sbin", "popa3d")
        if not os.path.exists(binary):
            tmp = dest + ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
            run(["dpkg-deb", "-x", deb, tmp])
            os.replace(tmp, dest)
        self.popa3d_path = binary
        self.versions["popa3d"] = ver + " (unpacked from " + \
            os.path.basename(deb) + ")"

    # -- undo bookkeeping

    def _later(self, what, fn):
        self.undo.append((what, fn))

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        errors = []
        while self.undo:
            what, fn = self.undo.pop()
            try:
                fn()
            except Exception as e:       # keep undoing the rest
                errors.append("%s: %s" % (what, e))
        for e in errors:
            log("cleanup: " + e)
        if errors:
            log("cleanup: %d step(s) failed; see above" % len(errors))

    # -- user, PAM, dirs

    def _make_user(self):
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            pw = None
        if pw is not None:
            if pw.pw_gecos != GECOS:
                raise SetupError("user %s exists and is not this harness's; "
                                 "not touching it" % USER)
            procs = self._user_procs(pw.pw_uid)
            if procs:
                raise SetupError(
                    "user %s, left by an interrupted benchmark, still has "
                    "processes %s; stop them (or reboot), then run again"
                    % (USER, procs))
            log("removing %s left by an interrupted run" % USER)
            run(["userdel", USER], check=False)
        home = os.path.join(self.scratch, "home")
        self._later("user " + USER, self._del_user)
        run(["useradd", "-m", "-d", home, "-s", "/usr/sbin/nologin",
             "-c", GECOS, "-U", USER])
        r = subprocess.run(["chpasswd"], input="%s:%s\n" % (USER, PASSWORD),
                           text=True, stdout=sys.stderr, stderr=sys.stderr)
        if r.returncode != 0:
            raise SetupError("chpasswd failed for " + USER)
        pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        h = output(["getent", "shadow", USER]).split(":")[1]
        log("user %s uid %d, password hash %s..." % (USER, self.uid, h[:4]))

    def _user_procs(self, uid):
        out = []
        for st in glob.glob("/proc/[0-9]*/status"):
            try:
                with open(st) as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                out.append(int(st.split("/")[2]))
                            break
            except (OSError, ValueError):
                pass
        return out

    def _del_user(self):
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return
        r = run(["userdel", USER], check=False)
        if r.returncode != 0:
            time.sleep(1)
            run(["userdel", USER])
        try:
            grp.getgrnam(USER)
            run(["groupdel", USER], check=False)
        except KeyError:
            pass

    def _pam_file(self, service):
        path = "/etc/pam.d/" + service
        if os.path.exists(path):
            with open(path) as f:
                text = f.read()
            if service == "popa3d" and PAM_MARK not in text:
                log("using the existing /etc/pam.d/popa3d (not ours)")
                self.pam_note = "/etc/pam.d/popa3d existed and was used as is"
                return
            if PAM_MARK not in text:
                raise SetupError("/etc/pam.d/%s exists and is not this "
                                 "harness's; not touching it" % service)
        self._later(path, lambda: os.path.exists(path) and os.unlink(path))
        with open(path, "w") as f:
            f.write(PAM_BODY)

    def _system_user(self, name, home):
        """A system account `name` for the run, made and later removed
        unless the machine already has one of its own.  Returns "own"
        when it is the machine's, "left" when an interrupted run left
        it, "made" when made now."""
        comment = "%s for the pop3d benchmark (temporary)" % name
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            pw = None
        if pw is not None and pw.pw_gecos != comment:
            log("using the existing %s user" % name)
            return "own"
        self._later("user " + name, lambda: (
            run(["userdel", name], check=False),
            _groupdel_if(name)))
        if pw is not None:
            log("reusing the %s user left by an interrupted run" % name)
            return "left"
        run(["useradd", "--system", "-U", "-d", home, "-M",
             "-s", "/usr/sbin/nologin", "-c", comment, name])
        return "made"

    def _popa3d_user(self):
        if self._system_user("popa3d", "/var/lib/popa3d") == "left":
            self._later("/var/lib/popa3d", _rmdir_if_empty)
        if not os.path.isdir("/var/lib/popa3d"):
            self._later("/var/lib/popa3d", _rmdir_if_empty)
            os.mkdir("/var/lib/popa3d", 0o755)
            os.chown("/var/lib/popa3d", 0, 0)

    def _pop3d_user(self):
        """The pre-login account `make install` creates for pop3d, so
        that pop3d runs as installed (without it, it falls back to
        nobody and looks the account up through every NSS source on
        each connection)."""
        self._system_user("pop3d", "/nonexistent")

    def _mkdir(self, path, uid=0, gid=0, mode=0o755):
        os.makedirs(path, exist_ok=True)
        os.chown(path, uid, gid)
        os.chmod(path, mode)

    # -- the whole setup

    def start(self):
        if os.geteuid() != 0:
            raise SetupError("the benchmark must run as root (PAM, users, "
                             "/var/mail)")
        if not os.access(self.pop3d_path, os.X_OK):
            raise SetupError("pop3d: no executable at %s (make all, or "
                             "--pop3d PATH)" % self.pop3d_path)
        self.ensure_packages()
        if "popa3d" in self.peer_names:
            self.fetch_popa3d()
        for path in (LAUNCHER, "/usr/sbin/dovecot", "/usr/sbin/pop3d"):
            if not os.access(path, os.X_OK):
                raise SetupError("missing " + path)
        os.makedirs(CACHE, exist_ok=True)
        stop_leftovers()
        # Scratch dirs of runs that were killed (bench.py holds the lock,
        # so no other run is using one).
        for old in glob.glob(os.path.join(CACHE, "run.*")):
            log("removing %s, left by an interrupted run" % old)
            shutil.rmtree(old, ignore_errors=True)
        self.scratch = tempfile.mkdtemp(prefix="run.", dir=CACHE)
        os.chmod(self.scratch, 0o755)
        scratch = self.scratch
        self._later("scratch " + scratch,
                    lambda: shutil.rmtree(scratch, ignore_errors=True))
        self._later("mailbox", self._remove_mailbox)
        self._make_user()
        for n in self.peer_names:
            self._pam_file(PEER_CLASSES[n].pam_service)
        if "popa3d" in self.peer_names:
            self._popa3d_user()
        if "pop3d" in self.peer_names:
            self._pop3d_user()
        self._mkdir(os.path.join(scratch, "pop3d-run"), mode=0o755)
        self._mkdir(os.path.join(scratch, "pop3d-state"), mode=0o755)
        self._mkdir(os.path.join(scratch, "dmail"), self.uid, self.gid, 0o755)
        self._mkdir(os.path.join(scratch, "dmail", USER), self.uid,
                    self.gid, 0o700)
        self._mkdir(os.path.join(scratch, "dindex"), self.uid, self.gid,
                    0o755)
        self._versions()
        for n in self.peer_names:
            peer = PEER_CLASSES[n](self)
            self.peers[n] = peer
            self._later("peer " + n, peer.stop)
            try:
                peer.start()
            except SetupError:
                raise
            except Exception as e:
                raise SetupError("%s failed to start: %s" % (n, e))
            log("%s listening on %s:%d: %s" % (n, HOST, peer.port,
                                               peer.greeting))
        self._check_loopback_only()

    def _check_loopback_only(self):
        """Every listening socket of the processes started here must be on
        a loopback address."""
        mine = set()
        for p in self.peers.values():
            if p.proc:
                mine.update(_session_pids(p.proc.pid))
        ls = listeners()
        holders = _inode_pids([ino for _, _, ino in ls])
        for ip, port, ino in ls:
            pids = [pid for pid, inos in holders.items() if ino in inos]
            if any(pid in mine for pid in pids) and not _is_loopback(ip):
                raise SetupError("a peer listens on a non-loopback address "
                                 "(port %d, pids %s)" % (port, pids))

    def _versions(self):
        v = self.versions
        v["dovecot"] = "dovecot-core " + output(
            ["dpkg-query", "-W", "-f=${Version}", "dovecot-core"])
        v["mailutils"] = "mailutils-pop3d " + output(
            ["dpkg-query", "-W", "-f=${Version}", "mailutils-pop3d"])
        src = os.path.dirname(self.pop3d_path)
        desc = output(["git", "-C", src, "describe", "--always", "--dirty",
                       "--tags"])
        v["pop3d"] = "%s (git %s)" % (self.pop3d_path, desc or "?")
        v["launcher"] = "systemd-socket-activate (systemd " + output(
            ["dpkg-query", "-W", "-f=${Version}", "systemd"]) + ")"

    # -- the mailbox

    def _remove_mailbox(self):
        for p in [MAILBOX, MAILBOX + ".lock", MAILBOX + ".p3bench-tmp"] + \
                glob.glob(MAILBOX + ".pop3d-*"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        # Temporary files a server killed at cleanup left in the spool
        # (mailutils rewrites through /var/mail/muXXXXXX): regular files
        # owned by the benchmark's own user, created during this run.
        if self.uid is None:
            return
        for name in os.listdir("/var/mail"):
            p = os.path.join("/var/mail", name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            if st.st_uid == self.uid and stat.S_ISREG(st.st_mode) and \
                    st.st_mtime >= self.started - 1:
                log("removing %s, left by a server of this run" % p)
                os.unlink(p)

    def _sig(self):
        try:
            st = os.stat(MAILBOX)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def clear_caches(self):
        """Forget every server's index of the mailbox."""
        for p in glob.glob(MAILBOX + ".pop3d-*"):
            os.unlink(p)
        # pop3d's state directory (-S): index, and a session lock no
        # session holds (all are quiesced); the files, not the per-user
        # directories root makes.
        for root, _, files in os.walk(os.path.join(self.scratch,
                                                   "pop3d-state")):
            for name in files:
                os.unlink(os.path.join(root, name))
        idx = os.path.join(self.scratch, "dindex", USER)
        shutil.rmtree(idx, ignore_errors=True)

    def quiesce(self):
        for p in self.peers.values():
            p.quiesce()

    def reset_mailbox(self, src, force=False, fresh=False):
        """Put a pristine copy of SRC at MAILBOX (p3bench:mail 0660) unless
        it is already there untouched, drop stale locks and journals, warm
        the page cache; FRESH also drops the servers' indexes."""
        self.quiesce()
        for p in (MAILBOX + ".lock", MAILBOX + ".pop3d-journal"):
            if os.path.exists(p):
                os.unlink(p)
        if force or self.mailbox_sig != (src, self._sig()):
            tmp = MAILBOX + ".p3bench-tmp"
            try:
                shutil.copyfile(src, tmp)
                os.chown(tmp, self.uid, self.mail_gid)
                os.chmod(tmp, 0o660)
                # An mtime in the past, as for a mailbox not delivered to in
                # the last hour: popa3d waits until the clock has passed the
                # mtime second, and a copy made just now would make it wait.
                past = time.time() - 3600
                os.utime(tmp, (past, past))
                os.replace(tmp, MAILBOX)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            os.sync()                # no write-back during measurements
            self.mailbox_sig = (src, self._sig())
        if fresh:
            self.clear_caches()
        with open(MAILBOX, "rb", buffering=0) as f:
            buf = bytearray(4 << 20)
            while f.readinto(buf):
                pass


def _rmdir_if_empty(path="/var/lib/popa3d"):
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        log("not removing %s: %s" % (path, e))


def _groupdel_if(name):
    try:
        grp.getgrnam(name)
    except KeyError:
        return
    run(["groupdel", name], check=False)
