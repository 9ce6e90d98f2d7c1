"""The shipped fail2ban filter and jail (fail2ban/filter.d/pop3d.conf,
fail2ban/jail.d/pop3d.conf) against what pop3d really logs.

1. fail2ban-regex: every kind of failure (wrong password, unknown user,
   AUTH PLAIN, AUTH LOGIN, APOP, the third failure, invalid commands) and
   what must never ban (a login, a temporary failure of PAM, the summary
   "too many failed logins", a connection, the "session end:" line that
   ends every session), from a client named by the socket (TCP
   from 127.0.0.7 and ::1), by REMOTE_ADDR (systemd), by REMOTE_HOST
   (stunnel exec=, xinetd, IPv6), or by nothing ("local").  pop3d runs
   with -d under the harness; each line it writes to stderr is given the
   prefix syslog writes ("Dec  1 12:00:00 mail pop3d[PID]: ") and the test
   asserts, line by line, which lines fail2ban counts and for which
   address.  A known user whose name is "x from 10.9.9.9" must get the
   client banned, never 10.9.9.9.
2. End to end: rsyslogd (a scratch configuration, its socket in a scratch
   directory) writes the mail facility to a scratch file; pop3d runs
   without -d in a private mount namespace (unshare -m) where that
   directory is mounted over /dev, so its syslog(3) reaches the scratch
   rsyslogd and the machine's /dev is untouched; fail2ban-server runs the
   shipped jail over the file with a dummy action that records bans.

Every daemon is the test's own, in a scratch directory, stopped by its pid.
"""
import base64
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (IO_TIMEOUT, POP3D, REPO, PeerServer, Server,
                      hash_password, tcp_pair)

FILTER = REPO / "fail2ban" / "filter.d" / "pop3d.conf"
JAIL = REPO / "fail2ban" / "jail.d" / "pop3d.conf"
ETC_F2B = Path("/etc/fail2ban")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
F2B_REGEX = shutil.which("fail2ban-regex", path=PATH)
F2B_SERVER = shutil.which("fail2ban-server", path=PATH)
F2B_CLIENT = shutil.which("fail2ban-client", path=PATH)
RSYSLOGD = shutil.which("rsyslogd", path=PATH)
UNSHARE = shutil.which("unshare", path=PATH)

pytestmark = pytest.mark.skipif(
    F2B_REGEX is None or not (ETC_F2B / "filter.d" / "common.conf").exists(),
    reason="needs fail2ban (apt-get install fail2ban)")

AUTH_FAIL = "-ERR [AUTH] Authentication failed"
AUTH_LAST = "-ERR [AUTH] Authentication failed; too many failures, closing"
AUTH_TEMP = "-ERR [SYS/TEMP] Authentication is unavailable, try again later"
APOP_SECRET = "Wombat-71c3"
INJECTED = "x from 10.9.9.9"     # a known user's name that looks like a peer


# ---- pop3d sessions with a chosen client address -----------------------------

# How the client reaches pop3d, and the PEER pop3d must log for it.
PEERS = {
    "tcp4": ("tcp", "127.0.0.7", "127.0.0.7"),
    "tcp6": ("tcp", "::1", "::1"),
    "remote_addr": ("REMOTE_ADDR", "203.0.113.5", "203.0.113.5"),
    "remote_host": ("REMOTE_HOST", "198.51.100.9", "198.51.100.9"),
    "remote_host6": ("REMOTE_HOST", "2001:db8::25", "2001:db8::25"),
    "local": (None, None, "local"),
}


def start_session(env, peer, args=(), timeout=30, argv=None, penv=None):
    """Starts pop3d for a client as PEERS[peer] describes; registers it
    with the harness (whose cleanup checks it for sanitizer reports)."""
    how, addr, _ = PEERS[peer]
    if argv is None:
        argv = env.argv(args, timeout)
    e = env.env() if penv is None else penv
    env._nlogs += 1
    log = env.tmp / f"pop3d-{env._nlogs}.log"
    if how == "tcp":
        client, child = tcp_pair(addr)
        srv = PeerServer(argv, e, log, client, child)
    else:
        if how is not None:
            e = dict(e, **{how: addr})
        srv = Server(argv, e, log)
    env.servers.append(srv)
    return srv


