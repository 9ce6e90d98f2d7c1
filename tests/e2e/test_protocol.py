"""
The POP3 dialogue end to end (RFC 1939, RFC 2449): exact replies in each
state, argument and number parsing, line limits, bad bytes, bare LF,
pipelining, and a poplib client.
"""
import re

import pytest

from conftest import CAPA_LIST, build_mbox, unstuff

ERR_STATE = "-ERR Command not valid in this state"
ERR_UNKNOWN = "-ERR Unknown command"
ERR_SYNTAX = "-ERR Syntax error in arguments"
ERR_NUMBER = "-ERR Invalid message number"
ERR_NOMSG = "-ERR No such message"
ERR_DELETED = "-ERR Message is deleted"
ERR_LINE = "-ERR Line too long"
ERR_BADBYTE = "-ERR Invalid characters in command"


@pytest.fixture
def box3(pop3d_env):
    """alice's mailbox with three messages; returns (env, chunks, wires)."""
    data, chunks, wires = build_mbox(3)
    pop3d_env.write_mbox(data)
    return pop3d_env, chunks, wires


def total(wires):
    return sum(len(w) for w in wires)


def quit_ok(srv, left):
    assert srv.cmd("QUIT") == f"+OK pop3d signing off ({left} messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)


# ---- greeting and CAPA --------------------------------------------------------

def read_capa(srv):
    st, body = srv.multi("CAPA")
    assert st == "+OK Capability list follows"
    return body.split(b"\r\n")[:-1]


def test_greeting_and_capa_before_and_after_login(box3):
    env, chunks, wires = box3
    srv = env.start()
    assert srv.reply() == "+OK pop3d ready"
    before = read_capa(srv)
    assert before == CAPA_LIST
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret") == \
        f"+OK Maildrop has 3 messages ({total(wires)} octets)"
    after = read_capa(srv)
    assert after == before
    quit_ok(srv, 3)
    assert "pop3d: connection from local" in srv.log
    assert "pop3d: login ok: alice from local" in srv.log
    assert f"pop3d: alice: 3 messages ({total(wires)} octets) loaded" \
        in srv.log


