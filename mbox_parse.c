/*
 * mbox_parse.c: the mbox scanner and parser.  One pass over the file
 * makes the table of messages (offsets, wire sizes, fingerprints, UIDs):
 * the scanner hands out lines, skipping body bytes in bulk, and the
 * parser finds the separators, honours Content-Length where it lands on
 * one, hides the folder-data pseudo-message and frames each message.
 * Memory grows with the number of messages, never with their size.
 * Runs as the mail user, on bytes any sender may have chosen.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "mbox_impl.h"
#include "scan.h"

/* ---- the scanner --------------------------------------------------- */

struct scanner {
	int		 fd;
	char		*buf;		/* CHUNK + LINE_KEEP */
	off_t		 buf_off;	/* file offset of buf[0] */
	size_t		 len;
	size_t		 pos;
	int		 eof;
	char		 keep[LINE_KEEP];
};

/* Reads more into buf after keeping [pos, len); 0, or -1 on error. */
static int
scan_fill(struct scanner *sc)
{
	ssize_t	 n;

	if (sc->pos > 0) {
		memmove(sc->buf, sc->buf + sc->pos, sc->len - sc->pos);
		sc->buf_off += (off_t)sc->pos;
		sc->len -= sc->pos;
		sc->pos = 0;
	}
	n = mbox_pread_full(sc->fd, sc->buf + sc->len,
	    CHUNK + LINE_KEEP - sc->len, sc->buf_off + (off_t)sc->len);
	if (n < 0)
		return -1;
	if (n == 0)
		sc->eof = 1;
	sc->len += (size_t)n;
	return 0;
}

/* Returns 1 with the next line in *l, 0 at EOF, -1 on a read error. */
static int
scan_line(struct scanner *sc, struct line *l)
{
	char		*lf;
	size_t		 scanned = 0, avail;
	uint64_t	 total;
	int		 last_cr;

	/* Memory ahead, as scan_lines() asks for it in bodies (scan.c). */
	__builtin_prefetch((const void *)((uintptr_t)(sc->buf + sc->pos) +
	    4096));
	for (;;) {
		lf = memchr(sc->buf + sc->pos + scanned, '\n',
		    sc->len - sc->pos - scanned);
		if (lf != NULL) {
			l->off = sc->buf_off + (off_t)sc->pos;
			l->head = sc->buf + sc->pos;
			l->len = (uint64_t)(lf - l->head) + 1;
			l->hlen = l->len > LINE_KEEP ? LINE_KEEP : l->len;
			l->content = l->len - 1;
			if (l->content > 0 && lf[-1] == '\r')
				l->content--;
			l->has_lf = 1;
			sc->pos = (size_t)(lf - sc->buf) + 1;
			return 1;
		}
		scanned = sc->len - sc->pos;
		if (sc->eof || scanned > LINE_KEEP)
			break;
		if (scan_fill(sc) < 0)
			return -1;
	}
	if (scanned == 0)
		return 0;
	l->off = sc->buf_off + (off_t)sc->pos;
	if (sc->eof) {
		/* The last line has no terminator. */
		l->head = sc->buf + sc->pos;
		l->len = scanned;
		l->hlen = scanned > LINE_KEEP ? LINE_KEEP : scanned;
		l->content = scanned - (l->head[scanned - 1] == '\r');
		l->has_lf = 0;
		sc->pos = sc->len;
		return 1;
	}
	/* A line longer than LINE_KEEP: keep its head, count the rest. */
	memcpy(sc->keep, sc->buf + sc->pos, LINE_KEEP);
	l->head = sc->keep;
	l->hlen = LINE_KEEP;
	total = 0;
	last_cr = 0;
	for (;;) {
		avail = sc->len - sc->pos;
		lf = memchr(sc->buf + sc->pos, '\n', avail);
		if (lf != NULL) {
			avail = (size_t)(lf - (sc->buf + sc->pos));
			if (avail > 0)
				last_cr = lf[-1] == '\r';
			total += avail + 1;
			sc->pos += avail + 1;
			l->len = total;
			l->content = total - 1 - (uint64_t)last_cr;
			l->has_lf = 1;
			return 1;
		}
		if (avail > 0)
			last_cr = sc->buf[sc->len - 1] == '\r';
		total += avail;
		sc->pos = sc->len;
		if (scan_fill(sc) < 0)
			return -1;
		if (sc->len == 0) {
			l->len = total;
			l->content = total - (uint64_t)last_cr;
			l->has_lf = 0;
			return 1;
		}
	}
}

/* ---- the parser ---------------------------------------------------- */

struct parse {
	struct mbox_msg	*cur;
	struct uid_hash	 uid;
	int		 in_header;
	int		 folder_subject;
	int		 folder_ximap;
	int64_t		 clen;		/* Content-Length, or -1 */
	off_t		 cl_end;	/* separators ignored before this */
	size_t		 hashed;	/* message bytes in head[] */
	char		 head[HEAD_HASHED];	/* the first, fingerprinted */
	uint64_t	 from_hash;	/* hash64 of cur's From_ line */
	int		 prev_empty;
	off_t		 prev_empty_off;
};


