/*
 * mbox_uidl.c: UIDLs for the mbox maildrop (RFC 1939), by the scheme the
 * maildrop was opened with (pop3d -U).  Runs as the mail user, on header
 * lines any sender may have written.
 *
 * md5 (pop3d's own): the MD5 of the From_ line and of the header lines
 * that mail readers never rewrite, as popa3d chooses them: the first
 * Received:, Delivered-To:, X-Delivery-ID:, and Date: and Message-ID:
 * before any Received:; each line cut at LINE_KEEP, its terminator
 * counted as one LF.  32 hex digits.
 *
 * popa3d: what popa3d 1.0.3 shows for the same mailbox: the MD5 of those
 * lines alone (no From_ line), raw and whole, terminators as stored,
 * with their folded continuation lines; "X-Delivery-ID:" only with a
 * capital X, as popa3d's switch has it.  It prints the first 8 bytes of
 * the digest as two little-endian 32-bit words: 16 hex digits.
 *
 * xuidl: the X-UIDL: header that Qpopper and IMail wrote into the
 * mailbox, where a message has exactly one, unfolded, of 1 to 70
 * characters 0x21-0x7e, that no earlier message has (the first keeps
 * it, so that new mail never changes an old UIDL), and that no md5 UIDL
 * of the maildrop equals; else md5.
 *
 * dovecot: Dovecot's default pop3_uidl_format %08Xu%08Xv, the message's
 * X-UID: and the UIDVALIDITY of the X-IMAPbase: (or UW's X-IMAP:) of the
 * file's first message, taken as Dovecot's mbox sync takes them: an
 * X-UID must grow from message to message, must not pass the next UID
 * Dovecot would give (X-IMAPbase's last UID + 1, moved on by each X-UID
 * that equals it: a sender's X-UID: is bigger and is refused), and in
 * the first message must follow X-IMAPbase:.  Else md5.
 *
 * Nothing is written into the mailbox, so a UID is the same in every
 * session.  Identical md5 (or popa3d) UIDs are numbered in file order:
 * h, h-2, h-3.  popa3d itself shows duplicates unnumbered, which RFC
 * 1939 forbids and getmail refuses; only the repeats differ from it.
 */
#include <sys/types.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <md5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "mbox_impl.h"

/* A pool entry: the fallback MD5, the value's length, the value. */
#define POOL_MD5	16
#define POOL_MAX	((size_t)UINT32_MAX)

/* ---- hashing header lines ------------------------------------------ */

/* md5: the line's first LINE_KEEP bytes, terminator counted as one LF. */
static void
uid_add(struct uid_hash *u, const struct line *l)
{
	size_t	 n = l->content < l->hlen ? (size_t)l->content : l->hlen;

	MD5Update(&u->md5, (const unsigned char *)l->head, n);
	MD5Update(&u->md5, (const unsigned char *)"\n", 1);
}

/* popa3d: the whole line as stored, read past LINE_KEEP from the file. */
static void
uid_add_raw(struct uid_hash *u, const struct line *l)
{
	char		 b[4096];
	off_t		 off = l->off + (off_t)l->hlen;
	uint64_t	 left = l->len - l->hlen;
	ssize_t		 r;
	size_t		 n;

	MD5Update(&u->md5, (const unsigned char *)l->head, l->hlen);
	for (; left > 0; left -= (uint64_t)n, off += (off_t)n) {
		n = left > sizeof(b) ? sizeof(b) : (size_t)left;
		r = mbox_pread_full(u->mb->fd, b, n, off);
		if (r != (ssize_t)n) {
			u->error = MAILDROP_IOERR;
			return;
		}
		MD5Update(&u->md5, (const unsigned char *)b, n);
	}
	u->hashed_end = l->off + (off_t)l->len;
}

/* Is the line's start the header field name (case-insensitive)? */
static int
starts(const struct line *l, const char *name)
{
	size_t	 n = strlen(name);

	return l->hlen >= n && strncasecmp(l->head, name, n) == 0;
}

