"""
Security properties end to end: APOP (RFC 1939 section 7) and its secrets
file, SASL PLAIN (RFC 5034, RFC 4616), the cleartext policy (-c, -T),
privilege separation as it can be seen from outside (processes, chroot,
core limits, refusal to start when misconfigured), the cost of a failed
login (-D) and its timing, the invalid-command limit, and hostile clients
(floods, NUL bytes, lone CR, 8-bit names, SASL continuation abuse, a
client that stops reading, half-closed sockets).

pop3d runs under the harness of conftest.py: real PAM (pam_matrix through
pam_wrapper), nss_wrapper, and uid_wrapper, which only simulates setuid:
to the kernel every pop3d process stays root.  chroot(2) is real.
"""
import base64
import hashlib
import os
import re
import resource
import socket
import stat
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (ALICE_UID, CAPA_LIST, IO_TIMEOUT, POP3D,
                      PRELOGIN_UID, Server, ServerError, build_mbox,
                      make_message)

AUTH_FAIL = "-ERR [AUTH] Authentication failed"
AUTH_LAST = "-ERR [AUTH] Authentication failed; too many failures, closing"
SASL_BAD = "-ERR [AUTH] Invalid SASL response"
SASL_CANCEL = "-ERR Authentication cancelled"
NO_APOP = "-ERR APOP is not enabled"
MECH = "-ERR Unsupported authentication mechanism"
CLEARTEXT = ("-ERR [AUTH] Cleartext logins are refused on this connection; "
             "use TLS (port 995)")
ABUSE = "-ERR Too many invalid commands, closing"
ERR_LINE = "-ERR Line too long"
ERR_BADBYTE = "-ERR Invalid characters in command"
ERR_UNKNOWN = "-ERR Unknown command"
UNAVAILABLE = ("-ERR [SYS/TEMP] pop3d is misconfigured; the administrator "
               "has been told (see the mail log)")
GREETING = "+OK pop3d ready"
STAMP_RE = r"<\d+\.\d+\.[0-9a-f]{16}@[^>]+>"
APOP_SECRET = "Tanstaaf-9f2c"   # alice's APOP secret in these tests
MiB = 1 << 20


# ---- helpers -------------------------------------------------------------------

def is_asan_build():
    out = subprocess.run(["nm", "-D", POP3D], capture_output=True, text=True)
    return "__asan_init" in out.stdout


ASAN = is_asan_build()


def vm_hwm_kib(pid):
    """The peak resident set of a live process, in KiB; None once gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def assert_rss_below(kib, limit_mib, what):
    assert kib is not None, f"{what}: the process was gone"
    if ASAN:
        return      # ASan's shadow memory and quarantine are not pop3d's
    assert kib < limit_mib * 1024, \
        f"{what}: pop3d's peak RSS is {kib} KiB, limit {limit_mib} MiB"


def children(pid):
    """PIDs of the live processes whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append(int(d))
    return out


def prelogin_pid(srv, timeout=5.0):
    """The pre-login process of srv (its only child while it waits for a
    command in AUTHORIZATION)."""
    deadline = time.monotonic() + timeout
    while True:
        kids = children(srv.proc.pid)
        if len(kids) == 1:
            return kids[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"pop3d {srv.proc.pid} has children {kids}")
        time.sleep(0.02)


def core_limits(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    raise AssertionError(f"no core limit for {pid}")


def snapshot(path):
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return (h.hexdigest(), st.st_size, st.st_ino, st.st_mtime_ns,
            st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))


def age(path):
    """An old mtime, so that any write would show."""
    os.utime(path, ns=(1_000_000_000_000_000_000,) * 2)


def plain(authz, authc, password):
    """A SASL PLAIN response, base64 (bytes or str parts)."""
    parts = [p.encode() if isinstance(p, str) else p
             for p in (authz, authc, password)]
    return base64.b64encode(b"\0".join(parts)).decode()


def apop_digest(stamp, secret):
    return hashlib.md5((stamp + secret).encode()).hexdigest()


def total(wires):
    return sum(len(w) for w in wires)


def quit_ok(srv, left=None):
    r = srv.cmd("QUIT")
    if left is None:
        assert r.startswith("+OK pop3d signing off"), r
    else:
        assert r == f"+OK pop3d signing off ({left} messages left)", r
    assert srv.read_until_eof() == b""
    srv.wait(0)


def start_with(env, args=(), extra_env=None, use_pipes=False, timeout=30,
               drop_env=()):
    """Like env.start(), with extra environment and optionally pipes."""
    env._nlogs += 1
    log = env.tmp / f"pop3d-{env._nlogs}.log"
    e = env.env()
    e.update(extra_env or {})
    for k in drop_env:
        e.pop(k, None)
    srv = Server(env.argv(args, timeout), e, log, use_pipes=use_pipes)
    env.servers.append(srv)
    return srv


