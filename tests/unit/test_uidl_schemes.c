/*
 * test_uidl_schemes.c: the UIDL schemes of pop3d -U (mbox_uidl.c) and
 * the listing of pop3d -l (maildrop_list).  The expected popa3d and md5
 * UIDLs are computed here from the documented rules with libmd's MD5,
 * never with pop3d's code; popa3d's and Dovecot's own output is compared
 * in tests/e2e/test_migrate.py.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <fcntl.h>
#include <md5.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "mbox.h"
#include "testutil.h"

static char	*scratch;
static char	*path;		/* scratch/mbox */

static char	*index_path(void);
static char	*imapbase_path(void);
static char	*list_of(const char *, enum maildrop_uidl_scheme,
		    enum maildrop_status *);

#define FROM	"From a@example.org Mon Jan  1 12:00:00 2024\n"

struct uidls {
	size_t	 n;
	char	 u[64][MAILDROP_UIDL_MAX];
};

/* Opens data as a mailbox under scheme; its UIDLs, checked for form. */
static void
uidls_of(const char *data, enum maildrop_uidl_scheme scheme,
    struct uidls *out)
{
	struct maildrop_hooks h;
	struct maildrop	*mb;
	size_t		 i, j, k;

	memset(&h, 0, sizeof(h));
	h.lock_timeout = 5;
	h.uidl_scheme = scheme;
	assert_int_equal(tu_write_file(path, data, strlen(data)), 0);
	assert_int_equal(maildrop_open(path, scratch, &h, &mb), MAILDROP_OK);
	out->n = maildrop_count(mb);
	assert_true(out->n <= 64);
	for (i = 0; i < out->n; i++) {
		maildrop_uidl(mb, i, out->u[i]);
		k = strlen(out->u[i]);
		assert_true(k >= 1 && k <= 70);
		for (j = 0; j < k; j++)
			assert_true(out->u[i][j] >= 0x21 && out->u[i][j] <= 0x7e);
		for (j = 0; j < i; j++)
			assert_string_not_equal(out->u[i], out->u[j]);
	}
	maildrop_close(mb);
}

/* popa3d's UIDL of the raw header lines given (NULL-terminated). */
static void
popa3d_of(char *buf, ...)
{
	unsigned char	 d[16];
	const char	*s;
	va_list		 ap;
	MD5_CTX		 c;

	MD5Init(&c);
	va_start(ap, buf);
	while ((s = va_arg(ap, const char *)) != NULL)
		MD5Update(&c, (const unsigned char *)s, strlen(s));
	va_end(ap);
	MD5Final(d, &c);
	snprintf(buf, MAILDROP_UIDL_MAX, "%02x%02x%02x%02x%02x%02x%02x%02x",
	    d[3], d[2], d[1], d[0], d[7], d[6], d[5], d[4]);
}

/* pop3d's md5 UIDL: the From_ line and the lines given, each + LF. */
static void
md5_of(char *buf, ...)
{
	unsigned char	 d[16];
	const char	*s;
	va_list		 ap;
	MD5_CTX		 c;
	int		 i;

	MD5Init(&c);
	va_start(ap, buf);
	while ((s = va_arg(ap, const char *)) != NULL) {
		MD5Update(&c, (const unsigned char *)s, strlen(s));
		MD5Update(&c, (const unsigned char *)"\n", 1);
	}
	va_end(ap);
	MD5Final(d, &c);
	for (i = 0; i < 16; i++)
		snprintf(buf + 2 * i, 3, "%02x", d[i]);
}

/* ---- md5 and popa3d ------------------------------------------------ */

static void
test_md5_is_the_default(void **state)
{
	const char	*mbox = FROM "Received: from a\nSubject: s\n\nbody\n";
	struct uidls	 a, b;
	char		 want[MAILDROP_UIDL_MAX];
	struct maildrop	*mb;
	int		 fd;

	(void)state;
	uidls_of(mbox, MAILDROP_UIDL_MD5, &a);
	md5_of(want, "From a@example.org Mon Jan  1 12:00:00 2024",
	    "Received: from a", NULL);
	assert_string_equal(a.u[0], want);
	/* No hooks at all: the same. */
	assert_true((fd = open(path, O_RDONLY)) >= 0);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	b.n = maildrop_count(mb);
	maildrop_uidl(mb, 0, b.u[0]);
	maildrop_close(mb);
	close(fd);
	assert_string_equal(a.u[0], b.u[0]);
}

