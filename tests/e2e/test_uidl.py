"""
UIDL stability, end to end (RFC 1939 §7; README "UIDLs"): 1-70 characters of
0x21-0x7e, unique in the maildrop, and the same for a message in every
session: after other messages are deleted, after new mail arrives, after
sessions that ended without QUIT (disconnect, autologout), after a crash
in the middle of a commit and its recovery, and after a mail reader
rewrote the headers it owns (Status:, X-Status:, Content-Length:, ...).
Identical messages get "X", "X-2", "X-3" in file order; an X-UIDL:
header planted by a sender is never used.

The expected values come from tests/fixtures/*.uidl and
tests/fixtures/uidl/*.uidl, made once with md5sum from the documented
scheme (tests/fixtures/README.md), never from pop3d's code.
"""
import re
import subprocess

import pytest

from conftest import POP3D, REPO, deliver, make_message

FAULT = REPO / "tests" / "fault" / "fault.so"
FIXTURES = REPO / "tests" / "fixtures"
UIDL_RE = re.compile(rb"[\x21-\x7e]{1,70}")


def expected_uidls(name):
    """The UIDLs of tests/fixtures/NAME.mbox, from NAME.uidl."""
    return (FIXTURES / f"{name}.uidl").read_text().split()


# make_message(n)'s UIDL is MADE[n - 1] (tests/fixtures/uidl/made.mbox).
MADE = expected_uidls("uidl/made")


# ---- helpers -------------------------------------------------------------------

def uidl_list(srv):
    """[(n, uid)] of the UIDL listing, checked for form and uniqueness,
    and against UIDL n for every message."""
    st, body = srv.multi("UIDL")
    assert st == "+OK Unique-ID listing follows"
    out = []
    for line in body.split(b"\r\n")[:-1]:
        n, uid = line.split(b" ")
        assert UIDL_RE.fullmatch(uid), f"bad UIDL {uid!r}"
        out.append((int(n), uid.decode()))
    uids = [u for _, u in out]
    assert len(set(uids)) == len(uids), f"UIDLs are not unique: {uids}"
    for n, uid in out:
        assert srv.cmd(f"UIDL {n}") == f"+OK {n} {uid}"
    return out


def uidls(srv):
    return [u for _, u in uidl_list(srv)]


def session_uidls(env, **kw):
    """A whole session that changes nothing: its UIDLs in order."""
    srv = env.login(**kw)
    u = uidls(srv)
    assert srv.cmd("QUIT").startswith("+OK pop3d signing off")
    srv.finish(0)
    return u


def rewrite_in_place(path, data):
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate()


def mixed_mailbox():
    """Messages of every kind the UIDL hash looks at."""
    out = []
    for n in range(1, 4):
        out.append(make_message(n)[0])
    # No Received: the Date: and Message-ID: count.
    out.append(b"From local@host Tue Jan  2 09:00:00 2024\n"
               b"Date: Tue, 2 Jan 2024 09:00:00 +0000\n"
               b"Message-ID: <local-4@host>\nSubject: local\n\nlocal\n\n")
    # Delivered-To and X-Delivery-ID, Received not first.
    out.append(b"From d@x Tue Jan  2 10:00:00 2024\n"
               b"Delivered-To: alice@example.org\n"
               b"X-Delivery-ID: 0123456789\n"
               b"Message-ID: <d-5@x>\n"
               b"Received: from a by b; Tue, 2 Jan 2024\n"
               b"Received: from c by d; Tue, 2 Jan 2024\n"
               b"Subject: delivered\n\nbody\n\n")
    # CRLF lines.
    out.append(b"From crlf@x Tue Jan  2 11:00:00 2024\r\n"
               b"Received: from e by f; Tue, 2 Jan 2024\r\n"
               b"Message-ID: <crlf-6@x>\r\n\r\ncrlf body\r\n\r\n")
    return out


# ---- the form, and the same value in every session ---------------------------------

def test_uidls_same_in_every_session(pop3d_env):
    chunks = mixed_mailbox()
    pop3d_env.write_mbox(b"".join(chunks))
    first = session_uidls(pop3d_env)
    assert len(first) == len(chunks)
    # A session that RETRs, DELEs and RSETs changes nothing.
    srv = pop3d_env.login()
    for n in range(1, len(chunks) + 1):
        srv.multi(f"RETR {n}")
    srv.cmd("DELE 2")
    assert srv.cmd("UIDL 2") == "-ERR Message is deleted"
    listed = uidl_list(srv)
    assert [n for n, _ in listed] == [n for n in range(1, len(chunks) + 1)
                                      if n != 2]
    assert [u for _, u in listed] == first[:1] + first[2:]
    srv.cmd("RSET")
    assert uidls(srv) == first
    srv.cmd("QUIT")
    srv.finish(0)
    assert session_uidls(pop3d_env) == first