class TcpServer(Server):
    """pop3d on one accepted TCP connection (as an inetd would run it),
    over the loopback interface only.  host/family pick the listening
    address; connect_to the address the client connects to."""

    def __init__(self, argv, env, log_path, family=socket.AF_INET,
                 host="127.0.0.1", connect_to=None, v6only=True):
        self.argv = argv
        self.log_path = Path(log_path)
        self.buf = b""
        self.rc = None
        self.use_pipes = False
        lsock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_INET6:
            lsock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                             1 if v6only else 0)
        lsock.bind((host, 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        client = socket.create_connection((connect_to or host, port),
                                          timeout=IO_TIMEOUT)
        conn, _ = lsock.accept()
        lsock.close()
        with open(self.log_path, "wb") as errf:
            try:
                self.proc = subprocess.Popen(
                    argv, stdin=conn.fileno(), stdout=conn.fileno(),
                    stderr=errf, env=env, close_fds=True)
            finally:
                conn.close()
        client.settimeout(IO_TIMEOUT)
        self.sock = client


def start_tcp(env, args=(), **kw):
    env._nlogs += 1
    log = env.tmp / f"pop3d-{env._nlogs}.log"
    srv = TcpServer(env.argv(args), env.env(), log, **kw)
    env.servers.append(srv)
    return srv


def write_apop(env, lines, mode=0o600, uid=0, gid=0, name="apop"):
    p = env.tmp / name
    p.write_text("".join(l + "\n" for l in lines))
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    return p


def apop_greeting(srv):
    """Reads the greeting; returns its APOP timestamp (asserting its shape)."""
    g = srv.reply()
    m = re.fullmatch(r"\+OK pop3d ready (" + STAMP_RE + ")", g)
    assert m, f"greeting {g!r} carries no APOP timestamp\nlog:\n{srv.log}"
    return m.group(1)


def attempt(srv, user, password):
    assert srv.cmd(f"USER {user}") == "+OK Send your password"
    return srv.cmd(f"PASS {password}")


@pytest.fixture
def box2(pop3d_env):
    """alice's mailbox with two messages, aged; returns (env, data, wires)."""
    data, chunks, wires = build_mbox(2)
    p = pop3d_env.write_mbox(data)
    age(p)
    return pop3d_env, data, wires


# ==== 1. APOP ===================================================================

@pytest.fixture
def apop_env(box2):
    env, data, wires = box2
    f = write_apop(env, ["# APOP secrets", "", f"alice:{APOP_SECRET}",
                         "toor:toorsecret", "carol:carolsecret",
                         "emptysecret:"])
    return env, f, data, wires


def test_apop_greeting_timestamp_is_fresh(apop_env):
    env, f, data, wires = apop_env
    stamps = []
    for _ in range(2):
        srv = env.start(["-A", str(f)])
        stamps.append(apop_greeting(srv))
        # The pid in the timestamp is this connection's pop3d.
        assert stamps[-1].startswith(f"<{srv.proc.pid}."), stamps[-1]
        quit_ok(srv)
    assert stamps[0] != stamps[1]
    rnd = [re.search(r"\.([0-9a-f]{16})@", s).group(1) for s in stamps]
    assert rnd[0] != rnd[1], "the random part of the timestamp repeats"


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_apop_login(apop_env, case):
    env, f, data, wires = apop_env
    srv = env.start(["-A", str(f), "-v"])
    stamp = apop_greeting(srv)
    d = apop_digest(stamp, APOP_SECRET)
    d = d.upper() if case == "upper" else d
    assert srv.cmd(f"APOP alice {d}") == \
        f"+OK Maildrop has 2 messages ({total(wires)} octets)"
    assert srv.cmd("STAT") == f"+OK 2 {total(wires)}"
    quit_ok(srv, 2)
    assert "pop3d: login ok: alice from local" in srv.log
    assert APOP_SECRET not in srv.log
    assert env.mailbox().read_bytes() == data


def test_apop_wrong_digest_unknown_user_and_replay(apop_env):
    env, f, data, wires = apop_env
    # A timestamp from an earlier connection.
    old = env.start(["-A", str(f)])
    old_stamp = apop_greeting(old)
    quit_ok(old)

    srv = env.start(["-A", str(f), "-v"])
    stamp = apop_greeting(srv)
    right = apop_digest(stamp, APOP_SECRET)
    wrong = apop_digest(stamp, APOP_SECRET + "x")
    assert srv.cmd(f"APOP alice {wrong}") == AUTH_FAIL
    assert srv.cmd(f"APOP mallory {right}") == AUTH_FAIL
    assert srv.cmd(f"APOP alice {apop_digest(old_stamp, APOP_SECRET)}") == \
        AUTH_LAST
    assert srv.read_until_eof() == b""
    srv.wait(1)
    log = srv.log
    assert "login ok" not in log
    assert log.count("pop3d: login failed: alice from local") == 2
    assert "pop3d: login failed: unknown user from local" in log
    assert "mallory" not in log
    assert APOP_SECRET not in log
    assert env.mailbox().read_bytes() == data


def test_apop_refused_for_uid0_empty_secret_and_no_account(apop_env):
    env, f, data, wires = apop_env
    srv = env.start(["-A", str(f)])
    stamp = apop_greeting(srv)
    # toor is uid 0; carol has a secret but no account; an empty secret
    # must not make MD5(timestamp) a password.
    assert srv.cmd(f"APOP toor {apop_digest(stamp, 'toorsecret')}") == \
        AUTH_FAIL
    assert srv.cmd(f"APOP carol {apop_digest(stamp, 'carolsecret')}") == \
        AUTH_FAIL
    assert srv.cmd(f"APOP emptysecret {apop_digest(stamp, '')}") == \
        AUTH_LAST
    srv.read_until_eof()
    srv.wait(1)
    assert "login ok" not in srv.log
    assert "toor: refusing to serve a mailbox as uid 0" in srv.log


def test_apop_syntax(apop_env):
    env, f, data, wires = apop_env
    srv = env.start(["-A", str(f)])
    stamp = apop_greeting(srv)
    d = apop_digest(stamp, APOP_SECRET)
    for line in (f"APOP alice {d[:-1]}", f"APOP alice {d}0",
                 f"APOP alice {d[:-1]}g", "APOP alice", f"APOP {d}",
                 f"APOP alice {d} x"):
        assert srv.cmd(line) == "-ERR Syntax error in arguments", line
    assert srv.cmd(f"APOP alice\x01 {d}") == "-ERR Invalid user name"
    # None of these was an attempt: the right digest still logs in.
    assert srv.cmd(f"APOP alice {d}").startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)


def test_apop_user_cannot_use_password(apop_env):
    env, f, data, wires = apop_env
    env.write_mbox(build_mbox(1)[0], user="bob")
    srv = env.start(["-A", str(f), "-v"])
    apop_greeting(srv)
    # alice's PAM password is right, but she has an APOP secret.
    assert attempt(srv, "alice", "secret") == AUTH_FAIL
    assert srv.cmd(f"AUTH PLAIN {plain('', 'alice', 'secret')}") == AUTH_FAIL
    # bob has none: his password works.
    assert attempt(srv, "bob", "bobpass").startswith(
        "+OK Maildrop has 1 messages")
    quit_ok(srv, 1)
    log = srv.log
    assert log.count("alice has an APOP secret: password login refused") \
        == 2, log
    assert "login ok: alice" not in log
    assert "pop3d: login ok: bob from local" in log
    assert env.mailbox().read_bytes() == data


def test_without_apop_file_no_timestamp(box2):
    env, data, wires = box2
    srv = env.start()
    assert srv.reply() == GREETING
    assert srv.cmd(f"APOP alice {'0' * 32}") == NO_APOP
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)


def _bad_apop_file(env, kind):
    good = [f"alice:{APOP_SECRET}"]
    if kind == "mode0644":
        return write_apop(env, good, mode=0o644)
    if kind == "mode0640":
        return write_apop(env, good, mode=0o640)
    if kind == "mode0604":
        return write_apop(env, good, mode=0o604)
    if kind == "uid1000":
        return write_apop(env, good, uid=ALICE_UID)
    if kind == "symlink":
        target = write_apop(env, good, name="apop-target")
        link = env.tmp / "apop"
        link.symlink_to(target)
        return link
    if kind == "directory":
        d = env.tmp / "apop"
        d.mkdir(mode=0o700)
        return d
    if kind == "missing":
        return env.tmp / "apop"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["mode0644", "mode0640", "mode0604",
                                  "uid1000", "symlink", "directory",
                                  "missing"])
