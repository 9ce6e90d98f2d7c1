"""PROXY protocol headers end to end against a real pop3d (host A's
launcher, -P 127.0.0.1/32), over raw TCP from 127.0.0.1 (trusted) and
127.0.0.9 (not).  The addresses inside the headers are documentation
addresses (RFC 5737, RFC 3849): they are only data, never connected to.

From a trusted source the header is required: a good one (v1 TCP4 or
TCP6, v2 IPv4 or IPv6, v2 with TLVs) is followed by the greeting and its
address is the one logged and used for -c; v2 LOCAL means the socket's
own address.  A missing, truncated or oversized header gets one log line,
"proxy: bad header from ADDR: REASON", and the connection is closed
without a POP3 byte.  From any other source a header is a bad command
after the greeting, and the session goes on."""
import socket
import struct

import pytest

from harness import (Pop3, UNTRUSTED_ADDR, V2_SIG, message, proxy_v1,
                     proxy_v2)


@pytest.fixture
def box(maildrops):
    chunk, wire = message("proxy")
    name, pw = maildrops.new(chunk)
    return name, pw, f"+OK Maildrop has 1 messages ({len(wire)} octets)"


def session_from(hosts, header, box, want_addr):
    name, pw, ok = box
    la = hosts.la
    mark = la.mark()
    c = Pop3.tcp(hosts.a.addr, la.port, header=header)
    assert c.login(name, pw) == ok, la.log_since(mark)
    assert c.cmd("QUIT").startswith("+OK")
    c.close()
    log = la.log_since(mark)
    assert f"connection from {want_addr}\n" in log, log
    assert f"login ok: {name} from {want_addr}\n" in log, log
    assert "proxy:" not in log, log


def test_v1_tcp4(hosts, box):
    session_from(hosts, proxy_v1("192.0.2.31"), box, "192.0.2.31")


def test_v1_tcp6(hosts, box):
    session_from(hosts, proxy_v1("2001:db8::31", dst="::1"), box,
                 "2001:db8::31")


def test_v2_ipv4(hosts, box):
    session_from(hosts, proxy_v2("192.0.2.32"), box, "192.0.2.32")


def test_v2_ipv6(hosts, box):
    session_from(hosts, proxy_v2("2001:db8::32", dst="2001:db8::1"), box,
                 "2001:db8::32")


def test_v2_tlvs_are_skipped(hosts, box):
    # PP2_TYPE_AUTHORITY and PP2_TYPE_NOOP, as HAProxy may send them.
    tlvs = b"\x02" + struct.pack("!H", 16) + b"pop.example.org." + \
        b"\x04" + struct.pack("!H", 3) + b"\x00\x00\x00"
    session_from(hosts, proxy_v2("192.0.2.33", tlvs=tlvs), box,
                 "192.0.2.33")


def test_v2_local_uses_the_socket_address(hosts, box):
    session_from(hosts, proxy_v2(local=True), box, "127.0.0.1")


def refused(hosts, data, shut=True):
    """Sends data from the trusted source; returns (what pop3d sent, its
    log for the connection)."""
    la = hosts.la
    mark = la.mark()
    c = Pop3.tcp(hosts.a.addr, la.port)
    if data:
        c.send(data)
    if shut:
        c.sock.shutdown(socket.SHUT_WR)
    got = c.until_eof()
    c.close()
    # The log line is written before the close.
    return got, la.log_since(mark)


def one_bad_header_line(log):
    lines = [l for l in log.splitlines() if "proxy: bad header" in l]
    assert len(lines) == 1, log
    assert "proxy: bad header from 127.0.0.1: " in lines[0], lines
    return lines[0]


