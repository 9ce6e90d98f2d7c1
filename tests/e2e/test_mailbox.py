"""
The maildrop end to end: exact bytes and sizes on the wire for every
fixture and for mailboxes made here, the UPDATE state (exact bytes left,
same inode, owner and mode, nothing written when nothing is deleted), no
UPDATE on disconnect or timeout, the [IN-USE] session lock, mail delivered
during a session, and mailboxes that must be refused.
"""
import fcntl
import os
import re
import signal
import time

import pytest

from conftest import (deliver, take_dotlock, take_fcntl,
                      ALICE_UID, BOB_UID, MAIL_GID, ServerError, build_mbox,
                      fixture_cases, fixture_expectation, make_message,
                      unstuff)

BADFILE = "-ERR [SYS/PERM] Mailbox is not a regular file of yours"
NOTMBOX = "-ERR [SYS/PERM] Mailbox is not in mbox format"
IN_USE = "-ERR [IN-USE] Maildrop is in use by another session"


# ---- helpers ---------------------------------------------------------------

def snapshot(path):
    st = os.stat(path)
    return {"bytes": path.read_bytes(), "ino": st.st_ino, "dev": st.st_dev,
            "uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode,
            "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "nlink": st.st_nlink}


def age(path):
    """Sets an old mtime, so that any write would show."""
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))


def assert_untouched(path, before):
    after = snapshot(path)
    assert after == before, "mailbox changed"


def assert_same_file(path, before, data):
    """The file holds data and is still the same inode, owner and mode."""
    st = os.stat(path)
    assert path.read_bytes() == data
    assert (st.st_ino, st.st_dev) == (before["ino"], before["dev"])
    assert (st.st_uid, st.st_gid) == (before["uid"], before["gid"])
    assert st.st_mode == before["mode"]
    assert st.st_nlink == 1


def assert_crlf_only(raw):
    """Every LF on the wire is preceded by a CR."""
    for m in re.finditer(b"\n", raw):
        assert m.start() > 0 and raw[m.start() - 1:m.start()] == b"\r", \
            f"bare LF at offset {m.start()}: {raw[max(0, m.start() - 40):m.start() + 1]!r}"


def retr(srv, i, size=None):
    st, raw = srv.multi(f"RETR {i}")
    assert st.startswith("+OK "), st
    m = re.fullmatch(r"\+OK (\d+) octets", st)
    assert m, st
    assert_crlf_only(raw)
    msg = unstuff(raw)
    assert int(m.group(1)) == len(msg), \
        f"RETR {i}: announced {m.group(1)} octets, sent {len(msg)}"
    if size is not None:
        assert len(msg) == size
    return msg


def list_sizes(srv):
    st, body = srv.multi("LIST")
    assert st.startswith("+OK ")
    out = {}
    for line in body.decode().split("\r\n")[:-1]:
        n, size = line.split(" ")
        out[int(n)] = int(size)
    return out


def uidl_map(srv):
    st, body = srv.multi("UIDL")
    assert st == "+OK Unique-ID listing follows"
    out = {}
    for line in body.decode("latin-1").split("\r\n")[:-1]:
        n, uid = line.split(" ")
        assert re.fullmatch(r"[\x21-\x7e]{1,70}", uid), uid
        out[int(n)] = uid
    assert len(set(out.values())) == len(out), "UIDLs are not unique"
    return out


def top0(eml):
    """What TOP n 0 sends: the header and the empty line after it."""
    if eml.startswith(b"\r\n"):
        return b"\r\n"
    i = eml.find(b"\r\n\r\n")
    return eml if i < 0 else eml[:i + 4]


def maildrop_line(n, octets):
    return f"+OK Maildrop has {n} messages ({octets} octets)"


NEW_MAIL = (b"From x@y Mon Jan  1 12:00:00 2024\n"
            b"Received: from delivery by test; Mon, 1 Jan 2024\n"
            b"From: x@y\nSubject: delivered during the session\n\n"
            b"Fresh mail.\n\n")
NEW_MAIL_WIRE = (b"Received: from delivery by test; Mon, 1 Jan 2024\r\n"
                 b"From: x@y\r\nSubject: delivered during the session\r\n\r\n"
                 b"Fresh mail.\r\n")


# ---- the fixture corpus --------------------------------------------------------

FIXTURE_CASES = fixture_cases()
# The fixtures that hold at least one message: those can lose one.
DELETABLE_CASES = [c for c in FIXTURE_CASES
                   if fixture_expectation(c.values[1])[1]]