def test_unsafe_apop_file_disables_apop(box2, kind):
    env, data, wires = box2
    f = _bad_apop_file(env, kind)
    srv = env.start(["-A", str(f)])
    assert srv.reply() == GREETING, "a timestamp was offered"
    assert srv.cmd(f"APOP alice {'0' * 32}") == NO_APOP
    quit_ok(srv)
    if kind == "missing":
        assert f"pop3d: APOP secrets {f}: No such file or directory" \
            in srv.log, srv.log
    else:
        assert (f"pop3d: APOP secrets {f}: not a regular file owned by root "
                "and closed to others (chmod 600); APOP disabled") \
            in srv.log, srv.log
    assert APOP_SECRET not in srv.log


def test_apop_file_made_unsafe_during_session(apop_env):
    """The monitor checks the file again at each attempt."""
    env, f, data, wires = apop_env
    srv = env.start(["-A", str(f)])
    stamp = apop_greeting(srv)
    os.chmod(f, 0o644)
    assert srv.cmd(f"APOP alice {apop_digest(stamp, APOP_SECRET)}") == \
        "-ERR [SYS/TEMP] Authentication is unavailable, try again later"
    # A password login fails closed too: nobody can tell whether alice has
    # an APOP secret, so it is a temporary failure, not a wrong password.
    assert attempt(srv, "alice", "secret") == \
        "-ERR [SYS/TEMP] Authentication is unavailable, try again later"
    os.chmod(f, 0o600)
    assert srv.cmd(f"APOP alice {apop_digest(stamp, APOP_SECRET)}") \
        .startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)
    assert "login ok: alice" in srv.log


@pytest.mark.parametrize("sequence", [("temp", "temp", "temp"),
                                      ("fail", "fail", "temp")],
                         ids=["3-temp", "2-fail-1-temp"])
def test_temporary_failures_do_not_wedge_the_monitor(apop_env, sequence):
    """Temporary failures are not held against the client as failed logins;
    they have a limit of their own (3), kept by the session and the monitor
    alike.  So after these attempts the right digest must log in, or the
    connection must end;
    it must not stay open answering every later login, right or wrong,
    with [SYS/TEMP], and the monitor must not log a false alarm about a
    misbehaving pre-login process."""
    env, f, data, wires = apop_env
    srv = env.start(["-A", str(f)])
    stamp = apop_greeting(srv)
    right = apop_digest(stamp, APOP_SECRET)
    temp = "-ERR [SYS/TEMP] Authentication is unavailable, try again later"
    temps = 0
    for kind in sequence:
        if kind == "temp":
            temps += 1
            os.chmod(f, 0o644)      # the secrets became unreadable
            assert srv.cmd(f"APOP alice {right}") == \
                (temp + "; closing" if temps == 3 else temp)
            os.chmod(f, 0o600)
        else:
            assert srv.cmd(f"APOP alice {apop_digest(stamp, 'x')}") == \
                AUTH_FAIL
    srv.send(f"APOP alice {right}\r\n".encode())
    try:
        r = srv.reply()
    except ServerError:
        r = None                    # a hang-up is acceptable too
    if r is not None and r != temp:
        assert r == f"+OK Maildrop has 2 messages ({total(wires)} octets)"
        quit_ok(srv, 2)
    else:
        # Not logged in: the connection must end rather than go on.
        try:
            ended = r is None or srv.read_until_eof(timeout=1) == b""
        except ServerError:
            ended = False
        assert ended, (f"after {sequence}, the right digest got {r!r} and "
                       f"the connection stays open\nlog:\n{srv.log}")
        srv.wait()
    assert "broke the protocol" not in srv.log, srv.log


# ==== 2. SASL PLAIN =============================================================

def test_sasl_capa_and_mechanism_list(box2):
    env, data, wires = box2
    srv = env.start()
    assert srv.reply() == GREETING
    st, body = srv.multi("CAPA")
    assert st == "+OK Capability list follows"
    assert b"SASL PLAIN" in body.split(b"\r\n")
    assert srv.multi("AUTH") == ("+OK Methods follow", b"PLAIN\r\n")
    quit_ok(srv)


@pytest.mark.parametrize("how", ["initial", "continuation", "lowercase",
                                 "authzid"])
def test_sasl_plain_login(box2, how):
    env, data, wires = box2
    srv = env.start(["-v"])
    assert srv.reply() == GREETING
    ok = f"+OK Maildrop has 2 messages ({total(wires)} octets)"
    resp = plain("", "alice", "secret")
    if how == "initial":
        assert srv.cmd(f"AUTH PLAIN {resp}") == ok
    elif how == "continuation":
        assert srv.cmd("AUTH PLAIN") == "+ "
        assert srv.cmd(resp) == ok
    elif how == "lowercase":
        assert srv.cmd(f"auth plain {resp}") == ok
    else:
        assert srv.cmd(f"AUTH PLAIN {plain('alice', 'alice', 'secret')}") \
            == ok
    assert srv.cmd("STAT") == f"+OK 2 {total(wires)}"
    # No second login once in TRANSACTION.
    assert srv.cmd(f"AUTH PLAIN {resp}") == \
        "-ERR Command not valid in this state"
    quit_ok(srv, 2)
    assert "pop3d: login ok: alice from local" in srv.log
    assert "secret" not in srv.log and resp not in srv.log


def test_sasl_authzid_other_than_authcid_refused(box2):
    env, data, wires = box2
    srv = env.start(["-v"])
    assert srv.reply() == GREETING
    # alice's right password, asking to act as bob.
    assert srv.cmd(f"AUTH PLAIN {plain('bob', 'alice', 'secret')}") == \
        SASL_BAD
    assert srv.cmd("AUTH PLAIN") == "+ "
    assert srv.cmd(plain("bob", "alice", "secret")) == SASL_BAD
    assert srv.cmd(f"AUTH PLAIN {plain('alicex', 'alice', 'secret')}") == \
        SASL_BAD
    assert srv.cmd(f"AUTH PLAIN {plain('alic', 'alice', 'secret')}") == \
        SASL_BAD
    # The session goes on, nobody was logged in.
    assert srv.cmd(f"AUTH PLAIN {plain('', 'alice', 'secret')}").startswith(
        "+OK Maildrop has 2 ")
    quit_ok(srv, 2)
    assert srv.log.count("login ok") == 1