@pytest.mark.parametrize("data", [
    proxy_v1("192.0.2.34")[:20],
    proxy_v2("192.0.2.34")[:10],
    proxy_v2("192.0.2.34")[:20],
    V2_SIG + b"\x21\x11\x00\x0c" + b"\x00" * 6,
], ids=["v1", "v2-signature", "v2-address", "v2-short-body"])
def test_truncated_header_closes(hosts, data):
    got, log = refused(hosts, data)
    assert got == b"", f"pop3d sent {got!r} after a truncated header"
    one_bad_header_line(log)


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 192.0.2.35 127.0.0.2 40000 110" + b" " * 80 + b"\r\n",
    b"PROXY TCP4 " + b"1" * 200 + b"\r\n",
    b"PROXY UNKNOWN " + b"x" * 300 + b"\r\n",
], ids=["v1-padded", "v1-long", "v1-unknown-long"])
def test_oversized_v1_header_closes(hosts, data):
    assert len(data) > 107
    got, log = refused(hosts, data, shut=False)
    assert got == b"", f"pop3d sent {got!r} after an oversized header"
    one_bad_header_line(log)


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 192.0.2.36 127.0.0.2 40000\r\n",       # a field missing
    b"PROXY TCP4 192.0.2.999 127.0.0.2 40000 110\r\n",   # bad address
    b"PROXY TCP9 192.0.2.36 127.0.0.2 40000 110\r\n",   # bad family
    V2_SIG + b"\x31\x11\x00\x0c" + b"\x00" * 12,         # version 3
    V2_SIG + b"\x2f\x11\x00\x0c" + b"\x00" * 12,         # command 15
    V2_SIG + b"\x21\x11\x00\x04" + b"\x00" * 4,          # IPv4, 4 bytes
], ids=["v1-fields", "v1-address", "v1-family", "v2-version",
        "v2-command", "v2-length"])
def test_malformed_header_closes(hosts, data):
    got, log = refused(hosts, data, shut=False)
    assert got == b"", f"pop3d sent {got!r} after a bad header"
    one_bad_header_line(log)


def test_missing_header_from_trusted_source_closes(hosts, box):
    name = box[0]
    got, log = refused(hosts, f"USER {name}\r\n".encode(), shut=False)
    assert got == b"", f"pop3d sent {got!r} to a trusted source " \
        f"without a header"
    one_bad_header_line(log)
    assert "login" not in log, log


def test_header_from_untrusted_source_is_a_bad_command(hosts, box):
    name, pw, ok = box
    la = hosts.la
    mark = la.mark()
    c = Pop3.tcp(hosts.a.addr, la.port, source=UNTRUSTED_ADDR)
    assert c.line() == "+OK pop3d ready"
    r = c.cmd(proxy_v1("192.0.2.37").decode().rstrip("\r\n"))
    assert r.startswith("-ERR"), r
    assert c.cmd(f"USER {name}").startswith("+OK")
    assert c.cmd(f"PASS {pw}") == ok
    assert c.cmd("QUIT").startswith("+OK")
    c.close()
    log = la.log_since(mark)
    assert f"connection from {UNTRUSTED_ADDR}\n" in log, log
    assert f"login ok: {name} from {UNTRUSTED_ADDR}\n" in log, log
    assert "192.0.2.37" not in log, log


def test_cleartext_policy_uses_the_header_address(hosts, box):
    """-c allows USER/PASS only from loopback: the address that counts
    is the client's in the header, not HAProxy's 127.0.0.1."""
    name, pw, ok = box
    la = hosts.a.launch(extra=["-c"])
    try:
        c = Pop3.tcp(hosts.a.addr, la.port, header=proxy_v2("192.0.2.38"))
        assert c.line() == "+OK pop3d ready"
        assert c.cmd(f"USER {name}").startswith("-ERR"), la.log
        c.close()
        c = Pop3.tcp(hosts.a.addr, la.port, header=proxy_v2("127.0.0.38"))
        assert c.login(name, pw) == ok, la.log
        assert c.cmd("QUIT").startswith("+OK")
        c.close()
    finally:
        la.stop()