static void
test_popa3d_lines(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 u;
	char		 want[MAILDROP_UIDL_MAX], *longr;
	size_t		 i;

	(void)state;
	longr = malloc(6001);
	assert_non_null(longr);
	memcpy(longr, "Received: ", 10);
	for (i = 10; i < 5999; i++)
		longr[i] = 'a' + i % 26;
	longr[5999] = '\n';
	longr[6000] = '\0';

	/* 1: the first Received: only, folded; Date/Message-ID after it not. */
	tu_buf_str(&b, FROM "Return-Path: <a@x>\nReceived: from a\n\tby b\n"
	    "Received: from c\nDate: d1\nMessage-ID: <m1>\nSubject: s\n"
	    " folded subject\n\nbody\n\n");
	/* 2: Date and Message-ID before Received:, any case. */
	tu_buf_str(&b, FROM "date: d2\nMESSAGE-ID: <m2>\nreceived: r2\n\n"
	    "b\n\n");
	/* 3: X-Delivery-ID with a capital X only; Delivered-To anywhere. */
	tu_buf_str(&b, FROM "Received: r3\nx-delivery-id: 1\n"
	    "X-Delivery-ID: 2\nDelivered-To: alice\n\nb\n\n");
	/* 4: CR LF lines, hashed as stored. */
	tu_buf_str(&b, FROM "Received: r4\r\nSubject: s\n\nb\n\n");
	/* 5: a line longer than the parser keeps. */
	tu_buf_str(&b, FROM);
	tu_buf_str(&b, longr);
	tu_buf_str(&b, "\nb\n\n");
	/* 6, 7: nothing stable: the MD5 of nothing, then its repeat. */
	tu_buf_str(&b, FROM "Subject: one\n\nb\n\n");
	tu_buf_str(&b, FROM "Subject: two\n\nb\n");
	uidls_of(b.p, MAILDROP_UIDL_POPA3D, &u);
	assert_int_equal(u.n, 7);
	popa3d_of(want, "Received: from a\n", "\tby b\n", NULL);
	assert_string_equal(u.u[0], want);
	popa3d_of(want, "date: d2\n", "MESSAGE-ID: <m2>\n", "received: r2\n",
	    NULL);
	assert_string_equal(u.u[1], want);
	popa3d_of(want, "Received: r3\n", "X-Delivery-ID: 2\n",
	    "Delivered-To: alice\n", NULL);
	assert_string_equal(u.u[2], want);
	popa3d_of(want, "Received: r4\r\n", NULL);
	assert_string_equal(u.u[3], want);
	popa3d_of(want, longr, NULL);
	assert_string_equal(u.u[4], want);
	popa3d_of(want, NULL);
	assert_string_equal(u.u[5], want);
	assert_int_equal(strlen(u.u[5]), 16);
	strcat(want, "-2");
	assert_string_equal(u.u[6], want);
	free(longr);
	tu_buf_free(&b);
}

/* ---- xuidl --------------------------------------------------------- */

static void
xmsg(struct tu_buf *b, int n, const char *xuidl)
{
	char	 line[64];

	tu_buf_str(b, FROM);
	snprintf(line, sizeof(line), "Received: r%d\n", n);
	tu_buf_str(b, line);
	tu_buf_str(b, xuidl);
	tu_buf_str(b, "Subject: s\n\nbody\n\n");
}

static void
test_xuidl(void **state)
{
	static const struct {
		const char	*hdr;
		const char	*want;	/* NULL: md5 */
	} c[] = {
		{ "X-UIDL: abc\n", "abc" },
		{ "X-UIDL:\t <q.7>\t \n", "<q.7>" },
		{ "X-UIDL: 1234567890123456789012345678901234567890"
		    "123456789012345678901234567890\n",
		    "1234567890123456789012345678901234567890"
		    "123456789012345678901234567890" },
		{ "X-UIDL: 1234567890123456789012345678901234567890"
		    "1234567890123456789012345678901\n", NULL },
		{ "X-UIDL: a b\n", NULL },
		{ "X-UIDL: caf\xc3\xa9\n", NULL },
		{ "X-UIDL: \x7f\n", NULL },
		{ "X-UIDL:\n", NULL },
		{ "X-UIDL: fold\n ed\n", NULL },
		{ "X-UIDL: one\nX-UIDL: two\n", NULL },
		{ "X-UIDL: abc\n", NULL },		/* a repeat of 1 */
		{ "", NULL },
		{ "x-uidl: lower\n", "lower" },
		{ "X-UIDL: cr\r\n", "cr" },
	};
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 x, m;
	size_t		 i, n = sizeof(c) / sizeof(c[0]);

	(void)state;
	for (i = 0; i < n; i++)
		xmsg(&b, (int)i, c[i].hdr);
	uidls_of(b.p, MAILDROP_UIDL_XUIDL, &x);
	uidls_of(b.p, MAILDROP_UIDL_MD5, &m);
	assert_int_equal(x.n, n);
	for (i = 0; i < n; i++)
		assert_string_equal(x.u[i], c[i].want != NULL ? c[i].want :
		    m.u[i]);
	tu_buf_free(&b);
}