def test_sasl_bad_responses_and_cancel(box2):
    """None of these is an authentication attempt: after six of them the
    right credentials still log in (three failures would have closed)."""
    env, data, wires = box2
    srv = env.start(["-v"])
    assert srv.reply() == GREETING
    assert srv.cmd("AUTH PLAIN") == "+ "
    assert srv.cmd("*") == SASL_CANCEL
    assert srv.cmd("AUTH PLAIN") == "+ "
    assert srv.cmd("=") == SASL_BAD
    assert srv.cmd("AUTH PLAIN =") == SASL_BAD
    assert srv.cmd("AUTH PLAIN !!!!") == SASL_BAD
    assert srv.cmd("AUTH PLAIN") == "+ "
    assert srv.cmd("AGFsaWNl AHNlY3JldA==") == SASL_BAD
    for raw in (b"alice\0secret",              # one NUL: no password
                b"\0alice\0secret\0",          # a NUL in the password
                b"\0\0secret",                 # no authcid
                b"\0ali\x01ce\0secret"):       # a control byte in it
        assert srv.cmd(f"AUTH PLAIN {base64.b64encode(raw).decode()}") == \
            SASL_BAD, raw
    # Too long a name (it takes a continuation to send).
    assert srv.cmd("AUTH PLAIN") == "+ "
    assert srv.cmd(plain("", "a" * 256, "secret")) == SASL_BAD
    assert srv.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=") == SASL_BAD
    assert srv.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA===") == SASL_BAD
    assert srv.cmd(f"AUTH PLAIN {plain('', 'alice', 'secret')}").startswith(
        "+OK Maildrop has 2 ")
    quit_ok(srv, 2)
    assert "login failed" not in srv.log


def test_sasl_unknown_mechanism(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == GREETING
    assert srv.cmd("AUTH CRAM-MD5") == MECH
    assert srv.cmd("AUTH CRAM-MD5 abcd") == MECH
    assert srv.cmd("AUTH LOGIN") == MECH
    assert srv.cmd("AUTH PLAINX") == MECH
    # No continuation was asked for: the next line is a command.
    assert srv.cmd("AUTH GSSAPI") == MECH
    assert srv.cmd("AUTH PLAIN a b") == "-ERR Syntax error in arguments"
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret").startswith("+OK Maildrop has 0 ")
    quit_ok(srv, 0)


def test_sasl_continuation_too_long(box2):
    env, data, wires = box2
    srv = env.start()
    assert srv.reply() == GREETING
    assert srv.cmd("AUTH PLAIN") == "+ "
    # 2049 octets with the CRLF (the limit is 2048).
    srv.send(b"A" * 2047 + b"\r\n")
    assert srv.reply() == SASL_BAD
    assert srv.cmd("AUTH PLAIN") == "+ "
    srv.send(b"A" * 100_000 + b"\r\n")
    assert srv.reply() == SASL_BAD
    # The session goes on, in step.
    assert srv.cmd("CAPA") == "+OK Capability list follows"
    assert srv.read_body()
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)


def test_sasl_long_password_by_continuation(pop3d_env):
    """A password too long for a 255-octet command line fits the 2048-octet
    continuation."""
    pw = "p" * 400
    pop3d_env.add_pam_user("bob", pw)
    pop3d_env.write_mbox(build_mbox(1)[0], user="bob")
    srv = pop3d_env.start()
    assert srv.reply() == GREETING
    resp = plain("", "bob", pw)
    assert len(resp) > 255
    assert srv.cmd("AUTH PLAIN") == "+ "
    assert srv.cmd(resp).startswith("+OK Maildrop has 1 messages")
    quit_ok(srv, 1)


@pytest.mark.parametrize("order", [("pass", "plain", "pass"),
                                   ("plain", "cont", "pass"),
                                   ("plain", "plain", "plain")],
                         ids=["pass-plain-pass", "plain-cont-pass",
                              "plain-plain-plain"])
def test_sasl_failures_count_with_pass_failures(box2, order):
    env, data, wires = box2
    srv = env.start()
    assert srv.reply() == GREETING
    results = []
    for kind in order:
        if kind == "pass":
            results.append(attempt(srv, "alice", "wrong"))
        elif kind == "plain":
            results.append(srv.cmd(
                f"AUTH PLAIN {plain('', 'alice', 'wrong')}"))
        else:
            assert srv.cmd("AUTH PLAIN") == "+ "
            results.append(srv.cmd(plain("", "alice", "wrong")))
    assert results == [AUTH_FAIL, AUTH_FAIL, AUTH_LAST]
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "pop3d: too many failed logins from local" in srv.log
    assert env.mailbox().read_bytes() == data


def test_sasl_pipelined_login_crosses_to_session(box2):
    env, data, wires = box2
    srv = env.start()
    srv.send(f"AUTH PLAIN {plain('', 'alice', 'secret')}\r\nSTAT\r\n"
             "QUIT\r\n".encode())
    t = total(wires)
    assert srv.read_until_eof() == (
        b"+OK pop3d ready\r\n" +
        f"+OK Maildrop has 2 messages ({t} octets)\r\n"
        f"+OK 2 {t}\r\n"
        "+OK pop3d signing off (2 messages left)\r\n".encode())
    srv.wait(0)


def test_sasl_pipelined_continuation(box2):
    """The continuation line may come in the same write as AUTH PLAIN."""
    env, data, wires = box2
    srv = env.start()
    srv.send(f"AUTH PLAIN\r\n{plain('', 'alice', 'secret')}\r\nSTAT\r\n"
             "QUIT\r\n".encode())
    t = total(wires)
    assert srv.read_until_eof() == (
        b"+OK pop3d ready\r\n+ \r\n" +
        f"+OK Maildrop has 2 messages ({t} octets)\r\n"
        f"+OK 2 {t}\r\n"
        "+OK pop3d signing off (2 messages left)\r\n".encode())
    srv.wait(0)


# ==== 3. The cleartext policy ===================================================

CAPA_NO_CLEARTEXT = [c for c in CAPA_LIST if c not in (b"USER", b"SASL PLAIN")]


def capa(srv):
    st, body = srv.multi("CAPA")
    assert st == "+OK Capability list follows"
    return body.split(b"\r\n")[:-1]


@pytest.mark.parametrize("peer", [
    {"REMOTE_ADDR": "192.0.2.7"},
    {"REMOTE_ADDR": "2001:db8::7"},
    # A launcher's word is no proof that the peer is local.
    {"REMOTE_ADDR": "127.0.0.1"},
    {"REMOTE_HOST": "mail.example.org"},
], ids=["v4", "v6", "claimed-loopback", "remote-host"])
def test_cleartext_refused_on_remote_connection(box2, peer):
    env, data, wires = box2
    srv = start_with(env, ["-c", "-v"], extra_env=peer, use_pipes=True)
    assert srv.reply() == GREETING
    assert capa(srv) == CAPA_NO_CLEARTEXT
    assert srv.multi("AUTH") == ("+OK Methods follow", b"")
    assert srv.cmd("USER alice") == CLEARTEXT
    assert srv.cmd("PASS secret") == CLEARTEXT
    assert srv.cmd("AUTH PLAIN") == CLEARTEXT
    assert srv.cmd(f"AUTH PLAIN {plain('', 'alice', 'secret')}") == CLEARTEXT
    assert srv.cmd(f"auth plain {plain('', 'alice', 'secret')}") == CLEARTEXT
    # Still not a mechanism we have.
    assert srv.cmd("AUTH CRAM-MD5") == MECH
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    log = srv.log
    who = peer.get("REMOTE_ADDR") or peer.get("REMOTE_HOST")
    assert f"pop3d: connection from {who}" in log
    # Nothing reached the monitor.
    assert "login ok" not in log and "login failed" not in log
    assert "secret" not in log
    assert env.mailbox().read_bytes() == data