/*
 * The value of header line l after the name of nlen bytes: leading and
 * trailing blanks dropped.  -1 when the line is longer than LINE_KEEP.
 */
static int
header_value(const struct line *l, size_t nlen, const char **v_r,
    size_t *len_r)
{
	const char	*v = l->head + nlen, *e = l->head + l->content;

	if (l->len > l->hlen)
		return -1;
	while (v < e && (*v == ' ' || *v == '\t'))
		v++;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*v_r = v;
	*len_r = (size_t)(e - v);
	return 0;
}

/* popa3d's choice of lines (mailbox.c, "known to remain fixed"). */
static void
popa3d_header(struct uid_hash *u, const struct line *l)
{
	int	 fixed;

	switch (l->head[0]) {
	case ' ':
	case '\t':
		/* A folded line: hashed when the line before it was. */
		fixed = l->off == u->hashed_end;
		break;
	case 'R':
	case 'r':
		fixed = u->received == 0 && starts(l, "Received:");
		if (fixed)
			u->received = 1;
		break;
	case 'D':
	case 'd':
		fixed = starts(l, "Delivered-To:") ||
		    (u->received == 0 && starts(l, "Date:"));
		break;
	case 'M':
	case 'm':
		fixed = u->received == 0 && starts(l, "Message-ID:");
		break;
	case 'X':
		fixed = starts(l, "X-Delivery-ID:");
		break;
	default:
		fixed = 0;
		break;
	}
	if (fixed)
		uid_add_raw(u, l);
}

/* pop3d's own choice: the same fields, no folded lines, no From_ line. */
static void
md5_header(struct uid_hash *u, const struct line *l)
{
	switch (l->head[0] | 0x20) {
	case 'r':
		if (header_is(l, "Received:") && u->received++ == 0)
			uid_add(u, l);
		return;
	case 'd':
		if (header_is(l, "Delivered-To:") ||
		    (u->received == 0 && header_is(l, "Date:")))
			uid_add(u, l);
		return;
	case 'x':
		if (header_is(l, "X-Delivery-ID:"))
			uid_add(u, l);
		return;
	case 'm':
		if (u->received == 0 && header_is(l, "Message-ID:"))
			uid_add(u, l);
		return;
	default:
		return;
	}
}

static void
xuidl_header(struct uid_hash *u, const struct line *l)
{
	const char	*v;
	size_t		 n, i;

	if (l->head[0] == ' ' || l->head[0] == '\t') {
		if (l->off == u->xuidl_end)
			u->xuidl = -1;		/* folded */
		return;
	}
	if (!header_is(l, "X-UIDL:"))
		return;
	if (u->xuidl != 0 || header_value(l, 7, &v, &n) == -1 || n == 0 ||
	    n > 70) {
		u->xuidl = -1;
		return;
	}
	for (i = 0; i < n; i++)
		if ((unsigned char)v[i] < 0x21 || (unsigned char)v[i] > 0x7e) {
			u->xuidl = -1;
			return;
		}
	memcpy(u->xuidl_val, v, n);
	u->xuidl_len = n;
	u->xuidl = 1;
	u->xuidl_end = l->off + (off_t)l->len;
}

/* Decimal digits into a uint32_t; the end of them, or NULL on overflow. */
static const char *
dv_number(const char *v, const char *e, uint32_t *n_r)
{
	uint64_t	 n = 0;

	for (; v < e && *v >= '0' && *v <= '9'; v++)
		if ((n = n * 10 + (uint64_t)(*v - '0')) > UINT32_MAX)
			return NULL;
	*n_r = (uint32_t)n;
	return v;
}

