"""Deterministic mbox generator for the pop3d benchmark.

generate(path, count, seed=1) writes an mbox of COUNT messages that is
byte-identical for the same arguments and GEN_VERSION.  Messages average
about 10 KB (10,000 messages are about 100 MB, 100,000 about 1 GB) and look
like real mail: a valid From_ line, 2-4 Received: headers, From, To,
Subject, Date, a unique Message-ID, MIME-Version and Content-Type.  About
one in seven is multipart/mixed with a base64 attachment in 76-character
lines, a few of them large (50-500 KB).  Text bodies contain lines that
start with ">From " (escaped separators), lines that are exactly "." or
start with ".", long lines (1-3 KB) and empty lines.  The first
DESK_MESSAGES messages (the same in every mailbox of the seed, whatever its
size) also hold unescaped "From the desk of ..." lines inside paragraphs,
which are not valid From_ separators (no date, never after an empty line);
later messages have "Also the desk of ..." there instead.  Why only the
first ones: GNU mailutils 3.15's pop3d loops forever (100% CPU, never
answering QUIT) while rewriting an mbox with a few thousand such lines --
it rewrites the whole mbox in a first session to add its X-IMAPbase/X-UID
headers -- so a 10,000-message mailbox full of them cannot be served by it.
Every message ends with an empty line.

cached(count, seed=1) returns the path of a cached copy under
/var/tmp/pop3d-bench/mbox/, generating it on first use.

Speed: all text and base64 is generated once into large pools; a message
is a few slices of those pools plus formatted headers, written in 8 MB
chunks (100,000 messages, about 1 GB, in well under 30 s).

Run as a script: gen.py COUNT [SEED] [PATH] writes (or caches) a mailbox.
"""

import base64
import bisect
import calendar
import os
import random
import sys
import time

GEN_VERSION = 2
DESK_MESSAGES = 100
CACHE_DIR = "/var/tmp/pop3d-bench/mbox"

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are "
    "or his from at which but have an they you were her she there been one "
    "all we their has would when if so no will more can out up about who "
    "what said other into than its time only could new them some these "
    "then two first may any like now my such make over our even most me "
    "state after also made many did must before back see through way where "
    "get much go well your know should down work year because come people "
    "just say each those take day good how long three use life mail server "
    "mailbox message report meeting budget quarter invoice project review "
    "schedule release deadline customer account shipment update attached "
    "please thanks regards tomorrow morning afternoon evening office team "
    "manager contract draft figures numbers summary agenda notes minutes "
    "question answer problem solution network printer backup restore disk "
    "version patch build test results failure success coffee lunch friday"
).split()

_FIRST = ("Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory "
          "Niaj Olivia Peggy Rupert Sybil Trent Victor Walter Yvonne").split()
_LAST = ("Smith Jones Miller Davis Garcia Wilson Moore Taylor Anderson "
         "Thomas Jackson White Harris Martin Thompson Young King Wright "
         "Lopez Hill").split()
_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com",
            "lists.example.net", "corp.example.org")
_SUBJ = ("Re: {w} {w} for {w}", "Fwd: {w} {w}", "{W} {w} update",
         "Meeting about the {w} {w}", "[list] {W} {w} {w} {w}",
         "Your {w} {w} #{n}", "Re: Re: {w} {w} {w}", "{W} report {n}",
         "Question on {w} {w}", "Invoice {n} for {w} {w}")
_MIME_TYPES = (("application/pdf", "pdf"), ("image/png", "png"),
               ("image/jpeg", "jpg"), ("application/zip", "zip"),
               ("application/octet-stream", "bin"),
               ("application/vnd.oasis.opendocument.text", "odt"))
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep",
           "Oct", "Nov", "Dec")

_B64_LINE = 77          # 76 characters and a newline
_B64_POOL_LINES = 9000  # about 690 KB of base64 text
_TEXT_POOL_PARAS = 6000


def _text_line(rng, width):
    words = [rng.choice(_WORDS)]
    while words[0] == "from":   # no unescaped From_ look-alike at the start
        words[0] = rng.choice(_WORDS)
    n = len(words[0]) + 1
    while n < width:
        w = rng.choice(_WORDS)
        words.append(w)
        n += len(w) + 1
    s = " ".join(words)
    return s[0].upper() + s[1:]