/* An X-UIDL equal to an md5 UIDL of the maildrop falls back itself. */
static void
test_xuidl_collision(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 x, m;
	char		 hdr[MAILDROP_UIDL_MAX + 16];

	(void)state;
	/* Messages 1 and 2 are identical: md5 gives h and h-2. */
	xmsg(&b, 1, "");
	xmsg(&b, 1, "");
	uidls_of(b.p, MAILDROP_UIDL_MD5, &m);
	assert_int_equal(m.n, 2);
	snprintf(hdr, sizeof(hdr), "X-UIDL: %s\n", m.u[1]);	/* h-2 */
	xmsg(&b, 3, hdr);
	snprintf(hdr, sizeof(hdr), "X-UIDL: %s-3\n", m.u[0]);	/* h-3: free */
	xmsg(&b, 4, hdr);
	uidls_of(b.p, MAILDROP_UIDL_XUIDL, &x);
	uidls_of(b.p, MAILDROP_UIDL_MD5, &m);
	assert_int_equal(x.n, 4);
	assert_string_equal(x.u[0], m.u[0]);
	assert_string_equal(x.u[1], m.u[1]);
	assert_string_equal(x.u[2], m.u[2]);		/* demoted */
	snprintf(hdr, sizeof(hdr), "%s-3", m.u[0]);
	assert_string_equal(x.u[3], hdr);
	tu_buf_free(&b);
}

/* ---- dovecot ------------------------------------------------------- */

static void
dmsg(struct tu_buf *b, int n, const char *hdrs)
{
	char	 line[64];

	tu_buf_str(b, FROM);
	snprintf(line, sizeof(line), "Received: d%d\n", n);
	tu_buf_str(b, line);
	tu_buf_str(b, hdrs);
	tu_buf_str(b, "Subject: s\n\nbody\n\n");
}

static void
test_dovecot(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 d, m;

	(void)state;
	dmsg(&b, 1, "X-IMAPbase: 1700000000 0000000005 $Junk\nX-UID: 1\n");
	dmsg(&b, 2, "X-UID: 3\nX-UID: 4\n");	/* the first counts */
	dmsg(&b, 3, "X-UID: 3\n");		/* not growing */
	dmsg(&b, 4, "X-UID: 7\n");		/* past the next UID (6) */
	dmsg(&b, 5, "X-UID: 6\n");		/* the next: taken, next is 7 */
	dmsg(&b, 6, "X-UID: 7\n");		/* now it may */
	dmsg(&b, 7, "X-UID: 8x\n");		/* not a number */
	dmsg(&b, 8, "X-UID: 99999999999\n");	/* overflow */
	dmsg(&b, 9, "X-IMAPbase: 5 10\nX-UID: 8\n");	/* base ignored */
	dmsg(&b, 10, "");			/* no X-UID */
	uidls_of(b.p, MAILDROP_UIDL_DOVECOT, &d);
	uidls_of(b.p, MAILDROP_UIDL_MD5, &m);
	assert_int_equal(d.n, 10);
	assert_string_equal(d.u[0], "000000016553f100");
	assert_string_equal(d.u[1], "000000036553f100");
	assert_string_equal(d.u[2], m.u[2]);
	assert_string_equal(d.u[3], m.u[3]);
	assert_string_equal(d.u[4], "000000066553f100");
	assert_string_equal(d.u[5], "000000076553f100");
	assert_string_equal(d.u[6], m.u[6]);
	assert_string_equal(d.u[7], m.u[7]);
	assert_string_equal(d.u[8], "000000086553f100");
	assert_string_equal(d.u[9], m.u[9]);
	tu_buf_free(&b);
}

static void
test_dovecot_needs_imapbase_first(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 d, m;

	(void)state;
	/* X-UID before X-IMAPbase in the first message is not taken. */
	dmsg(&b, 1, "X-UID: 1\nX-IMAPbase: 1700000000 0000000002\n");
	dmsg(&b, 2, "X-UID: 2\n");
	uidls_of(b.p, MAILDROP_UIDL_DOVECOT, &d);
	uidls_of(b.p, MAILDROP_UIDL_MD5, &m);
	assert_string_equal(d.u[0], m.u[0]);
	assert_string_equal(d.u[1], "000000026553f100");
	tu_buf_free(&b);

	/* No UIDVALIDITY (a zero, or none at all): md5 throughout. */
	b.p = NULL;
	b.len = b.cap = 0;
	dmsg(&b, 1, "X-IMAPbase: 0 0000000002\nX-UID: 1\n");
	dmsg(&b, 2, "X-UID: 2\n");
	uidls_of(b.p, MAILDROP_UIDL_DOVECOT, &d);
	uidls_of(b.p, MAILDROP_UIDL_MD5, &m);
	assert_string_equal(d.u[0], m.u[0]);
	assert_string_equal(d.u[1], m.u[1]);
	tu_buf_free(&b);
}