/*
 * One header line: the fields the UID is made of go to mbox_uid_header();
 * the parser itself needs Content-Length and the marks of a folder-data
 * pseudo-message.
 */
static void
parse_header(struct parse *p, const struct line *l, size_t msgno)
{
	const char	*v, *end;
	int64_t		 n;

	/* Most header lines are none of these: one look at the first byte. */
	switch (l->head[0] | 0x20) {
	case ' ':
	case '\t' | 0x20:
		/* Folded lines: popa3d hashes them, xuidl refuses them. */
	case 'd':
	case 'm':
	case 'r':
		mbox_uid_header(&p->uid, l);
		return;
	case 'x':
		mbox_uid_header(&p->uid, l);
		if (msgno == 0 && (header_is(l, "X-IMAP:") ||
		    header_is(l, "X-IMAPbase:")))
			p->folder_ximap = 1;
		return;
	case 's':
		if (msgno == 0 && header_is(l, "Subject:") &&
		    memmem(l->head, l->hlen, "FOLDER INTERNAL DATA", 20) != NULL)
			p->folder_subject = 1;
		return;
	case 'c':
		break;
	default:
		return;
	}
	if (!header_is(l, "Content-Length:"))
		return;
	v = l->head + 15;
	end = l->head + (l->content < l->hlen ? l->content : l->hlen);
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	n = 0;
	if (v == end)
		return;
	for (; v < end && isdigit((unsigned char)*v); v++) {
		if (n > (INT64_MAX - 9) / 10)
			return;
		n = n * 10 + (*v - '0');
	}
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	if (v == end)
		p->clen = n;
}

/*
 * Content-Length counts only where it ends exactly at the end of the
 * file or on an empty line followed by a valid separator.
 */
static off_t
clen_target(int fd, off_t fsize, off_t body, int64_t clen)
{
	char	 b[LINE_KEEP + 2], *lf;
	off_t	 t;
	ssize_t	 n;
	size_t	 skip;

	if (clen < 0 || clen > fsize - body)
		return -1;
	t = body + clen;
	if (t > body) {
		if (mbox_pread_full(fd, b, 1, t - 1) != 1 || b[0] != '\n')
			return -1;
	}
	if (t == fsize)
		return t;
	if ((n = mbox_pread_full(fd, b, sizeof(b) - 1, t)) <= 0)
		return -1;
	if (b[0] == '\n')
		skip = 1;
	else if (n >= 2 && b[0] == '\r' && b[1] == '\n')
		skip = 2;
	else
		return -1;
	if ((size_t)n == skip)
		return t;
	if ((lf = memchr(b + skip, '\n', (size_t)n - skip)) == NULL) {
		/* A last From_ line without a newline ends the file. */
		if (t + n != fsize)
			return -1;
		lf = b + n;
	}
	if (lf > b + skip && lf[-1] == '\r')
		lf--;
	return mbox_is_from_line(b + skip, (size_t)(lf - (b + skip))) ? t : -1;
}

static void
msg_finish(struct maildrop *mb, struct parse *p, off_t end_off)
{
	struct mbox_msg	*m = p->cur;

	if (m == NULL)
		return;
	if (p->prev_empty && p->prev_empty_off >= msg_body(m)) {
		/* The empty line before a separator is framing. */
		m->frame = (uint8_t)(end_off - p->prev_empty_off);
		m->size -= 2;
	}
	if (p->hashed < HEAD_HASHED)
		m->fingerprint = msg_fingerprint(p->from_hash,
		    hash64(p->head, p->hashed));
	mbox_uid_end(&p->uid, m);
	/*
	 * UW and Dovecot keep folder data in a first message that no mail
	 * system delivered: anything with a Received: line is real mail,
	 * even when it claims the subject (it may become first after a
	 * deletion).
	 */
	if (mb->nmsgs == 1 && p->folder_subject && p->folder_ximap &&
	    p->uid.received == 0)
		m->hidden = 1;
	p->cur = NULL;
}

/*
 * In a body, past the bytes the commit re-checks: consumes in bulk the
 * whole lines that cannot start a message, leaving the next line that
 * begins with "From " (or a line too long or unfinished) to scan_line.
 * Returns 0, or -1 on a read error.
 */
static int
skip_body(struct scanner *sc, struct parse *p)
{
	struct scan_count c;
	const char	*s, *lf, *start;
	size_t		 n;
	int		 more;

	for (;;) {
		s = sc->buf + sc->pos;
		n = scan_lines(s, sc->len - sc->pos, &c, &more);
		if (n > 0) {
			/* Each line is content + CRLF on the wire. */
			p->cur->size += n + c.lines - c.crlf;
			lf = s + n - 1;
			start = memrchr(s, '\n', n - 1);
			start = start == NULL ? s : start + 1;
			p->prev_empty = lf == start ||
			    (lf == start + 1 && *start == '\r');
			p->prev_empty_off = sc->buf_off + (start - sc->buf);
			sc->pos += n;
		}
		if (!more || sc->eof || sc->len - sc->pos > LINE_KEEP)
			return 0;
		if (scan_fill(sc) < 0)
			return -1;
		if (sc->pos == sc->len)
			return 0;
	}
}