@pytest.mark.parametrize("mbox,exp", FIXTURE_CASES)
def test_fixture_served_exactly(pop3d_env, mbox, exp):
    kind, emls = fixture_expectation(exp)
    path = pop3d_env.write_mbox(mbox.read_bytes())
    age(path)
    before = snapshot(path)
    srv = pop3d_env.start()
    r = srv.login()
    if emls is None:
        assert kind == "notmbox", f"unknown ERROR kind {kind!r}"
        assert r == NOTMBOX
        assert srv.read_until_eof() == b""
        srv.wait(1)
        assert_untouched(path, before)
        assert pop3d_env.leftovers() == []
        return
    n, t = len(emls), sum(len(e) for e in emls)
    assert r == maildrop_line(n, t)
    assert srv.cmd("STAT") == f"+OK {n} {t}"
    sizes = list_sizes(srv)
    assert sizes == {i: len(e) for i, e in enumerate(emls, 1)}
    assert sum(sizes.values()) == t
    for i, eml in enumerate(emls, 1):
        assert srv.cmd(f"LIST {i}") == f"+OK {i} {len(eml)}"
        msg = retr(srv, i, sizes[i])
        assert msg == eml, f"message {i} differs from {i}.eml"
        st, raw = srv.multi(f"TOP {i} 0")
        assert st == "+OK Top of message follows"
        assert_crlf_only(raw)
        assert unstuff(raw) == top0(eml), f"TOP {i} 0"
    uids = uidl_map(srv)
    assert sorted(uids) == list(range(1, n + 1))
    assert srv.cmd(f"RETR {n + 1}") == "-ERR No such message"
    assert srv.cmd("QUIT") == f"+OK pop3d signing off ({n} messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []
    # The UIDLs are the same in the next session.
    srv = pop3d_env.login()
    assert uidl_map(srv) == uids
    srv.finish(1)


@pytest.mark.parametrize("mbox,exp", DELETABLE_CASES)
def test_fixture_delete_odd_messages(pop3d_env, mbox, exp):
    kind, emls = fixture_expectation(exp)
    path = pop3d_env.write_mbox(mbox.read_bytes(), mode=0o640)
    before = snapshot(path)
    srv = pop3d_env.login()
    uids = uidl_map(srv)
    n = len(emls)
    odd = list(range(1, n + 1, 2))
    for i in odd:
        assert srv.cmd(f"DELE {i}") == f"+OK Message {i} deleted"
    kept = [i for i in range(1, n + 1) if i not in odd]
    assert srv.cmd("QUIT") == \
        f"+OK pop3d signing off ({len(kept)} messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    assert pop3d_env.leftovers() == []
    st = os.stat(path)
    assert (st.st_ino, st.st_uid, st.st_gid, st.st_mode) == \
        (before["ino"], before["uid"], before["gid"], before["mode"])
    assert st.st_size < len(before["bytes"])
    srv = pop3d_env.login()
    t = sum(len(emls[i - 1]) for i in kept)
    assert srv.cmd("STAT") == f"+OK {len(kept)} {t}"
    for new, old in enumerate(kept, 1):
        assert retr(srv, new) == emls[old - 1], \
            f"message {new} (was {old}) differs after the commit"
    # A kept message whose UIDL had no duplicate keeps it.
    new_uids = uidl_map(srv)
    bases = [u.split("-")[0] for u in uids.values()]
    for new, old in enumerate(kept, 1):
        if bases.count(uids[old].split("-")[0]) == 1:
            assert new_uids[new] == uids[old]
    # Now delete everything that is left.
    for i in range(1, len(kept) + 1):
        assert srv.cmd(f"DELE {i}") == f"+OK Message {i} deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (0 messages left)"
    srv.finish(0)
    assert os.stat(path).st_ino == before["ino"]
    srv = pop3d_env.login()
    assert srv.cmd("STAT") == "+OK 0 0"
    srv.cmd("QUIT")
    srv.finish(0)


# ---- UPDATE --------------------------------------------------------------------

@pytest.mark.parametrize("deleted", [{1}, {5}, {2, 4}, {1, 3, 5}, {4, 5},
                                     {1, 2, 3, 4, 5}],
                         ids=lambda d: "dele-" + "-".join(map(str, sorted(d))))
def test_dele_quit_leaves_exact_bytes(pop3d_env, deleted):
    data, chunks, wires = build_mbox(5)
    path = pop3d_env.write_mbox(data, mode=0o660)
    before = snapshot(path)
    srv = pop3d_env.login()
    for i in sorted(deleted):
        assert srv.cmd(f"DELE {i}") == f"+OK Message {i} deleted"
    left = 5 - len(deleted)
    assert srv.cmd("QUIT") == f"+OK pop3d signing off ({left} messages left)"
    assert srv.read_until_eof() == b""
    srv.wait(0)
    kept = b"".join(c for i, c in enumerate(chunks, 1) if i not in deleted)
    assert_same_file(path, before, kept)
    assert pop3d_env.leftovers() == []
    dsize = sum(len(wires[i - 1]) for i in deleted)
    lsize = sum(len(w) for w in wires) - dsize
    assert (f"pop3d: alice: {len(deleted)} ({dsize}) deleted, "
            f"{left} ({lsize}) left") in srv.log
    # The next session sees exactly the kept messages.
    srv = pop3d_env.login()
    keptw = [w for i, w in enumerate(wires, 1) if i not in deleted]
    assert srv.cmd("STAT") == f"+OK {len(keptw)} {lsize}"
    for i, w in enumerate(keptw, 1):
        assert retr(srv, i) == w
    srv.cmd("QUIT")
    srv.finish(0)


