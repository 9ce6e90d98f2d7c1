#!/usr/bin/python3
"""The demo's scripted POP3 session: log in, look around, read, quit
without deleting (so the demo can run again)."""
import poplib
import sys

host, port = sys.argv[1], int(sys.argv[2])
p = poplib.POP3(host, port, timeout=10)
print("S:", p.getwelcome().decode())
print("C: CAPA")
for k, v in p.capa().items():
    print("S:  ", k, " ".join(v))
print("C: USER demo / PASS demo")
print("S:", p.user("demo").decode())
print("S:", p.pass_("demo").decode())
count, size = p.stat()
print(f"C: STAT\nS: +OK {count} {size}")
print("C: LIST")
for line in p.list()[1]:
    print("S:  ", line.decode())
print("C: UIDL")
for line in p.uidl()[1]:
    print("S:  ", line.decode())
resp, lines, octets = p.retr(1)
print(f"C: RETR 1\nS: {resp.decode()}")
for line in lines:
    print("S:  ", line.decode("utf-8", "replace"))
resp, lines, octets = p.top(2, 0)
print(f"C: TOP 2 0\nS: {resp.decode()}")
for line in lines:
    print("S:  ", line.decode("utf-8", "replace"))
print("C: QUIT")
print("S:", p.quit().decode())