def test_quit_in_authorization_state(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd("QUIT") == "+OK pop3d signing off"
    assert srv.read_until_eof() == b""
    srv.wait(0)


def test_eof_before_login_exits_1(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == "+OK pop3d ready"
    srv.shutdown_write()
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "premature disconnect, before login from local" in srv.log


# ---- AUTHORIZATION state -------------------------------------------------------

AUTH_STATE_CASES = [
    ("STAT", ERR_STATE),
    ("LIST", ERR_STATE),
    ("LIST 1", ERR_STATE),
    ("RETR 1", ERR_STATE),
    ("DELE 1", ERR_STATE),
    ("NOOP", ERR_STATE),
    ("RSET", ERR_STATE),
    ("TOP 1 1", ERR_STATE),
    ("UIDL", ERR_STATE),
    ("UIDL 1", ERR_STATE),
    ("stat", ERR_STATE),
    ("FOO", ERR_UNKNOWN),
    ("FOO bar baz qux", ERR_UNKNOWN),
    ("", ERR_UNKNOWN),
    ("USERS alice", ERR_UNKNOWN),
    ("APOP alice 0123456789abcdef0123456789abcdef", "-ERR APOP is not enabled"),
    ("USER", ERR_SYNTAX),
    ("USER alice bob", ERR_SYNTAX),
    ("USER  alice", ERR_SYNTAX),
    ("USER ", "-ERR Invalid user name"),
    ("PASS", ERR_SYNTAX),
    ("PASS secret", "-ERR USER first"),
    ("QUIT now", ERR_SYNTAX),
    ("CAPA x", ERR_SYNTAX),
    ("USER alice\x01", "-ERR Invalid user name"),
]


@pytest.mark.parametrize("line,expected", AUTH_STATE_CASES,
                         ids=[repr(c[0]) for c in AUTH_STATE_CASES])
def test_authorization_state_errors(pop3d_env, line, expected):
    pop3d_env.write_mbox(build_mbox(1)[0])
    srv = pop3d_env.start()
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd(line) == expected
    # The session is still usable and was not disturbed.
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret").startswith("+OK Maildrop has 1 messages")
    quit_ok(srv, 1)


def test_pass_without_user_and_after_failure(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd("PASS secret") == "-ERR USER first"
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS wrong") == "-ERR [AUTH] Authentication failed"
    # A failed PASS forgets the USER.
    assert srv.cmd("PASS secret") == "-ERR USER first"
    # An invalid USER forgets the previous one too.
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("USER ") == "-ERR Invalid user name"
    assert srv.cmd("PASS secret") == "-ERR USER first"
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret") == "+OK Maildrop has 0 messages (0 octets)"
    quit_ok(srv, 0)


def test_keywords_are_case_insensitive(box3):
    env, chunks, wires = box3
    srv = env.start()
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd("user alice") == "+OK Send your password"
    assert srv.cmd("pAsS secret").startswith("+OK Maildrop has 3 messages")
    assert srv.cmd("stat") == f"+OK 3 {total(wires)}"
    assert srv.cmd("LiSt 2") == f"+OK 2 {len(wires[1])}"
    st, body = srv.multi("retr 2")
    assert st == f"+OK {len(wires[1])} octets"
    assert unstuff(body) == wires[1]
    st, body = srv.multi("Top 1 0")
    assert st == "+OK Top of message follows"
    assert srv.cmd("uidl 1").startswith("+OK 1 ")
    assert srv.cmd("noop") == "+OK"
    assert srv.cmd("dele 3") == "+OK Message 3 deleted"
    assert srv.cmd("rset") == f"+OK Maildrop has 3 messages ({total(wires)} octets)"
    st, body = srv.multi("capa")
    assert st == "+OK Capability list follows"
    assert srv.cmd("quit") == "+OK pop3d signing off (3 messages left)"
    srv.finish(0)


# ---- TRANSACTION state: every command ---------------------------------------

def test_transaction_commands_exact_replies(box3):
    env, chunks, wires = box3
    srv = env.login()
    t = total(wires)
    assert srv.cmd("STAT") == f"+OK 3 {t}"
    st, body = srv.multi("LIST")
    assert st == f"+OK 3 messages ({t} octets)"
    assert body == b"".join(f"{i} {len(w)}\r\n".encode()
                            for i, w in enumerate(wires, 1))
    for i, w in enumerate(wires, 1):
        assert srv.cmd(f"LIST {i}") == f"+OK {i} {len(w)}"
    st, body = srv.multi("UIDL")
    assert st == "+OK Unique-ID listing follows"
    lines = body.decode().split("\r\n")[:-1]
    uids = {}
    for i, line in enumerate(lines, 1):
        n, uid = line.split(" ")
        assert n == str(i)
        assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid)
        uids[i] = uid
    assert len(set(uids.values())) == 3
    for i in range(1, 4):
        assert srv.cmd(f"UIDL {i}") == f"+OK {i} {uids[i]}"
    for i, w in enumerate(wires, 1):
        st, body = srv.multi(f"RETR {i}")
        assert st == f"+OK {len(w)} octets"
        assert body == w
    assert srv.cmd("NOOP") == "+OK"
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    for line in ("DELE 2", "RETR 2", "LIST 2", "TOP 2 0", "UIDL 2"):
        assert srv.cmd(line) == ERR_DELETED, line
    t2 = t - len(wires[1])
    assert srv.cmd("STAT") == f"+OK 2 {t2}"
    st, body = srv.multi("LIST")
    assert st == f"+OK 2 messages ({t2} octets)"
    assert body == f"1 {len(wires[0])}\r\n3 {len(wires[2])}\r\n".encode()
    st, body = srv.multi("UIDL")
    assert body == f"1 {uids[1]}\r\n3 {uids[3]}\r\n".encode()
    assert srv.cmd("RSET") == f"+OK Maildrop has 3 messages ({t} octets)"
    assert srv.cmd("STAT") == f"+OK 3 {t}"
    st, body = srv.multi("RETR 2")
    assert body == wires[1]
    assert srv.cmd("USER alice") == ERR_STATE
    assert srv.cmd("PASS secret") == ERR_STATE
    assert srv.cmd("XTND XMIT") == ERR_UNKNOWN
    quit_ok(srv, 3)
    assert env.mailbox().read_bytes() == b"".join(chunks)


def test_top(pop3d_env):
    body = b"line 1\n.line 2 starts with a dot\nline 3\n\nline 5\n"
    data, chunks, wires = build_mbox(2, bodies=[body, b""])
    pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    head, _, rest = wires[0].partition(b"\r\n\r\n")
    head += b"\r\n\r\n"
    rest_lines = rest.split(b"\r\n")[:-1]
    st, got = srv.multi("TOP 1 0")
    assert st == "+OK Top of message follows"
    assert got == head
    for k in range(1, 7):
        st, got = srv.multi(f"TOP 1 {k}")
        assert st == "+OK Top of message follows"
        want = head + b"".join(l + b"\r\n" for l in rest_lines[:k])
        assert unstuff(got) == want, k
    # The dot line is stuffed on the wire.
    st, got = srv.multi("TOP 1 2")
    assert b"\r\n..line 2 starts with a dot\r\n" in got
    st, got = srv.multi("TOP 1 9223372036854775807")
    assert unstuff(got) == wires[0]
    # A message with an empty body.
    st, got = srv.multi("TOP 2 5")
    assert got == wires[1]
    for line, err in (("TOP 1 -1", ERR_SYNTAX), ("TOP 1 x", ERR_SYNTAX),
                      ("TOP 1 +1", ERR_SYNTAX),
                      ("TOP 1 9223372036854775808", ERR_SYNTAX),
                      ("TOP 0 1", ERR_NOMSG), ("TOP 3 1", ERR_NOMSG),
                      ("TOP x 1", ERR_NUMBER)):
        assert srv.cmd(line) == err, line
    quit_ok(srv, 2)


# ---- arguments ---------------------------------------------------------------

ARITY_CASES = ["STAT 1", "STAT  ", "LIST 1 2", "LIST 1 ", "LIST  1",
               "UIDL 1 2", "UIDL  1", "RETR", "RETR 1 2", "RETR  1",
               "TOP", "TOP 1", "TOP 1 2 3", "TOP 1  2", "DELE", "DELE 1 2",
               "DELE 1 ", "NOOP 1", "NOOP ", "RSET 1", "QUIT 1", "QUIT ",
               "CAPA 1"]


@pytest.mark.parametrize("line", ARITY_CASES, ids=[repr(c) for c in ARITY_CASES])
def test_wrong_arity_is_syntax_error_and_not_executed(box3, line):
    env, chunks, wires = box3
    srv = env.login()
    assert srv.cmd(line) == ERR_SYNTAX
    # Nothing was deleted, the session goes on.
    assert srv.cmd("STAT") == f"+OK 3 {total(wires)}"
    quit_ok(srv, 3)
    assert env.mailbox().read_bytes() == b"".join(chunks)


NUMBER_CASES = [
    ("0", ERR_NOMSG),
    ("4", ERR_NOMSG),
    ("4294967297", ERR_NOMSG),          # 2^32 + 1: not message 1
    ("4294967296", ERR_NOMSG),
    ("18446744073709551617", ERR_NUMBER),  # 2^64 + 1
    ("18446744073709551615", ERR_NOMSG),   # 2^64 - 1
    ("1" + "0" * 29, ERR_NUMBER),       # 30 digits
    ("000000000000000000000000000001", None),  # 30 digits, = 1
    ("+1", ERR_NUMBER),
    ("-1", ERR_NUMBER),
    ("1a", ERR_NUMBER),
    ("a1", ERR_NUMBER),
    ("0x1", ERR_NUMBER),
    ("1.0", ERR_NUMBER),
    ("1\t", ERR_NUMBER),
    ("", ERR_NUMBER),
    ("01", None),
    ("001", None),
]


@pytest.mark.parametrize("cmd", ["LIST", "UIDL", "RETR", "DELE", "TOP"])
@pytest.mark.parametrize("arg,err", NUMBER_CASES,
                         ids=[repr(c[0]) for c in NUMBER_CASES])
def test_message_numbers(box3, cmd, arg, err):
    env, chunks, wires = box3
    srv = env.login()
    line = f"{cmd} {arg}" + (" 0" if cmd == "TOP" else "")
    st = srv.cmd(line)
    if err is not None:
        assert st == err
        assert srv.cmd("STAT") == f"+OK 3 {total(wires)}"
        for i in (1, 2, 3):
            assert srv.cmd(f"LIST {i}").startswith("+OK"), i
        quit_ok(srv, 3)
        assert env.mailbox().read_bytes() == b"".join(chunks)
        return
    # A number with leading zeros means message 1.
    if cmd == "LIST":
        assert st == f"+OK 1 {len(wires[0])}"
    elif cmd == "UIDL":
        assert st == srv.cmd("UIDL 1")
    elif cmd == "RETR":
        assert st == f"+OK {len(wires[0])} octets"
        assert srv.read_body()[:-3] == wires[0]
    elif cmd == "TOP":
        assert st == "+OK Top of message follows"
        srv.read_body()
    elif cmd == "DELE":
        assert st == "+OK Message 1 deleted"
        assert srv.cmd("LIST 1") == ERR_DELETED
        quit_ok(srv, 2)
        assert env.mailbox().read_bytes() == b"".join(chunks[1:])
        return
    quit_ok(srv, 3)


# ---- line limits and bad bytes --------------------------------------------------

def padded_dele(total_len, eol=b"\r\n"):
    """'DELE 000...01' + eol, exactly total_len octets long."""
    digits = total_len - len(b"DELE ") - len(eol)
    return b"DELE " + b"0" * (digits - 1) + b"1" + eol


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_255_octet_line_accepted(box3, eol):
    env, chunks, wires = box3
    srv = env.login()
    line = padded_dele(255, eol)
    assert len(line) == 255
    srv.send(line)
    assert srv.reply() == "+OK Message 1 deleted"
    quit_ok(srv, 2)
    assert env.mailbox().read_bytes() == b"".join(chunks[1:])


@pytest.mark.parametrize("length", [256, 257, 1000, 16383, 16384, 16385,
                                    100000])
@pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])
def test_long_line_rejected_not_executed(box3, length, eol):
    env, chunks, wires = box3
    srv = env.login()
    line = padded_dele(length, eol)
    assert len(line) == length
    srv.send(line + b"NOOP\r\n")
    assert srv.reply() == ERR_LINE
    assert srv.reply() == "+OK"
    assert srv.cmd("LIST 1") == f"+OK 1 {len(wires[0])}"
    assert srv.cmd("STAT") == f"+OK 3 {total(wires)}"
    quit_ok(srv, 3)
    assert env.mailbox().read_bytes() == b"".join(chunks)


