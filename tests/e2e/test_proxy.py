"""The PROXY protocol (-P) on one host: pop3d behind a balancer.

pop3d runs under the harness on one end of a real TCP connection on
loopback.  The client connects from 127.0.0.1 (the trusted balancer, with
-P 127.0.0.1/32) or from 127.0.0.9 (anyone else) and speaks first when it
plays the balancer.  The headers name documentation addresses (RFC 5737,
RFC 3849): they are data; every connection is loopback.  The same cases
run through a real HAProxy in tests/multihost.
"""
import socket
import struct
import time

import pytest

from conftest import PeerServer, ServerError, build_mbox, tcp_pair

GREETING = "+OK pop3d ready"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_SSL = 0x20


def v2(cmd=0x21, fam=0x11, body=None, src="203.0.113.9", dst="192.0.2.1",
       sport=40000, dport=110, tlvs=b""):
    if body is None:
        if fam == 0x11:
            body = socket.inet_pton(socket.AF_INET, src) + \
                socket.inet_pton(socket.AF_INET, dst) + \
                struct.pack("!HH", sport, dport)
        elif fam == 0x21:
            body = socket.inet_pton(socket.AF_INET6, src) + \
                socket.inet_pton(socket.AF_INET6, dst) + \
                struct.pack("!HH", sport, dport)
        else:
            body = b""
    body += tlvs
    return SIG + bytes([cmd, fam]) + struct.pack("!H", len(body)) + body


def ssl_tlv(client_ssl=True):
    value = bytes([0x01 if client_ssl else 0x00]) + b"\x00\x00\x00\x00"
    return bytes([PP2_TYPE_SSL]) + struct.pack("!H", len(value)) + value


def session(env, src="127.0.0.1", args=(), trusted="127.0.0.1/32"):
    argv = env.argv(["-P", trusted] + list(args))
    env._nlogs += 1
    client, child = tcp_pair(src)
    srv = PeerServer(argv, env.env(), env.tmp / f"pop3d-{env._nlogs}.log",
                     client, child)
    env.servers.append(srv)
    return srv


@pytest.fixture
def env(pop3d_env):
    data, _, _ = build_mbox(2)
    pop3d_env.write_mbox(data)
    return pop3d_env


def logged_in_from(srv, addr):
    assert srv.reply() == GREETING
    assert srv.cmd("USER alice") == "+OK Send your password"
    assert srv.cmd("PASS secret").startswith("+OK Maildrop has 2 ")
    assert srv.cmd("QUIT").startswith("+OK")
    srv.read_until_eof()
    srv.wait()
    assert f"connection from {addr}" in srv.log, srv.log
    assert f"login ok: alice from {addr}" in srv.log, srv.log


def refused_silently(srv, why):
    """Nothing at all is sent back; one log line names the source."""
    try:
        data = srv.read_until_eof()
    except ServerError as e:
        raise AssertionError(f"the connection stayed open: {e}")
    assert data == b"", data
    srv.wait()
    lines = [l for l in srv.log.splitlines() if "proxy:" in l]
    assert lines == [f"pop3d: proxy: bad header from 127.0.0.1: {why}"], \
        srv.log
    assert "connection from" not in srv.log