def test_all_deleted_truncates_to_zero_same_inode(pop3d_env):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data, mode=0o620)
    before = snapshot(path)
    srv = pop3d_env.login()
    for i in (1, 2, 3):
        srv.cmd(f"DELE {i}")
    assert srv.cmd("STAT") == "+OK 0 0"
    assert srv.multi("LIST") == ("+OK 0 messages (0 octets)", b"")
    assert srv.cmd("QUIT") == "+OK pop3d signing off (0 messages left)"
    srv.finish(0)
    assert_same_file(path, before, b"")
    assert pop3d_env.leftovers() == []


@pytest.mark.parametrize("how", ["nothing", "dele-rset"])
def test_quit_without_deletions_does_not_write(pop3d_env, how):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    age(path)
    before = snapshot(path)
    srv = pop3d_env.login()
    for i in (1, 2, 3):
        retr(srv, i)
    if how == "dele-rset":
        srv.cmd("DELE 1")
        srv.cmd("DELE 3")
        total = sum(len(w) for w in wires)
        assert srv.cmd("RSET") == maildrop_line(3, total)
        assert srv.cmd("STAT") == f"+OK 3 {total}"
        assert list_sizes(srv) == {i: len(w) for i, w in enumerate(wires, 1)}
    assert srv.cmd("QUIT") == "+OK pop3d signing off (3 messages left)"
    srv.finish(0)
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []
    assert "pop3d: alice: 0 (0) deleted, 3 " in srv.log


@pytest.mark.parametrize("how", ["close", "shutdown"])
def test_disconnect_without_quit_changes_nothing(pop3d_env, how):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    age(path)
    before = snapshot(path)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    if how == "close":
        srv.close()
    else:
        srv.shutdown_write()
        assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "pop3d: premature disconnect, alice from local" in srv.log
    assert "deleted" not in srv.log
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []
    # And the maildrop is free at once.
    srv = pop3d_env.login()
    assert srv.cmd("STAT") == f"+OK 3 {sum(len(w) for w in wires)}"
    srv.cmd("QUIT")
    srv.finish(0)


# ---- empty maildrops ---------------------------------------------------------------

def test_missing_mailbox_is_empty_and_not_created(pop3d_env):
    srv = pop3d_env.login()
    assert srv.cmd("STAT") == "+OK 0 0"
    assert srv.multi("LIST") == ("+OK 0 messages (0 octets)", b"")
    assert srv.multi("UIDL") == ("+OK Unique-ID listing follows", b"")
    assert srv.cmd("RETR 1") == "-ERR No such message"
    assert srv.cmd("DELE 1") == "-ERR No such message"
    assert srv.cmd("RSET") == maildrop_line(0, 0)
    assert srv.cmd("QUIT") == "+OK pop3d signing off (0 messages left)"
    srv.finish(0)
    assert not pop3d_env.mailbox().exists()
    assert sorted(os.listdir(pop3d_env.mail)) == []


def test_empty_mailbox(pop3d_env):
    path = pop3d_env.write_mbox(b"")
    age(path)
    before = snapshot(path)
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(0, 0)
    assert srv.cmd("STAT") == "+OK 0 0"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (0 messages left)"
    srv.finish(0)
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []


# ---- autologout ------------------------------------------------------------------

def test_idle_timeout_after_login_no_update(pop3d_env):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    age(path)
    before = snapshot(path)
    srv = pop3d_env.login(timeout=1)
    # t0 before the command: pop3d's idle second starts after it has
    # answered, so the bound below is causal and load cannot break it.
    t0 = time.monotonic()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    # The server hangs up without a word.
    assert srv.read_until_eof(timeout=8) == b""
    assert time.monotonic() - t0 >= 0.9, "hung up before -t 1 was up"
    srv.wait(1)
    assert "pop3d: timeout, alice from local" in srv.log
    assert "deleted" not in srv.log
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []


def test_idle_timeout_before_login(pop3d_env):
    srv = pop3d_env.start(timeout=1)
    assert srv.reply() == "+OK pop3d ready"
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.read_until_eof(timeout=8) == b""
    srv.wait(1)
    assert "pop3d: timeout, before login from local" in srv.log