def test_long_line_before_login(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == "+OK pop3d ready"
    srv.send(b"USER " + b"a" * 300 + b"\r\n")
    assert srv.reply() == ERR_LINE
    # A long PASS line is not a login attempt and does not count.
    assert srv.cmd("USER alice") == "+OK Send your password"
    srv.send(b"PASS " + b"x" * 251 + b"\r\n")
    assert srv.reply() == ERR_LINE
    assert srv.cmd("PASS secret") == "+OK Maildrop has 0 messages (0 octets)"
    quit_ok(srv, 0)


BAD_BYTE_LINES = [b"DELE 1\x00", b"DELE\x001", b"\x00DELE 1", b"DELE 1\r",
                  b"DELE\r1", b"DE\rLE 1", b"\rDELE 1"]


@pytest.mark.parametrize("line", BAD_BYTE_LINES,
                         ids=[repr(l) for l in BAD_BYTE_LINES])
def test_nul_and_bare_cr_rejected_not_executed(box3, line):
    env, chunks, wires = box3
    srv = env.login()
    srv.send(line + b"\r\n")
    assert srv.reply() == ERR_BADBYTE
    assert srv.cmd("STAT") == f"+OK 3 {total(wires)}"
    assert srv.cmd("LIST 1") == f"+OK 1 {len(wires[0])}"
    quit_ok(srv, 3)
    assert env.mailbox().read_bytes() == b"".join(chunks)


def test_bad_bytes_before_login(pop3d_env):
    srv = pop3d_env.start()
    assert srv.reply() == "+OK pop3d ready"
    srv.send(b"USER ali\x00ce\r\n")
    assert srv.reply() == ERR_BADBYTE
    assert srv.cmd("PASS secret") == "-ERR USER first"
    assert srv.cmd("USER alice") == "+OK Send your password"
    srv.send(b"PASS sec\x00ret\r\n")
    assert srv.reply() == ERR_BADBYTE
    # The bad line was no attempt: USER is still set, no failure counted.
    assert srv.cmd("PASS secret") == "+OK Maildrop has 0 messages (0 octets)"
    quit_ok(srv, 0)


def test_bare_lf_line_endings(box3):
    env, chunks, wires = box3
    srv = env.start()
    srv.send(b"USER alice\nPASS secret\nSTAT\nRETR 1\nDELE 2\nLIST\nQUIT\n")
    assert srv.reply() == "+OK pop3d ready"
    assert srv.reply() == "+OK Send your password"
    assert srv.reply().startswith("+OK Maildrop has 3 messages")
    assert srv.reply() == f"+OK 3 {total(wires)}"
    assert srv.reply() == f"+OK {len(wires[0])} octets"
    assert srv.read_body()[:-3] == wires[0]
    assert srv.reply() == "+OK Message 2 deleted"
    assert srv.reply().startswith("+OK 2 messages")
    assert srv.read_body() == \
        f"1 {len(wires[0])}\r\n3 {len(wires[2])}\r\n.\r\n".encode()
    assert srv.reply() == "+OK pop3d signing off (2 messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    assert env.mailbox().read_bytes() == chunks[0] + chunks[2]


# ---- pipelining --------------------------------------------------------------------

def test_login_pipelined_before_greeting_is_read(box3):
    env, chunks, wires = box3
    srv = env.start()
    srv.send(b"USER alice\r\nPASS secret\r\nSTAT\r\nQUIT\r\n")
    out = srv.read_until_eof()
    t = total(wires)
    assert out == (b"+OK pop3d ready\r\n"
                   b"+OK Send your password\r\n" +
                   f"+OK Maildrop has 3 messages ({t} octets)\r\n"
                   f"+OK 3 {t}\r\n"
                   "+OK pop3d signing off (3 messages left)\r\n".encode())
    srv.wait(0)


def test_hundred_pipelined_commands(box3):
    env, chunks, wires = box3
    srv = env.login()
    uids = {i: srv.cmd(f"UIDL {i}").split(" ")[2] for i in (1, 2, 3)}
    cmds, expected = [], b""
    for k in range(100):
        i = k % 3 + 1
        kind = k % 7
        if kind == 0:
            cmds.append(f"LIST {i}")
            expected += f"+OK {i} {len(wires[i - 1])}\r\n".encode()
        elif kind == 1:
            cmds.append(f"UIDL {i}")
            expected += f"+OK {i} {uids[i]}\r\n".encode()
        elif kind == 2:
            cmds.append("NOOP")
            expected += b"+OK\r\n"
        elif kind == 3:
            cmds.append(f"RETR {i}")
            expected += f"+OK {len(wires[i - 1])} octets\r\n".encode() + \
                wires[i - 1] + b".\r\n"
        elif kind == 4:
            cmds.append("STAT")
            expected += f"+OK 3 {total(wires)}\r\n".encode()
        elif kind == 5:
            cmds.append(f"LIST {i + 3}")
            expected += (ERR_NOMSG + "\r\n").encode()
        else:
            cmds.append(f"TOP {i} 0")
            head = wires[i - 1].partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
            expected += b"+OK Top of message follows\r\n" + head + b".\r\n"
    assert len(cmds) == 100
    srv.send("".join(c + "\r\n" for c in cmds).encode() + b"QUIT\r\n")
    expected += b"+OK pop3d signing off (3 messages left)\r\n"
    out = srv.read_until_eof()
    assert out == expected
    srv.wait(0)


def test_pipelined_deletions_commit(box3):
    env, chunks, wires = box3
    srv = env.start()
    srv.send(b"USER alice\r\nPASS secret\r\nDELE 1\r\nDELE 3\r\nDELE 3\r\n"
             b"STAT\r\nQUIT\r\nNOOP\r\n")
    out = srv.read_until_eof()
    assert out == (b"+OK pop3d ready\r\n+OK Send your password\r\n" +
                   f"+OK Maildrop has 3 messages ({total(wires)} octets)\r\n"
                   "+OK Message 1 deleted\r\n+OK Message 3 deleted\r\n"
                   f"{ERR_DELETED}\r\n+OK 1 {len(wires[1])}\r\n"
                   "+OK pop3d signing off (1 messages left)\r\n".encode())
    srv.wait(0)
    assert env.mailbox().read_bytes() == chunks[1]


def test_pipelined_commands_after_failed_login(pop3d_env):
    srv = pop3d_env.start()
    srv.send(b"USER alice\r\nPASS nope\r\nUSER alice\r\nPASS secret\r\n"
             b"STAT\r\nQUIT\r\n")
    out = srv.read_until_eof()
    assert out == (b"+OK pop3d ready\r\n+OK Send your password\r\n"
                   b"-ERR [AUTH] Authentication failed\r\n"
                   b"+OK Send your password\r\n"
                   b"+OK Maildrop has 0 messages (0 octets)\r\n"
                   b"+OK 0 0\r\n"
                   b"+OK pop3d signing off (0 messages left)\r\n")
    srv.wait(0)


# ---- a real client ------------------------------------------------------------------

def test_poplib_session(box3):
    env, chunks, wires = box3
    srv = env.start()
    p = srv.pop3()
    assert p.getwelcome() == b"+OK pop3d ready"
    caps = p.capa()
    for c in ("TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE",
              "PIPELINING"):
        assert c in caps
    assert caps["IMPLEMENTATION"] == ["pop3d"]
    assert p.user("alice") == b"+OK Send your password"
    assert p.pass_("secret").startswith(b"+OK Maildrop has 3 messages")
    assert p.stat() == (3, total(wires))
    resp, listing, _ = p.list()
    assert [l.split() for l in listing] == \
        [[str(i).encode(), str(len(w)).encode()]
         for i, w in enumerate(wires, 1)]
    for i, w in enumerate(wires, 1):
        resp, lines, octets = p.retr(i)
        assert resp == f"+OK {len(w)} octets".encode()
        assert b"\r\n".join(lines) + b"\r\n" == w
        assert octets == len(w)
    resp, lines, _ = p.top(1, 0)
    assert b"\r\n".join(lines) + b"\r\n" == \
        wires[0].partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    resp, uids, _ = p.uidl()
    assert len(uids) == 3
    assert p.noop() == b"+OK"
    assert p.dele(1) == b"+OK Message 1 deleted"
    with pytest.raises(Exception) as ei:
        p.retr(1)
    assert "Message is deleted" in str(ei.value)
    assert p.rset().startswith(b"+OK Maildrop has 3 messages")
    assert p.dele(2) == b"+OK Message 2 deleted"
    assert p.quit() == b"+OK pop3d signing off (2 messages left)"
    srv.wait(0)
    assert env.mailbox().read_bytes() == chunks[0] + chunks[2]


# ---- command line ------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["-t", "0"], "pop3d: -t takes 1 to 86400 seconds"),
    (["-t", "86401"], "pop3d: -t takes 1 to 86400 seconds"),
    (["-t", "1x"], "pop3d: -t takes 1 to 86400 seconds"),
    (["-t", "-5"], "pop3d: -t takes 1 to 86400 seconds"),
    (["extra"], "usage: pop3d"),
    (["-Z"], "usage: pop3d"),
])
def test_bad_command_line(pop3d_env, args, message):
    srv = pop3d_env.start(args)
    assert srv.read_until_eof() == b""
    srv.wait(2)
    assert message in srv.log