def test_uidls_are_the_documented_hash(pop3d_env):
    chunks = mixed_mailbox()
    fixture = (FIXTURES / "uidl" / "mixed.mbox").read_bytes()
    assert b"".join(chunks) == fixture, "uidl/mixed.mbox is not " \
        "mixed_mailbox(): remake both (tests/fixtures/README.md)"
    pop3d_env.write_mbox(fixture)
    assert session_uidls(pop3d_env) == expected_uidls("uidl/mixed")


def test_made_messages_are_the_fixture():
    """MADE is the UIDL of make_message(n) only while made.mbox holds it."""
    made = b"".join(make_message(n)[0] for n in range(1, len(MADE) + 1))
    assert made == (FIXTURES / "uidl" / "made.mbox").read_bytes(), \
        "uidl/made.mbox is not make_message(1..8): remake it and its " \
        ".uidl (tests/fixtures/README.md)"


FIXTURE_UIDLS = sorted(p.relative_to(FIXTURES).with_suffix("").as_posix()
                       for p in FIXTURES.glob("**/*.uidl"))


@pytest.mark.parametrize("name", FIXTURE_UIDLS)
def test_fixture_uidls(pop3d_env, name):
    """Every fixture mailbox with a .uidl file: pop3d lists exactly those
    UIDLs, in that order."""
    pop3d_env.write_mbox((FIXTURES / f"{name}.mbox").read_bytes())
    assert session_uidls(pop3d_env) == expected_uidls(name)


# ---- deletions and new mail ----------------------------------------------------------

@pytest.mark.parametrize("dele", [[1], [2, 5], [6], [1, 3, 4, 6]],
                         ids=lambda d: "dele-" + "-".join(map(str, d)))
def test_remaining_messages_keep_their_uidls(pop3d_env, dele):
    chunks = mixed_mailbox()
    path = pop3d_env.write_mbox(b"".join(chunks))
    before = session_uidls(pop3d_env)
    srv = pop3d_env.login()
    assert uidls(srv) == before
    for d in dele:
        assert srv.cmd(f"DELE {d}") == f"+OK Message {d} deleted"
    left = len(chunks) - len(dele)
    assert srv.cmd("QUIT") == f"+OK pop3d signing off ({left} messages left)"
    srv.finish(0)
    kept = [i for i in range(1, len(chunks) + 1) if i not in dele]
    assert path.read_bytes() == b"".join(chunks[i - 1] for i in kept)
    assert session_uidls(pop3d_env) == [before[i - 1] for i in kept]


def test_new_mail_gets_new_uidls_old_keep_theirs(pop3d_env):
    chunks = mixed_mailbox()
    path = pop3d_env.write_mbox(b"".join(chunks))
    before = session_uidls(pop3d_env)
    # Between sessions: a new message, and a byte-identical copy of
    # message 1 (a second delivery of the same mail).
    new1 = make_message(7)[0]
    deliver(path, new1)
    deliver(path, chunks[0])
    after = session_uidls(pop3d_env)
    assert after[:len(before)] == before
    assert len(after) == len(before) + 2
    assert after[-2] not in before
    assert after[-1] == before[0] + "-2"
    # During a session: not shown, then kept, with new UIDLs.
    srv = pop3d_env.login()
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    new2 = make_message(8)[0]
    deliver(path, new2)
    assert uidls(srv) == after[:1] + after[2:]
    assert srv.cmd("QUIT").startswith("+OK pop3d signing off")
    srv.finish(0)
    final = session_uidls(pop3d_env)
    assert final[:-1] == after[:1] + after[2:]
    assert final[-1] not in after
    assert final[-1] == MADE[8 - 1]


# ---- sessions that ended without QUIT --------------------------------------------------

@pytest.mark.parametrize("how", ["close", "shutdown"])
def test_uidls_after_disconnect_after_dele(pop3d_env, how):
    chunks = mixed_mailbox()
    path = pop3d_env.write_mbox(b"".join(chunks))
    before = session_uidls(pop3d_env)
    srv = pop3d_env.login()
    for d in (1, 3):
        assert srv.cmd(f"DELE {d}") == f"+OK Message {d} deleted"
    if how == "close":
        srv.close()
    else:
        srv.shutdown_write()
        assert srv.read_until_eof() == b""
    srv.wait(1)
    assert path.read_bytes() == b"".join(chunks)
    assert session_uidls(pop3d_env) == before