def _paragraph(rng):
    """One paragraph: lines of text ending in '\n', never starting with a
    From_-like line, sometimes with awkward lines inside."""
    lines = [_text_line(rng, rng.randint(30, 72))
             for _ in range(rng.randint(1, 8))]
    r = rng.random()
    pos = rng.randint(1, len(lines))       # never the first line
    if r < 0.08:
        lines.insert(pos, ">From %s %s wrote about the %s:" % (
            rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_WORDS)))
    elif r < 0.14:
        lines.insert(pos, "From the desk of %s %s, %s department" % (
            rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_WORDS)))
    elif r < 0.19:
        lines.insert(pos, ".")
    elif r < 0.25:
        lines.insert(pos, rng.choice((".", "..", "...", ".hidden",
                                      ". leading dot", ".. two dots",
                                      ".profile and .bashrc")))
    elif r < 0.28:
        lines.insert(pos, _text_line(rng, rng.randint(1000, 3000)))
    elif r < 0.31:
        lines.insert(pos, "From: %s <%s@%s>" % (
            rng.choice(_FIRST), rng.choice(_WORDS), rng.choice(_DOMAINS)))
    elif r < 0.36:
        lines.insert(pos, "> " + _text_line(rng, 50))
        lines.insert(pos, ">> " + _text_line(rng, 50))
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.1:
        text += "\n"                       # two empty lines after it
    return text