static void
test_dovecot_folder_data(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 d;

	(void)state;
	tu_buf_str(&b, FROM "Subject: DON'T DELETE THIS MESSAGE -- FOLDER "
	    "INTERNAL DATA\nX-IMAP: 1234 0000000009\n\ntext\n\n");
	dmsg(&b, 1, "X-UID: 9\n");
	uidls_of(b.p, MAILDROP_UIDL_DOVECOT, &d);
	assert_int_equal(d.n, 1);
	assert_string_equal(d.u[0], "00000009000004d2");
	tu_buf_free(&b);
}

/* ---- dovecot: the base outlives the first message ------------------ */

/* scratch/INO.imapbase of the mailbox now; NULL when there is none. */
static char *
imapbase_path(void)
{
	struct stat	 sb;
	char		*p;

	if (stat(path, &sb) == -1 || asprintf(&p, "%s/%ju.imapbase", scratch,
	    (uintmax_t)sb.st_ino) == -1)
		return NULL;
	return p;
}

/* Writes data as a mailbox of a new inode (a new file, renamed in). */
static void
fresh_mailbox(const char *data)
{
	char	*tmp, *ib;

	if ((ib = imapbase_path()) != NULL) {
		(void)unlink(ib);
		free(ib);
	}
	assert_true(asprintf(&tmp, "%s.new", path) > 0);
	assert_int_equal(tu_write_file(tmp, data, strlen(data)), 0);
	assert_int_equal(rename(tmp, path), 0);
	free(tmp);
}

/* Opens the mailbox (dovecot), deletes the messages of mask, commits. */
static void
delete_and_commit(uint64_t mask, struct uidls *before)
{
	struct maildrop_hooks h;
	struct maildrop	*mb;
	size_t		 i;

	memset(&h, 0, sizeof(h));
	h.lock_timeout = 5;
	h.uidl_scheme = MAILDROP_UIDL_DOVECOT;
	assert_int_equal(maildrop_open(path, scratch, &h, &mb), MAILDROP_OK);
	before->n = maildrop_count(mb);
	for (i = 0; i < before->n; i++) {
		maildrop_uidl(mb, i, before->u[i]);
		if (mask & (1ULL << i))
			maildrop_set_deleted(mb, i, 1);
	}
	assert_int_equal(maildrop_commit(mb), MAILDROP_OK);
	maildrop_close(mb);
}

/* The same messages, the deleted ones left out: the same UIDLs. */
static void
assert_kept(const struct uidls *before, uint64_t mask,
    const struct uidls *after)
{
	size_t	 i, k = 0;

	for (i = 0; i < before->n; i++)
		if (!(mask & (1ULL << i)))
			assert_string_equal(after->u[k++], before->u[i]);
	assert_int_equal(after->n, k);
}

/* The UIDLs of the mailbox as it is now, by scheme (no rewrite). */
static void
uidls_now(enum maildrop_uidl_scheme scheme, struct uidls *out)
{
	struct maildrop_hooks h;
	struct maildrop	*mb;
	size_t		 i;

	memset(&h, 0, sizeof(h));
	h.lock_timeout = 5;
	h.uidl_scheme = scheme;
	assert_int_equal(maildrop_open(path, scratch, &h, &mb), MAILDROP_OK);
	out->n = maildrop_count(mb);
	for (i = 0; i < out->n; i++)
		maildrop_uidl(mb, i, out->u[i]);
	maildrop_close(mb);
}

/*
 * Stderr, captured around one open: what was logged.  The caller frees
 * the text.
 */
static char *
logged_open(enum maildrop_uidl_scheme scheme, struct uidls *out)
{
	char	*lp, *text;
	size_t	 len;
	int	 fd, saved;

	assert_true(asprintf(&lp, "%s/log", scratch) > 0);
	assert_true((fd = open(lp, O_RDWR | O_CREAT | O_TRUNC, 0600)) >= 0);
	fflush(stderr);
	assert_true((saved = dup(2)) >= 0);
	assert_int_equal(dup2(fd, 2), 2);
	uidls_now(scheme, out);
	fflush(stderr);
	assert_int_equal(dup2(saved, 2), 2);
	close(saved);
	close(fd);
	assert_non_null(text = tu_read_file(lp, &len));
	assert_int_equal(unlink(lp), 0);
	free(lp);
	return text;
}