# ---- the session lock ------------------------------------------------------------

def test_second_session_gets_in_use(pop3d_env):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    first = pop3d_env.login()
    assert first.cmd("DELE 3") == "+OK Message 3 deleted"
    second = pop3d_env.start()
    assert second.login() == IN_USE
    assert second.read_until_eof() == b""
    second.wait(1)
    assert "pop3d: login ok: alice from local" in second.log
    # The first session is unaffected.
    assert retr(first, 1) == wires[0]
    assert first.cmd("STAT") == \
        f"+OK 2 {len(wires[0]) + len(wires[1])}"
    assert first.cmd("QUIT") == "+OK pop3d signing off (2 messages left)"
    first.finish(0)
    assert path.read_bytes() == chunks[0] + chunks[1]
    # The maildrop is free again at once.
    third = pop3d_env.login()
    assert third.cmd("STAT").startswith("+OK 2 ")
    third.cmd("QUIT")
    third.finish(0)
    assert pop3d_env.leftovers() == []


def test_other_user_not_blocked(pop3d_env):
    pop3d_env.write_mbox(build_mbox(1)[0])
    pop3d_env.write_mbox(build_mbox(2)[0], user="bob")
    a = pop3d_env.login()
    b = pop3d_env.login("bob", "bobpass")
    assert a.cmd("STAT").startswith("+OK 1 ")
    assert b.cmd("STAT").startswith("+OK 2 ")
    for s in (a, b):
        s.cmd("QUIT")
        s.finish(0)


def test_sigkill_frees_the_maildrop(pop3d_env):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    age(path)
    before = snapshot(path)
    first = pop3d_env.login()
    assert first.cmd("DELE 1") == "+OK Message 1 deleted"
    first.kill(signal.SIGKILL)
    first.proc.wait(10)
    second = pop3d_env.login()
    assert second.cmd("STAT") == f"+OK 3 {sum(len(w) for w in wires)}"
    second.cmd("QUIT")
    second.finish(0)
    assert_untouched(path, before)


# ---- mail delivered during a session ---------------------------------------------

def test_mail_delivered_during_session_survives_commit(pop3d_env):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    before = snapshot(path)
    srv = pop3d_env.login()
    stat_before = srv.cmd("STAT")
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    stat_dele = srv.cmd("STAT")
    deliver(path, NEW_MAIL)
    # Not visible in this session.
    assert srv.cmd("STAT") == stat_dele
    assert srv.cmd("LIST 4") == "-ERR No such message"
    assert srv.cmd("RSET").endswith(stat_before.split(" ", 2)[2] + " octets)")
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (2 messages left)"
    srv.finish(0)
    assert_same_file(path, before, chunks[1] + chunks[2] + NEW_MAIL)
    assert pop3d_env.leftovers() == []
    srv = pop3d_env.login()
    assert srv.cmd("STAT").startswith("+OK 3 ")
    assert retr(srv, 3) == NEW_MAIL_WIRE
    srv.cmd("QUIT")
    srv.finish(0)


def test_mail_delivered_during_session_nothing_deleted(pop3d_env):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    deliver(path, NEW_MAIL)
    assert srv.cmd("STAT").startswith("+OK 2 ")
    srv.cmd("QUIT")
    srv.finish(0)
    assert path.read_bytes() == data + NEW_MAIL


def test_mail_delivered_into_missing_mailbox_during_session(pop3d_env):
    srv = pop3d_env.login()
    path = pop3d_env.write_mbox(b"")
    deliver(path, NEW_MAIL)
    assert srv.cmd("STAT") == "+OK 0 0"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (0 messages left)"
    srv.finish(0)
    assert path.read_bytes() == NEW_MAIL