def greeting_stamp(srv):
    g = srv.reply()
    assert g.startswith("+OK pop3d ready"), g
    m = re.search(r"<[^>]*>", g)
    return m.group(0) if m else None


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def quit_session(srv):
    assert srv.cmd("QUIT").startswith("+OK pop3d signing off")
    srv.read_until_eof()


def s_wrong_password(srv):
    greeting_stamp(srv)
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS wrong") == AUTH_FAIL
    quit_session(srv)


def s_unknown_user(srv):
    greeting_stamp(srv)
    assert srv.cmd("USER mallory") == "+OK Send your password"
    assert srv.cmd("PASS secret") == AUTH_FAIL
    quit_session(srv)


def s_auth_plain(srv):
    greeting_stamp(srv)
    assert srv.cmd("AUTH PLAIN " + plain("alice", "wrong")) == AUTH_FAIL
    assert srv.cmd("AUTH PLAIN " + plain("mallory", "x")) == AUTH_FAIL
    quit_session(srv)


def s_auth_login(srv):
    greeting_stamp(srv)
    for user, password in (("alice", "wrong"), ("mallory", "x")):
        assert srv.cmd("AUTH LOGIN") == "+ VXNlcm5hbWU6"
        assert srv.cmd(base64.b64encode(user.encode()).decode()) == \
            "+ UGFzc3dvcmQ6"
        assert srv.cmd(base64.b64encode(password.encode()).decode()) == \
            AUTH_FAIL
    quit_session(srv)


def s_apop(srv):
    stamp = greeting_stamp(srv)
    assert stamp is not None, "no APOP timestamp in the greeting"
    wrong = hashlib.md5((stamp + APOP_SECRET + "x").encode()).hexdigest()
    assert srv.cmd(f"APOP alice {wrong}") == AUTH_FAIL
    right = hashlib.md5((stamp + APOP_SECRET).encode()).hexdigest()
    assert srv.cmd(f"APOP mallory {right}") == AUTH_FAIL
    quit_session(srv)


def s_three_failures(srv):
    greeting_stamp(srv)
    for i, r in enumerate([AUTH_FAIL, AUTH_FAIL, AUTH_LAST]):
        assert srv.cmd("USER alice") == "+OK Send your password"
        assert srv.cmd(f"PASS wrong{i}") == r
    assert srv.read_until_eof() == b""


def s_invalid_commands(srv):
    greeting_stamp(srv)
    srv.send(b"FOO\r\n" * 20)
    out = srv.read_until_eof()
    assert out.count(b"-ERR") == 20, out


def s_tempfail(srv):
    greeting_stamp(srv)
    for _ in range(2):
        assert srv.cmd("USER alice") == "+OK Send your password"
        assert srv.cmd("PASS secret") == AUTH_TEMP
    quit_session(srv)


def s_login_ok(srv):
    greeting_stamp(srv)
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret").startswith("+OK Maildrop has 0 messages")
    quit_session(srv)


def s_injected_name(srv):
    greeting_stamp(srv)
    assert srv.cmd("AUTH PLAIN " + plain(INJECTED, "wrong")) == AUTH_FAIL
    quit_session(srv)


def s_disconnect(srv):
    greeting_stamp(srv)
    srv.close()


def s_timeout(srv):
    greeting_stamp(srv)
    srv.read_until_eof(timeout=IO_TIMEOUT)


def write_secret_file(env, name, text, mode=0o600):
    p = env.tmp / name
    p.write_text(text)
    os.chown(p, 0, 0)
    os.chmod(p, mode)
    return p


def summary(end, user="-", left="0/0"):
    """The summary line that ends every session (its time= made T by
    stderr_lines): never counted, whatever the mode."""
    return (f"session end: user={user} peer={{peer}} end={end} retr=0/0 "
            f"top=0/0 dele=0/0 left={left} time=T", None)