static void
dovecot_mailbox(struct tu_buf *b)
{
	/* X-IMAPbase lags behind: X-UID 4 equals the next UID, and moves it. */
	dmsg(b, 1, "X-IMAPbase: 1700000000 0000000003\nX-UID: 1\n");
	dmsg(b, 2, "X-UID: 2\n");
	dmsg(b, 3, "X-UID: 3\n");
	dmsg(b, 4, "X-UID: 4\n");
	dmsg(b, 5, "");				/* new mail: md5 */
	dmsg(b, 6, "X-UID: 9\n");		/* a sender's: md5 */
}

static void
test_dovecot_first_deleted(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 a, c, d, m;
	char		*ib, *text, want[128];
	struct stat	 sb;
	size_t		 len;

	(void)state;
	dovecot_mailbox(&b);
	fresh_mailbox(b.p);
	uidls_now(MAILDROP_UIDL_MD5, &m);
	/* The open keeps the base, with the next UID the parse reached. */
	delete_and_commit(1, &a);
	assert_int_equal(a.n, 6);
	assert_string_equal(a.u[0], "000000016553f100");
	assert_string_equal(a.u[3], "000000046553f100");
	assert_string_equal(a.u[4], m.u[4]);
	assert_string_equal(a.u[5], m.u[5]);
	assert_non_null(ib = imapbase_path());
	assert_int_equal(stat(ib, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0600);
	assert_non_null(text = tu_read_file(ib, &len));
	snprintf(want, sizeof(want), " 1700000000 5\n");
	assert_true(len > strlen(want));
	assert_string_equal(text + len - strlen(want), want);
	free(text);

	/* Message 1 and its X-IMAPbase are gone; the others keep theirs. */
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_kept(&a, 1, &d);
	/* And again, now that the first has no base of its own. */
	delete_and_commit(1 << 1, &c);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_kept(&c, 1 << 1, &d);
	assert_string_equal(d.u[0], "000000026553f100");
	assert_string_equal(d.u[1], "000000046553f100");

	/* A base in the first message wins over the one kept, and is kept. */
	b.len = 0;
	dmsg(&b, 2, "X-IMAPbase: 42 0000000010\nX-UID: 2\n");
	dmsg(&b, 4, "X-UID: 4\n");
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);	/* in place */
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_string_equal(d.u[0], "000000020000002a");
	assert_string_equal(d.u[1], "000000040000002a");
	assert_non_null(text = tu_read_file(ib, &len));
	assert_non_null(strstr(text, " 42 11\n"));
	free(text);
	/* So is a base that has no UIDVALIDITY: md5, the kept one unused. */
	b.len = 0;
	dmsg(&b, 2, "X-IMAPbase: 0 0000000010\nX-UID: 2\n");
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	uidls_now(MAILDROP_UIDL_MD5, &m);
	assert_string_equal(d.u[0], m.u[0]);

	/* No message keeps an X-UID the kept base vouched for: it goes. */
	b.len = 0;
	dmsg(&b, 7, "X-UID: 5\n");		/* at or below next: a forgery */
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);
	assert_int_equal(stat(ib, &sb), 0);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);	/* taken while it lasts */
	assert_string_equal(d.u[0], "000000050000002a");
	b.len = 0;
	dmsg(&b, 8, "");
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_int_equal(stat(ib, &sb), -1);
	b.len = 0;
	dmsg(&b, 7, "X-UID: 5\n");
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	uidls_now(MAILDROP_UIDL_MD5, &m);
	assert_string_equal(d.u[0], m.u[0]);
	free(ib);
	tu_buf_free(&b);
}

/* Writes an INO.imapbase for the mailbox now, as text, in mode. */
static void
plant(const char *ib, const char *text, mode_t mode)
{
	(void)unlink(ib);
	assert_int_equal(tu_write_file(ib, text, strlen(text)), 0);
	assert_int_equal(chmod(ib, mode), 0);
}

