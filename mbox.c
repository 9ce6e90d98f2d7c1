/*
 * mbox.c: one Unix mbox maildrop (see mbox.h and DESIGN §3-6).  Runs as
 * the mail user.  Touches the spool directory only through the caller's
 * hooks, which hold the mail group while a dotlock or journal is made.
 *
 * The commit is an in-place rewrite behind a redo journal, so that the
 * inode, owner, group and mode never change and a crash at any instant
 * leaves the old or the new mailbox once recovery has run:
 *
 *   1. Under both locks, check the file is the same inode and only grew.
 *      X is the offset of the first deleted message, S the size now.
 *   2. Write the new tail (kept messages after X, then mail delivered
 *      during the session) at JNL_DATA in "MAILBOX.pop3d-journal", fsync;
 *      write header slot A (X, S, L, a random marker), fsync, fsync dir.
 *   3. Write the tail at X and the marker right after it, fsync.
 *   4. Write header slot B ("phase 1": the tail is in place), fsync.
 *   5. Truncate to X + L, fsync; unlink the journal, fsync dir.
 *
 * Recovery reads slot A (invalid: step 2 never finished, the mailbox was
 * not touched, drop the journal).  Without a valid slot B the file has
 * not been truncated, so it is at least S long and anything past S was
 * delivered after the crash.  With slot B, the marker at X + L tells
 * whether the truncation happened: delivery agents append "From " lines,
 * never our random marker.  Mail delivered after the crash is moved
 * into a new journal before anything is overwritten, so recovery is
 * itself crash-safe.
 */
#include <sys/types.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lockfile.h>
#include <md5.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "log.h"
#include "mbox.h"
#include "scan.h"

#define CHUNK		(128 * 1024)	/* read size for parse and send */
#define LINE_KEEP	4096		/* bytes of a line the parser looks at */
#define JNL_SUFFIX	".pop3d-journal"
#define JNL_SLOT_A	0
#define JNL_SLOT_B	512
#define JNL_DATA	4096
#define JNL_MAGIC	"POP3DJN1"
#define MARKER_LEN	16
#define DOTLOCK_REFRESH	60		/* seconds between lockfile_touch */
#define HEAD_HASHED	512		/* message bytes the commit re-checks */
#define IDX_SUFFIX	".pop3d-index"
#define IDX_MAGIC	"POP3DIX1"
#define IDX_MIN		(4 * 1024 * 1024) /* smaller mailboxes parse in < 1 ms */
#define IDX_SAMPLES	64		/* messages re-checked when mail was added */
#define IDX_SETTLE_MS	50		/* a change this recent may share our ctime */

const char *const mbox_status_text[MBOX_STATUS_MAX] = {
	[MBOX_OK] = "OK",
	[MBOX_INUSE] = "[IN-USE] Maildrop is in use by another session",
	[MBOX_LOCKED] = "[SYS/TEMP] Mailbox is locked by another program",
	[MBOX_NOTMBOX] = "[SYS/PERM] Mailbox is not in mbox format",
	[MBOX_BADFILE] = "[SYS/PERM] Mailbox is not a regular file of yours",
	[MBOX_NOACCESS] = "[SYS/PERM] Mailbox cannot be read (permission denied)",
	[MBOX_CHANGED] = "[SYS/TEMP] Mailbox was changed by another program",
	[MBOX_READONLY] = "[SYS/PERM] Mailbox is read-only",
	[MBOX_IOERR] = "[SYS/TEMP] Mailbox I/O error",
	[MBOX_NOMEM] = "[SYS/TEMP] Out of memory",
};

/*
 * One message, in 48 bytes: memory grows with the number of messages.
 * Its bytes on file are [msg_body(), msg_end()); the next message (or
 * the end of what was parsed) starts at msg_next().
 */
struct mbox_msg {
	off_t		 from_off;	/* the From_ line */
	uint64_t	 size;		/* octets on the wire */
	uint64_t	 check;		/* hash of the From_ line and the head */
	unsigned char	 uid[16];	/* MD5 of stable header lines */
	uint32_t	 uid_seq;	/* 1, or n for the n-th identical uid */
	uint16_t	 from_len;	/* the From_ line, terminator excluded */
	uint8_t		 from_eol;	/* its terminator: 0, 1 or 2 bytes */
	uint8_t		 frame : 2;	/* the empty line before msg_next() */
	uint8_t		 deleted : 1;
	uint8_t		 hidden : 1;
};

struct mbox {
	char			*path;
	char			*lockpath;
	char			*jnlpath;
	char			*idxpath;
	int			 fd;		/* -1: the file does not exist */
	int			 fd_borrowed;	/* mbox_parse_fd: not ours */
	int			 writable;
	dev_t			 dev;
	ino_t			 ino;
	off_t			 parsed_size;
	struct mbox_msg		*msgs;
	size_t			 nmsgs;		/* all, hidden included */
	size_t			 cap;		/* msgs allocated */
	int			 indexed;	/* see mbox_indexed() */
	struct timespec		 parsed_ctime;	/* of the file as parsed */
	struct timespec		 parsed_mtime;
	int			 settled;	/* ctime told changes apart */
	size_t			 first;		/* 1 when msgs[0] is hidden */
	struct mbox_hooks	 hooks;
	int			 dotlocked;
	time_t			 dotlock_time;
	char			*buf;		/* CHUNK bytes for send/commit */
};

static off_t
msg_next(const struct mbox *mb, size_t i)
{
	return i + 1 < mb->nmsgs ? mb->msgs[i + 1].from_off : mb->parsed_size;
}

static off_t
msg_body(const struct mbox_msg *m)
{
	return m->from_off + m->from_len + m->from_eol;
}

static off_t
msg_end(const struct mbox *mb, size_t i)
{
	return msg_next(mb, i) - mb->msgs[i].frame;
}

/* Has the file kept the mtime and ctime it had (every write moves them)? */
static int
same_times(const struct stat *sb, const struct timespec *mtime,
    const struct timespec *ctime)
{
	return sb->st_mtim.tv_sec == mtime->tv_sec &&
	    sb->st_mtim.tv_nsec == mtime->tv_nsec &&
	    sb->st_ctim.tv_sec == ctime->tv_sec &&
	    sb->st_ctim.tv_nsec == ctime->tv_nsec;
}

/* What the commit re-checks: the From_ line's hash with the head's. */
static uint64_t
msg_check(uint64_t from_hash, uint64_t head_hash)
{
	return from_hash ^ (head_hash * 0x9e3779b97f4a7c15ULL);
}

struct jnl_hdr {
	char		 magic[8];
	uint32_t	 version;
	uint32_t	 phase;
	uint64_t	 dev;
	uint64_t	 ino;
	uint64_t	 x;		/* where the tail goes */
	uint64_t	 s;		/* mailbox size when the commit began */
	uint64_t	 l;		/* tail length */
	unsigned char	 marker[MARKER_LEN];
	uint64_t	 check;		/* FNV-1a of everything above */
};