@pytest.mark.parametrize("held", ["fcntl", "dotlock", "both"])
def test_commit_waits_for_delivery_agent_locks(pop3d_env, held):
    """QUIT while a delivery agent holds its locks: pop3d waits, then
    commits around the mail appended meanwhile."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    before = snapshot(path)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 2") == "+OK Message 2 deleted"
    lock = take_dotlock(path) if held in ("dotlock", "both") else None
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    if held in ("fcntl", "both"):
        take_fcntl(fd)
    srv.send(b"QUIT\r\n")
    # It must not commit (nor answer) while we hold the lock.
    with pytest.raises(ServerError, match="timed out"):
        srv.readline(timeout=0.5)
    os.write(fd, NEW_MAIL)
    if held in ("fcntl", "both"):
        fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    if lock:
        os.unlink(lock)
    assert srv.reply() == "+OK pop3d signing off (2 messages left)"
    srv.finish(0)
    assert_same_file(path, before, chunks[0] + chunks[2] + NEW_MAIL)
    assert pop3d_env.leftovers() == []


# ---- mailboxes that must be refused ----------------------------------------------

def refused(pop3d_env, expected=BADFILE):
    srv = pop3d_env.start()
    assert srv.login() == expected
    assert srv.read_until_eof() == b""
    srv.wait(1)
    return srv


def test_mailbox_owned_by_someone_else(pop3d_env):
    path = pop3d_env.write_mbox(build_mbox(2)[0], uid=BOB_UID)
    age(path)
    before = snapshot(path)
    refused(pop3d_env)
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []


def test_mailbox_owned_by_root(pop3d_env):
    path = pop3d_env.write_mbox(build_mbox(2)[0], uid=0, gid=0)
    before = snapshot(path)
    refused(pop3d_env)
    assert_untouched(path, before)


def test_mailbox_symlink(pop3d_env):
    target = pop3d_env.write_mbox(build_mbox(2)[0],
                                  path=pop3d_env.tmp / "elsewhere")
    age(target)
    before = snapshot(target)
    pop3d_env.mailbox().symlink_to(target)
    os.lchown(pop3d_env.mailbox(), ALICE_UID, MAIL_GID)
    refused(pop3d_env)
    assert_untouched(target, before)
    assert pop3d_env.mailbox().is_symlink()
    assert pop3d_env.leftovers() == []


def test_mailbox_hard_link(pop3d_env):
    other = pop3d_env.write_mbox(build_mbox(2)[0],
                                 path=pop3d_env.tmp / "other-link")
    os.link(other, pop3d_env.mailbox())
    age(other)
    before = snapshot(other)
    refused(pop3d_env)
    assert_untouched(other, before)


def test_mailbox_is_directory(pop3d_env):
    d = pop3d_env.mailbox()
    d.mkdir()
    os.chown(d, ALICE_UID, MAIL_GID)
    refused(pop3d_env)


def test_mailbox_is_fifo(pop3d_env):
    p = pop3d_env.mailbox()
    os.mkfifo(p, 0o600)
    os.chown(p, ALICE_UID, MAIL_GID)
    refused(pop3d_env)


@pytest.mark.parametrize("content", [
    b"hello\n",
    b"\nFrom a@b Mon Jan  1 12:00:00 2024\nSubject: x\n\nbody\n",
    b"From a@b\nSubject: no date on the From_ line\n\nbody\n",
    b"Subject: x\n\nFrom a@b Mon Jan  1 12:00:00 2024\n"],
    ids=["text", "leading-empty-line", "from-without-date", "header-first"])
def test_not_mbox(pop3d_env, content):
    path = pop3d_env.write_mbox(content)
    age(path)
    before = snapshot(path)
    refused(pop3d_env, NOTMBOX)
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []


def test_world_writable_rundir_refused(pop3d_env):
    pop3d_env.write_mbox(build_mbox(1)[0])
    pop3d_env.run.mkdir(mode=0o700)
    os.chmod(pop3d_env.run, 0o777)
    # Checked at once, before the greeting: the server says so and ends.
    srv = pop3d_env.start()
    assert srv.reply() == "-ERR [SYS/TEMP] pop3d is misconfigured; " \
        "the administrator has been told (see the mail log)"
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert "not a directory of uid 0 closed to others" in srv.log


def test_stale_unfinished_journal_is_discarded(pop3d_env):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    jnl = pop3d_env.mail / "alice.pop3d-journal"
    jnl.write_bytes(b"\0" * 100)
    srv = pop3d_env.login()
    assert srv.cmd("STAT").startswith("+OK 2 ")
    srv.cmd("QUIT")
    srv.finish(0)
    assert path.read_bytes() == data
    assert not jnl.exists()


# ---- message content on the wire -------------------------------------------------

def serve_one(pop3d_env, mbox_bytes):
    """Logs in to a mailbox and returns (session, {n: message as sent})."""
    pop3d_env.write_mbox(mbox_bytes)
    srv = pop3d_env.login()
    sizes = list_sizes(srv)
    msgs = {i: retr(srv, i, size) for i, size in sizes.items()}
    st = srv.cmd("STAT")
    assert st == f"+OK {len(sizes)} {sum(sizes.values())}"
    return srv, msgs


def done(srv):
    assert srv.cmd("QUIT").startswith("+OK pop3d signing off")
    srv.finish(0)


FROM = b"From a@b Mon Jan  1 12:00:00 2024"
CL_BODY = b"x\n\nFrom b@c Tue Jan  2 12:00:00 2024\nstill a\n"

CONTENT_CASES = {
    "dot-stuffing": (
        FROM + b"\nSubject: dots\n\n.\n..\n.x\nx.\n. \n\n",
        [b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nx.\r\n. \r\n"]),
    "crlf-file": (
        FROM + b"\r\nSubject: a\r\n\r\nbody\r\n\r\n" +
        FROM + b"\r\nSubject: b\r\n\r\n.dot\r\n",
        [b"Subject: a\r\n\r\nbody\r\n", b"Subject: b\r\n\r\n.dot\r\n"]),
    "no-final-newline": (
        FROM + b"\nSubject: a\n\nfirst\n\n" + FROM +
        b"\nSubject: b\n\nlast line",
        [b"Subject: a\r\n\r\nfirst\r\n", b"Subject: b\r\n\r\nlast line\r\n"]),
    "final-cr-only": (
        FROM + b"\nSubject: a\n\nends in CR\r",
        [b"Subject: a\r\n\r\nends in CR\r\n"]),
    "bare-cr-in-line": (
        FROM + b"\nSubject: a\n\na\rb\nc\r\r\n",
        [b"Subject: a\r\n\r\na\rb\r\nc\r\r\n"]),
    "escaped-from": (
        FROM + b"\nSubject: a\n\n>From me\nFrom me, without a date\n\n"
        b"From me too\n",
        [b"Subject: a\r\n\r\n>From me\r\nFrom me, without a date\r\n\r\n"
         b"From me too\r\n"]),
    "nul-bytes": (
        FROM + b"\nSubject: a\n\na\0b\n\0\n",
        [b"Subject: a\r\n\r\na\0b\r\n\0\r\n"]),
    "empty-message": (
        FROM + b"\n\n" + FROM + b"\nSubject: b\n\nb\n",
        [b"", b"Subject: b\r\n\r\nb\r\n"]),
    "header-only": (
        FROM + b"\nSubject: a\n",
        [b"Subject: a\r\n"]),
    "content-length-honoured": (
        FROM + b"\nSubject: a\nContent-Length: %d\n\n" % len(CL_BODY) +
        CL_BODY + b"\n" + FROM + b"\nSubject: b\n\nb\n",
        [b"Subject: a\r\nContent-Length: %d\r\n\r\n" % len(CL_BODY) +
         CL_BODY.replace(b"\n", b"\r\n"),
         b"Subject: b\r\n\r\nb\r\n"]),
    "content-length-wrong-ignored": (
        FROM + b"\nSubject: a\nContent-Length: 3\n\n"
        b"x\n\nFrom b@c Tue Jan  2 12:00:00 2024\nSubject: b\n\nb\n",
        [b"Subject: a\r\nContent-Length: 3\r\n\r\nx\r\n",
         b"Subject: b\r\n\r\nb\r\n"]),
}


@pytest.mark.parametrize("name", sorted(CONTENT_CASES))
def test_message_content_on_the_wire(pop3d_env, name):
    data, expected = CONTENT_CASES[name]
    srv, msgs = serve_one(pop3d_env, data)
    assert [msgs[i] for i in sorted(msgs)] == expected
    done(srv)


def test_lines_across_read_chunks(pop3d_env):
    """Lines, CRLF pairs and dot lines that straddle pop3d's 128 KiB read
    chunks, and a line far longer than the parser looks at."""
    chunk = 128 * 1024
    head = b"Subject: big\r\n\r\n"
    # A CR at the last byte of the first chunk, its LF in the next one,
    # then a dot line.
    l1 = b"y" * (chunk - len(head) - 1) + b"\r\n"
    body1 = l1 + b".dot after the boundary\r\n" + b"z" * 300000 + b"\r\n"
    # The first chunk ends right after an LF; the next line starts with '.'.
    l2 = b"w" * (chunk - len(head) - 2) + b"\r\n"
    body2 = l2 + b".second dot\r\nend\r\n"
    data = (FROM + b"\r\n" + head + body1 + b"\r\n" +
            FROM + b"\r\n" + head + body2)
    srv, msgs = serve_one(pop3d_env, data)
    assert msgs == {1: head + body1, 2: head + body2}
    st, raw = srv.multi("RETR 1")
    assert b"\r\n..dot after the boundary\r\n" in raw
    st, raw = srv.multi("RETR 2")
    assert b"\r\n..second dot\r\n" in raw
    done(srv)


def test_many_messages_sizes_and_uidl(pop3d_env):
    """Hundreds of messages: the parser crosses its buffer many times."""
    n = 400
    bodies = [(f"body {i}\n" + "filler line\n" * (i % 37)).encode()
              for i in range(1, n + 1)]
    data, chunks, wires = build_mbox(n, bodies=bodies)
    pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    assert list_sizes(srv) == {i: len(w) for i, w in enumerate(wires, 1)}
    for i in (1, 2, 199, 200, 201, 399, 400):
        assert retr(srv, i) == wires[i - 1]
    assert len(uidl_map(srv)) == n
    for i in range(2, n + 1, 2):
        srv.cmd(f"DELE {i}")
    assert srv.cmd("QUIT") == f"+OK pop3d signing off ({n // 2} messages left)"
    srv.finish(0)
    assert pop3d_env.mailbox().read_bytes() == b"".join(chunks[0::2])


def test_identical_messages_get_distinct_stable_uidls(pop3d_env):
    c, w = make_message(1)
    data = c + c + c
    pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    uids = uidl_map(srv)
    assert uids[2] == uids[1] + "-2"
    assert uids[3] == uids[1] + "-3"
    srv.close()
    srv.wait(1)
    # A session that ended without QUIT does not change them.
    srv = pop3d_env.login()
    assert uidl_map(srv) == uids
    done(srv)


def test_folder_internal_data_hidden_and_kept(pop3d_env):
    pseudo = (FROM + b"\nDate: Mon, 1 Jan 2024 12:00:00 +0000\n"
              b"From: Mail System Internal Data <MAILER-DAEMON@host>\n"
              b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
              b"X-IMAP: 1234567890 0000000002\n\n"
              b"This text is part of the internal format of your mail "
              b"folder.\n\n")
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(pseudo + data)
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(2, sum(len(w) for w in wires))
    assert retr(srv, 1) == wires[0]
    assert retr(srv, 2) == wires[1]
    srv.cmd("DELE 1")
    srv.cmd("DELE 2")
    assert srv.cmd("QUIT") == "+OK pop3d signing off (0 messages left)"
    srv.finish(0)
    assert path.read_bytes() == pseudo


def test_folder_data_lookalike_stays_visible_after_commit(pop3d_env):
    """A message that looks like UW's FOLDER INTERNAL DATA but is not the
    first one is an ordinary, visible message (anyone can send one, with a
    null sender its From_ line even reads "From MAILER-DAEMON"; what a mail
    system delivered carries a Received: line).  Deleting
    the messages before it must not turn it into a hidden pseudo-message
    that the user can no longer see or delete."""
    lookalike_msg = (b"Received: from mx.example.org by mail.example.org\n"
                     b"Date: Mon, 1 Jan 2024 12:00:00 +0000\n"
                     b"From: Mail System Internal Data <MAILER-DAEMON@x>\n"
                     b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL "
                     b"DATA\nX-IMAP: 1234567890 0000000002\n\n"
                     b"Looks internal, is not.\n")
    lookalike = b"From MAILER-DAEMON Mon Jan  1 12:00:00 2024\n" + \
        lookalike_msg + b"\n"
    c1, w1 = make_message(1)
    c3, w3 = make_message(3)
    path = pop3d_env.write_mbox(c1 + lookalike + c3)
    lw = lookalike_msg.replace(b"\n", b"\r\n")
    srv = pop3d_env.start()
    assert srv.login() == maildrop_line(3, len(w1) + len(lw) + len(w3))
    assert retr(srv, 2) == lw
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (2 messages left)"
    srv.finish(0)
    assert path.read_bytes() == lookalike + c3
    # The server said 2 messages are left: the next session must show them.
    srv = pop3d_env.login()
    assert srv.cmd("STAT") == f"+OK 2 {len(lw) + len(w3)}"
    assert retr(srv, 1) == lw
    done(srv)


# ---- other programs touching the mailbox -----------------------------------------

@pytest.mark.parametrize("deleted", [{1}, {2}, {3}, {1, 2, 3}],
                         ids=lambda d: "dele-" + "-".join(map(str, sorted(d))))
def test_delivery_during_session_with_various_deletions(pop3d_env, deleted):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    before = snapshot(path)
    srv = pop3d_env.login()
    for i in sorted(deleted):
        srv.cmd(f"DELE {i}")
    deliver(path, NEW_MAIL)
    deliver(path, NEW_MAIL.replace(b"Fresh", b"Second fresh"))
    assert srv.cmd("QUIT") == \
        f"+OK pop3d signing off ({3 - len(deleted)} messages left)"
    srv.finish(0)
    kept = b"".join(c for i, c in enumerate(chunks, 1) if i not in deleted)
    assert_same_file(path, before, kept + NEW_MAIL +
                     NEW_MAIL.replace(b"Fresh", b"Second fresh"))
    assert pop3d_env.leftovers() == []


def test_stale_dotlock_is_broken(pop3d_env):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    lock = pop3d_env.mail / "alice.lock"
    lock.write_text("999999\n")        # no such process
    old = time.time() - 3600
    os.utime(lock, (old, old))
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (1 messages left)"
    srv.finish(0)
    assert path.read_bytes() == chunks[1]
    assert pop3d_env.leftovers() == []


@pytest.mark.parametrize("held", ["fcntl", "dotlock"])
def test_login_waits_for_delivery_agent_locks(pop3d_env, held):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    lock = None
    if held == "fcntl":
        take_fcntl(fd)
    else:
        lock = take_dotlock(path)
    srv = pop3d_env.start()
    srv.send(b"USER alice\r\nPASS secret\r\n")
    assert srv.reply() == "+OK pop3d ready"
    # The reply to USER leaves before the login is handed over; the one
    # to PASS waits while we hold the lock.
    assert srv.reply() == "+OK Send your password"
    with pytest.raises(ServerError, match="timed out"):
        srv.readline(timeout=0.5)
    os.write(fd, NEW_MAIL)
    if lock:
        os.unlink(lock)
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    # The parse saw the delivery that finished first.
    assert srv.reply() == maildrop_line(3, sum(map(len, wires)) +
                                        len(NEW_MAIL_WIRE))
    assert srv.cmd("DELE 3") == "+OK Message 3 deleted"
    assert srv.cmd("QUIT") == "+OK pop3d signing off (2 messages left)"
    srv.finish(0)
    assert path.read_bytes() == data
    assert pop3d_env.leftovers() == []


def test_mailbox_rewritten_in_place_during_session(pop3d_env):
    """Another program (a mail reader) removed message 2 in place: the
    commit must notice and delete nothing."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    rewritten = chunks[0] + chunks[2]
    with open(path, "r+b") as f:
        f.write(rewritten)
        f.truncate()
    assert srv.cmd("QUIT") == \
        "-ERR [SYS/TEMP] Mailbox was changed by another program"
    assert srv.read_until_eof() == b""
    srv.wait(1)
    assert path.read_bytes() == rewritten
    assert pop3d_env.leftovers() == []