static void
test_dovecot_imapbase_refused(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 d, m;
	struct statx	 sx;
	struct stat	 sb;
	char		*ib, *other, *text, good[128], line[160];
	size_t		 i;
	uintmax_t	 ino, bs = 0, bn = 0;
	/* Either raw, or "INO BTIME_SEC BTIME_NSEC" (moved by dino, dbs) tail. */
	static const struct {
		const char	*raw;
		uintmax_t	 dino, dbs;
		const char	*tail;
		mode_t		 mode;
		const char	*why;
	} cases[] = {
		{ NULL, 0, 0, " 1700000000 3\n", 0644, "mode 0644" },
		{ NULL, 0, 0, " 1700000000 3\n", 0640, "mode 0640" },
		{ "garbage\n", 0, 0, NULL, 0600, "malformed" },
		{ "", 0, 0, NULL, 0600, "malformed" },
		{ "1 2 3 4 5", 0, 0, NULL, 0600, "malformed" },	/* no LF */
		{ NULL, 0, 0, " 1700000000 3 \n", 0600, "malformed" },
		{ NULL, 0, 0, " 1700000000 3\n\n", 0600, "malformed" },
		{ NULL, 0, 0, " 0 3\n", 0600, "malformed" },
		{ NULL, 0, 0, " 1700000000 0\n", 0600, "malformed" },
		{ NULL, 0, 0, " 4294967296 3\n", 0600, "malformed" },
		{ NULL, 0, 0, " 1700000000 4294967297\n", 0600, "malformed" },
		{ NULL, 0, 0, " -1 3\n", 0600, "malformed" },
		{ NULL, 0, 0, " 01700000000 3\n", 0600, "malformed" },
		{ NULL, 0, 0, " 1700000000\n", 0600, "malformed" },
		{ NULL, 1, 0, " 1700000000 3\n", 0600, "an earlier file" },
		{ NULL, 0, 1, " 1700000000 3\n", 0600, "an earlier file" },
	};

	(void)state;
	/* What pop3d finds after Dovecot's first message was deleted. */
	dmsg(&b, 2, "X-UID: 2\n");
	dmsg(&b, 3, "X-UID: 3\n");
	fresh_mailbox(b.p);
	assert_non_null(ib = imapbase_path());
	assert_int_equal(stat(path, &sb), 0);
	ino = (uintmax_t)sb.st_ino;
	if (statx(AT_FDCWD, path, 0, STATX_BTIME, &sx) == 0 &&
	    (sx.stx_mask & STATX_BTIME) != 0) {
		bs = (uintmax_t)sx.stx_btime.tv_sec;
		bn = sx.stx_btime.tv_nsec;
	}
	uidls_now(MAILDROP_UIDL_MD5, &m);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_string_equal(d.u[0], m.u[0]);	/* nothing kept: md5 */
	assert_int_equal(stat(ib, &sb), -1);	/* and nothing written */

	/* The file as pop3d writes it is used... */
	snprintf(good, sizeof(good), "%ju %ju %ju 1700000000 3\n", ino, bs, bn);
	plant(ib, good, 0600);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_string_equal(d.u[0], "000000026553f100");
	assert_string_equal(d.u[1], "000000036553f100");

	/* ...and nothing else is: each refusal logged, md5 throughout. */
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].raw != NULL)
			snprintf(line, sizeof(line), "%s", cases[i].raw);
		else
			snprintf(line, sizeof(line), "%ju %ju %ju%s",
			    ino + cases[i].dino, bs + cases[i].dbs, bn,
			    cases[i].tail);
		plant(ib, line, cases[i].mode);
		text = logged_open(MAILDROP_UIDL_DOVECOT, &d);
		print_message("case %zu: %s", i, text);
		assert_non_null(strstr(text, "imapbase"));
		assert_non_null(strstr(text, cases[i].why));
		assert_string_equal(d.u[0], m.u[0]);
		assert_string_equal(d.u[1], m.u[1]);
		free(text);
	}

	/* A symlink to a good file, and a good file with two links. */
	assert_true(asprintf(&other, "%s/elsewhere", scratch) > 0);
	plant(other, good, 0600);
	(void)unlink(ib);
	assert_int_equal(symlink(other, ib), 0);
	text = logged_open(MAILDROP_UIDL_DOVECOT, &d);
	assert_non_null(strstr(text, "a symlink"));
	assert_string_equal(d.u[0], m.u[0]);
	free(text);
	assert_int_equal(unlink(ib), 0);
	assert_int_equal(link(other, ib), 0);
	text = logged_open(MAILDROP_UIDL_DOVECOT, &d);
	assert_non_null(strstr(text, "2 links"));
	assert_string_equal(d.u[0], m.u[0]);
	free(text);
	assert_int_equal(unlink(other), 0);
	/* A directory in its place. */
	assert_int_equal(unlink(ib), 0);
	assert_int_equal(mkdir(ib, 0700), 0);
	text = logged_open(MAILDROP_UIDL_DOVECOT, &d);
	assert_non_null(strstr(text, "imapbase"));
	assert_string_equal(d.u[0], m.u[0]);
	free(text);
	assert_int_equal(rmdir(ib), 0);
	free(other);
	free(ib);
	tu_buf_free(&b);
}