static uint64_t
fnv1a(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len-- > 0) {
		h ^= *p++;
		h *= 0x100000001b3ULL;
	}
	return h;
}
#define FNV_INIT	0xcbf29ce484222325ULL

/*
 * A fast 64-bit hash of a short byte string, a word at a time: the
 * commit's check that bytes are still what the parser saw.  Not for
 * anything an attacker picks.
 */
static uint64_t
hash64(const void *buf, size_t len)
{
	const unsigned char	*p = buf;
	uint64_t		 h = 0x9e3779b97f4a7c15ULL ^ len, w;

	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w, p, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	w = 0;
	memcpy(&w, p, len);
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 29);
}

/*
 * Full-length pread/pwrite.  pread_full returns bytes read (short only at
 * EOF) or -1.
 */
static ssize_t
pread_full(int fd, void *buf, size_t len, off_t off)
{
	size_t	 done = 0;
	ssize_t	 n;

	while (done < len) {
		n = pread(fd, (char *)buf + done, len - done,
		    off + (off_t)done);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int
pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	size_t	 done = 0;
	ssize_t	 n;

	while (done < len) {
		n = pwrite(fd, (const char *)buf + done, len - done,
		    off + (off_t)done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

/* ---- From_ lines --------------------------------------------------- */

static int
match_word(const char *p, const char *end, const char *const *words)
{
	size_t	 i;

	if (end - p < 3)
		return 0;
	for (i = 0; words[i] != NULL; i++)
		if (strncmp(p, words[i], 3) == 0)
			return 1;
	return 0;
}

/* Skips n_min..n_max digits; returns the new position or NULL. */
static const char *
skip_digits(const char *p, const char *end, int n_min, int n_max)
{
	int	 n = 0;

	while (p < end && n < n_max && isdigit((unsigned char)*p)) {
		p++;
		n++;
	}
	return n >= n_min ? p : NULL;
}

/*
 * Matches a ctime-like date at p: "Www Mmm dd hh:mm[:ss] [zone ]yyyy"
 * and what Dovecot, mutt and qpopper also accept (a zone before or after
 * the year, two-digit years, "remote from" suffixes).
 */
static int
match_date(const char *p, const char *end)
{
	static const char *const wdays[] = { "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat", "Sun", NULL };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr",
	    "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", NULL };
	const char	*q;

	if (!match_word(p, end, wdays) || end - p < 4 || p[3] != ' ')
		return 0;
	p += 4;
	if (!match_word(p, end, months) || end - p < 4 || p[3] != ' ')
		return 0;
	p += 4;
	while (p < end && *p == ' ')
		p++;
	if ((p = skip_digits(p, end, 1, 2)) == NULL || p >= end || *p != ' ')
		return 0;
	p++;
	if ((p = skip_digits(p, end, 1, 2)) == NULL || p >= end || *p != ':')
		return 0;
	if ((p = skip_digits(p + 1, end, 2, 2)) == NULL)
		return 0;
	if (p < end && *p == ':' && (p = skip_digits(p + 1, end, 2, 2)) == NULL)
		return 0;
	if (p >= end || *p != ' ')
		return 0;
	p++;
	/* An optional zone ("PST", "+0100", "-07") before the year. */
	if (p < end && !isdigit((unsigned char)*p)) {
		q = p;
		while (q < end && *q != ' ')
			q++;
		if (q == p || q >= end)
			return 0;
		p = q + 1;
	}
	q = skip_digits(p, end, 2, 4);
	if (q == NULL || q - p == 3)
		return 0;
	return q == end || *q == ' ';
}

/* A separator: "From " + sender + date, the whole line (no terminator). */
static int
is_from_line(const char *line, size_t len)
{
	const char	*end = line + len, *p;

	if (len < 5 || memcmp(line, "From ", 5) != 0)
		return 0;
	for (p = line + 5; p < end; p++)
		if (p[-1] == ' ' && match_date(p, end))
			return 1;
	return 0;
}

/* ---- the scanner --------------------------------------------------- */

struct line {
	off_t		 off;		/* file offset of the line */
	const char	*head;		/* its first hlen bytes */
	size_t		 hlen;
	uint64_t	 len;		/* bytes, terminator included */
	uint64_t	 content;	/* bytes before LF or CRLF */
	int		 has_lf;
};

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
	n = pread_full(sc->fd, sc->buf + sc->len, CHUNK + LINE_KEEP - sc->len,
	    sc->buf_off + (off_t)sc->len);
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
	MD5_CTX		 md5;
	int		 in_header;
	int		 received;	/* Received: lines seen */
	int		 folder_subject;
	int		 folder_ximap;
	int64_t		 clen;		/* Content-Length, or -1 */
	off_t		 cl_end;	/* separators ignored before this */
	size_t		 hashed;	/* message bytes in head[] */
	char		 head[HEAD_HASHED];	/* the first, for the check */
	uint64_t	 from_hash;	/* hash64 of cur's From_ line */
	int		 prev_empty;
	off_t		 prev_empty_off;
};

static int
header_is(const struct line *l, const char *name)
{
	size_t	 n = strlen(name);

	return l->hlen > n && strncasecmp(l->head, name, n) == 0;
}

static void
uid_add(struct parse *p, const struct line *l)
{
	size_t	 n = l->content < l->hlen ? (size_t)l->content : l->hlen;

	MD5Update(&p->md5, (const unsigned char *)l->head, n);
	MD5Update(&p->md5, (const unsigned char *)"\n", 1);
}

static void
parse_header(struct parse *p, const struct line *l, size_t msgno)
{
	const char	*v, *end;
	int64_t		 n;

	/* Most header lines are none of these: one look at the first byte. */
	switch (l->head[0] | 0x20) {
	case 'r':
		if (header_is(l, "Received:") && p->received++ == 0)
			uid_add(p, l);
		return;
	case 'd':
		if (header_is(l, "Delivered-To:") ||
		    (p->received == 0 && header_is(l, "Date:")))
			uid_add(p, l);
		return;
	case 'x':
		if (header_is(l, "X-Delivery-ID:"))
			uid_add(p, l);
		else if (msgno == 0 && (header_is(l, "X-IMAP:") ||
		    header_is(l, "X-IMAPbase:")))
			p->folder_ximap = 1;
		return;
	case 'm':
		if (p->received == 0 && header_is(l, "Message-ID:"))
			uid_add(p, l);
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
		if (pread_full(fd, b, 1, t - 1) != 1 || b[0] != '\n')
			return -1;
	}
	if (t == fsize)
		return t;
	if ((n = pread_full(fd, b, sizeof(b) - 1, t)) <= 0)
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
	return is_from_line(b + skip, (size_t)(lf - (b + skip))) ? t : -1;
}

static void
msg_finish(struct mbox *mb, struct parse *p, off_t end_off)
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
		m->check = msg_check(p->from_hash, hash64(p->head, p->hashed));
	MD5Final(m->uid, &p->md5);
	/*
	 * UW and Dovecot keep folder data in a first message that no mail
	 * system delivered: anything with a Received: line is real mail,
	 * even when it claims the subject (it may become first after a
	 * deletion).
	 */
	if (mb->nmsgs == 1 && p->folder_subject && p->folder_ximap &&
	    p->received == 0)
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

/*
 * Numbers identical UIDs in file order: h, h-2, h-3.  An open-addressing
 * table of message indexes keyed by the digest, whose slot always holds
 * the latest message of that digest.
 */
static enum mbox_status
number_uids(struct mbox *mb)
{
	uint32_t	*slot;
	size_t		 i, cap = 16, h;
	uint64_t	 k;

	if (mb->nmsgs == 0)
		return MBOX_OK;
	if (mb->nmsgs > UINT32_MAX - 1)
		return MBOX_NOMEM;
	while (cap < mb->nmsgs * 2)
		cap *= 2;
	/* Slots hold index + 1; 0 is free. */
	if ((slot = calloc(cap, sizeof(*slot))) == NULL)
		return MBOX_NOMEM;
	for (i = 0; i < mb->nmsgs; i++) {
		struct mbox_msg	*m = &mb->msgs[i];

		memcpy(&k, m->uid, sizeof(k));
		m->uid_seq = 1;
		for (h = (size_t)k & (cap - 1); slot[h] != 0;
		    h = (h + 1) & (cap - 1)) {
			struct mbox_msg *o = &mb->msgs[slot[h] - 1];

			if (memcmp(o->uid, m->uid, sizeof(m->uid)) == 0) {
				m->uid_seq = o->uid_seq + 1;
				break;
			}
		}
		slot[h] = (uint32_t)i + 1;
	}
	free(slot);
	return MBOX_OK;
}

/*
 * Parses [start, fsize) of the file, start being 0 or the From_ line of
 * a message after those already in mb->msgs, then numbers the UIDs.
 */
static enum mbox_status
parse(struct mbox *mb, off_t start, off_t fsize)
{
	struct scanner	*sc;
	struct parse	 p;
	struct line	 l;
	struct mbox_msg	*m;
	size_t		 hl;
	int		 r, empty, first = 1;
	enum mbox_status st = MBOX_OK;

	if ((sc = calloc(1, sizeof(*sc))) == NULL)
		return MBOX_NOMEM;
	if ((sc->buf = malloc(CHUNK + LINE_KEEP)) == NULL) {
		free(sc);
		return MBOX_NOMEM;
	}
	sc->fd = mb->fd;
	sc->buf_off = start;
	memset(&p, 0, sizeof(p));
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
		    l.content <= LINE_KEEP && is_from_line(l.head, hl)) {
			msg_finish(mb, &p, l.off);
			if (mb->nmsgs == mb->cap) {
				size_t ncap = mb->cap == 0 ? 64 : mb->cap * 2;
				m = reallocarray(mb->msgs, ncap, sizeof(*m));
				if (m == NULL) {
					st = MBOX_NOMEM;
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
			MD5Init(&p.md5);
			uid_add(&p, &l);
			p.in_header = 1;
			p.received = 0;
			p.clen = -1;
			p.prev_empty = 0;
			first = 0;
			continue;
		}
		if (first) {
			st = MBOX_NOTMBOX;
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
				m->check = msg_check(p.from_hash,
				    hash64(p.head, p.hashed));
		}
		if (m->size > UINT64_MAX - l.content - 2) {
			st = MBOX_NOTMBOX;
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
		st = MBOX_IOERR;
	}
	if (st == MBOX_OK) {
		msg_finish(mb, &p, sc->buf_off + (off_t)sc->len);
		mb->parsed_size = sc->buf_off + (off_t)sc->len;
		mb->first = mb->nmsgs > 0 && mb->msgs[0].hidden;
		st = number_uids(mb);
	}
	free(sc->buf);
	free(sc);
	return st;
}

/* ---- locking ------------------------------------------------------- */

static int
priv_raise(struct mbox *mb)
{
	if (mb->hooks.priv_raise == NULL)
		return 0;
	return mb->hooks.priv_raise(mb->hooks.arg);
}

static void
priv_lower(struct mbox *mb)
{
	if (mb->hooks.priv_lower != NULL)
		mb->hooks.priv_lower(mb->hooks.arg);
}

static int
ofd_lock(int fd, short type)
{
	struct flock	 fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = 0;
	fl.l_len = 0;
	return fcntl(fd, F_OFD_SETLK, &fl);
}

static void
nap(void)
{
	unsigned int	 r = 0;

	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = (unsigned int)getpid();
	(void)poll(NULL, 0, 50 + (int)(r % 200));
}

/*
 * Removes our dotlock.  When that fails the lock stays ours (it names our
 * live pid, so nobody else would break it soon): mbox_lock() reuses it
 * and mbox_close() tries again.
 */
static void
dotlock_remove(struct mbox *mb)
{
	int	 r = -1;

	if (!mb->dotlocked)
		return;
	if (priv_raise(mb) == 0) {
		r = lockfile_remove(mb->lockpath);
		priv_lower(mb);
	}
	if (r == 0)
		mb->dotlocked = 0;
	else
		log_warn("remove %s", mb->lockpath);
}

/* Refreshes a held dotlock so that nobody takes it for stale. */
static void
dotlock_refresh(struct mbox *mb)
{
	time_t	 now = time(NULL);

	if (!mb->dotlocked || now - mb->dotlock_time < DOTLOCK_REFRESH)
		return;
	if (priv_raise(mb) == 0) {
		(void)lockfile_touch(mb->lockpath);
		priv_lower(mb);
	}
	mb->dotlock_time = now;
}

/*
 * Takes fcntl then the dotlock, never waiting for one while holding the
 * other (Debian Policy §11.6).
 */
static enum mbox_status
mbox_lock(struct mbox *mb)
{
	time_t	 deadline = time(NULL) + mb->hooks.lock_timeout;
	int	 r;

	for (;;) {
		if (mb->fd == -1 ||
		    ofd_lock(mb->fd, mb->writable ? F_WRLCK : F_RDLCK) == 0) {
			if (mb->dotlocked) {
				/* Left over from a failed removal: still ours. */
				mb->dotlock_time = 0;
				dotlock_refresh(mb);
				return MBOX_OK;
			}
			if (priv_raise(mb) != 0)
				r = L_ERROR;
			else {
				r = lockfile_create(mb->lockpath, 0, L_PID);
				priv_lower(mb);
			}
			if (r == L_SUCCESS) {
				mb->dotlocked = 1;
				mb->dotlock_time = time(NULL);
				return MBOX_OK;
			}
			if (mb->fd != -1)
				(void)ofd_lock(mb->fd, F_UNLCK);
			if (r != L_MAXTRYS && r != L_RMSTALE) {
				log_warn("dotlock %s (liblockfile status %d)",
				    mb->lockpath, r);
				return MBOX_IOERR;
			}
		} else if (errno != EAGAIN && errno != EACCES) {
			log_warn("fcntl lock %s", mb->path);
			return MBOX_IOERR;
		}
		if (time(NULL) >= deadline)
			return MBOX_LOCKED;
		nap();
	}
}

static void
mbox_unlock(struct mbox *mb)
{
	dotlock_remove(mb);
	if (mb->fd != -1)
		(void)ofd_lock(mb->fd, F_UNLCK);
}

enum mbox_status
mbox_session_lock(const char *rundir, const char *path, int *fd_r)
{
	char	 name[PATH_MAX], hex[33];
	int	 fd;

	if (MD5Data((const unsigned char *)path, strlen(path), hex) == NULL)
		return MBOX_NOMEM;
	if ((size_t)snprintf(name, sizeof(name), "%s/%s.session", rundir,
	    hex) >= sizeof(name))
		return MBOX_IOERR;
	fd = open(name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd == -1) {
		log_warn("session lock %s", name);
		return MBOX_IOERR;
	}
	if (ofd_lock(fd, F_WRLCK) == -1) {
		close(fd);
		if (errno == EAGAIN || errno == EACCES)
			return MBOX_INUSE;
		log_warn("session lock %s", name);
		return MBOX_IOERR;
	}
	*fd_r = fd;
	return MBOX_OK;
}

/* ---- the journal --------------------------------------------------- */

static int
fsync_dir(const char *path)
{
	char	 dir[PATH_MAX], *slash;
	int	 fd, r;

	if (strlen(path) >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(dir, path);
	if ((slash = strrchr(dir, '/')) == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static void
hdr_seal(struct jnl_hdr *h)
{
	h->check = fnv1a(FNV_INIT, h, offsetof(struct jnl_hdr, check));
}

static int
hdr_valid(const struct jnl_hdr *h)
{
	return memcmp(h->magic, JNL_MAGIC, 8) == 0 && h->version == 1 &&
	    h->check == fnv1a(FNV_INIT, h, offsetof(struct jnl_hdr, check)) &&
	    h->x <= h->s && h->l <= h->s - h->x && h->l < h->s - h->x;
}

/* Copies len bytes from (ifd, ioff) to (ofd, ooff) through mb->buf. */
static int
copy_range(struct mbox *mb, int ifd, off_t ioff, int ofd, off_t ooff,
    uint64_t len)
{
	size_t	 n;
	ssize_t	 r;

	while (len > 0) {
		n = len > CHUNK ? CHUNK : (size_t)len;
		if ((r = pread_full(ifd, mb->buf, n, ioff)) < 0)
			return -1;
		if ((size_t)r != n) {
			errno = EIO;	/* the source shrank */
			return -1;
		}
		if (pwrite_full(ofd, mb->buf, n, ooff) < 0)
			return -1;
		ioff += (off_t)n;
		ooff += (off_t)n;
		len -= n;
		dotlock_refresh(mb);
	}
	return 0;
}

/* Creates a journal file, with the mail group held. */
static int
jnl_create(struct mbox *mb, const char *path)
{
	int	 fd;

	if (priv_raise(mb) != 0)
		return -1;
	(void)unlink(path);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	priv_lower(mb);
	return fd;
}

static int
jnl_unlink(struct mbox *mb, const char *path)
{
	int	 r;

	if (priv_raise(mb) != 0)
		return -1;
	r = unlink(path);
	priv_lower(mb);
	if (r == -1)
		return errno == ENOENT ? 0 : -1;	/* nothing to make durable */
	return fsync_dir(path);
}

/*
 * Steps 3-5: puts the journal's tail in place, truncates, drops the
 * journal.  Idempotent: recovery may run it again after a crash.
 */
static enum mbox_status
jnl_apply(struct mbox *mb, int jfd, struct jnl_hdr *h)
{
	struct jnl_hdr	 b;
	size_t		 m;

	m = h->s - h->x - h->l;
	if (m > MARKER_LEN)
		m = MARKER_LEN;
	if (copy_range(mb, jfd, JNL_DATA, mb->fd, (off_t)h->x, h->l) < 0 ||
	    pwrite_full(mb->fd, h->marker, m, (off_t)(h->x + h->l)) < 0 ||
	    fsync(mb->fd) < 0)
		goto fail;
	b = *h;
	b.phase = 1;
	hdr_seal(&b);
	if (pwrite_full(jfd, &b, sizeof(b), JNL_SLOT_B) < 0 || fsync(jfd) < 0)
		goto fail;
	if (ftruncate(mb->fd, (off_t)(h->x + h->l)) < 0 || fsync(mb->fd) < 0)
		goto fail;
	if (jnl_unlink(mb, mb->jnlpath) < 0)
		log_warn("remove %s", mb->jnlpath);
	return MBOX_OK;
fail:
	log_warn("commit %s", mb->path);
	return MBOX_IOERR;
}

struct range {
	off_t	 off;
	uint64_t len;
};

/*
 * Steps 2-5: writes a journal whose tail is the ranges of srcfd, in
 * order, under "JOURNAL.new", renames it into place, and applies it.
 */
static enum mbox_status
jnl_write_apply(struct mbox *mb, int srcfd, const struct range *r, size_t nr,
    uint64_t x, uint64_t s)
{
	struct jnl_hdr	 h;
	char		 tmp[PATH_MAX];
	uint64_t	 l = 0;
	size_t		 i;
	int		 jfd;
	enum mbox_status st;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", mb->jnlpath) >=
	    sizeof(tmp))
		return MBOX_IOERR;
	if ((jfd = jnl_create(mb, tmp)) == -1) {
		log_warn("create %s", tmp);
		return MBOX_IOERR;
	}
	for (i = 0; i < nr; i++) {
		if (copy_range(mb, srcfd, r[i].off, jfd,
		    (off_t)(JNL_DATA + l), r[i].len) < 0) {
			log_warn("write %s", tmp);
			goto fail;
		}
		l += r[i].len;
	}
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, JNL_MAGIC, 8);
	h.version = 1;
	h.dev = (uint64_t)mb->dev;
	h.ino = (uint64_t)mb->ino;
	h.x = x;
	h.s = s;
	h.l = l;
	if (getrandom(h.marker, sizeof(h.marker), 0) != sizeof(h.marker))
		goto fail;
	h.marker[0] = '\0';	/* never the start of a delivery */
	hdr_seal(&h);
	if (fsync(jfd) < 0 || pwrite_full(jfd, &h, sizeof(h), JNL_SLOT_A) < 0 ||
	    fsync(jfd) < 0) {
		log_warn("write %s", tmp);
		goto fail;
	}
	if (priv_raise(mb) != 0)
		goto fail;
	if (rename(tmp, mb->jnlpath) < 0) {
		priv_lower(mb);
		log_warn("rename %s", tmp);
		goto fail;
	}
	priv_lower(mb);
	if (fsync_dir(mb->jnlpath) < 0) {
		log_warn("sync directory of %s", mb->jnlpath);
		/* The journal may not be durable: do not touch the mailbox. */
		(void)jnl_unlink(mb, mb->jnlpath);
		close(jfd);
		return MBOX_IOERR;
	}
	st = jnl_apply(mb, jfd, &h);
	close(jfd);
	return st;
fail:
	close(jfd);
	(void)jnl_unlink(mb, tmp);
	return MBOX_IOERR;
}

/* Finishes any interrupted commit; called with both locks held. */
static enum mbox_status
recover_locked(struct mbox *mb)
{
	struct jnl_hdr	 a, b;
	struct stat	 sb;
	struct range	 r;
	char		 tmp[PATH_MAX], mark[MARKER_LEN];
	uint64_t	 size, m, tail_end;
	int		 jfd, truncated;
	enum mbox_status st;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.new", mb->jnlpath) <
	    sizeof(tmp))
		(void)jnl_unlink(mb, tmp);	/* never made it to step 2 */
	if ((jfd = open(mb->jnlpath, O_RDWR | O_NOFOLLOW | O_CLOEXEC)) ==
	    -1) {
		if (errno == ENOENT)
			return MBOX_OK;
		log_warn("open %s", mb->jnlpath);
		return MBOX_IOERR;
	}
	if (pread_full(jfd, &a, sizeof(a), JNL_SLOT_A) != sizeof(a) ||
	    !hdr_valid(&a)) {
		/* Step 2 never finished: the mailbox was not touched. */
		close(jfd);
		log_notice("%s: discarding an unfinished journal", mb->path);
		return jnl_unlink(mb, mb->jnlpath) < 0 ? MBOX_IOERR : MBOX_OK;
	}
	if (mb->fd == -1 || fstat(mb->fd, &sb) == -1 ||
	    a.dev != (uint64_t)sb.st_dev || a.ino != (uint64_t)sb.st_ino) {
		close(jfd);
		log_warnx("%s: journal %s belongs to another file; remove it "
		    "after checking the mailbox", mb->path, mb->jnlpath);
		return MBOX_CHANGED;
	}
	size = (uint64_t)sb.st_size;
	m = a.s - a.x - a.l;
	if (m > MARKER_LEN)
		m = MARKER_LEN;
	tail_end = a.x + a.l;
	truncated = 0;
	if (pread_full(jfd, &b, sizeof(b), JNL_SLOT_B) == sizeof(b) &&
	    hdr_valid(&b) && b.phase == 1 &&
	    memcmp(&b.x, &a.x, offsetof(struct jnl_hdr, check) -
	    offsetof(struct jnl_hdr, x)) == 0) {
		truncated = 1;
		if (size >= tail_end + m &&
		    pread_full(mb->fd, mark, m, (off_t)tail_end) == (ssize_t)m &&
		    memcmp(mark, a.marker, m) == 0)
			truncated = 0;
	}
	log_notice("%s: recovering an interrupted commit (%s)", mb->path,
	    truncated ? "complete" : "redo");
	if (truncated) {
		close(jfd);
		if (size < tail_end) {
			log_warnx("%s: shorter than its journal says", mb->path);
			return MBOX_CHANGED;
		}
		return jnl_unlink(mb, mb->jnlpath) < 0 ? MBOX_IOERR : MBOX_OK;
	}
	if (size < a.s) {
		close(jfd);
		log_warnx("%s: shorter than its journal says; journal kept",
		    mb->path);
		return MBOX_CHANGED;
	}
	if (size == a.s) {
		st = jnl_apply(mb, jfd, &a);
		close(jfd);
		return st;
	}
	/*
	 * Mail arrived after the crash.  Append it to the journal's data
	 * (past what slot A covers, so the journal stays valid), then journal
	 * tail and late mail together under a new header and apply that.
	 */
	if (copy_range(mb, mb->fd, (off_t)a.s, jfd, (off_t)(JNL_DATA + a.l),
	    size - a.s) < 0 || fsync(jfd) < 0) {
		log_warn("extend %s", mb->jnlpath);
		close(jfd);
		return MBOX_IOERR;
	}
	r.off = JNL_DATA;
	r.len = a.l + (size - a.s);
	st = jnl_write_apply(mb, jfd, &r, 1, a.x, size);
	close(jfd);
	return st;
}

/* ---- the index ----------------------------------------------------- */

/*
 * A parsed mailbox of IDX_MIN bytes or more leaves its table of messages
 * in "MAILBOX.pop3d-index" (the user's, mode 0600), so that the next
 * session need not read the mailbox again:
 *
 *   - the same inode, size, mtime and ctime: the table is used as it is
 *     (ctime cannot be set by any program, and every write moves it);
 *   - the same inode, grown: IDX_SAMPLES messages spread over the file
 *     are re-checked, and only the last one and what follows is parsed;
 *   - anything else: parsed from the start, and the index rewritten.
 *
 * It is a cache: it is checked, never trusted, and a commit removes it.
 * The commit re-checks every message it moves or deletes either way.
 */
struct idx_hdr {
	char		 magic[8];
	uint32_t	 version;
	uint32_t	 recsize;	/* sizeof(struct mbox_msg) */
	uint64_t	 dev;
	uint64_t	 ino;
	uint64_t	 size;
	struct timespec	 mtime;
	struct timespec	 ctime;
	uint64_t	 nmsgs;
	uint64_t	 rec_hash;	/* hash64 of the records */
	uint64_t	 check;		/* hash64 of everything above */
};

/* Are message i's From_ line and first bytes still where they were? */
static int
msg_intact(struct mbox *mb, size_t i)
{
	const struct mbox_msg *m = &mb->msgs[i];
	size_t		 fl = (size_t)(m->from_len + m->from_eol), hl, n;
	off_t		 body = msg_body(m), next = msg_next(mb, i);

	hl = next - body > HEAD_HASHED ? HEAD_HASHED : (size_t)(next - body);
	n = fl + hl;			/* <= LINE_KEEP + 2 + HEAD_HASHED */
	return pread_full(mb->fd, mb->buf, n, m->from_off) == (ssize_t)n &&
	    msg_check(hash64(mb->buf, m->from_len),
	    hash64(mb->buf + fl, hl)) == m->check;
}

/* Is the loaded table one the parser could have made of size bytes? */
static int
idx_sane(const struct mbox *mb, off_t size)
{
	const struct mbox_msg *m;
	size_t		 i;

	if (mb->nmsgs == 0 || mb->msgs[0].from_off != 0)
		return 0;
	for (i = 0; i < mb->nmsgs; i++) {
		m = &mb->msgs[i];
		if (msg_next(mb, i) <= m->from_off || msg_next(mb, i) > size ||
		    m->from_len < 5 || m->from_len > LINE_KEEP ||
		    m->from_eol < 1 || m->from_eol > 2 ||
		    msg_end(mb, i) < msg_body(m) ||
		    m->size > 2 * (uint64_t)(msg_end(mb, i) - msg_body(m)) +
		    2 || m->uid_seq == 0 || m->uid_seq > mb->nmsgs ||
		    m->deleted || (m->hidden && i > 0))
			return 0;
	}
	return 1;
}

static int
idx_file_ok(int fd)
{
	struct stat	 sb;

	return fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
	    sb.st_nlink == 1 && sb.st_uid == geteuid() &&
	    (sb.st_mode & 077) == 0;
}

/*
 * Under the locks, with sb the mailbox now.  Returns 1 with the whole
 * table loaded; 2 with all but the last message loaded and *resume_r
 * where parsing goes on; 0 when there is nothing usable.
 */
static int
idx_load(struct mbox *mb, const struct stat *sb, off_t *resume_r)
{
	struct idx_hdr	 h;
	size_t		 n, k, i;
	int		 fd, ret = 0;

	*resume_r = 0;
	if (sb->st_size < IDX_MIN)
		return 0;
	if ((fd = open(mb->idxpath, O_RDONLY | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC)) == -1)
		return 0;
	if (!idx_file_ok(fd) || pread_full(fd, &h, sizeof(h), 0) !=
	    (ssize_t)sizeof(h) ||
	    memcmp(h.magic, IDX_MAGIC, sizeof(h.magic)) != 0 ||
	    h.version != 3 || h.recsize != sizeof(struct mbox_msg) ||
	    h.check != hash64(&h, offsetof(struct idx_hdr, check)) ||
	    h.dev != (uint64_t)sb->st_dev || h.ino != (uint64_t)sb->st_ino ||
	    h.size > (uint64_t)sb->st_size || h.nmsgs == 0 ||
	    h.nmsgs > h.size / 16)
		goto out;
	if (h.size == (uint64_t)sb->st_size && !same_times(sb, &h.mtime,
	    &h.ctime))
		goto out;		/* rewritten to the same size */
	n = (size_t)h.nmsgs;
	if ((mb->msgs = calloc(n, sizeof(*mb->msgs))) == NULL)
		goto out;
	mb->cap = n;
	mb->nmsgs = n;
	mb->parsed_size = (off_t)h.size;
	if (pread_full(fd, mb->msgs, n * sizeof(*mb->msgs), sizeof(h)) !=
	    (ssize_t)(n * sizeof(*mb->msgs)) ||
	    hash64(mb->msgs, n * sizeof(*mb->msgs)) != h.rec_hash ||
	    !idx_sane(mb, (off_t)h.size))
		goto out;
	if (h.size == (uint64_t)sb->st_size) {
		mb->first = mb->msgs[0].hidden;
		ret = 1;
		goto out;
	}
	/* Grown: appended to, or rewritten?  Look at a spread of messages. */
	for (k = 0; k < IDX_SAMPLES && k < n; k++) {
		i = n <= IDX_SAMPLES ? k : k * (n - 1) / (IDX_SAMPLES - 1);
		if (!msg_intact(mb, i))
			goto out;
	}
	/* The last message may have grown: parse it again. */
	*resume_r = mb->msgs[n - 1].from_off;
	mb->nmsgs = n - 1;
	ret = 2;
out:
	close(fd);
	if (ret == 0) {
		free(mb->msgs);
		mb->msgs = NULL;
		mb->nmsgs = mb->cap = 0;
		mb->parsed_size = 0;
	} else
		log_debug("%s: index %s", mb->path, ret == 1 ? "used" :
		    "used, new mail parsed");
	return ret;
}

/*
 * Was the file's last change (sb) far enough before now, a time the
 * locks were still held, that any later change gets a later ctime?
 * (The kernel stamps ctime from a coarse clock.)
 */
static int
settled(const struct stat *sb, const struct timespec *now)
{
	int64_t	 age_ms;

	age_ms = (int64_t)(now->tv_sec - sb->st_ctim.tv_sec) * 1000 +
	    (now->tv_nsec - sb->st_ctim.tv_nsec) / 1000000;
	return age_ms >= IDX_SETTLE_MS;
}

/*
 * After a parse, with sb the mailbox as parsed: leaves the table for the
 * next session.  Best effort; a change too recent to be told apart by
 * ctime (not mb->settled) is not indexed.
 */
static void
idx_save(struct mbox *mb, const struct stat *sb)
{
	struct idx_hdr	 h;
	size_t		 len = mb->nmsgs * sizeof(*mb->msgs);
	int		 fd;

	if (sb->st_size < IDX_MIN || mb->nmsgs == 0 || !mb->settled)
		return;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, IDX_MAGIC, sizeof(h.magic));
	h.version = 3;
	h.recsize = sizeof(struct mbox_msg);
	h.dev = (uint64_t)sb->st_dev;
	h.ino = (uint64_t)sb->st_ino;
	h.size = (uint64_t)mb->parsed_size;
	h.mtime = sb->st_mtim;
	h.ctime = sb->st_ctim;
	h.nmsgs = mb->nmsgs;
	h.rec_hash = hash64(mb->msgs, len);
	h.check = hash64(&h, offsetof(struct idx_hdr, check));
	if (priv_raise(mb) != 0)
		return;
	fd = open(mb->idxpath, O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
	    O_CLOEXEC, 0600);
	priv_lower(mb);
	if (fd == -1) {
		log_debug("%s: no index: %s", mb->path, strerror(errno));
		return;
	}
	/* The header goes last: a torn index fails its checks. */
	if (!idx_file_ok(fd) || ftruncate(fd, 0) == -1 ||
	    pwrite_full(fd, mb->msgs, len, sizeof(h)) == -1 ||
	    pwrite_full(fd, &h, sizeof(h), 0) == -1)
		log_warnx("%s: index not written", mb->idxpath);
	close(fd);
}

/* After a commit the index describes a file that is gone. */
static void
idx_drop(struct mbox *mb)
{
	if (priv_raise(mb) != 0)
		return;
	if (unlink(mb->idxpath) == -1 && errno != ENOENT)
		log_warn("unlink %s", mb->idxpath);
	priv_lower(mb);
}

/* ---- open, send, commit -------------------------------------------- */

static enum mbox_status
mbox_new(const char *path, const struct mbox_hooks *hooks, struct mbox **mb_r)
{
	struct mbox	*mb;

	size_t		 n = strlen(path) + sizeof(JNL_SUFFIX);
	size_t		 ni = strlen(path) + sizeof(IDX_SUFFIX);

	if ((mb = calloc(1, sizeof(*mb))) == NULL)
		return MBOX_NOMEM;
	mb->fd = -1;
	if (hooks != NULL)
		mb->hooks = *hooks;
	if ((mb->path = strdup(path)) == NULL ||
	    (mb->lockpath = malloc(n)) == NULL ||
	    (mb->jnlpath = malloc(n)) == NULL ||
	    (mb->idxpath = malloc(ni)) == NULL ||
	    (mb->buf = malloc(CHUNK)) == NULL) {
		mbox_close(mb);
		return MBOX_NOMEM;
	}
	(void)snprintf(mb->lockpath, n, "%s.lock", path);
	(void)snprintf(mb->jnlpath, n, "%s%s", path, JNL_SUFFIX);
	(void)snprintf(mb->idxpath, ni, "%s%s", path, IDX_SUFFIX);
	*mb_r = mb;
	return MBOX_OK;
}

/* Opens the mailbox file as the user; refuses what is not plainly theirs. */
static enum mbox_status
mbox_open_file(struct mbox *mb)
{
	struct stat	 sb;
	int		 flags = O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;

	mb->fd = open(mb->path, O_RDWR | flags);
	mb->writable = mb->fd != -1;
	if (mb->fd == -1 && errno == EACCES)
		mb->fd = open(mb->path, O_RDONLY | flags);
	if (mb->fd == -1) {
		if (errno == ENOENT)
			return MBOX_OK;
		if (errno == ELOOP || errno == EISDIR || errno == ENXIO) {
			log_warnx("%s: not a regular file", mb->path);
			return MBOX_BADFILE;
		}
		log_warn("open %s", mb->path);
		return errno == EACCES ? MBOX_NOACCESS : MBOX_IOERR;
	}
	if (fstat(mb->fd, &sb) == -1) {
		log_warn("fstat %s", mb->path);
		return MBOX_IOERR;
	}
	if (!S_ISREG(sb.st_mode) || sb.st_nlink != 1 ||
	    sb.st_uid != geteuid()) {
		log_warnx("%s: not a regular file owned by uid %lu with one "
		    "link", mb->path, (unsigned long)geteuid());
		return MBOX_BADFILE;
	}
	(void)fcntl(mb->fd, F_SETFL, fcntl(mb->fd, F_GETFL) & ~O_NONBLOCK);
	mb->dev = sb.st_dev;
	mb->ino = sb.st_ino;
	return MBOX_OK;
}

enum mbox_status
mbox_open(const char *path, const struct mbox_hooks *hooks, struct mbox **mb_r)
{
	struct mbox	*mb;
	struct stat	 sb;
	struct timespec	 now;
	off_t		 from = 0;
	int		 indexed = 0;
	enum mbox_status st;

	if ((st = mbox_new(path, hooks, &mb)) != MBOX_OK)
		return st;
	if ((st = mbox_open_file(mb)) != MBOX_OK) {
		mbox_close(mb);
		return st;
	}
	if (mb->fd == -1) {
		*mb_r = mb;		/* no file: an empty maildrop */
		return MBOX_OK;
	}
	if ((st = mbox_lock(mb)) != MBOX_OK) {
		mbox_close(mb);
		return st;
	}
	if ((st = recover_locked(mb)) == MBOX_OK) {
		if (fstat(mb->fd, &sb) == -1)
			st = MBOX_IOERR;
		else if ((indexed = idx_load(mb, &sb, &from)) != 1)
			st = parse(mb, from, sb.st_size);
	}
	(void)clock_gettime(CLOCK_REALTIME, &now);
	mbox_unlock(mb);
	if (st != MBOX_OK) {
		mbox_close(mb);
		return st;
	}
	mb->indexed = indexed;
	mb->parsed_ctime = sb.st_ctim;
	mb->parsed_mtime = sb.st_mtim;
	mb->settled = settled(&sb, &now);
	if (indexed != 1)
		idx_save(mb, &sb);
	*mb_r = mb;
	return MBOX_OK;
}

enum mbox_status
mbox_parse_fd(int fd, struct mbox **mb_r)
{
	struct mbox	*mb;
	struct stat	 sb;
	enum mbox_status st;

	if ((st = mbox_new("(fd)", NULL, &mb)) != MBOX_OK)
		return st;
	if (fstat(fd, &sb) == -1) {
		mbox_close(mb);
		return MBOX_IOERR;
	}
	mb->fd = fd;
	mb->fd_borrowed = 1;
	st = parse(mb, 0, sb.st_size);
	if (st != MBOX_OK) {
		mbox_close(mb);
		return st;
	}
	*mb_r = mb;
	return MBOX_OK;
}

enum mbox_status
mbox_recover(const char *path, const struct mbox_hooks *hooks)
{
	struct mbox	*mb;
	enum mbox_status st;

	if ((st = mbox_new(path, hooks, &mb)) != MBOX_OK)
		return st;
	if ((st = mbox_open_file(mb)) == MBOX_OK && mb->fd != -1 &&
	    (st = mbox_lock(mb)) == MBOX_OK) {
		st = recover_locked(mb);
		mbox_unlock(mb);
	}
	mbox_close(mb);
	return st;
}

void
mbox_close(struct mbox *mb)
{
	if (mb == NULL)
		return;
	if (mb->dotlocked)
		mbox_unlock(mb);
	if (mb->fd != -1 && !mb->fd_borrowed)
		close(mb->fd);
	free(mb->msgs);
	free(mb->buf);
	free(mb->path);
	free(mb->lockpath);
	free(mb->jnlpath);
	free(mb->idxpath);
	free(mb);
}

size_t
mbox_count(const struct mbox *mb)
{
	return mb->nmsgs - mb->first;
}

uint64_t
mbox_size(const struct mbox *mb, size_t idx)
{
	return mb->msgs[mb->first + idx].size;
}

void
mbox_uidl(const struct mbox *mb, size_t idx, char *buf)
{
	const struct mbox_msg *m = &mb->msgs[mb->first + idx];
	static const char hexd[] = "0123456789abcdef";
	size_t	 i;

	for (i = 0; i < sizeof(m->uid); i++) {
		buf[2 * i] = hexd[m->uid[i] >> 4];
		buf[2 * i + 1] = hexd[m->uid[i] & 0xf];
	}
	buf[2 * i] = '\0';
	if (m->uid_seq > 1)
		(void)snprintf(buf + 2 * i, MBOX_UIDL_MAX - 2 * i, "-%lu",
		    (unsigned long)m->uid_seq);
}

int
mbox_deleted(const struct mbox *mb, size_t idx)
{
	return mb->msgs[mb->first + idx].deleted;
}

void
mbox_set_deleted(struct mbox *mb, size_t idx, int on)
{
	mb->msgs[mb->first + idx].deleted = on != 0;
}

void
mbox_stat(const struct mbox *mb, size_t *count_r, uint64_t *octets_r)
{
	size_t		 i, n = 0;
	uint64_t	 o = 0;

	for (i = mb->first; i < mb->nmsgs; i++)
		if (!mb->msgs[i].deleted) {
			n++;
			o += mb->msgs[i].size;
		}
	*count_r = n;
	*octets_r = o;
}

int
mbox_indexed(const struct mbox *mb)
{
	return mb->indexed;
}

void
mbox_extent(const struct mbox *mb, size_t idx, off_t *start_r, off_t *end_r)
{
	*start_r = msg_body(&mb->msgs[mb->first + idx]);
	*end_r = msg_end(mb, mb->first + idx);
}

enum mbox_status
mbox_send(struct mbox *mb, size_t idx, struct io *io, int64_t max_body_lines)
{
	const struct mbox_msg *m = &mb->msgs[mb->first + idx];
	struct io_body	 b;
	off_t		 off = msg_body(m), end = msg_end(mb, mb->first + idx);
	size_t		 n;
	ssize_t		 r;

	io_body_begin(&b, max_body_lines);
	while (off < end && !b.done) {
		n = end - off > CHUNK ? CHUNK : (size_t)(end - off);
		if ((r = pread_full(mb->fd, mb->buf, n, off)) < 0) {
			log_warn("read %s", mb->path);
			return MBOX_IOERR;
		}
		if ((size_t)r != n) {
			log_warnx("%s: shrank while message %zu was sent",
			    mb->path, idx + 1);
			return MBOX_CHANGED;
		}
		if (io_body_write(io, &b, mb->buf, n) != IO_OK)
			return MBOX_IOERR;
		off += (off_t)n;
	}
	if (io_body_end(io, &b) != IO_OK)
		return MBOX_IOERR;
	if (max_body_lines < 0 && b.octets != m->size) {
		/* Rewritten under us: never end a reply whose size lied. */
		log_warnx("%s: message %zu changed while it was sent",
		    mb->path, idx + 1);
		return MBOX_CHANGED;
	}
	return io_body_dot(io) == IO_OK ? MBOX_OK : MBOX_IOERR;
}

/* Does the path still name the file we hold open? */
static int
same_file(const struct mbox *mb)
{
	struct stat	 sb;

	return lstat(mb->path, &sb) == 0 && sb.st_dev == mb->dev &&
	    sb.st_ino == mb->ino;
}

/* Under both locks: is this still the file we parsed, only grown? */
static enum mbox_status
verify_unchanged(struct mbox *mb, size_t from, off_t *size_r)
{
	struct stat	 sb;
	size_t		 i;

	if (fstat(mb->fd, &sb) == -1)
		return MBOX_IOERR;
	if (!same_file(mb)) {
		log_warnx("%s: replaced by another file since it was read; "
		    "nothing deleted", mb->path);
		return MBOX_CHANGED;
	}
	if (sb.st_dev != mb->dev || sb.st_ino != mb->ino ||
	    sb.st_size < mb->parsed_size) {
		log_warnx("%s: shrank or was replaced since it was read; "
		    "nothing deleted", mb->path);
		return MBOX_CHANGED;
	}
	/*
	 * Not written to since the parse (same size and times, which every
	 * write moves): nothing to re-check.  Else re-check every message
	 * the commit moves or deletes.
	 */
	if (mb->settled && sb.st_size == mb->parsed_size &&
	    same_times(&sb, &mb->parsed_mtime, &mb->parsed_ctime))
		from = mb->nmsgs;
	for (i = from; i < mb->nmsgs; i++) {
		if (!msg_intact(mb, i)) {
			log_warnx("%s: rewritten by another program since it "
			    "was read; nothing deleted", mb->path);
			return MBOX_CHANGED;
		}
	}
	*size_r = sb.st_size;
	return MBOX_OK;
}

enum mbox_status
mbox_commit(struct mbox *mb)
{
	struct range	*r;
	size_t		 i, first_del, nr = 0;
	off_t		 size;
	enum mbox_status st;

	for (first_del = mb->first; first_del < mb->nmsgs; first_del++)
		if (mb->msgs[first_del].deleted)
			break;
	if (first_del == mb->nmsgs)
		return MBOX_OK;		/* nothing deleted, nothing written */
	if (!mb->writable)
		return MBOX_READONLY;
	if ((r = calloc(mb->nmsgs - first_del + 1, sizeof(*r))) == NULL)
		return MBOX_NOMEM;
	if ((st = mbox_lock(mb)) != MBOX_OK) {
		free(r);
		return st;
	}
	if ((st = verify_unchanged(mb, first_del, &size)) != MBOX_OK)
		goto done;
	for (i = first_del + 1; i < mb->nmsgs; i++) {
		if (mb->msgs[i].deleted)
			continue;
		/* Adjacent kept messages make one range. */
		if (nr > 0 && r[nr - 1].off + (off_t)r[nr - 1].len ==
		    mb->msgs[i].from_off)
			r[nr - 1].len += (uint64_t)(msg_next(mb, i) -
			    mb->msgs[i].from_off);
		else {
			r[nr].off = mb->msgs[i].from_off;
			r[nr].len = (uint64_t)(msg_next(mb, i) -
			    mb->msgs[i].from_off);
			nr++;
		}
	}
	if (size > mb->parsed_size) {
		if (nr > 0 && r[nr - 1].off + (off_t)r[nr - 1].len ==
		    mb->parsed_size)
			r[nr - 1].len += (uint64_t)(size - mb->parsed_size);
		else {
			r[nr].off = mb->parsed_size;
			r[nr].len = (uint64_t)(size - mb->parsed_size);
			nr++;
		}
	}
	if (nr == 0) {
		/*
		 * Nothing to keep after the first deletion (all deleted, or
		 * the last ones, and no new mail): one truncation, which is
		 * atomic by itself, and no journal.
		 */
		if (ftruncate(mb->fd, mb->msgs[first_del].from_off) == -1) {
			log_warn("truncate %s", mb->path);
			st = MBOX_IOERR;
		} else if (fsync(mb->fd) == -1)
			log_warn("sync %s (the messages are deleted)",
			    mb->path);
	} else
		st = jnl_write_apply(mb, mb->fd, r, nr,
		    (uint64_t)mb->msgs[first_del].from_off, (uint64_t)size);
	if (st != MBOX_OK && access(mb->jnlpath, F_OK) == 0) {
		/*
		 * The journal is durable, so the commit is decided: finish it
		 * now if the error was passing, else the next session will.
		 */
		if (recover_locked(mb) == MBOX_OK)
			st = MBOX_OK;
	}
	idx_drop(mb);
done:
	mbox_unlock(mb);
	free(r);
	return st;
}
