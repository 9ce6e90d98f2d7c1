"""
The summary line every session ends with (README, "Logging"):

  session end: user=NAME peer=ADDR end=WORD retr=N/OCTETS top=N/OCTETS
      dele=N/OCTETS left=N/OCTETS time=SECONDS.MMMs

Exactly one per session, whichever way it ends (quit, disconnect, timeout,
error, authfail, tempfail, abuse), before a login (user=-) and after;
each value free of spaces (a user name's bytes outside 0x21-0x7e, and
'%', as %XX); the counts and octets those of what the client was sent
and what the commit removed; the time from the connection's start, the
pre-login dialogue included.  pop3d runs in the harness of conftest.py
(root mode under uid_wrapper).
"""
import base64
import re

import pytest

from conftest import build_mbox, hash_password, make_message

LINE = re.compile(
    r"^pop3d: session end: user=(?P<user>\S+) peer=(?P<peer>\S+) "
    r"end=(?P<end>quit|disconnect|timeout|error|authfail|tempfail|abuse) "
    r"retr=(?P<retr>\d+/\d+) top=(?P<top>\d+/\d+) "
    r"dele=(?P<dele>\d+/\d+) left=(?P<left>\d+/\d+) "
    r"time=(?P<time>\d+\.\d{3})s$")


def summary(srv):
    """The session's one summary line, parsed."""
    lines = [l for l in srv.log.splitlines() if "session end:" in l]
    assert len(lines) == 1, srv.log
    m = LINE.match(lines[0])
    assert m, lines[0]
    return m.groupdict()


def start(env, args=(), timeout=30):
    srv = env.start(args, timeout)
    assert srv.reply() == "+OK pop3d ready"
    return srv


def login(srv, user="alice", password="secret"):
    assert srv.cmd(f"USER {user}") == "+OK Send your password"
    return srv.cmd(f"PASS {password}")


def test_counts_after_retr_top_dele_quit(pop3d_env):
    # A body line that starts with "." is stuffed on the wire: counted.
    data, chunks, wires = build_mbox(4, [None, b".dot\n..two\n", None,
                                         None])
    pop3d_env.write_mbox(data)
    srv = start(pop3d_env)
    assert login(srv).startswith("+OK Maildrop has 4 messages")
    sent = {}
    for cmd in ("RETR 1", "RETR 2", "RETR 2", "TOP 3 0", "TOP 4 1"):
        st, body = srv.multi(cmd)
        assert st.startswith("+OK")
        sent.setdefault(cmd.split()[0], []).append(len(body))
    assert srv.cmd("RETR 9") == "-ERR No such message"
    assert srv.cmd("DELE 1").startswith("+OK")
    assert srv.cmd("DELE 3").startswith("+OK")
    assert srv.cmd("DELE 4").startswith("+OK")
    assert srv.cmd("RSET").startswith("+OK")          # undone: not counted
    assert srv.cmd("DELE 1").startswith("+OK")
    assert srv.cmd("DELE 3").startswith("+OK")
    assert srv.cmd("QUIT") == "+OK pop3d signing off (2 messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    s = summary(srv)
    assert s["user"] == "alice" and s["peer"] == "local", s
    assert s["end"] == "quit"
    assert s["retr"] == f"3/{sum(sent['RETR'])}"
    assert sum(sent["RETR"]) == len(wires[0]) + 2 * (len(wires[1]) + 2)
    assert s["top"] == f"2/{sum(sent['TOP'])}"
    assert s["dele"] == f"2/{len(wires[0]) + len(wires[2])}"
    assert s["left"] == f"2/{len(wires[1]) + len(wires[3])}"
    assert len(pop3d_env.mailbox().read_bytes()) == \
        len(chunks[1]) + len(chunks[3])
    # The line that was there before stays (scripts read it).
    assert "pop3d: alice: 2 (" in srv.log and ") deleted, 2 (" in srv.log