static void
test_imapbase_only_dovecot(void **state)
{
	static const enum maildrop_uidl_scheme others[] = {
		MAILDROP_UIDL_MD5, MAILDROP_UIDL_POPA3D, MAILDROP_UIDL_XUIDL
	};
	struct tu_buf	 b = { NULL, 0, 0 };
	struct uidls	 d;
	enum maildrop_status st;
	struct stat	 sb;
	char		*ib, *out, *before;
	size_t		 i;

	(void)state;
	dovecot_mailbox(&b);
	fresh_mailbox(b.p);
	assert_non_null(ib = imapbase_path());
	for (i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		uidls_now(others[i], &d);
		assert_int_equal(stat(ib, &sb), -1);
	}
	/* pop3d -l reads it but never writes it. */
	out = list_of(path, MAILDROP_UIDL_DOVECOT, &st);
	assert_int_equal(st, MAILDROP_OK);
	assert_int_equal(stat(ib, &sb), -1);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_int_equal(stat(ib, &sb), 0);
	before = out;
	out = list_of(path, MAILDROP_UIDL_DOVECOT, &st);
	assert_string_equal(out, before);
	free(before);
	free(out);
	/*
	 * A new file under the same name, without message 1: the old inode's
	 * base is not its (a recycled inode number is the birth time's job,
	 * in test_dovecot_imapbase_refused).
	 */
	b.len = 0;
	dmsg(&b, 2, "X-UID: 2\n");
	assert_true(asprintf(&before, "%s.new", path) > 0);
	assert_int_equal(tu_write_file(before, b.p, b.len), 0);
	assert_int_equal(rename(before, path), 0);
	free(before);
	uidls_now(MAILDROP_UIDL_DOVECOT, &d);
	assert_int_equal(stat(ib, &sb), 0);	/* the old one, unused */
	assert_int_equal(d.n, 1);
	assert_int_equal(strlen(d.u[0]), 32);
	assert_int_equal(unlink(ib), 0);
	free(ib);
	tu_buf_free(&b);
}

/* ---- the index keeps to one scheme --------------------------------- */

static void
test_index_per_scheme(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 };
	struct maildrop_hooks h;
	struct maildrop	*mb;
	char		 line[128], u1[MAILDROP_UIDL_MAX], u2[MAILDROP_UIDL_MAX];
	char		*idx;
	size_t		 i, k;
	static const struct {
		enum maildrop_uidl_scheme s;
		enum mbox_table_source	  want;
	} steps[] = {
		{ MAILDROP_UIDL_MD5, MBOX_TABLE_PARSED },	/* saves */
		{ MAILDROP_UIDL_POPA3D, MBOX_TABLE_PARSED },	/* not md5's */
		{ MAILDROP_UIDL_POPA3D, MBOX_TABLE_INDEX },	/* its own */
		{ MAILDROP_UIDL_XUIDL, MBOX_TABLE_PARSED },	/* never */
		{ MAILDROP_UIDL_DOVECOT, MBOX_TABLE_PARSED },	/* never */
		{ MAILDROP_UIDL_POPA3D, MBOX_TABLE_INDEX },	/* still */
		{ MAILDROP_UIDL_MD5, MBOX_TABLE_PARSED },
		{ MAILDROP_UIDL_MD5, MBOX_TABLE_INDEX },
	};

	(void)state;
	for (i = 0; i < 1000; i++) {
		snprintf(line, sizeof(line), FROM "Received: r%zu\n"
		    "X-UIDL: x%zu\nSubject: s\n\n", i, i);
		tu_buf_str(&b, line);
		for (k = 0; k < 60; k++)
			tu_buf_str(&b, "a line of body text that fills the "
			    "mailbox past the index threshold.....\n");
		tu_buf_str(&b, "\n");
	}
	assert_int_equal(tu_write_file(path, b.p, b.len), 0);
	usleep(80 * 1000);	/* past the index's ctime settle time */
	memset(&h, 0, sizeof(h));
	h.lock_timeout = 5;
	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		h.uidl_scheme = steps[i].s;
		assert_int_equal(maildrop_open(path, scratch, &h, &mb), MAILDROP_OK);
		assert_int_equal(mbox_table_source(mb), steps[i].want);
		assert_int_equal(maildrop_count(mb), 1000);
		maildrop_uidl(mb, 999, u1);
		maildrop_close(mb);
		switch (steps[i].s) {
		case MAILDROP_UIDL_POPA3D:
			assert_int_equal(strlen(u1), 16);
			break;
		case MAILDROP_UIDL_XUIDL:
			assert_string_equal(u1, "x999");
			break;
		default:
			assert_int_equal(strlen(u1), 32);
			break;
		}
		if (i == 2 || i == 5 || i == 7) {
			/* The index's UIDLs are the ones a parse makes. */
			strcpy(u2, u1);
			idx = index_path();
			assert_int_equal(unlink(idx), 0);
			assert_int_equal(maildrop_open(path, scratch, &h, &mb),
			    MAILDROP_OK);
			maildrop_uidl(mb, 999, u1);
			maildrop_close(mb);
			assert_string_equal(u1, u2);
			free(idx);
			usleep(80 * 1000);
			/* Put the index back for the next step. */
			assert_int_equal(maildrop_open(path, scratch, &h, &mb),
			    MAILDROP_OK);
			maildrop_close(mb);
		}
	}
	tu_buf_free(&b);
}