/* X-IMAPbase: UIDVALIDITY SP LAST-UID [keywords], in the first message. */
static void
dv_imapbase(struct uid_hash *u, const struct line *l, size_t nlen)
{
	const char	*v, *e, *p;
	size_t		 n;
	uint32_t	 validity, last;

	if (!u->first || u->dv_validity != 0 ||
	    header_value(l, nlen, &v, &n) == -1)
		return;
	e = v + n;
	/* As Dovecot reads it: a missing LAST-UID is 0. */
	if ((p = dv_number(v, e, &validity)) == NULL || validity == 0 ||
	    (p < e && *p != ' '))
		return;
	while (p < e && (*p == ' ' || *p == '\t'))
		p++;
	if ((v = dv_number(p, e, &last)) == NULL ||
	    (v < e && *v != ' ' && *v != '\t'))
		return;
	u->dv_validity = validity;
	u->dv_next = (uint64_t)last + 1;
}

static void
dv_xuid(struct uid_hash *u, const struct line *l)
{
	const char	*v, *e, *p;
	size_t		 n;
	uint32_t	 uid;

	if (u->dv_uid != 0 || u->dv_validity == 0 ||
	    header_value(l, 6, &v, &n) == -1)
		return;
	e = v + n;
	if ((p = dv_number(v, e, &uid)) == NULL || p != e)
		return;
	if (uid > u->dv_next || uid <= u->dv_prev)
		return;			/* a sender's, or out of order */
	if (uid == u->dv_next)
		u->dv_next++;
	u->dv_prev = uid;
	u->dv_uid = uid;
}

static void
dovecot_header(struct uid_hash *u, const struct line *l)
{
	size_t	 nlen;

	if ((l->head[0] | 0x20) != 'x')
		return;
	if (header_is(l, "X-IMAPbase:"))
		nlen = 11;
	else if (header_is(l, "X-IMAP:"))
		nlen = 7;
	else {
		if (header_is(l, "X-UID:"))
			dv_xuid(u, l);
		return;
	}
	if (u->first && u->dv_stored) {
		/*
		 * The file speaks for itself, even with a base that cannot
		 * be used: the remembered one steps aside, and so does any
		 * X-UID it let through, as if it had never been there.
		 */
		u->dv_stored = 0;
		u->dv_validity = 0;
		u->dv_next = 0;
		u->dv_prev = 0;
		u->dv_uid = 0;
	}
	dv_imapbase(u, l, nlen);
}

void
mbox_uid_init(struct uid_hash *u, struct maildrop *mb, off_t start)
{
	memset(u, 0, sizeof(*u));
	u->mb = mb;
	u->scheme = mb->hooks.uidl_scheme;
	u->error = MAILDROP_OK;
	/* Only md5 and popa3d resume a parse, and they need no first. */
	u->msgs = start == 0 ? 0 : 1;
	memset(&mb->ib_parsed, 0, sizeof(mb->ib_parsed));
	mb->ib_source = IB_NONE;
	mb->ib_xuids = 0;
}

void
mbox_uid_begin(struct uid_hash *u, const struct line *from)
{
	MD5Init(&u->md5);
	u->received = 0;
	u->first = u->msgs++ == 0;
	u->hashed_end = -1;
	u->xuidl = 0;
	u->xuidl_end = -1;
	u->dv_uid = 0;
	if (u->first && u->scheme == MAILDROP_UIDL_DOVECOT &&
	    u->mb->ib_stored.validity != 0) {
		/* As if the X-IMAPbase: it lost came first in its header. */
		u->dv_validity = u->mb->ib_stored.validity;
		u->dv_next = u->mb->ib_stored.next;
		u->dv_stored = 1;
	}
	if (u->scheme != MAILDROP_UIDL_POPA3D)
		uid_add(u, from);
}

void
mbox_uid_header(struct uid_hash *u, const struct line *l)
{
	if (u->scheme == MAILDROP_UIDL_POPA3D) {
		popa3d_header(u, l);
		return;
	}
	md5_header(u, l);
	if (u->scheme == MAILDROP_UIDL_XUIDL)
		xuidl_header(u, l);
	else if (u->scheme == MAILDROP_UIDL_DOVECOT)
		dovecot_header(u, l);
}