enum maildrop_status
mbox_parse(struct maildrop *mb, off_t start, off_t fsize)
{
	struct scanner	*sc;
	struct parse	 p;
	struct line	 l;
	struct mbox_msg	*m;
	size_t		 hl;
	int		 r, empty, first = 1;
	enum maildrop_status st = MAILDROP_OK;

	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		return MAILDROP_NOMEM;
	if ((sc->buf = malloc(CHUNK + LINE_KEEP)) == NULL) {
		free(sc);
		return MAILDROP_NOMEM;
	}
	sc->fd = mb->fd;
	sc->buf_off = start;
	memset(&p, 0, sizeof(p));
	mbox_uid_init(&p.uid, mb, start);
	p.cl_end = -1;
	for (;;) {
		if (p.cur != NULL && !p.in_header && p.hashed >= HEAD_HASHED &&
		    skip_body(sc, &p) < 0) {
			r = -1;
			break;
		}
		if ((r = scan_line(sc, &l)) != 1)
			break;
		hl = l.content < l.hlen ? (size_t)l.content : l.hlen;
		if ((first || p.prev_empty) && l.off >= p.cl_end &&
		    l.content <= LINE_KEEP && mbox_is_from_line(l.head, hl)) {
			msg_finish(mb, &p, l.off);
			if (mb->nmsgs == mb->cap) {
				size_t ncap = mb->cap == 0 ? 64 : mb->cap * 2;
				m = reallocarray(mb->msgs, ncap, sizeof(*m));
				if (m == NULL) {
					st = MAILDROP_NOMEM;
					break;
				}
				mb->msgs = m;
				mb->cap = ncap;
			}
			m = &mb->msgs[mb->nmsgs++];
			memset(m, 0, sizeof(*m));
			m->from_off = l.off;
			m->from_len = (uint16_t)hl;
			m->from_eol = (uint8_t)(l.len - hl);
			p.from_hash = hash64(l.head, hl);
			p.hashed = 0;
			p.cur = m;
			mbox_uid_begin(&p.uid, &l);
			p.in_header = 1;
			p.clen = -1;
			p.prev_empty = 0;
			first = 0;
			continue;
		}
		if (first) {
			st = MAILDROP_BADFORMAT;
			break;
		}
		m = p.cur;
		if (p.hashed < HEAD_HASHED) {
			/* The raw bytes, terminators included. */
			size_t n = HEAD_HASHED - p.hashed;

			if (n > l.hlen)
				n = l.hlen;
			memcpy(p.head + p.hashed, l.head, n);
			p.hashed += n;
			if (p.hashed == HEAD_HASHED)
				m->fingerprint = msg_fingerprint(p.from_hash,
				    hash64(p.head, p.hashed));
		}
		if (m->size > UINT64_MAX - l.content - 2) {
			st = MAILDROP_BADFORMAT;
			break;
		}
		m->size += l.content + 2;
		empty = l.has_lf && l.content == 0;
		if (p.in_header) {
			if (empty) {
				p.in_header = 0;
				p.cl_end = clen_target(mb->fd, fsize,
				    l.off + (off_t)l.len, p.clen);
			} else
				parse_header(&p, &l, mb->nmsgs - 1);
		}
		p.prev_empty = empty;
		p.prev_empty_off = l.off;
	}
	if (r < 0) {
		log_warn("read %s", mb->path);
		st = MAILDROP_IOERR;
	}
	if (st == MAILDROP_OK) {
		msg_finish(mb, &p, sc->buf_off + (off_t)sc->len);
		st = p.uid.error;
	}
	if (st == MAILDROP_OK) {
		mb->parsed_size = sc->buf_off + (off_t)sc->len;
		mb->nhidden = mb->nmsgs > 0 && mb->msgs[0].hidden;
		st = mbox_uid_number(mb);
	}
	free(sc->buf);
	free(sc);
	return st;
}

int
mbox_msg_intact(struct maildrop *mb, size_t i)
{
	const struct mbox_msg *m = &mb->msgs[i];
	size_t		 fl = (size_t)(m->from_len + m->from_eol), hl, n;
	off_t		 body = msg_body(m), next = msg_next(mb, i);

	hl = next - body > HEAD_HASHED ? HEAD_HASHED : (size_t)(next - body);
	n = fl + hl;			/* <= LINE_KEEP + 2 + HEAD_HASHED */
	return mbox_pread_full(mb->fd, mb->buf, n, m->from_off) ==
	    (ssize_t)n && msg_fingerprint(hash64(mb->buf, m->from_len),
	    hash64(mb->buf + fl, hl)) == m->fingerprint;
}