def test_uidls_after_idle_timeout(pop3d_env):
    chunks = mixed_mailbox()
    path = pop3d_env.write_mbox(b"".join(chunks))
    before = session_uidls(pop3d_env)
    srv = pop3d_env.login(timeout=1)
    assert uidls(srv) == before
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.read_until_eof(timeout=6) == b""
    srv.wait(1)
    assert "timeout, alice from local" in srv.log
    assert path.read_bytes() == b"".join(chunks)
    assert session_uidls(pop3d_env) == before


# ---- a crash in the middle of a commit -----------------------------------------------

def crash_message(i):
    body = "".join(f"line {j} of message {i}\n" for j in range(40 * i))
    return (f"From u{i}@example.org Mon Jan  1 10:00:{i:02d} 2024\n"
            f"Received: from mx by host with id {i}; Mon, 1 Jan 2024\n"
            f"Message-ID: <crash-{i}@example.org>\n"
            f"Subject: message {i}\n\n{body}\n").encode()


def faulty_session(env, dele, extra):
    e = env.env()
    e["LD_PRELOAD"] += f" {FAULT}"
    e["FAULT_DIR"] = str(env.mail)
    e.update(extra)
    cmds = "USER alice\r\nPASS secret\r\n" + \
        "".join(f"DELE {d}\r\n" for d in dele) + "QUIT\r\n"
    return subprocess.run(env.argv(), input=cmds.encode(), env=e,
                          capture_output=True, timeout=60)