def test_version(pop3d_env):
    srv = pop3d_env.start(["-V"])
    assert srv.read_until_eof() == b"pop3d 0.2\n"
    srv.wait(0)


def test_pipelined_input_larger_than_the_input_buffer(box3):
    """3000 commands (~24 KiB, more than pop3d's 16 KiB input buffer), a
    line straddling every refill, all answered in order."""
    env, chunks, wires = box3
    srv = env.login()
    cmds = [f"LIST {k % 3 + 1}" if k % 2 else "NOOP" for k in range(3000)]
    srv.send("".join(c + "\r\n" for c in cmds).encode() + b"QUIT\r\n")
    expected = b"".join(
        (f"+OK {k % 3 + 1} {len(wires[k % 3])}\r\n" if k % 2
         else "+OK\r\n").encode() for k in range(3000))
    expected += b"+OK pop3d signing off (3 messages left)\r\n"
    assert srv.read_until_eof() == expected
    srv.wait(0)


def test_pipelined_input_across_login_larger_than_buffer(box3):
    env, chunks, wires = box3
    srv = env.start()
    n = 2500
    srv.send(b"USER alice\r\nPASS secret\r\n" + b"LIST 2\r\n" * n +
             b"DELE 2\r\nQUIT\r\n")
    expected = (b"+OK pop3d ready\r\n+OK Send your password\r\n" +
                f"+OK Maildrop has 3 messages ({total(wires)} octets)\r\n"
                .encode() +
                f"+OK 2 {len(wires[1])}\r\n".encode() * n +
                b"+OK Message 2 deleted\r\n"
                b"+OK pop3d signing off (2 messages left)\r\n")
    assert srv.read_until_eof() == expected
    srv.wait(0)
    assert env.mailbox().read_bytes() == chunks[0] + chunks[2]