def test_cleartext_refusals_count_as_invalid(box2):
    env, data, wires = box2
    srv = start_with(env, ["-c"], extra_env={"REMOTE_ADDR": "192.0.2.7"},
                     use_pipes=True)
    assert srv.reply() == GREETING
    for _ in range(19):
        assert srv.cmd("USER alice") == CLEARTEXT
    assert srv.cmd("USER alice") == ABUSE
    assert srv.read_until_eof() == b""
    srv.wait(1)


def test_cleartext_marked_protected(box2):
    env, data, wires = box2
    for how in ("pass", "plain"):
        srv = start_with(env, ["-c", "-T"],
                         extra_env={"REMOTE_ADDR": "192.0.2.7"},
                         use_pipes=True)
        assert srv.reply() == GREETING
        assert capa(srv) == CAPA_LIST
        if how == "pass":
            r = attempt(srv, "alice", "secret")
        else:
            r = srv.cmd(f"AUTH PLAIN {plain('', 'alice', 'secret')}")
        assert r == f"+OK Maildrop has 2 messages ({total(wires)} octets)"
        quit_ok(srv, 2)
        assert "pop3d: login ok: alice from 192.0.2.7" in srv.log


def test_cleartext_local_socketpair(box2):
    """An AF_UNIX socket with no address from a launcher is local."""
    env, data, wires = box2
    srv = start_with(env, ["-c"])
    assert srv.reply() == GREETING
    assert capa(srv) == CAPA_LIST
    assert srv.cmd(f"AUTH PLAIN {plain('', 'alice', 'secret')}").startswith(
        "+OK Maildrop has 2 ")
    quit_ok(srv, 2)
    assert "pop3d: connection from local" in srv.log


def test_cleartext_relayed_socketpair(box2):
    """An AF_UNIX socket from a relay that names the real peer (stunnel
    exec=, socat) is that peer's connection: logged under its address and
    refused cleartext under -c (stunnel exec= users pass -T)."""
    env, data, wires = box2
    srv = start_with(env, ["-c"], extra_env={"REMOTE_ADDR": "192.0.2.7"})
    assert srv.reply() == GREETING
    assert b"USER" not in capa(srv)
    assert srv.cmd("USER alice") == CLEARTEXT
    srv.cmd("QUIT")
    assert "pop3d: connection from 192.0.2.7" in srv.log


def test_cleartext_pipes_without_launcher_address(box2):
    """No socket and no REMOTE_ADDR: started by hand, local."""
    env, data, wires = box2
    srv = start_with(env, ["-c"], use_pipes=True)
    assert srv.reply() == GREETING
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)


@pytest.mark.parametrize("how", ["ipv4", "ipv6", "v4-mapped"])
def test_cleartext_tcp_loopback(box2, how):
    env, data, wires = box2
    if how == "ipv4":
        srv = start_tcp(env, ["-c"])
        peer = "127.0.0.1"
    elif how == "ipv6":
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        srv = start_tcp(env, ["-c"], family=socket.AF_INET6, host="::1")
        peer = "::1"
    else:
        # A dual-stack listener: 127.0.0.1 arrives as ::ffff:127.0.0.1,
        # and is named in its IPv4 form, the one fail2ban and the logs of
        # a v4-only listener use for the same client.
        srv = start_tcp(env, ["-c"], family=socket.AF_INET6, host="::",
                        connect_to="127.0.0.1", v6only=False)
        peer = "127.0.0.1"
    assert srv.reply() == GREETING
    assert capa(srv) == CAPA_LIST
    assert attempt(srv, "alice", "secret") == \
        f"+OK Maildrop has 2 messages ({total(wires)} octets)"
    quit_ok(srv, 2)
    assert f"pop3d: connection from {peer}" in srv.log
    assert f"pop3d: login ok: alice from {peer}" in srv.log


def test_launcher_address_cannot_inject_log_lines(box2):
    env, data, wires = box2
    evil = "192.0.2.7\npop3d: login ok: root from 10.0.0.1\x1b[2J"
    srv = start_with(env, ["-c"], extra_env={"REMOTE_ADDR": evil},
                     use_pipes=True)
    assert srv.reply() == GREETING
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    srv.read_until_eof()
    srv.wait(0)
    lines = srv.log.splitlines()
    assert not any(l.startswith("pop3d: login ok") for l in lines), lines
    assert "\x1b" not in srv.log
    assert any(l.startswith("pop3d: connection from 192.0.2.7?pop3d: login")
               for l in lines), lines


# ==== 4. Privilege separation ===================================================

def allow_core_dumps():
    """preexec: the largest core limit we may set, so that pop3d's own
    limit of 0 shows."""
    hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
    resource.setrlimit(resource.RLIMIT_CORE, (hard, hard))