def test_uidls_after_crash_and_recovery(pop3d_env):
    msgs = [crash_message(i) for i in range(1, 7)]
    # A copy of a message that is kept, so that a suffix is tested too.
    msgs.append(msgs[2])
    old = b"".join(msgs)
    dele = [2, 4]
    path = pop3d_env.mailbox()

    def reset():
        pop3d_env.write_mbox(old)

    reset()
    srv = pop3d_env.login()
    before = uidl_list(srv)
    by_pos = dict(before)
    srv.cmd("QUIT")
    srv.finish(0)
    assert by_pos[7] == by_pos[3] + "-2"
    # Learn how many points the commit passes through.
    points_log = pop3d_env.tmp / "points"
    p = faulty_session(pop3d_env, dele, {"FAULT_LOG": str(points_log)})
    assert p.stdout.endswith(b"+OK pop3d signing off (5 messages left)\r\n")
    points = len(points_log.read_text().splitlines())
    assert points >= 10
    new = b"".join(m for i, m in enumerate(msgs, 1) if i not in dele)
    expect_new = [by_pos[i] for i in range(1, 8) if i not in dele]
    seen = set()
    for at in sorted({1, points // 3, points // 2, 2 * points // 3,
                      points - 1, points}):
        reset()
        p = faulty_session(pop3d_env, dele,
                           {"FAULT_AT": str(at), "FAULT_MODE": "kill"})
        assert b"signing off" not in p.stdout, (at, p.stdout)
        r = subprocess.run([POP3D, "-d", "-r", str(path)],
                           env=pop3d_env.env(), capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr.decode()
        state = path.read_bytes()
        assert state in (old, new), f"killed at point {at}: neither old " \
            "nor new mailbox"
        got = session_uidls(pop3d_env)
        if state == old:
            seen.add("old")
            assert got == [u for _, u in before], f"killed at point {at}"
        else:
            seen.add("new")
            assert got == expect_new, f"killed at point {at}"
    assert seen == {"old", "new"}, "expected crashes before and after " \
        "the commit was decided"


# ---- identical messages ------------------------------------------------------------------

def test_identical_messages_get_suffixes_in_file_order(pop3d_env):
    x = make_message(1)[0]
    y = make_message(2)[0]
    chunks = [x, y, x, x, y]
    path = pop3d_env.write_mbox(b"".join(chunks))
    u = session_uidls(pop3d_env)
    base_x, base_y = MADE[1 - 1], MADE[2 - 1]
    assert u == [base_x, base_y, base_x + "-2", base_x + "-3", base_y + "-2"]
    # Deleting a later copy, or another message, leaves the others alone.
    srv = pop3d_env.login()
    assert srv.cmd("DELE 4") == "+OK Message 4 deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (4 messages left)"
    srv.finish(0)
    assert path.read_bytes() == x + y + x + y
    assert session_uidls(pop3d_env) == [base_x, base_y, base_x + "-2",
                                        base_y + "-2"]


def test_messages_differing_only_in_rewritable_headers(pop3d_env):
    """Two messages that differ only in Status: get distinct UIDLs
    (they are not identical to the hash: "X" and "X-2")."""
    x = make_message(1)[0]
    i = x.index(b"\n\n")
    x_read = x[:i + 1] + b"Status: RO\n" + x[i + 1:]
    pop3d_env.write_mbox(x + x_read)
    u = session_uidls(pop3d_env)
    assert u == [MADE[1 - 1], MADE[1 - 1] + "-2"]


# ---- headers that mail readers rewrite -------------------------------------------------

def add_headers(chunk, headers):
    """Inserts LF-ended header lines at the end of the header, in the
    chunk's own line ending."""
    eol = b"\r\n" if chunk.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    i = chunk.index(eol + eol) + len(eol)
    return chunk[:i] + headers.replace(b"\n", eol) + chunk[i:]


def reader_rewrite(chunks, k):
    """What mutt, UW or Dovecot do to message k (0-based) and the folder."""
    out = list(chunks)
    c = chunks[k]
    eol = b"\r\n" if c.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    body = c[c.index(eol + eol) + 2 * len(eol):-len(eol)]   # no framing
    out[k] = add_headers(c, b"Status: RO\nX-Status: A\nContent-Length: %d\n"
                         b"Lines: %d\nX-UID: 17\nX-Keywords: $Label1\n" %
                         (len(body), body.count(b"\n")))
    return out


@pytest.mark.parametrize("k", [0, 2, 5])
def test_reader_rewritten_headers_keep_uidls(pop3d_env, k):
    chunks = mixed_mailbox()
    path = pop3d_env.write_mbox(b"".join(chunks))
    before = session_uidls(pop3d_env)
    step1 = reader_rewrite(chunks, k)
    rewrite_in_place(path, b"".join(step1))
    assert session_uidls(pop3d_env) == before
    # And a second rewrite changes the values again.
    step2 = [c.replace(b"Status: RO", b"Status: O")
             .replace(b"X-Status: A", b"X-Status: AF") for c in step1]
    assert step2 != step1
    rewrite_in_place(path, b"".join(step2))
    assert session_uidls(pop3d_env) == before


def test_folder_internal_data_added_keeps_uidls(pop3d_env):
    """UW imapd and Dovecot put a hidden pseudo-message first: the
    message numbers stay, and so do the UIDLs."""
    chunks = mixed_mailbox()
    path = pop3d_env.write_mbox(b"".join(chunks))
    before = session_uidls(pop3d_env)
    pseudo = (b"From MAILER-DAEMON Mon Jan  1 12:00:00 2024\n"
              b"Date: Mon, 1 Jan 2024 12:00:00 +0000\n"
              b"From: Mail System Internal Data <MAILER-DAEMON@host>\n"
              b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
              b"X-IMAP: 1234567890 0000000007\n\n"
              b"This text is part of the internal format of your mail "
              b"folder.\n\n")
    rewrite_in_place(path, pseudo + b"".join(reader_rewrite(chunks, 0)))
    assert session_uidls(pop3d_env) == before


# ---- X-UIDL planted by a sender -------------------------------------------------------

def test_planted_x_uidl_is_not_used(pop3d_env):
    a = make_message(1, extra_headers=b"X-UIDL: planted\n")[0]
    b = make_message(2, extra_headers=b"X-UIDL: planted\n")[0]
    c = make_message(3)[0]
    c_uidl = MADE[3 - 1]
    # A message that claims c's UIDL, one with a UIDL that is not even
    # valid, and one whose X-UIDL is the only header that differs.
    d = make_message(4, extra_headers=b"X-UIDL: %s\n" % c_uidl.encode())[0]
    e = make_message(5, extra_headers=b"X-UIDL: has spaces " + b"x" * 80 +
                     b"\n")[0]
    f = add_headers(c, b"X-UIDL: other\n")
    chunks = [a, b, c, d, e, f]
    pop3d_env.write_mbox(b"".join(chunks))
    u = session_uidls(pop3d_env)
    assert "planted" not in u and "other" not in u
    assert u[2] == c_uidl
    # X-UIDL is not hashed: each has the UIDL of its message without it.
    assert u[3] != c_uidl and u[3] == MADE[4 - 1]
    assert u[:2] == [MADE[1 - 1], MADE[2 - 1]]
    assert u[4] == MADE[5 - 1]
    # f differs from c only in X-UIDL, which is not hashed.
    assert u[5] == c_uidl + "-2"