/* Keeps an X-UIDL: value with its fallback; -1 when it cannot. */
static int
pool_add(struct maildrop *mb, const unsigned char md5[16], const char *v,
    size_t len, uint32_t *off_r)
{
	size_t	 need = POOL_MD5 + 1 + len, cap;
	char	*p;

	if (mb->uid_pool_len > POOL_MAX - need)
		return -1;
	if (mb->uid_pool_len + need > mb->uid_pool_cap) {
		cap = mb->uid_pool_cap == 0 ? 4096 : mb->uid_pool_cap;
		while (cap < mb->uid_pool_len + need)
			cap *= 2;
		if ((p = realloc(mb->uid_pool, cap)) == NULL)
			return -1;
		mb->uid_pool = p;
		mb->uid_pool_cap = cap;
	}
	p = mb->uid_pool + mb->uid_pool_len;
	memcpy(p, md5, POOL_MD5);
	p[POOL_MD5] = (char)len;
	memcpy(p + POOL_MD5 + 1, v, len);
	*off_r = (uint32_t)mb->uid_pool_len;
	mb->uid_pool_len += need;
	return 0;
}

static void
put32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static uint32_t
get32(const unsigned char *p)
{
	uint32_t	 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

void
mbox_uid_end(struct uid_hash *u, struct mbox_msg *m)
{
	unsigned char	 d[16], vd[16];
	MD5_CTX		 c;
	uint32_t	 off;

	MD5Final(d, &u->md5);
	memcpy(m->uid, d, sizeof(m->uid));
	m->uid_kind = UID_MD5;
	switch (u->scheme) {
	case MAILDROP_UIDL_POPA3D:
		memset(m->uid + 8, 0, 8);	/* popa3d shows 8 bytes */
		m->uid_kind = UID_POPA3D;
		break;
	case MAILDROP_UIDL_XUIDL:
		if (u->xuidl != 1)
			break;
		if (pool_add(u->mb, d, u->xuidl_val, u->xuidl_len, &off) ==
		    -1) {
			u->error = MAILDROP_NOMEM;
			break;
		}
		MD5Init(&c);
		MD5Update(&c, (const unsigned char *)u->xuidl_val,
		    u->xuidl_len);
		MD5Final(vd, &c);
		put32(m->uid, off);
		memcpy(m->uid + 4, vd, 12);
		m->uid_kind = UID_XUIDL;
		break;
	case MAILDROP_UIDL_DOVECOT:
		u->mb->ib_parsed.validity = u->dv_validity;
		u->mb->ib_parsed.next = u->dv_next;
		u->mb->ib_source = u->dv_stored ? IB_STORED :
		    u->dv_validity != 0 ? IB_HEADER : IB_NONE;
		if (u->dv_uid == 0 || u->dv_validity == 0)
			break;
		memset(m->uid, 0, sizeof(m->uid));
		put32(m->uid, u->dv_uid);
		put32(m->uid + 4, u->dv_validity);
		m->uid_kind = UID_DOVECOT;
		u->mb->ib_xuids++;
		break;
	default:
		break;
	}
}

int
mbox_uid_indexable(const struct maildrop *mb)
{
	/* X-UIDL values live outside the records; X-UIDs need the file. */
	return mb->hooks.uidl_scheme == MAILDROP_UIDL_MD5 ||
	    mb->hooks.uidl_scheme == MAILDROP_UIDL_POPA3D;
}

/* ---- numbering ----------------------------------------------------- */

/* An X-UIDL message whose value cannot be used falls back to md5. */
static void
xuidl_demote(struct maildrop *mb, struct mbox_msg *m)
{
	memcpy(m->uid, mb->uid_pool + get32(m->uid), POOL_MD5);
	m->uid_kind = UID_MD5;
	m->uid_seq = 1;
}

static const char *
xuidl_value(const struct maildrop *mb, const struct mbox_msg *m,
    size_t *len_r)
{
	const char	*p = mb->uid_pool + get32(m->uid);

	*len_r = (unsigned char)p[POOL_MD5];
	return p + POOL_MD5 + 1;
}

static int
is_hashed(const struct mbox_msg *m)
{
	return m->uid_kind == UID_MD5 || m->uid_kind == UID_POPA3D;
}

/*
 * An open-addressing table of message indexes + 1 (0 is free), keyed by
 * 8 bytes; same() says whether a message has what the probe stands for.
 * Each slot holds the latest message of its key.
 */
struct uid_table {
	uint32_t	*slot;
	size_t		 cap;
};

static int
table_new(struct uid_table *t, size_t n)
{
	t->cap = 16;
	while (t->cap < n * 2)
		t->cap *= 2;
	t->slot = calloc(t->cap, sizeof(*t->slot));
	return t->slot == NULL ? -1 : 0;
}

/* The slot of the probe: holding an earlier message of it, or free. */
static uint32_t *
table_find(const struct uid_table *t, const struct maildrop *mb,
    const unsigned char *key, int (*same)(const struct maildrop *,
    const struct mbox_msg *, const void *), const void *probe)
{
	uint64_t	 k;
	size_t		 h;

	memcpy(&k, key, sizeof(k));
	for (h = (size_t)k & (t->cap - 1); t->slot[h] != 0;
	    h = (h + 1) & (t->cap - 1))
		if (same(mb, &mb->msgs[t->slot[h] - 1], probe))
			break;
	return &t->slot[h];
}

/* The probe: a 16-byte digest. */
static int
same_digest(const struct maildrop *mb, const struct mbox_msg *o,
    const void *digest)
{
	(void)mb;
	return is_hashed(o) && memcmp(o->uid, digest, sizeof(o->uid)) == 0;
}

/* The probe: a message of X-UIDL value, keyed by its hash (uid[4..]). */
static int
same_xuidl(const struct maildrop *mb, const struct mbox_msg *o,
    const void *probe)
{
	const struct mbox_msg *m = probe;
	const char	*a, *b;
	size_t		 al, bl;

	if (o->uid_kind != UID_XUIDL || memcmp(o->uid + 4, m->uid + 4, 12) != 0)
		return 0;
	a = xuidl_value(mb, o, &al);
	b = xuidl_value(mb, m, &bl);
	return al == bl && memcmp(a, b, al) == 0;
}

/* The first message of an X-UIDL value keeps it; repeats fall back. */
static enum maildrop_status
xuidl_unique(struct maildrop *mb)
{
	struct uid_table t;
	uint32_t	*s;
	size_t		 i;

	if (table_new(&t, mb->nmsgs) == -1)
		return MAILDROP_NOMEM;
	for (i = 0; i < mb->nmsgs; i++) {
		struct mbox_msg	*m = &mb->msgs[i];

		if (m->uid_kind != UID_XUIDL)
			continue;
		s = table_find(&t, mb, m->uid + 4, same_xuidl, m);
		if (*s != 0)
			xuidl_demote(mb, m);
		else
			*s = (uint32_t)i + 1;
	}
	free(t.slot);
	return MAILDROP_OK;
}

/* Numbers the hashed UIDs; t keeps, per digest, its latest message. */
static enum maildrop_status
number_hashed(struct maildrop *mb, struct uid_table *t)
{
	uint32_t	*s;
	size_t		 i;

	if (table_new(t, mb->nmsgs) == -1)
		return MAILDROP_NOMEM;
	for (i = 0; i < mb->nmsgs; i++) {
		struct mbox_msg	*m = &mb->msgs[i];

		m->uid_seq = 1;
		if (!is_hashed(m))
			continue;
		s = table_find(t, mb, m->uid, same_digest, m->uid);
		if (*s != 0)
			m->uid_seq = mb->msgs[*s - 1].uid_seq + 1;
		*s = (uint32_t)i + 1;
	}
	return MAILDROP_OK;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/*
 * Would the X-UIDL value v be the md5 UIDL of some message: 32 lowercase
 * hex digits, and a "-N" that the numbering reached?
 */
static int
xuidl_taken(struct maildrop *mb, const struct uid_table *t, const char *v,
    size_t len)
{
	unsigned char	 d[16];
	uint32_t	*s, seq = 1;
	uint64_t	 n = 0;
	size_t		 i;
	int		 hi, lo;

	if (len < 32 || (len > 32 && (len < 34 || v[32] != '-' ||
	    v[33] < '2' || v[33] > '9')))
		return 0;
	for (i = 0; i < 16; i++) {
		if ((hi = hexval(v[2 * i])) < 0 ||
		    (lo = hexval(v[2 * i + 1])) < 0)
			return 0;
		d[i] = (unsigned char)(hi << 4 | lo);
	}
	for (i = 33; i < len; i++) {
		if (v[i] < '0' || v[i] > '9' || (n = n * 10 +
		    (uint64_t)(v[i] - '0')) > UINT32_MAX)
			return 0;
		seq = (uint32_t)n;
	}
	s = table_find(t, mb, d, same_digest, d);
	return *s != 0 && mb->msgs[*s - 1].uid_seq >= seq;
}

enum maildrop_status
mbox_uid_number(struct maildrop *mb)
{
	struct uid_table t;
	const char	*v;
	size_t		 i, len;
	int		 demoted;
	enum maildrop_status st;

	if (mb->nmsgs == 0)
		return MAILDROP_OK;
	if (mb->nmsgs > UINT32_MAX - 1)
		return MAILDROP_NOMEM;
	if ((st = xuidl_unique(mb)) != MAILDROP_OK)
		return st;
	/*
	 * An X-UIDL equal to an md5 UIDL falls back itself, which numbers
	 * anew; each round takes one X-UIDL away, so the rounds end.
	 */
	do {
		if ((st = number_hashed(mb, &t)) != MAILDROP_OK)
			return st;
		demoted = 0;
		for (i = 0; i < mb->nmsgs; i++) {
			struct mbox_msg	*m = &mb->msgs[i];

			if (m->uid_kind != UID_XUIDL)
				continue;
			v = xuidl_value(mb, m, &len);
			if (xuidl_taken(mb, &t, v, len)) {
				xuidl_demote(mb, m);
				demoted = 1;
			}
		}
		free(t.slot);
	} while (demoted);
	return MAILDROP_OK;
}

/* ---- the UIDL ------------------------------------------------------ */

void
mbox_uid_format(const struct maildrop *mb, const struct mbox_msg *m,
    char *buf)
{
	static const char hexd[] = "0123456789abcdef";
	const unsigned char *u = m->uid;
	const char	*v;
	size_t		 i, n;

	switch (m->uid_kind) {
	case UID_XUIDL:
		v = xuidl_value(mb, m, &n);
		memcpy(buf, v, n);
		buf[n] = '\0';
		return;
	case UID_DOVECOT:
		(void)snprintf(buf, MAILDROP_UIDL_MAX, "%08lx%08lx",
		    (unsigned long)get32(u), (unsigned long)get32(u + 4));
		return;
	case UID_POPA3D:
		n = (size_t)snprintf(buf, MAILDROP_UIDL_MAX,
		    "%02x%02x%02x%02x%02x%02x%02x%02x", u[3], u[2], u[1], u[0],
		    u[7], u[6], u[5], u[4]);
		break;
	default:
		for (i = 0; i < sizeof(m->uid); i++) {
			buf[2 * i] = hexd[u[i] >> 4];
			buf[2 * i + 1] = hexd[u[i] & 0xf];
		}
		n = 2 * i;
		buf[n] = '\0';
		break;
	}
	if (m->uid_seq > 1)
		(void)snprintf(buf + n, MAILDROP_UIDL_MAX - n, "-%lu",
		    (unsigned long)m->uid_seq);
}

/* ---- the remembered X-IMAPbase (dovecot) --------------------------- */

/*
 * INO.imapbase is one line, "INO BTIME_SEC BTIME_NSEC VALIDITY NEXT\n":
 * the mailbox's inode and birth time (0 0 where the file system keeps
 * none), so that a file made anew, even under a recycled inode number,
 * never inherits a UIDVALIDITY, and the base.  The next UID kept is the
 * one the parse reached at its end, not X-IMAPbase's own: X-UIDs that
 * equal it move it on, and a message that stays must be taken as before
 * once the messages ahead of it are gone.  pop3d makes no X-UIDs, so
 * every genuine one stays at or below it; one above it is a sender's
 * and is refused, as Dovecot refuses it.
 */
#define IB_FILE_MAX	128	/* 5 numbers of at most 20 digits, blanks */

static void
ib_name(const struct maildrop *mb, char *buf, const char *suffix)
{
	(void)snprintf(buf, STATE_NAME_MAX, "%ju.imapbase%s",
	    (uintmax_t)mb->ino, suffix);
}

/* The mailbox's birth time; 0 0 when the file system has none. */
static void
ib_btime(const struct maildrop *mb, uint64_t *sec_r, uint64_t *nsec_r)
{
	struct statx	 sx;

	*sec_r = *nsec_r = 0;
	if (statx(mb->fd, "", AT_EMPTY_PATH, STATX_BTIME, &sx) == 0 &&
	    (sx.stx_mask & STATX_BTIME) != 0 && sx.stx_btime.tv_sec >= 0) {
		*sec_r = (uint64_t)sx.stx_btime.tv_sec;
		*nsec_r = sx.stx_btime.tv_nsec;
	}
}

/* One decimal number up to max, then sep; the text after, or NULL. */
static const char *
ib_number(const char *p, const char *e, uint64_t max, char sep,
    uint64_t *n_r)
{
	uint64_t	 n = 0;
	const char	*s = p;

	for (; p < e && *p >= '0' && *p <= '9'; p++) {
		if (n > (max - (uint64_t)(*p - '0')) / 10)
			return NULL;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (p == s || p - s > 20 || (p - s > 1 && *s == '0') || p == e ||
	    *p != sep)
		return NULL;
	*n_r = n;
	return p + 1;
}

void
mbox_imapbase_load(struct maildrop *mb)
{
	char		 name[STATE_NAME_MAX], buf[IB_FILE_MAX + 1];
	const char	*p, *e, *why = NULL;
	uint64_t	 ino, bs, bn, v, next, fbs, fbn;
	ssize_t		 n;
	int		 fd;

	memset(&mb->ib_stored, 0, sizeof(mb->ib_stored));
	if (mb->hooks.uidl_scheme != MAILDROP_UIDL_DOVECOT || mb->sdfd == -1 ||
	    mb->fd == -1)
		return;
	ib_name(mb, name, "");
	if ((fd = mbox_state_open(mb, name, O_RDONLY, "imapbase")) < 0)
		return;			/* none, or refused (logged) */
	n = mbox_pread_full(fd, buf, sizeof(buf), 0);
	close(fd);
	if (n < 0) {
		log_warn("read %s/%s", mb->statedir, name);
		return;
	}
	p = buf;
	e = buf + n;
	if (n > IB_FILE_MAX || n == 0 || e[-1] != '\n')
		why = "malformed";
	else if ((p = ib_number(p, e, UINT64_MAX, ' ', &ino)) == NULL ||
	    (p = ib_number(p, e, UINT64_MAX, ' ', &bs)) == NULL ||
	    (p = ib_number(p, e, 999999999, ' ', &bn)) == NULL ||
	    (p = ib_number(p, e, UINT32_MAX, ' ', &v)) == NULL ||
	    (p = ib_number(p, e, (uint64_t)UINT32_MAX + 1, '\n', &next)) ==
	    NULL || p != e || v == 0 || next == 0)
		why = "malformed";
	else {
		ib_btime(mb, &fbs, &fbn);
		if (ino != (uint64_t)mb->ino || bs != fbs || bn != fbn)
			why = "of an earlier file of that inode number";
	}
	if (why != NULL) {
		log_warnx("%s: imapbase %s/%s not used: %s", mb->path,
		    mb->statedir, name, why);
		return;
	}
	mb->ib_stored.validity = (uint32_t)v;
	mb->ib_stored.next = next;
}

/* Writes the parse's base into INO.imapbase, or logs why not. */
static void
ib_write(struct maildrop *mb, const char *name, const char *tmp)
{
	char		 buf[IB_FILE_MAX + 1];
	uint64_t	 bs, bn;
	int		 fd, len;

	ib_btime(mb, &bs, &bn);
	len = snprintf(buf, sizeof(buf), "%ju %ju %ju %lu %ju\n",
	    (uintmax_t)mb->ino, (uintmax_t)bs, (uintmax_t)bn,
	    (unsigned long)mb->ib_parsed.validity,
	    (uintmax_t)mb->ib_parsed.next);
	if (len < 0 || len > IB_FILE_MAX)
		return;
	if (unlinkat(mb->sdfd, tmp, 0) == -1 && errno != ENOENT) {
		log_warn("unlink %s/%s", mb->statedir, tmp);
		return;
	}
	if ((fd = mbox_state_create(mb, tmp)) == -1) {
		log_warn("create %s/%s", mb->statedir, tmp);
		return;
	}
	if (mbox_pwrite_full(fd, buf, (size_t)len, 0) == -1 ||
	    fsync(fd) == -1) {
		log_warn("write %s/%s", mb->statedir, tmp);
		close(fd);
		(void)unlinkat(mb->sdfd, tmp, 0);
		return;
	}
	close(fd);
	if (renameat(mb->sdfd, tmp, mb->sdfd, name) == -1) {
		log_warn("rename %s/%s", mb->statedir, tmp);
		(void)unlinkat(mb->sdfd, tmp, 0);
		return;
	}
	if (fsync(mb->sdfd) == -1)
		log_warn("sync %s", mb->statedir);
}

void
mbox_imapbase_save(struct maildrop *mb)
{
	char	 name[STATE_NAME_MAX], tmp[STATE_NAME_MAX];

	if (mb->hooks.uidl_scheme != MAILDROP_UIDL_DOVECOT || mb->sdfd == -1 ||
	    mb->fd == -1)
		return;
	ib_name(mb, name, "");
	ib_name(mb, tmp, ".new");
	switch (mb->ib_source) {
	case IB_HEADER:
		if (mb->ib_parsed.validity != mb->ib_stored.validity ||
		    mb->ib_parsed.next != mb->ib_stored.next) {
			if (mb->ib_stored.validity != 0 &&
			    mb->ib_parsed.validity != mb->ib_stored.validity)
				log_notice("%s: UIDVALIDITY %lu, was %lu",
				    mb->path,
				    (unsigned long)mb->ib_parsed.validity,
				    (unsigned long)mb->ib_stored.validity);
			ib_write(mb, name, tmp);
		}
		break;
	case IB_STORED:
		/*
		 * No message keeps an X-UID it vouched for: every later one
		 * is new mail, whose X-UID: a sender wrote.
		 */
		if (mb->ib_xuids == 0 && unlinkat(mb->sdfd, name, 0) == -1 &&
		    errno != ENOENT)
			log_warn("unlink %s/%s", mb->statedir, name);
		break;
	default:
		break;
	}
}