/* ---- pop3d -l ------------------------------------------------------ */

static char *
list_of(const char *p, enum maildrop_uidl_scheme s,
    enum maildrop_status *st_r)
{
	struct maildrop_hooks h;
	char		*out = NULL;
	size_t		 len = 0;
	FILE		*f;

	memset(&h, 0, sizeof(h));
	h.lock_timeout = 5;
	h.uidl_scheme = s;
	assert_non_null(f = open_memstream(&out, &len));
	*st_r = maildrop_list(p, scratch, &h, f);
	fclose(f);
	return out;
}

static void
test_list(void **state)
{
	struct tu_buf	 b = { NULL, 0, 0 }, want = { NULL, 0, 0 };
	struct uidls	 u;
	enum maildrop_status st;
	char		*out, *jnl, *missing, line[128];
	size_t		 i;
	struct stat	 before, after;

	(void)state;
	tu_buf_str(&b, FROM "Subject: DON'T DELETE THIS MESSAGE -- FOLDER "
	    "INTERNAL DATA\nX-IMAP: 1234 0000000009\n\ntext\n\n");
	xmsg(&b, 1, "X-UIDL: one\n");
	xmsg(&b, 2, "");
	xmsg(&b, 2, "");
	uidls_of(b.p, MAILDROP_UIDL_XUIDL, &u);
	assert_int_equal(u.n, 3);
	tu_buf_str(&want, "");
	for (i = 0; i < u.n; i++) {
		snprintf(line, sizeof(line), "%zu %s\n", i + 1, u.u[i]);
		tu_buf_str(&want, line);
	}
	assert_int_equal(stat(path, &before), 0);
	out = list_of(path, MAILDROP_UIDL_XUIDL, &st);
	assert_int_equal(st, MAILDROP_OK);
	assert_string_equal(out, want.p);
	free(out);
	assert_int_equal(stat(path, &after), 0);
	assert_int_equal(before.st_ctim.tv_nsec, after.st_ctim.tv_nsec);
	assert_int_equal(before.st_size, after.st_size);

	/*
	 * A journal left by a crash (here one the version before left in
	 * the spool): refused, and left alone.
	 */
	assert_true(asprintf(&jnl, "%s.pop3d-journal", path) > 0);
	assert_int_equal(tu_write_file(jnl, "junk", 4), 0);
	out = list_of(path, MAILDROP_UIDL_MD5, &st);
	assert_int_equal(st, MAILDROP_CHANGED);
	assert_string_equal(out, "");
	free(out);
	assert_int_equal(stat(jnl, &after), 0);
	assert_int_equal(after.st_size, 4);
	assert_int_equal(unlink(jnl), 0);
	free(jnl);

	/* No file: an empty maildrop. */
	assert_true(asprintf(&missing, "%s/none", scratch) > 0);
	out = list_of(missing, MAILDROP_UIDL_MD5, &st);
	assert_int_equal(st, MAILDROP_OK);
	assert_string_equal(out, "");
	free(out);
	free(missing);
	tu_buf_free(&b);
	tu_buf_free(&want);
}

/* The index in the state directory (here the scratch directory). */
static char *
index_path(void)
{
	struct stat	 sb;
	char		*p;

	if (stat(path, &sb) == -1 || asprintf(&p, "%s/%ju.index", scratch,
	    (uintmax_t)sb.st_ino) == -1)
		return NULL;
	return p;
}

static int
setup(void **state)
{
	(void)state;
	scratch = tu_mkdtemp();
	if (asprintf(&path, "%s/mbox", scratch) == -1)
		abort();
	return 0;
}

static int
teardown(void **state)
{
	char	*idx;

	(void)state;
	if ((idx = index_path()) != NULL) {
		(void)unlink(idx);
		free(idx);
	}
	if ((idx = imapbase_path()) != NULL) {
		(void)unlink(idx);
		free(idx);
	}
	(void)unlink(path);
	(void)rmdir(scratch);
	free(scratch);
	free(path);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_md5_is_the_default),
		cmocka_unit_test(test_popa3d_lines),
		cmocka_unit_test(test_xuidl),
		cmocka_unit_test(test_xuidl_collision),
		cmocka_unit_test(test_dovecot),
		cmocka_unit_test(test_dovecot_needs_imapbase_first),
		cmocka_unit_test(test_dovecot_folder_data),
		cmocka_unit_test(test_dovecot_first_deleted),
		cmocka_unit_test(test_dovecot_imapbase_refused),
		cmocka_unit_test(test_imapbase_only_dovecot),
		cmocka_unit_test(test_index_per_scheme),
		cmocka_unit_test(test_list),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