# Each case: (driver, extra pop3d options, timeout, the lines pop3d must
# log, each with what the filter must make of it: "ban" (normal mode),
# "aggressive" (only with mode = aggressive) or None).
def cases(env):
    apop = write_secret_file(env, "apop", f"alice:{APOP_SECRET}\n")
    vpass = write_secret_file(
        env, "vpasswd", f"{INJECTED}:{hash_password('right')}:alice:\n")
    missing = env.tmp / "no-such-passwd"
    why = f"open {missing}: No such file or directory"
    conn = ("connection from {peer}", None)
    return {
        "wrong password": (s_wrong_password, [], 30, [
            conn, ("login failed: alice from {peer}", "ban"),
            summary("quit")]),
        "unknown user": (s_unknown_user, [], 30, [
            conn, ("login failed: unknown user from {peer}", "ban"),
            summary("quit")]),
        "AUTH PLAIN": (s_auth_plain, [], 30, [
            conn, ("login failed: alice from {peer}", "ban"),
            ("login failed: unknown user from {peer}", "ban"),
            summary("quit")]),
        "AUTH LOGIN": (s_auth_login, [], 30, [
            conn, ("login failed: alice from {peer}", "ban"),
            ("login failed: unknown user from {peer}", "ban"),
            summary("quit")]),
        "APOP": (s_apop, ["-A", str(apop)], 30, [
            conn, ("login failed: alice from {peer}", "ban"),
            ("login failed: unknown user from {peer}", "ban"),
            summary("quit")]),
        "too many failures": (s_three_failures, [], 30, [
            conn, ("login failed: alice from {peer}", "ban"),
            ("login failed: alice from {peer}", "ban"),
            ("login failed: alice from {peer}", "ban"),
            ("too many failed logins from {peer}", None),
            summary("authfail")]),
        "invalid commands": (s_invalid_commands, [], 30, [
            conn, ("too many invalid commands from {peer}", "ban"),
            summary("abuse")]),
        "tempfail": (s_tempfail, ["-f", str(missing)], 30, [
            conn, (why, None),
            ("login failed from {peer}: authentication unavailable", None),
            (why, None),
            ("login failed from {peer}: authentication unavailable", None),
            summary("quit")]),
        "login ok": (s_login_ok, [], 30, [
            conn, ("login ok: alice from {peer}", None),
            ("alice: 0 messages (0 octets) loaded", None),
            ("alice: 0 (0) deleted, 0 (0) left", None),
            summary("quit", user="alice")]),
        "injected name": (s_injected_name, ["-f", str(vpass)], 30, [
            conn, (f"login failed: {INJECTED} from {{peer}}", "ban"),
            summary("quit")]),
        "disconnect": (s_disconnect, [], 30, [
            conn, ("premature disconnect, before login from {peer}",
                   "aggressive"),
            summary("disconnect")]),
        "timeout": (s_timeout, [], 1, [
            conn, ("timeout, before login from {peer}", "aggressive"),
            summary("timeout")]),
    }


def syslog_line(pid, text):
    """The line rsyslog's traditional format writes for one syslog(3) call
    of pop3d (openlog ident "pop3d", LOG_PID)."""
    return time.strftime("%b %e %H:%M:%S") + f" mail pop3d[{pid}]: {text}"


def stderr_lines(srv):
    """What pop3d logged (pam_wrapper's own complaints left out: they are
    the test tool's, never sent to syslog)."""
    lines = [l for l in srv.log.splitlines() if not l.startswith("PWRAP_")]
    for line in lines:
        assert line.startswith("pop3d: "), (line, srv.log)
    return [line[len("pop3d: "):] for line in lines]


def without_time(line):
    """A summary line with its duration made T, for comparisons."""
    return re.sub(r"^(session end: .* time=)\d+\.\d{3}s$", r"\1T", line)


def f2b_confdir(tmp):
    """A fail2ban configuration directory with Debian's common.conf and
    paths, Debian's jail.conf (all its jails off), and the shipped filter
    and jail: what /etc/fail2ban holds once they are installed."""
    d = tmp / "fail2ban"
    (d / "filter.d").mkdir(parents=True)
    (d / "action.d").mkdir()
    (d / "jail.d").mkdir()
    shutil.copy(ETC_F2B / "filter.d" / "common.conf", d / "filter.d")
    for name in ("jail.conf", "paths-common.conf", "paths-debian.conf"):
        shutil.copy(ETC_F2B / name, d)
    shutil.copy(FILTER, d / "filter.d" / "pop3d.conf")
    shutil.copy(JAIL, d / "jail.d" / "pop3d.conf")
    return d