def test_mailbox_shrunk_during_retr_hangs_up(pop3d_env):
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    with open(path, "r+b") as f:
        f.truncate(len(chunks[0]))
    srv.send(b"RETR 3\r\n")
    out = srv.read_until_eof()
    # Never a complete, dishonest reply.
    assert not out.endswith(b"\r\n.\r\n")
    srv.wait(1)
    assert path.read_bytes() == chunks[0]


def test_mailbox_replaced_by_rename_during_session(pop3d_env):
    """Some mail readers rewrite a mailbox into a new file and rename it
    over the old one.  pop3d must not report deletions it did not make:
    the commit has to notice that the path is another inode now
    (mbox_journal.c: the commit re-checks that the file is the same
    inode)."""
    data, chunks, wires = build_mbox(3)
    path = pop3d_env.write_mbox(data)
    srv = pop3d_env.login()
    assert srv.cmd("DELE 1") == "+OK Message 1 deleted"
    new = pop3d_env.write_mbox(data + NEW_MAIL,
                               path=pop3d_env.mail / "alice.new")
    os.rename(new, path)
    r = srv.cmd("QUIT")
    srv.finish(0 if r.startswith("+OK") else 1)
    if r.startswith("+OK"):
        # Claimed success: then message 1 must really be gone.
        assert path.read_bytes() == chunks[1] + chunks[2] + NEW_MAIL, \
            f"QUIT answered {r!r} but the mailbox still holds message 1"
    else:
        assert r == "-ERR [SYS/TEMP] Mailbox was changed by another program"
        assert path.read_bytes() == data + NEW_MAIL
    assert pop3d_env.leftovers() == []