def test_v1_tcp4(env):
    srv = session(env)
    srv.send(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 110\r\n")
    logged_in_from(srv, "203.0.113.9")


def test_v1_then_pipelined_commands(env):
    """Not a byte after the header is taken with it."""
    srv = session(env)
    srv.send(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 110\r\nCAPA\r\n")
    assert srv.reply() == GREETING
    assert srv.reply() == "+OK Capability list follows"


def test_v2_ipv4(env):
    srv = session(env)
    srv.send(v2())
    logged_in_from(srv, "203.0.113.9")


def test_v2_ipv6(env):
    srv = session(env)
    srv.send(v2(fam=0x21, src="2001:db8::7", dst="2001:db8::1"))
    logged_in_from(srv, "2001:db8::7")


def test_v2_local_uses_the_socket(env):
    """A balancer's health check: LOCAL, and the socket's address."""
    srv = session(env)
    srv.send(v2(cmd=0x20, fam=0x00))
    logged_in_from(srv, "127.0.0.1")


def test_v2_ipv4_mapped_is_logged_as_ipv4(env):
    srv = session(env)
    srv.send(v2(fam=0x21, src="::ffff:203.0.113.9", dst="2001:db8::1"))
    logged_in_from(srv, "203.0.113.9")


@pytest.mark.parametrize("data,why", [
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 40000", "truncated"),
    (v2()[:20], "truncated"),
    (b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", None),
    (v2(body=b"\x00" * 1100), None),
    (v2(fam=0x11, body=b"\x00" * 4), None),
    (b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 65536\r\n", None),
], ids=["v1-truncated", "v2-truncated", "v1-oversized", "v2-oversized",
        "v2-short-addresses", "v1-bad-port"])
def test_bad_header_closes_silently(env, data, why):
    srv = session(env)
    srv.send(data)
    srv.shutdown_write()
    if why is None:
        srv.read_until_eof()
        srv.wait()
        lines = [l for l in srv.log.splitlines() if "proxy:" in l]
        assert len(lines) == 1, srv.log
        assert lines[0].startswith(
            "pop3d: proxy: bad header from 127.0.0.1: "), srv.log
        assert "connection from" not in srv.log
    else:
        refused_silently(srv, why)


def test_missing_from_a_trusted_source(env):
    srv = session(env)
    srv.send(b"USER alice\r\n")
    srv.read_until_eof()
    srv.wait()
    lines = [l for l in srv.log.splitlines() if "proxy:" in l]
    assert len(lines) == 1 and "bad header from 127.0.0.1" in lines[0], \
        srv.log
    assert "login" not in srv.log


def test_header_from_an_untrusted_source_is_a_bad_command(env):
    """From anyone but the balancer a header is just a wrong command: the
    greeting was sent, the client's own address is the one logged."""
    srv = session(env, src="127.0.0.9")
    assert srv.reply() == GREETING
    assert srv.cmd("PROXY TCP4 203.0.113.9 192.0.2.1 40000 110") == \
        "-ERR Unknown command"
    logged = srv.log
    assert "connection from 127.0.0.9" in logged
    assert "203.0.113.9" not in logged


def test_cleartext_policy_uses_the_header_address(env):
    """-c refuses passwords from a client that is not local; the header's
    client is not, however local the balancer is."""
    srv = session(env, args=["-c"])
    srv.send(v2())
    assert srv.reply() == GREETING
    assert srv.cmd("USER alice").startswith("-ERR [AUTH] Cleartext logins")
    # The balancer's own (LOCAL) connection is local.
    srv = session(env, args=["-c"])
    srv.send(v2(cmd=0x20, fam=0x00))
    assert srv.reply() == GREETING
    assert srv.cmd("USER alice") == "+OK Send your password"


def test_ssl_tlv_marks_the_connection_protected(env):
    srv = session(env, args=["-c"])
    srv.send(v2(tlvs=ssl_tlv(True)))
    logged_in_from(srv, "203.0.113.9")
    # The TLV without the client bit says the client did not use TLS.
    srv = session(env, args=["-c"])
    srv.send(v2(tlvs=ssl_tlv(False)))
    assert srv.reply() == GREETING
    assert srv.cmd("USER alice").startswith("-ERR [AUTH] Cleartext logins")


@pytest.mark.parametrize("spec", ["10.0.0.0/33", "1.2.3.4/", "junk", "",
                                  "10.0.0.1/8"])
def test_bad_trusted_networks_are_a_usage_error(pop3d_env, spec):
    srv = pop3d_env.start(["-P", spec])
    assert srv.read_until_eof() == b""
    assert srv.wait() == 2
    assert "pop3d: -P" in srv.log