def fail2ban_regex(logfile, filt):
    """Runs fail2ban-regex; returns (matched lines, missed lines, the
    address of each match in order, the summary line)."""
    def run(*opts):
        r = subprocess.run([F2B_REGEX, *opts, str(logfile), filt],
                           capture_output=True, text=True, timeout=120,
                           env={"PATH": PATH, "LANG": "C.UTF-8"})
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        return r.stdout
    out = run("--print-all-matched", "--print-all-missed")
    summary = re.search(r"(?m)^Lines: .*$", out).group(0)
    sections = {}
    for m in re.finditer(r"(?ms)^\|- (Matched|Missed) line\(s\):\n(.*?)^`-",
                         out):
        sections[m.group(1)] = [l[3:] for l in m.group(2).splitlines()]
    ips = run("-o", "ip").splitlines()
    return (sections.get("Matched", []), sections.get("Missed", []), ips,
            summary)


@pytest.mark.parametrize("peer", list(PEERS))
def test_filter_matches_what_pop3d_logs(pop3d_env, peer):
    env = pop3d_env
    logged, expect = [], []
    for name, (drive, args, timeout, want) in cases(env).items():
        srv = start_session(env, peer, args, timeout)
        drive(srv)
        srv.wait()
        got = stderr_lines(srv)
        shown = PEERS[peer][2]
        assert [without_time(l) for l in got] == \
            [t.format(peer=shown) for t, _ in want], \
            f"{name}: pop3d logged\n{srv.log}"
        # The lines as logged, summary's time included, go to the filter.
        for text, (_, verdict) in zip(got, want):
            logged.append(syslog_line(srv.proc.pid, text))
            expect.append(verdict)
    logfile = env.tmp / "mail.log"
    logfile.write_text("".join(l + "\n" for l in logged))
    # Never a host name: "local" (and anything not an address) is no ban.
    addr = PEERS[peer][2] if peer != "local" else None
    filt = str(env.tmp / "fail2ban" / "filter.d" / "pop3d.conf")
    f2b_confdir(env.tmp)
    for mode, counted in (("normal", {"ban"}),
                          ("aggressive", {"ban", "aggressive"})):
        matched, missed, ips, summary = fail2ban_regex(
            logfile, filt if mode == "normal" else f"{filt}[mode={mode}]")
        print(f"{peer}, mode {mode}: {summary}")
        want_matched = [l for l, v in zip(logged, expect)
                        if v in counted and addr is not None]
        want_missed = [l for l in logged if l not in want_matched]
        assert matched == want_matched, (mode, summary)
        assert missed == want_missed, (mode, summary)
        assert ips == [addr] * len(want_matched), (mode, ips)
        assert summary == (f"Lines: {len(logged)} lines, 0 ignored, "
                           f"{len(want_matched)} matched, "
                           f"{len(want_missed)} missed"), summary


# ---- 2. end to end: rsyslogd, pop3d under syslog, fail2ban-server ------------

MAXRETRY = 4
WAIT = 60.0     # a generous bound for a daemon to catch up; never a timing


def wait_for(what, cond, deadline=WAIT, procs=()):
    end = time.monotonic() + deadline
    while True:
        v = cond()
        if v:
            return v
        for p, log in procs:
            assert p.poll() is None, \
                f"{p.args[0]} exited with {p.returncode}:\n" + \
                log.read_text(errors="replace")
        assert time.monotonic() < end, f"waited {deadline}s for {what}"
        time.sleep(0.1)