# ---- pop3d -r (recovery only) ----------------------------------------------------

def run_recover(pop3d_env, path):
    srv = pop3d_env.start(["-r", str(path)])
    assert srv.read_until_eof() == b""
    return srv


def test_recover_consistent_mailbox(pop3d_env):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    age(path)
    before = snapshot(path)
    srv = run_recover(pop3d_env, path)
    srv.wait(0)
    assert f"pop3d: {path}: consistent" in srv.log
    assert_untouched(path, before)
    assert pop3d_env.leftovers() == []


def test_recover_discards_unfinished_journal(pop3d_env):
    data, chunks, wires = build_mbox(2)
    path = pop3d_env.write_mbox(data)
    jnl = pop3d_env.mail / "alice.pop3d-journal"
    jnl.write_bytes(b"POP3DJN1" + b"\xff" * 600)
    srv = run_recover(pop3d_env, path)
    srv.wait(0)
    assert "discarding an unfinished journal" in srv.log
    assert path.read_bytes() == data
    assert pop3d_env.leftovers() == []


def test_recover_refuses_root_owned_mailbox(pop3d_env):
    path = pop3d_env.write_mbox(build_mbox(1)[0], uid=0, gid=0)
    jnl = pop3d_env.mail / "alice.pop3d-journal"
    jnl.write_bytes(b"junk")
    srv = run_recover(pop3d_env, path)
    srv.wait(1)
    assert "owned by root; not touching it" in srv.log
    assert jnl.exists()
