#!/usr/bin/python3
"""A tiny inetd for demos and tests: listens on 127.0.0.1:PORT and runs
COMMAND for each connection with the socket on stdin and stdout.

usage: inetd.py PORT COMMAND [ARG...]

With INETD_READY=FILE in the environment, FILE is created once the socket
listens.
"""
import os
import signal
import socket
import sys


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    port, cmd = int(sys.argv[1]), sys.argv[2:]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # no zombies
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(16)
    if os.environ.get("INETD_READY"):
        open(os.environ["INETD_READY"], "w").close()
    while True:
        conn, _ = srv.accept()
        if os.fork() == 0:
            srv.close()
            os.dup2(conn.fileno(), 0)
            os.dup2(conn.fileno(), 1)
            conn.close()
            os.execvp(cmd[0], cmd)
        conn.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