def stop_pid(proc):
    """Ends one daemon the test started, by its pid."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def unshare_works():
    if UNSHARE is None:
        return False
    r = subprocess.run([UNSHARE, "-m", "--propagation", "private", "true"],
                       capture_output=True, env={"PATH": PATH})
    return r.returncode == 0


@pytest.fixture
def syslog(tmp_path):
    """rsyslogd on a socket of its own, writing facility mail to a file in
    traditional format (as Debian's /var/log/mail.log): (dev directory
    holding the socket "log", the log file)."""
    if RSYSLOGD is None:
        pytest.skip("needs rsyslog (apt-get install rsyslog)")
    if not unshare_works():
        pytest.skip("needs unshare -m (a private mount namespace)")
    d = tmp_path / "syslog"
    dev = d / "dev"
    dev.mkdir(parents=True)
    # Mount points for the device nodes pop3d's namespace borrows.
    for n in ("null", "zero", "random", "urandom"):
        (dev / n).touch()
    logfile = d / "mail.log"
    conf = d / "rsyslog.conf"
    conf.write_text(
        f'global(workDirectory="{d}")\n'
        # Never the machine's /dev/log: only the scratch socket.
        'module(load="imuxsock" SysSock.Use="off")\n'
        f'input(type="imuxsock" Socket="{dev}/log")\n'
        f'mail.* action(type="omfile" file="{logfile}" '
        'template="RSYSLOG_TraditionalFileFormat")\n')
    err = d / "rsyslogd.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [RSYSLOGD, "-f", str(conf), "-i", str(d / "rsyslogd.pid"), "-n"],
            stdin=subprocess.DEVNULL, stdout=f, stderr=f,
            env={"PATH": PATH})
    try:
        wait_for("rsyslogd's socket", (dev / "log").is_socket,
                 procs=[(proc, err)])
        yield dev, logfile, (proc, err)
    finally:
        stop_pid(proc)


def f2b_client(conf, sock, *args):
    r = subprocess.run([F2B_CLIENT, "-c", str(conf), "-s", str(sock), *args],
                       capture_output=True, text=True, timeout=60,
                       env={"PATH": PATH, "LANG": "C.UTF-8"})
    return r.returncode, r.stdout, r.stderr


def jail_status(conf, sock):
    """(total failed, currently banned, banned list) of the pop3d jail."""
    rc, out, err = f2b_client(conf, sock, "status", "pop3d")
    assert rc == 0, out + err
    total = int(re.search(r"Total failed:\s*(\d+)", out).group(1))
    banned = int(re.search(r"Currently banned:\s*(\d+)", out).group(1))
    ips = re.search(r"Banned IP list:\s*(.*)$", out, re.M).group(1).split()
    return total, banned, ips


@pytest.fixture
def fail2ban(tmp_path, syslog):
    """fail2ban-server with the shipped filter and jail, overridden by a
    jail.local only for the test's log file, polling, MAXRETRY, and an
    action that appends each banned address to a file.  Yields (config
    dir, socket, bans file)."""
    if F2B_SERVER is None or F2B_CLIENT is None:
        pytest.skip("needs fail2ban-server and fail2ban-client")
    dev, logfile, _ = syslog
    logfile.touch()
    conf = f2b_confdir(tmp_path)
    run = tmp_path / "f2b-run"
    run.mkdir()
    sock, pidfile, bans = run / "f2b.sock", run / "f2b.pid", run / "bans"
    f2blog = run / "fail2ban.log"
    (conf / "fail2ban.conf").write_text(
        "[Definition]\nloglevel = INFO\n"
        f"logtarget = {f2blog}\nsocket = {sock}\npidfile = {pidfile}\n"
        "dbfile = :memory:\nsyslogsocket = auto\n")
    (conf / "action.d" / "record.conf").write_text(
        "[Definition]\nactionstart =\nactionstop =\nactioncheck =\n"
        f"actionban = echo <ip> >> {bans}\nactionunban =\n")
    (conf / "jail.local").write_text(
        "[pop3d]\n"
        f"logpath = {logfile}\n"
        "backend = polling\n"
        f"maxretry = {MAXRETRY}\n"
        "findtime = 1h\nbantime = 1h\n"
        # The test's clients are on loopback or documentation addresses.
        "ignoreself = false\nignoreip =\n"
        "usedns = no\n"
        "action = record\n")
    err = run / "server.err"
    with open(err, "wb") as f:
        proc = subprocess.Popen(
            [F2B_SERVER, "-f", "-x", "-c", str(conf), "-s", str(sock),
             "-p", str(pidfile)],
            stdin=subprocess.DEVNULL, stdout=f, stderr=f,
            env={"PATH": PATH, "LANG": "C.UTF-8"})
    try:
        procs = [(proc, err), syslog[2]]
        wait_for("the pop3d jail", lambda: f2b_client(
            conf, sock, "status", "pop3d")[0] == 0, procs=procs)
        yield conf, sock, bans, procs
    finally:
        stop_pid(proc)
        print(f2blog.read_text(errors="replace") if f2blog.exists() else "")


def syslog_session(env, dev, peer, args=()):
    """pop3d without -d (so to syslog), in a private mount namespace where
    the scratch directory `dev` (rsyslogd's socket "log" and the device
    nodes bound in) is mounted over /dev."""
    script = ('d=$1; shift; for n in null zero random urandom; do '
              'mount --bind "/dev/$n" "$d/$n" || exit 111; done; '
              'mount --rbind "$d" /dev || exit 111; exec "$@"')
    argv = [a for a in env.argv(args) if a != "-d"]
    assert len(argv) == len(env.argv(args)) - 1
    e = env.env()
    how, addr, _ = PEERS[peer]
    if how not in (None, "tcp"):
        e[how] = addr
    wrapped = [UNSHARE, "-m", "--propagation", "private", "/bin/sh", "-c",
               script, "sh", str(dev), "/usr/bin/env", "-i"] + \
        [f"{k}={v}" for k, v in e.items()] + argv
    return start_session(env, peer, argv=wrapped, penv={"PATH": PATH})


def test_jail_bans_after_maxretry_failures(pop3d_env, syslog, fail2ban):
    """MAXRETRY - 1 failures from a client do not ban it, nor do temporary
    failures or "too many failed logins"; the MAXRETRY-th failure from
    127.0.0.7 (a real TCP client) bans exactly 127.0.0.7, though the name
    it tried was "x from 10.9.9.9", and not 203.0.113.5 (REMOTE_ADDR),
    which stopped at MAXRETRY - 1.  The counts are read once fail2ban has
    read the last line, so a line counted that should not be shows."""
    env = pop3d_env
    dev, logfile, _ = syslog
    conf, sock, bans, procs = fail2ban
    vpass = write_secret_file(
        env, "vpasswd", f"{INJECTED}:{hash_password('right')}:alice:\n")
    missing = str(env.tmp / "no-such-passwd")
    a, b = PEERS["tcp4"][2], PEERS["remote_addr"][2]
    assert MAXRETRY == 4

    def session(drive, peer, args=()):
        srv = syslog_session(env, dev, peer, args)
        drive(srv)
        assert srv.wait() in (0, 1), srv.log
        assert srv.log == "", srv.log   # everything went to syslog

    def total_failed_reaches(n):
        return lambda: jail_status(conf, sock)[0] >= n

    session(s_three_failures, "tcp4")                 # a: 3 of 4
    session(s_tempfail, "tcp4", ["-f", missing])      # a: never counted
    session(s_three_failures, "remote_addr")          # b: 3 of 4
    wait_for("6 failures counted", total_failed_reaches(6), procs=procs)
    text = logfile.read_text()
    assert text.count(" pop3d[") == text.count("\n"), text
    for who in (a, b):
        assert len(re.findall(
            r"(?m)^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ pop3d\[\d+\]: "
            f"login failed: alice from {re.escape(who)}$", text)) == 3, text
        assert f"too many failed logins from {who}\n" in text, text
    assert text.count(f"login failed from {a}: authentication "
                      "unavailable\n") == 2, text
    assert not bans.exists(), bans.read_text()

    session(s_injected_name, "tcp4", ["-f", str(vpass)])   # a: 4 of 4
    wait_for("a ban", bans.exists, procs=procs)
    wait_for("7 failures counted", total_failed_reaches(7), procs=procs)
    assert f"login failed: {INJECTED} from {a}\n" in logfile.read_text()
    assert jail_status(conf, sock) == (7, 1, [a])
    assert bans.read_text() == f"{a}\n"