@pytest.mark.parametrize("how", ["disconnect", "timeout"])
def test_no_commit_nothing_deleted(pop3d_env, how):
    data, _, wires = build_mbox(3)
    pop3d_env.write_mbox(data)
    srv = start(pop3d_env, timeout=1 if how == "timeout" else 30)
    assert login(srv).startswith("+OK Maildrop has 3 messages")
    assert srv.cmd("DELE 2").startswith("+OK")
    if how == "disconnect":
        srv.close()
    else:
        srv.read_until_eof()
    srv.wait(1)
    s = summary(srv)
    assert (s["user"], s["end"]) == ("alice", how)
    assert s["dele"] == "0/0"
    assert s["left"] == f"3/{sum(map(len, wires))}"


def test_before_login(pop3d_env):
    srv = start(pop3d_env)
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    srv.read_until_eof()
    srv.wait(0)
    s = summary(srv)
    assert s == dict(s, user="-", peer="local", end="quit", retr="0/0",
                     top="0/0", dele="0/0", left="0/0"), s


def test_authfail_and_abuse(pop3d_env):
    srv = start(pop3d_env)
    for _ in range(3):
        assert srv.cmd("USER alice") == "+OK Send your password"
        srv.cmd("PASS wrong")
    srv.read_until_eof()
    srv.wait(1)
    assert summary(srv)["end"] == "authfail"
    assert summary(srv)["user"] == "-"
    srv = start(pop3d_env)
    srv.send(b"FOO\r\n" * 20)
    srv.read_until_eof()
    srv.wait(1)
    assert summary(srv)["end"] == "abuse"


def test_tempfail(pop3d_env):
    srv = start(pop3d_env, ["-f", str(pop3d_env.tmp / "no-such-file")])
    for _ in range(3):
        assert srv.cmd("USER alice") == "+OK Send your password"
        assert srv.cmd("PASS x").startswith("-ERR [SYS/TEMP]")
    srv.read_until_eof()
    srv.wait(1)
    assert summary(srv)["end"] == "tempfail"


def test_error_when_the_maildrop_cannot_be_opened(pop3d_env):
    target = pop3d_env.tmp / "elsewhere"
    target.write_bytes(b"")
    pop3d_env.mailbox().symlink_to(target)
    srv = start(pop3d_env)
    assert login(srv).startswith("-ERR [SYS/PERM]")
    srv.read_until_eof()
    srv.wait(1)
    s = summary(srv)
    assert (s["user"], s["end"], s["left"]) == ("alice", "error", "0/0"), s


def test_user_name_escaped(pop3d_env):
    """A name with spaces (from a -f password file) cannot add a field,
    nor put an address where the peer's stands."""
    name = "x from 10.9.9.9 %"
    vpass = pop3d_env.tmp / "vpasswd"
    vpass.write_text(f"{name}:{hash_password('right')}:alice:\n")
    vpass.chmod(0o600)
    mbox, _ = make_message(1)
    pop3d_env.write_mbox(mbox)
    srv = start(pop3d_env, ["-f", str(vpass)])
    # USER takes no spaces; AUTH PLAIN does.
    resp = base64.b64encode(f"\0{name}\0right".encode()).decode()
    assert srv.cmd(f"AUTH PLAIN {resp}").startswith("+OK Maildrop has"), \
        srv.log
    assert srv.cmd("QUIT").startswith("+OK")
    srv.read_until_eof()
    srv.wait(0)
    s = summary(srv)
    assert s["user"] == "x%20from%2010.9.9.9%20%25", s
    assert s["peer"] == "local"


def test_time_counts_from_the_connection(pop3d_env):
    """A failed login costs at least -D milliseconds; the time of the
    session that then logs in includes them (the clock starts with the
    connection, not with the login).  A lower bound only: the delay is
    pop3d's own, so it holds on any machine."""
    srv = start(pop3d_env, ["-D", "400"])
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS wrong").startswith("-ERR [AUTH]")
    assert login(srv).startswith("+OK Maildrop has")
    assert srv.cmd("QUIT").startswith("+OK")
    srv.read_until_eof()
    srv.wait(0)
    assert float(summary(srv)["time"]) >= 0.4