class _Pools:
    def __init__(self, rng):
        paras = [_paragraph(rng) for _ in range(_TEXT_POOL_PARAS)]
        # Paragraphs separated by an empty line; offsets of each start.
        self.text = "\n".join(paras).encode("ascii")
        # The same text without unescaped "From the desk" lines (same
        # length, so the paragraph offsets hold for both).
        self.text_plain = self.text.replace(b"\nFrom the desk of ",
                                            b"\nAlso the desk of ")
        self.starts = []
        off = 0
        for p in paras:
            self.starts.append(off)
            off += len(p) + 1
        self.starts.append(len(self.text) + 1)
        raw = bytes(rng.getrandbits(8) for _ in range(_B64_POOL_LINES * 57))
        b = base64.b64encode(raw)
        self.b64 = b"".join(b[i:i + 76] + b"\n"
                            for i in range(0, len(b), 76))
        self.b64_lines = len(self.b64) // _B64_LINE

    def text_slice(self, rng, size, desk=False):
        """Whole paragraphs, about SIZE bytes, ending with '\n'; with
        unescaped "From the desk" lines if DESK."""
        n = len(self.starts) - 1
        i = rng.randrange(n)
        start = self.starts[i]
        target = start + size
        j = bisect.bisect_left(self.starts, target, i + 1)
        if j >= n + 1:
            j = n
        end = self.starts[j] - 1           # the '\n' ending paragraph j-1
        return (self.text if desk else self.text_plain)[start:end]

    def b64_slice(self, rng, size):
        lines = max(1, min(size // _B64_LINE, self.b64_lines))
        first = rng.randrange(self.b64_lines - lines + 1)
        return self.b64[first * _B64_LINE:(first + lines) * _B64_LINE]


def _addr(rng):
    first = rng.choice(_FIRST)
    last = rng.choice(_LAST)
    return "%s %s" % (first, last), "%s.%s@%s" % (
        first.lower(), last.lower(), rng.choice(_DOMAINS))


def _subject(rng, i):
    t = rng.choice(_SUBJ)
    out = []
    for part in t.split("{"):
        if part.startswith("w}"):
            out.append(rng.choice(_WORDS) + part[2:])
        elif part.startswith("W}"):
            out.append(rng.choice(_WORDS).capitalize() + part[2:])
        elif part.startswith("n}"):
            out.append(str(1000 + i) + part[2:])
        else:
            out.append(part)
    return "".join(out)


def _message(rng, pools, i, t):
    g = time.gmtime(t)
    day = _DAYS[g.tm_wday]
    mon = _MONTHS[g.tm_mon - 1]
    hms = "%02d:%02d:%02d" % (g.tm_hour, g.tm_min, g.tm_sec)
    rfc = "%s, %02d %s %d %s +0000" % (day, g.tm_mday, mon, g.tm_year, hms)
    name, addr = _addr(rng)
    h = ["From %s %s %s %2d %s %d\n" % (addr, day, mon, g.tm_mday, hms,
                                       g.tm_year)]
    hops = rng.randint(2, 4)
    for k in range(hops):
        h.append(
            "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n"
            "\tby %s (Postfix) with ESMTPS id %08X%d\n"
            "\tfor <p3bench@example.org>; %s (UTC)\n" % (
                k + 1, rng.choice(_DOMAINS), k + 1, rng.choice(_DOMAINS),
                rng.randint(1, 254),
                "mail.example.org" if k == 0 else "relay%d.example.net" % k,
                rng.getrandbits(32), k, rfc))
    h.append("From: %s <%s>\nTo: p3bench@example.org\nSubject: %s\n"
             "Date: %s\nMessage-ID: <%d.%08x.%d@%s>\nMIME-Version: 1.0\n" % (
                 name, addr, _subject(rng, i), rfc, t, rng.getrandbits(32),
                 i, addr.split("@")[1]))
    r = rng.random()
    if r < 0.86:
        size = int(rng.lognormvariate(8.2, 0.75))    # median about 3.6 KB
        size = max(200, min(size, 60000))
        h.append("Content-Type: text/plain; charset=us-ascii\n"
                 "Content-Transfer-Encoding: 7bit\n\n")
        return [("".join(h)).encode("ascii"),
                pools.text_slice(rng, size, i < DESK_MESSAGES),
                b"\n"]
    if r < 0.997:
        asize = rng.randint(4000, 60000)
    else:
        asize = rng.randint(50000, 500000)
    mtype, ext = rng.choice(_MIME_TYPES)
    b = "=_%d_%08x" % (i, rng.getrandbits(32))
    h.append('Content-Type: multipart/mixed; boundary="%s"\n\n'
             "This is a multi-part message in MIME format.\n\n"
             "--%s\nContent-Type: text/plain; charset=us-ascii\n"
             "Content-Transfer-Encoding: 7bit\n\n" % (b, b))
    tail = ("\n--%s\nContent-Type: %s; name=\"file%d.%s\"\n"
            "Content-Transfer-Encoding: base64\n"
            "Content-Disposition: attachment; filename=\"file%d.%s\"\n\n" % (
                b, mtype, i, ext, i, ext))
    return [("".join(h)).encode("ascii"),
            pools.text_slice(rng, rng.randint(100, 3000), i < DESK_MESSAGES),
            tail.encode("ascii"), pools.b64_slice(rng, asize),
            ("--%s--\n\n" % b).encode("ascii")]


def generate(path, count, seed=1):
    """Write an mbox of COUNT messages to PATH, deterministic in SEED."""
    rng = random.Random(seed)
    pools = _Pools(rng)
    t = calendar.timegm((2026, 1, 5, 10, 0, 0, 0, 0, 0))
    chunk = []
    size = 0
    with open(path, "wb", buffering=0) as f:
        for i in range(count):
            parts = _message(rng, pools, i, t)
            t += rng.randint(30, 3600)
            chunk.extend(parts)
            size += sum(len(p) for p in parts)
            if size >= 8 << 20:
                f.write(b"".join(chunk))
                chunk = []
                size = 0
        if chunk:
            f.write(b"".join(chunk))


def cached(count, seed=1, log=None):
    """Path of the cached mbox for (COUNT, SEED), generated if missing."""
    os.makedirs(CACHE_DIR, exist_ok=True)
    path = os.path.join(CACHE_DIR, "v%d-n%d-s%d.mbox" % (GEN_VERSION, count,
                                                        seed))
    if os.path.exists(path):
        return path
    for old in os.listdir(CACHE_DIR):       # other generator versions
        if old.endswith(".mbox") and not old.startswith(
                "v%d-" % GEN_VERSION):
            os.unlink(os.path.join(CACHE_DIR, old))
    if log:
        log("generating %s (%d messages)" % (path, count))
    t0 = time.monotonic()
    tmp = "%s.tmp%d" % (path, os.getpid())
    try:
        generate(tmp, count, seed)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if log:
        log("generated %d messages, %.1f MB, in %.1f s" % (
            count, os.path.getsize(path) / 1e6, time.monotonic() - t0))
    return path


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: gen.py COUNT [SEED] [PATH]")
    n = int(sys.argv[1])
    s = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if len(sys.argv) > 3:
        generate(sys.argv[3], n, s)
        print(sys.argv[3])
    else:
        print(cached(n, s, log=lambda m: print(m, file=sys.stderr)))