def test_privsep_processes_chroot_and_core_limits(box2):
    env, data, wires = box2
    srv = env.start(["-v"], preexec=allow_core_dumps)
    assert srv.reply() == GREETING
    main = srv.proc.pid
    child = prelogin_pid(srv)
    assert child != main
    # The greeting leaves before the fork: wait for the child to say it
    # has chrooted and dropped (-v), a line it logs right after.
    deadline = time.monotonic() + 10
    while f"pre-login process {child}:" not in srv.log and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    assert f"pre-login process {child}:" in srv.log, srv.log
    empty = env.run / "empty"
    # uid_wrapper only simulates the uid change (to the kernel the
    # pre-login process is still root), but chroot(2) is real: the
    # process's root directory is the empty directory, pop3d's is "/".
    assert os.readlink(f"/proc/{child}/root") == str(empty)
    assert os.readlink(f"/proc/{main}/root") == "/"
    # The chroot: a root-owned directory, empty, closed to others.
    st = os.lstat(empty)
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_uid == 0
    assert stat.S_IMODE(st.st_mode) & 0o022 == 0, oct(st.st_mode)
    assert os.listdir(empty) == []
    # The pre-login process holds no directory (a way out of a chroot)
    # and no file but its stderr and the harness's nss_wrapper files.
    allowed = {str(srv.log_path), str(env.passwd), str(env.group)}
    for fd in os.listdir(f"/proc/{child}/fd"):
        target = os.readlink(f"/proc/{child}/fd/{fd}")
        if target.startswith(("socket:", "pipe:", "anon_inode:")) or \
                target == "/dev/null":
            continue
        assert target in allowed, f"pre-login process holds fd {fd}: " \
            f"{target}"
        assert not os.path.isdir(target)
    # No core dumps, in either process.  (PR_SET_DUMPABLE 0 cannot be
    # seen from here: it makes /proc/PID files root's, and every pop3d
    # process is root to the kernel under uid_wrapper anyway.)
    assert core_limits(child) == ["0", "0"]
    assert core_limits(main) == ["0", "0"]

    assert attempt(srv, "alice", "secret") == \
        f"+OK Maildrop has 2 messages ({total(wires)} octets)"
    # The pre-login process is gone; the session is the first process.
    deadline = time.monotonic() + 5
    while children(main) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert children(main) == []
    assert core_limits(main) == ["0", "0"]
    assert srv.cmd("STAT") == f"+OK 2 {total(wires)}"
    quit_ok(srv, 2)
    log = srv.log
    m = re.search(r"pop3d: pre-login process (\d+): uid (\d+), gid (\d+), "
                  r"chroot (.*)", log)
    assert m, log
    assert int(m.group(1)) == child
    assert (int(m.group(2)), int(m.group(3))) == (PRELOGIN_UID, PRELOGIN_UID)
    assert m.group(4) == str(empty)
    m = re.search(r"pop3d: session process (\d+): uid (\d+), gid (\d+)", log)
    assert m, log
    assert int(m.group(1)) == main != child
    assert (int(m.group(2)), int(m.group(3))) == (ALICE_UID, ALICE_UID)


def test_chroot_created_with_documented_mode(pop3d_env):
    """README: -C dir is "created, root-owned, 0755"."""
    srv = pop3d_env.start()
    assert srv.reply() == GREETING
    quit_ok(srv)
    st = os.lstat(pop3d_env.run / "empty")
    assert st.st_uid == 0
    assert stat.S_IMODE(st.st_mode) == 0o755, \
        f"chroot created with mode {stat.S_IMODE(st.st_mode):04o}"


def _bad_chroot(env, kind):
    d = env.tmp / "chroot"
    if kind == "mode0777":
        d.mkdir()
        os.chmod(d, 0o777)
    elif kind == "mode0775":
        d.mkdir()
        os.chmod(d, 0o775)
    elif kind == "mode0757":
        d.mkdir()
        os.chmod(d, 0o757)
    elif kind == "uid1000":
        d.mkdir()
        os.chmod(d, 0o755)
        os.chown(d, ALICE_UID, ALICE_UID)
    elif kind == "symlink":
        t = env.tmp / "chroot-target"
        t.mkdir()
        os.chmod(t, 0o755)
        d.symlink_to(t)
    elif kind == "file":
        d.write_text("")
        os.chmod(d, 0o600)
    elif kind == "noparent":
        d = env.tmp / "no" / "such" / "dir"
    else:
        raise ValueError(kind)
    return d


def misconfigured(srv):
    """The client gets the one -ERR line and nothing else (whatever it
    sends: it may find the connection closed already)."""
    try:
        srv.send(b"USER alice\r\nPASS secret\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert srv.read_until_eof() == (UNAVAILABLE + "\r\n").encode()
    srv.wait(1)


@pytest.mark.parametrize("kind", ["mode0777", "mode0775", "mode0757",
                                  "uid1000", "symlink", "file", "noparent"])
def test_misconfigured_chroot_refuses_service(box2, kind):
    env, data, wires = box2
    d = _bad_chroot(env, kind)
    srv = env.start(["-C", str(d)])
    misconfigured(srv)
    assert str(d) in srv.log
    assert "login" not in srv.log
    assert env.mailbox().read_bytes() == data


@pytest.mark.parametrize("user", ["nosuchaccount", "root", "toor"])
def test_prelogin_account_missing_or_root(box2, user):
    env, data, wires = box2
    srv = env.start(["-u", user])
    misconfigured(srv)
    assert f'no unprivileged account "{user}"' in srv.log
    assert "login" not in srv.log.replace("pre-login", "")
    assert env.mailbox().read_bytes() == data


# ==== 5. The cost of a failed login ==============================================

def timed(srv, line):
    """Sends line; returns (reply bytes, seconds until the reply).

    A lower bound on these seconds cannot flake: pop3d starts its clock
    for the failure delay after it has read the line, so after t0, and
    the delay is a sleep: load only makes the wait longer.  No upper
    bound is asserted on them (speed belongs in bench/)."""
    t0 = time.monotonic()
    srv.send(line.encode() + b"\r\n")
    r = srv.readline()
    return r, time.monotonic() - t0


def test_failure_delay(box2):
    env, data, wires = box2
    srv = env.start(["-D", "300"])
    assert srv.reply() == GREETING
    assert srv.cmd("USER alice") == "+OK Send your password"
    r, t = timed(srv, "PASS wrong1")
    assert r == (AUTH_FAIL + "\r\n").encode() and t >= 0.3, (r, t)
    r, t = timed(srv, f"AUTH PLAIN {plain('', 'alice', 'wrong2')}")
    assert r == (AUTH_FAIL + "\r\n").encode() and t >= 0.3, (r, t)
    assert srv.cmd("USER nosuchuser") == "+OK Send your password"
    r, t = timed(srv, "PASS wrong3")
    assert r == (AUTH_LAST + "\r\n").encode() and t >= 0.3, (r, t)
    assert srv.read_until_eof() == b""
    srv.wait(1)
    # A login that succeeds is not held back: with the longest delay
    # there is (-D 60000), its reply still comes within IO_TIMEOUT (10 s),
    # where a held-back one would take a minute.
    srv = env.start(["-D", "60000"])
    assert srv.reply() == GREETING
    assert srv.cmd("USER alice") == "+OK Send your password"
    r, t = timed(srv, "PASS secret")
    assert r.startswith(b"+OK Maildrop has 2 ")
    assert t < 60, f"a good login was held back ({t:.1f}s with -D 60000)"
    quit_ok(srv, 2)


def test_failure_delay_apop(box2):
    env, data, wires = box2
    f = write_apop(env, [f"alice:{APOP_SECRET}"])
    srv = env.start(["-D", "300", "-A", str(f)])
    stamp = apop_greeting(srv)
    r, t = timed(srv, f"APOP alice {apop_digest(stamp, 'nope')}")
    assert r == (AUTH_FAIL + "\r\n").encode() and t >= 0.3, (r, t)
    r, t = timed(srv, f"APOP mallory {apop_digest(stamp, 'nope')}")
    assert r == (AUTH_FAIL + "\r\n").encode() and t >= 0.3, (r, t)
    quit_ok(srv)


def test_unknown_user_and_wrong_password_look_alike(pop3d_env):
    """-D 150: eight fresh sessions each, interleaved (so that load hits
    both kinds alike).  Each failure went through the check (one log line
    of its kind), costs at least the 150 ms delay (a causal bound), the
    two medians are within a factor of two of each other (an unpadded
    kind would cost a few ms, a kind that does 150 ms more work would
    double), and the replies are the same bytes."""
    known, unknown, replies = [], [], set()
    for i in range(16):
        user = "alice" if i % 2 == 0 else "nosuchuser"
        srv = pop3d_env.start(["-D", "150"])
        assert srv.reply() == GREETING
        assert srv.cmd(f"USER {user}") == "+OK Send your password"
        r, t = timed(srv, f"PASS wrong-{i}")
        replies.add(r)
        (known if user == "alice" else unknown).append(t)
        assert srv.cmd("QUIT") == "+OK pop3d signing off"
        srv.read_until_eof()
        srv.wait(0)
        failed = [l for l in srv.log.splitlines() if "login failed" in l]
        want = "alice" if user == "alice" else "unknown user"
        assert len(failed) == 1 and \
            f"login failed: {want} from " in failed[0], srv.log
    assert replies == {(AUTH_FAIL + "\r\n").encode()}
    assert min(known + unknown) >= 0.15, (known, unknown)
    mk, mu = statistics.median(known), statistics.median(unknown)
    assert max(mk, mu) <= 2 * min(mk, mu), \
        f"medians {mk:.3f}s (wrong password) and {mu:.3f}s (unknown " \
        f"user) differ by more than a factor of two: {known} {unknown}"


# ==== 6. The invalid-command limit ===============================================

def test_twenty_invalid_commands_close(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == GREETING
    for i in range(19):
        assert srv.cmd("FOO") == ERR_UNKNOWN, i
    assert srv.cmd("FOO") == ABUSE
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "pop3d: too many invalid commands from local" in srv.log


def test_invalid_commands_of_every_kind_count(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == GREETING
    bad = [b"FOO", b"NOOP", b"STAT", b"USER", b"USER a b", b"USER \x01",
           b"PASS x", b"\x00", b"USER alice\rPASS x", b"X" * 300,
           b"AUTH CRAM-MD5", b"AUTH PLAIN !!!!", b"APOP alice " + b"0" * 32,
           b"QUIT now", b"CAPA x", b"", b"LIST 1", b"RETR", b"TOP 1"]
    assert len(bad) == 19
    srv.send(b"".join(l + b"\r\n" for l in bad) + b"FOO\r\nQUIT\r\n")
    out = srv.read_until_eof().decode("latin-1").split("\r\n")
    assert len(out) == 21 and all(l.startswith("-ERR ") and l != ABUSE
                                  for l in out[:19]), out
    assert out[19:] == [ABUSE, ""], out
    srv.wait(1)


def test_valid_errors_do_not_count(box2):
    env, data, wires = box2
    srv = env.login()
    srv.send(b"LIST 999\r\n" * 30)
    for _ in range(30):
        assert srv.reply() == "-ERR No such message"
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    srv.send(b"RETR 1\r\n" * 25)
    for _ in range(25):
        assert srv.reply() == "-ERR Message is deleted"
    assert srv.cmd("RSET").startswith("+OK Maildrop has 2 ")
    assert srv.cmd("STAT") == f"+OK 2 {total(wires)}"
    quit_ok(srv, 2)
    assert env.mailbox().read_bytes() == data


def test_failed_logins_do_not_count_as_invalid(pop3d_env):
    """Two failures, then 19 invalid commands, then a good login: the
    counters are separate and neither limit is reached."""
    srv = pop3d_env.start()
    assert srv.reply() == GREETING
    assert attempt(srv, "alice", "x") == AUTH_FAIL
    assert attempt(srv, "alice", "y") == AUTH_FAIL
    for _ in range(19):
        assert srv.cmd("FOO") == ERR_UNKNOWN
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has 0 ")
    quit_ok(srv, 0)


# ==== 7. Hostile clients =========================================================

def flood(srv, total_bytes, byte=b"A", piece=MiB):
    chunk = byte * piece
    sent = 0
    while sent < total_bytes:
        srv.send(chunk)
        sent += len(chunk)


def test_10mb_line_before_login(box2):
    env, data, wires = box2
    before = snapshot(env.mailbox())
    srv = env.start()
    assert srv.reply() == GREETING
    child = prelogin_pid(srv)
    srv.send(b"USER ")
    flood(srv, 10 * MiB)
    hwm = vm_hwm_kib(child)
    srv.send(b"\r\n")
    assert srv.reply() == ERR_LINE
    assert_rss_below(hwm, 32, "pre-login process, 10 MB line")
    assert_rss_below(vm_hwm_kib(srv.proc.pid), 32, "monitor, 10 MB line")
    # Nothing of the line was taken as a command; the session goes on.
    assert srv.cmd("PASS secret") == "-ERR USER first"
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)
    assert snapshot(env.mailbox()) == before


def test_10mb_line_after_login(box2):
    env, data, wires = box2
    before = snapshot(env.mailbox())
    srv = env.login()
    srv.send(b"DELE 1")
    flood(srv, 10 * MiB, b"1")
    hwm = vm_hwm_kib(srv.proc.pid)
    srv.send(b"\r\n")
    assert srv.reply() == ERR_LINE
    assert_rss_below(hwm, 32, "session, 10 MB line")
    assert srv.cmd("STAT") == f"+OK 2 {total(wires)}"
    quit_ok(srv, 2)
    assert snapshot(env.mailbox()) == before


def test_10mb_without_newline_then_eof(box2):
    env, data, wires = box2
    before = snapshot(env.mailbox())
    srv = env.start()
    assert srv.reply() == GREETING
    flood(srv, 10 * MiB, b"\xff")
    srv.shutdown_write()
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert snapshot(env.mailbox()) == before


def test_nul_floods(box2):
    env, data, wires = box2
    before = snapshot(env.mailbox())
    srv = env.start()
    assert srv.reply() == GREETING
    # A megabyte of NULs, no newline: one line too long.
    flood(srv, MiB, b"\0", piece=64 * 1024)
    srv.send(b"\r\n")
    assert srv.reply() == ERR_LINE
    srv.send(b"\0\0\0\r\n")
    assert srv.reply() == ERR_BADBYTE
    assert attempt(srv, "alice", "secret").startswith("+OK Maildrop has 2 ")
    quit_ok(srv, 2)
    # Lines of NULs: each is invalid, the 20th ends it.
    srv = env.start()
    srv.send(b"\0\0\0\0\n" * 5000)
    out = srv.read_until_eof().split(b"\r\n")
    assert out[0] == GREETING.encode()
    assert out[1:20] == [ERR_BADBYTE.encode()] * 19
    assert out[20:] == [ABUSE.encode(), b""]
    srv.wait(1)
    assert snapshot(env.mailbox()) == before


def test_lone_cr_does_not_split_a_line(box2):
    env, data, wires = box2
    srv = env.start()
    assert srv.reply() == GREETING
    srv.send(b"USER alice\rPASS secret\r\n")
    assert srv.reply() == ERR_BADBYTE
    # USER did not run.
    assert srv.cmd("PASS secret") == "-ERR USER first"
    assert srv.cmd("USER alice") == "+OK Send your password"
    srv.send(b"PASS wrong\rPASS secret\r\n")
    assert srv.reply() == ERR_BADBYTE
    assert srv.cmd("PASS secret").startswith("+OK Maildrop has 2 ")
    srv.send(b"DELE 1\rDELE 2\r\n")
    assert srv.reply() == ERR_BADBYTE
    quit_ok(srv, 2)
    assert env.mailbox().read_bytes() == data


def test_8bit_and_utf8_credentials(box2):
    env, data, wires = box2
    srv = env.start(["-v"])
    assert srv.reply() == GREETING
    srv.send("USER josé\r\n".encode())
    assert srv.reply() == "+OK Send your password"
    srv.send("PASS pässwörd€\r\n".encode())
    assert srv.reply() == AUTH_FAIL
    srv.send(b"USER \xff\xfe\x80\xc0\r\n")
    assert srv.reply() == "+OK Send your password"
    srv.send(b"PASS \xff\x00\x80\r\n")
    assert srv.reply() == ERR_BADBYTE
    srv.send(b"PASS \xff\xfe\x80\r\n")
    assert srv.reply() == AUTH_FAIL
    # alice with an 8-bit byte after her password: the third failure.
    assert srv.cmd("USER alice") == "+OK Send your password"
    srv.send(b"PASS secret\xff\r\n")
    assert srv.reply() == AUTH_LAST
    assert srv.read_until_eof() == b""
    srv.wait(1)
    log = srv.log_path.read_bytes()
    assert b"jos" not in log and b"\xff" not in log and b"\xc3" not in log
    assert b"login ok" not in log
    assert env.mailbox().read_bytes() == data


def test_sasl_continuation_never_comes(pop3d_env):
    """-t 1 holds while pop3d waits for the continuation: the session
    ends by its timer (it says so), not before the second is up (t0 is
    taken before the command, so the bound is causal), and well before
    the harness's own -t 30 could end it (EOF within 20 s)."""
    srv = pop3d_env.start(timeout=1)
    assert srv.reply() == GREETING
    t0 = time.monotonic()
    assert srv.cmd("AUTH PLAIN") == "+ "
    rest = srv.read_until_eof(timeout=20)
    took = time.monotonic() - t0
    assert rest in (b"", (SASL_CANCEL + "\r\n").encode()), rest
    assert took >= 0.9, f"the session ended after {took:.2f}s, before -t 1"
    srv.wait(1)
    assert "pop3d: timeout, before login from local" in srv.log


def test_auth_plain_cancel_loop_is_bounded(pop3d_env):
    """Thousands of AUTH PLAIN / "*" pairs: the connection must end (the
    invalid-command or the failure limit) long before they are all
    answered."""
    pairs = 3000
    srv = pop3d_env.start()
    payload = b"AUTH PLAIN\r\n*\r\n" * pairs

    def sender():
        try:
            srv.sock.sendall(payload)
        except OSError:
            pass        # the server hung up: what we want

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    out = b""
    cancels = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            data = srv._recv(5)
        except socket.timeout:
            break
        if not data:
            break
        out += data
        cancels = out.count(SASL_CANCEL.encode())
        if cancels >= pairs:
            break
    th.join(5)
    lines = out.split(b"\r\n")
    assert cancels < pairs, (
        f"all {pairs} AUTH PLAIN/* pairs were answered "
        f"({cancels} x {SASL_CANCEL!r}) and the connection is still open")
    assert lines[-2] in (ABUSE.encode(), AUTH_LAST.encode()), lines[-5:]
    srv.wait(1)


def big_message_mbox(size):
    """One message with a body of about size bytes (80-octet lines)."""
    line = b"x" * 78 + b"\n"
    body = line * (size // len(line))
    chunk, wire = make_message(1, body)
    return chunk, wire


@pytest.mark.parametrize("pipes", [False, True], ids=["socket", "pipes"])
def test_client_that_stops_reading_a_large_retr(pop3d_env, pipes):
    """Over a socket and over pipes (stunnel exec= may give pipes, whose
    descriptors pop3d must not make non-blocking: they are the launcher's
    too), a stalled reader meets the -t deadline."""
    chunk, wire = big_message_mbox(20 * MiB)
    path = pop3d_env.write_mbox(chunk)
    age(path)
    before = snapshot(path)
    # -t 2: pop3d gives up on the stalled client by its own timer (the
    # log says so below); one that waits for the client forever is still
    # there after 25 s.  How soon it gives up is not a pass/fail.
    srv = pop3d_env.start(timeout=2, use_pipes=pipes)
    assert srv.login().startswith("+OK Maildrop has"), srv.log
    srv.send(b"RETR 1\r\n")
    t0 = time.monotonic()
    pid = srv.proc.pid
    hwm = 0
    while srv.proc.poll() is None and time.monotonic() - t0 < 25:
        h = vm_hwm_kib(pid)
        if h is not None:
            hwm = max(hwm, h)
        time.sleep(0.05)
    took = time.monotonic() - t0
    assert srv.proc.poll() is not None, "pop3d still runs 25 s after RETR"
    srv.wait(1)
    assert_rss_below(hwm, 32, "session sending 20 MB to a stalled client")
    assert snapshot(path) == before
    assert pop3d_env.leftovers() == []
    assert "pop3d: timeout, alice from local" in srv.log, \
        f"pop3d ended after {took:.1f}s, not by its timeout:\n{srv.log}"


@pytest.mark.parametrize("last", ["STAT", "DELE 1"])
def test_half_closed_client_gets_every_reply(box2, last):
    env, data, wires = box2
    before = snapshot(env.mailbox())
    srv = env.start()
    srv.send(f"USER alice\r\nPASS secret\r\n{last}\r\n".encode())
    srv.shutdown_write()
    t = total(wires)
    want = (f"{GREETING}\r\n+OK Send your password\r\n"
            f"+OK Maildrop has 2 messages ({t} octets)\r\n" +
            (f"+OK 2 {t}\r\n" if last == "STAT" else
             "+OK Message 1 deleted\r\n")).encode()
    assert srv.read_until_eof() == want
    srv.wait(1)
    assert "pop3d: premature disconnect, alice from local" in srv.log
    assert snapshot(env.mailbox()) == before
    assert env.leftovers() == []
