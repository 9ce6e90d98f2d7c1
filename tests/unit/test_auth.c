/*
 * test_auth.c: the parts of auth.c and session.c that guard logins and
 * paths: the APOP digest (RFC 1939), the APOP secrets file check, the
 * mailbox template expansion, user name validation, the strict base64
 * decoder of SASL PLAIN (RFC 4648), and auth_check() for APOP and for a
 * password of a user who has an APOP secret (through the -f password
 * file, so that no PAM is involved).
 *
 * Runs as root for the ownership cases (files made here are root's; one
 * is chowned to uid 1000); as anyone else those cases are skipped.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "session.h"
#include "testutil.h"

/* ---- auth_apop_digest ------------------------------------------------ */

static void
test_apop_digest_rfc1939(void **state)
{
	char	 out[AUTH_APOP_DIGEST + 1 + 8];

	(void)state;
	memset(out, 'X', sizeof(out));
	auth_apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf", out);
	/* RFC 1939 section 7's example, 32 lowercase hex digits. */
	assert_string_equal(out, "c4c9334bac560ecc979e58001b3e22fb");
	assert_int_equal(out[AUTH_APOP_DIGEST], '\0');
	/* Nothing written past the terminator. */
	assert_int_equal(out[AUTH_APOP_DIGEST + 1], 'X');
}

static void
test_apop_digest_other(void **state)
{
	char	 out[AUTH_APOP_DIGEST + 1];

	(void)state;
	/* md5("<1.2.0123456789abcdef@host>s3cret") */
	auth_apop_digest("<1.2.0123456789abcdef@host>", "s3cret", out);
	assert_string_equal(out, "d6ddf8e0b125499b77f66e23de06dd92");
	/* An empty secret is the MD5 of the stamp alone. */
	auth_apop_digest("<1896.697170952@dbc.mtview.ca.us>", "", out);
	assert_string_equal(out, "6d7379174f7df9fb329480e5c47c1f1a");
	auth_apop_digest("", "", out);
	assert_string_equal(out, "d41d8cd98f00b204e9800998ecf8427e");
}

/* ---- auth_expand ------------------------------------------------------ */

static int
expand(const char *tmpl, const char *name, const char *home, char *buf,
    size_t bufsize)
{
	return auth_expand(tmpl, name, home, buf, bufsize);
}

static void
test_expand_ok(void **state)
{
	char	 buf[PATH_MAX];

	(void)state;
	assert_int_equal(expand("/var/mail/%u", "alice", "/home/alice", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/var/mail/alice");
	assert_int_equal(expand("%h/Mail/inbox", "alice", "/home/alice", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/home/alice/Mail/inbox");
	assert_int_equal(expand("/m/%%/%u%%", "bob", "/h", buf, sizeof(buf)),
	    0);
	assert_string_equal(buf, "/m/%/bob%");
	assert_int_equal(expand("/m/%u/%u.mbox", "bob", "/h", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/m/bob/bob.mbox");
	assert_int_equal(expand("/spool/mail", "bob", "/h", buf, sizeof(buf)),
	    0);
	assert_string_equal(buf, "/spool/mail");
	/* "%%u" is a percent sign and a u, not the name. */
	assert_int_equal(expand("/m/%%u", "bob", "/h", buf, sizeof(buf)), 0);
	assert_string_equal(buf, "/m/%u");
	/* Dots and 8-bit bytes inside a name cannot climb out. */
	assert_int_equal(expand("/m/%u", "alice.smith", "/h", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/m/alice.smith");
	assert_int_equal(expand("/m/%u", "jos\xc3\xa9", "/h", buf,
	    sizeof(buf)), 0);
	assert_string_equal(buf, "/m/jos\xc3\xa9");
}

static void
test_expand_bad_template(void **state)
{
	char	 buf[PATH_MAX];

	(void)state;
	/* Unknown escapes, and a lone % at the end. */
	assert_int_equal(expand("/m/%x", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("/m/%U", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("/m/%", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("/m/%/x", "bob", "/h", buf, sizeof(buf)), -1);
	/* Relative results, and an empty one. */
	assert_int_equal(expand("%u", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("mail/%u", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("./%u", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("%h/inbox", "bob", "home/bob", buf,
	    sizeof(buf)), -1);
	assert_int_equal(expand("", "bob", "/h", buf, sizeof(buf)), -1);
	assert_int_equal(expand("%%/m", "bob", "/h", buf, sizeof(buf)), -1);
}

static void
test_expand_bad_names(void **state)
{
	static const char *const bad[] = {
		"a/b", "/", "../alice", "..", ".", "alice/", "/etc/passwd",
		"", "a\nb", "a\rb", "a\tb", "\x1b[2J", "a\x7f", "a\x01",
	};
	char	 buf[PATH_MAX], longname[AUTH_NAME_MAX + 1];
	size_t	 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		strcpy(buf, "untouched");
		if (expand("/var/mail/%u", bad[i], "/h", buf,
		    sizeof(buf)) != -1)
			fail_msg("name %zu (\"%s\") accepted: \"%s\"", i,
			    bad[i], buf);
	}
	/* Rejected even when the template does not use the name. */
	assert_int_equal(expand("/var/mail/fixed", "../x", "/h", buf,
	    sizeof(buf)), -1);
	/* Too long for a user name. */
	memset(longname, 'a', AUTH_NAME_MAX);
	longname[AUTH_NAME_MAX] = '\0';
	assert_int_equal(expand("/m/%u", longname, "/h", buf, sizeof(buf)),
	    -1);
	longname[AUTH_NAME_MAX - 1] = '\0';	/* 255: the longest valid */
	assert_int_equal(expand("/m/%u", longname, "/h", buf, sizeof(buf)), 0);
	assert_int_equal(strlen(buf), 3 + AUTH_NAME_MAX - 1);
}

static void
test_expand_overflow(void **state)
{
	char	 buf[64];
	size_t	 i;

	(void)state;
	/* "/m/bob" is 6 bytes: it needs 7 with the NUL. */
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(expand("/m/%u", "bob", "/h", buf, 7), 0);
	assert_string_equal(buf, "/m/bob");
	for (i = 7; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 'Z');
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(expand("/m/%u", "bob", "/h", buf, 6), -1);
	for (i = 6; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 'Z');
	/* The same at a literal byte, at %h and at %%. */
	memset(buf, 'Z', sizeof(buf));
	assert_int_equal(expand("/mail/box", "bob", "/h", buf, 9), -1);
	assert_int_equal(expand("/mail/box", "bob", "/h", buf, 10), 0);
	assert_int_equal(expand("%h", "bob", "/home/bob", buf, 9), -1);
	assert_int_equal(expand("%h", "bob", "/home/bob", buf, 10), 0);
	assert_string_equal(buf, "/home/bob");
	assert_int_equal(expand("/%%", "bob", "/h", buf, 2), -1);
	assert_int_equal(expand("/%%", "bob", "/h", buf, 3), 0);
	assert_string_equal(buf, "/%");
	for (i = 10; i < sizeof(buf); i++)
		assert_int_equal(buf[i], 'Z');
	/* A home far longer than PATH_MAX. */
	{
		char	*home = malloc(2 * PATH_MAX);
		char	 big[PATH_MAX];

		assert_non_null(home);
		memset(home, 'h', 2 * PATH_MAX - 1);
		home[0] = '/';
		home[2 * PATH_MAX - 1] = '\0';
		assert_int_equal(expand("%h/inbox", "bob", home, big,
		    sizeof(big)), -1);
		free(home);
	}
}

/* ---- auth_name_valid ---------------------------------------------------- */

static void
test_name_valid(void **state)
{
	char	 name[AUTH_NAME_MAX + 1];
	int	 c;

	(void)state;
	assert_true(auth_name_valid("alice", 5));
	assert_true(auth_name_valid("a", 1));
	assert_true(auth_name_valid("a b", 3));		/* space is printable */
	assert_true(auth_name_valid("jos\xc3\xa9", 5));	/* UTF-8 */
	assert_true(auth_name_valid("\x80\xff", 2));	/* 8-bit */
	assert_false(auth_name_valid("", 0));
	/* The length given is what counts, not the NUL. */
	assert_false(auth_name_valid("alice", 0));
	assert_false(auth_name_valid("a\0b", 3));
	for (c = 0; c < 0x20; c++) {
		name[0] = 'a';
		name[1] = (char)c;
		name[2] = 'b';
		if (auth_name_valid(name, 3))
			fail_msg("control byte 0x%02x accepted", c);
	}
	assert_false(auth_name_valid("a\x7f" "b", 3));
	memset(name, 'n', sizeof(name));
	assert_true(auth_name_valid(name, AUTH_NAME_MAX - 1));
	assert_false(auth_name_valid(name, AUTH_NAME_MAX));
	assert_false(auth_name_valid(name, AUTH_NAME_MAX + 1));
}

/* ---- session_base64_decode ------------------------------------------------ */

static int
b64(const char *in, unsigned char *out, size_t outsize)
{
	return session_base64_decode(in, strlen(in), out, outsize);
}

static void
test_base64_rfc4648(void **state)
{
	static const struct {
		const char	*in;
		const char	*out;
	} v[] = {
		{ "", "" },
		{ "Zg==", "f" },
		{ "Zm8=", "fo" },
		{ "Zm9v", "foo" },
		{ "Zm9vYg==", "foob" },
		{ "Zm9vYmE=", "fooba" },
		{ "Zm9vYmFy", "foobar" },
	};
	unsigned char	 out[64];
	size_t		 i;
	int		 n;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		memset(out, 0xAA, sizeof(out));
		n = b64(v[i].in, out, sizeof(out));
		if (n != (int)strlen(v[i].out) ||
		    memcmp(out, v[i].out, strlen(v[i].out)) != 0)
			fail_msg("\"%s\" decoded to %d bytes", v[i].in, n);
		/* Nothing written past what was decoded. */
		assert_int_equal(out[n], 0xAA);
	}
}

static void
test_base64_binary(void **state)
{
	/* "\0alice\0secret", as SASL PLAIN sends it. */
	static const unsigned char want[] = "\0alice\0secret";
	unsigned char	 out[64];
	int		 n;

	(void)state;
	n = b64("AGFsaWNlAHNlY3JldA==", out, sizeof(out));
	assert_int_equal(n, sizeof(want) - 1);
	assert_memory_equal(out, want, sizeof(want) - 1);
	/* All 64 letters of the alphabet, and the extremes. */
	n = b64("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
	    out, sizeof(out));
	assert_int_equal(n, 48);
	assert_int_equal(out[0], 0x00);
	assert_int_equal(out[1], 0x10);
	assert_int_equal(out[45], 0xf3);
	assert_int_equal(out[46], 0xdf);
	assert_int_equal(out[47], 0xbf);
	n = b64("////", out, sizeof(out));
	assert_int_equal(n, 3);
	assert_int_equal(out[0], 0xff);
	assert_int_equal(out[1], 0xff);
	assert_int_equal(out[2], 0xff);
	n = b64("AAAA", out, sizeof(out));
	assert_int_equal(n, 3);
	assert_int_equal(out[0] | out[1] | out[2], 0);
}

static void
test_base64_bad_padding(void **state)
{
	static const char *const bad[] = {
		"Zg=", "Zg", "Z", "Zm9", "Zm9vY",	/* not a multiple of 4 */
		"Z===", "====", "=Zg=", "==Zg", "Zg=a", "Z=g=",
		"Zg==Zg==", "Zm8=Zm8=", "Zm9v====", "Zm9v=", "Zg===",
		"Zm9vYg=A",
	};
	unsigned char	 out[64];
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (b64(bad[i], out, sizeof(out)) != -1)
			fail_msg("\"%s\" accepted", bad[i]);
}

static void
test_base64_bad_chars(void **state)
{
	static const char *const bad[] = {
		"Zm9*", "Zm 9", " Zm9", "Zm9v\n", "Zm9\n", "Zm9\r", "Zm-_",
		"Zm9v.AAA", "Zm9\x80", "\xffZm9", "Zm9v\t\t\t\t", "Zm:v",
	};
	unsigned char	 out[64];
	size_t		 i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (b64(bad[i], out, sizeof(out)) != -1)
			fail_msg("bad string %zu accepted", i);
	/* A NUL inside the given length. */
	assert_int_equal(session_base64_decode("Zm\0v", 4, out, sizeof(out)),
	    -1);
	assert_int_equal(session_base64_decode("Zm9v\0\0\0\0", 8, out,
	    sizeof(out)), -1);
}

static void
test_base64_output_too_small(void **state)
{
	unsigned char	 out[16];

	(void)state;
	memset(out, 0xAA, sizeof(out));
	assert_int_equal(b64("Zm9v", out, 2), -1);
	assert_int_equal(out[2], 0xAA);
	assert_int_equal(b64("Zm9v", out, 3), 3);
	assert_int_equal(b64("Zg==", out, 0), -1);
	assert_int_equal(b64("Zg==", out, 1), 1);
	assert_int_equal(b64("Zm8=", out, 1), -1);
	memset(out, 0xAA, sizeof(out));
	assert_int_equal(b64("Zm9vYmFy", out, 5), -1);
	/* Whatever it decoded before giving up stays inside the buffer. */
	assert_int_equal(out[5], 0xAA);
	assert_int_equal(b64("Zm9vYmFy", out, 6), 6);
	assert_int_equal(b64("Zm9vYmE=", out, 4), -1);
	assert_int_equal(b64("Zm9vYmE=", out, 5), 5);
	assert_int_equal(b64("", out, 0), 0);
}

/* ---- auth_apop_usable ------------------------------------------------------ */

struct tmpdir {
	char	*dir;
};

static int
dir_setup(void **state)
{
	struct tmpdir	*t = calloc(1, sizeof(*t));

	if (t == NULL)
		return -1;
	t->dir = tu_mkdtemp();
	*state = t;
	return 0;
}

static int
dir_teardown(void **state)
{
	struct tmpdir	*t = *state;
	char		*cmd;

	if (asprintf(&cmd, "rm -rf '%s'", t->dir) == -1)
		return -1;
	if (system(cmd) != 0)
		return -1;
	free(cmd);
	free(t->dir);
	free(t);
	return 0;
}

static char *
path_in(struct tmpdir *t, const char *name)
{
	char	*p;

	if (asprintf(&p, "%s/%s", t->dir, name) == -1)
		abort();
	return p;
}

/* Writes data to name in the scratch directory with mode. */
static char *
make_file(struct tmpdir *t, const char *name, const char *data, mode_t mode)
{
	char	*p = path_in(t, name);

	assert_int_equal(tu_write_file(p, data, strlen(data)), 0);
	assert_int_equal(chmod(p, mode), 0);
	return p;
}

static void
test_apop_usable_modes(void **state)
{
	static const mode_t ok[] = { 0600, 0400, 0200, 0700, 0000 };
	static const mode_t bad[] = { 0640, 0604, 0660, 0606, 0644, 0610,
	    0601, 0620, 0602, 0666, 0777, 0670, 0607 };
	struct tmpdir	*t = *state;
	char		*p;
	size_t		 i;

	if (geteuid() != 0)
		skip();
	p = make_file(t, "apop", "alice:secret\n", 0600);
	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_int_equal(chmod(p, ok[i]), 0);
		if (auth_apop_usable(p) != 0)
			fail_msg("mode %04o refused", (unsigned)ok[i]);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(chmod(p, bad[i]), 0);
		if (auth_apop_usable(p) != -1)
			fail_msg("mode %04o accepted", (unsigned)bad[i]);
	}
	free(p);
}

static void
test_apop_usable_owner(void **state)
{
	struct tmpdir	*t = *state;
	char		*p;

	if (geteuid() != 0)
		skip();
	p = make_file(t, "apop", "alice:secret\n", 0600);
	assert_int_equal(auth_apop_usable(p), 0);
	assert_int_equal(chown(p, 1000, 0), 0);
	assert_int_equal(auth_apop_usable(p), -1);
	assert_int_equal(chown(p, 0, 1000), 0);	/* the group may differ */
	assert_int_equal(auth_apop_usable(p), 0);
	assert_int_equal(chown(p, 65534, 65534), 0);
	assert_int_equal(auth_apop_usable(p), -1);
	free(p);
}

static void
test_apop_usable_not_regular(void **state)
{
	struct tmpdir	*t = *state;
	char		*good, *link, *dlink, *d, *fifo, *missing;

	if (geteuid() != 0)
		skip();
	good = make_file(t, "apop", "alice:secret\n", 0600);
	assert_int_equal(auth_apop_usable(good), 0);
	/* A symlink to a good file: refused, whatever it points at. */
	link = path_in(t, "apop-link");
	assert_int_equal(symlink(good, link), 0);
	assert_int_equal(auth_apop_usable(link), -1);
	/* A directory, even root's and 0700. */
	d = path_in(t, "apop-dir");
	assert_int_equal(mkdir(d, 0700), 0);
	assert_int_equal(auth_apop_usable(d), -1);
	dlink = path_in(t, "apop-dirlink");
	assert_int_equal(symlink(d, dlink), 0);
	assert_int_equal(auth_apop_usable(dlink), -1);
	/* A FIFO (opening it would block). */
	fifo = path_in(t, "apop-fifo");
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(auth_apop_usable(fifo), -1);
	/* Missing. */
	missing = path_in(t, "nonexistent");
	assert_int_equal(auth_apop_usable(missing), -1);
	assert_int_equal(auth_apop_usable(""), -1);
	free(good);
	free(link);
	free(dlink);
	free(d);
	free(fifo);
	free(missing);
}

/* ---- auth_check: APOP, and passwords of APOP users ------------------------ */

#define STAMP	"<4242.1700000000.0123456789abcdef@test.example>"

/* A system account that exists on any Debian system and is not root. */
static const struct passwd *
nobody(void)
{
	const struct passwd *pw = getpwnam("nobody");

	return pw;
}

static enum auth_status
check(const struct auth_config *cf, uint32_t kind, const char *user,
    const char *pass, struct auth_user *u)
{
	struct auth_request	 req;
	enum auth_status	 st;
	size_t			 i;

	memset(&req, 0, sizeof(req));
	req.kind = kind;
	assert_true(strlen(user) < sizeof(req.user));
	assert_true(strlen(pass) < sizeof(req.pass));
	strcpy(req.user, user);
	strcpy(req.pass, pass);
	st = auth_check(cf, &req, u);
	/* The password (or digest) is wiped whatever the outcome. */
	for (i = 0; i < sizeof(req.pass); i++)
		if (req.pass[i] != '\0')
			fail_msg("req.pass not wiped after auth_check");
	return st;
}

static void
digest(const char *stamp, const char *secret, char out[AUTH_APOP_DIGEST + 1])
{
	auth_apop_digest(stamp, secret, out);
}

static void
test_check_apop(void **state)
{
	struct tmpdir		*t = *state;
	struct auth_config	 cf;
	struct auth_user	 u;
	const struct passwd	*pw;
	char			 d[AUTH_APOP_DIGEST + 1];
	char			*apop;

	if (geteuid() != 0 || (pw = nobody()) == NULL)
		skip();
	apop = make_file(t, "apop", "# comment\n\nnobody:s3cret\n"
	    "emptysecret:\nnosuchaccount:other\n", 0600);
	memset(&cf, 0, sizeof(cf));
	cf.pam_service = "pop3d-unit-test-nonexistent";
	cf.mailbox_template = "/var/mail/%u";
	cf.apop_file = apop;
	cf.apop_stamp = STAMP;

	/* The right digest. */
	digest(STAMP, "s3cret", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u), AUTH_OK);
	assert_string_equal(u.name, "nobody");
	assert_string_equal(u.account, "nobody");
	assert_int_equal(u.uid, pw->pw_uid);
	assert_int_equal(u.gid, pw->pw_gid);
	assert_string_equal(u.mailbox, "/var/mail/nobody");

	/* A wrong secret: a known user. */
	digest(STAMP, "s3creT", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u),
	    AUTH_FAIL);
	assert_int_equal(u.known, 1);
	assert_int_equal(u.uid, 0);
	assert_string_equal(u.mailbox, "");

	/* The right secret against an old timestamp: a replay. */
	digest("<4242.1699999999.0123456789abcdef@test.example>", "s3cret", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u),
	    AUTH_FAIL);

	/* An unknown user. */
	digest(STAMP, "s3cret", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "mallory", d, &u),
	    AUTH_FAIL);
	assert_int_equal(u.known, 0);
	/* Nor does the dummy secret of unknown users open anything. */
	digest(STAMP, "-", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "mallory", d, &u),
	    AUTH_FAIL);

	/* An empty secret never matches, not even MD5(stamp). */
	digest(STAMP, "", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "emptysecret", d, &u),
	    AUTH_FAIL);

	/* A secret without a system account. */
	digest(STAMP, "other", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nosuchaccount", d, &u),
	    AUTH_FAIL);

	/* A comment line is no entry. */
	digest(STAMP, "", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "# comment", d, &u),
	    AUTH_FAIL);

	/* No timestamp (APOP was not offered): nothing matches. */
	cf.apop_stamp = NULL;
	digest(STAMP, "s3cret", d);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u),
	    AUTH_FAIL);
	cf.apop_stamp = STAMP;

	/* The file became unsafe after startup: checked again, refused. */
	assert_int_equal(chmod(apop, 0644), 0);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u),
	    AUTH_TEMPFAIL);
	assert_int_equal(chmod(apop, 0600), 0);
	assert_int_equal(chown(apop, 1000, 0), 0);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u),
	    AUTH_TEMPFAIL);
	assert_int_equal(chown(apop, 0, 0), 0);
	assert_int_equal(check(&cf, AUTH_KIND_APOP, "nobody", d, &u), AUTH_OK);

	/* An unknown request kind. */
	assert_int_equal(check(&cf, 7, "nobody", d, &u), AUTH_FAIL);
	free(apop);
}

static void
test_check_pass_of_apop_user(void **state)
{
	struct tmpdir		*t = *state;
	struct auth_config	 cf;
	struct auth_user	 u;
	const struct passwd	*pw;
	char			*apop, *pwfile, *lines;
	const char		*h;

	if (geteuid() != 0 || (pw = nobody()) == NULL)
		skip();
	h = crypt("right-password", "$6$unittestsalt$");
	assert_non_null(h);
	assert_true(h[0] == '$');
	if (asprintf(&lines, "apopuser:%s:nobody:/var/mail/apopuser\n"
	    "plainuser:%s:nobody:/var/mail/plainuser\n", h, h) == -1)
		abort();
	pwfile = make_file(t, "passwd", lines, 0600);
	apop = make_file(t, "apop", "apopuser:s3cret\n", 0600);
	memset(&cf, 0, sizeof(cf));
	cf.pam_service = "pop3d-unit-test-nonexistent";
	cf.mailbox_template = "/var/mail/%u";
	cf.passwd_file = pwfile;
	cf.apop_file = apop;
	cf.apop_stamp = STAMP;

	/* RFC 1939 section 13: the right password is refused. */
	assert_int_equal(check(&cf, AUTH_KIND_PASS, "apopuser",
	    "right-password", &u), AUTH_FAIL);
	assert_int_equal(u.known, 1);
	assert_int_equal(u.uid, 0);
	/* Someone without an APOP secret logs in with a password. */
	assert_int_equal(check(&cf, AUTH_KIND_PASS, "plainuser",
	    "right-password", &u), AUTH_OK);
	assert_int_equal(u.uid, pw->pw_uid);
	assert_string_equal(u.mailbox, "/var/mail/plainuser");
	assert_int_equal(check(&cf, AUTH_KIND_PASS, "plainuser",
	    "wrong-password", &u), AUTH_FAIL);
	/* APOP users of the password file get its account and mailbox. */
	{
		char	 d[AUTH_APOP_DIGEST + 1];

		digest(STAMP, "s3cret", d);
		assert_int_equal(check(&cf, AUTH_KIND_APOP, "apopuser", d, &u),
		    AUTH_OK);
		assert_string_equal(u.account, "nobody");
		assert_string_equal(u.mailbox, "/var/mail/apopuser");
	}
	/* Without APOP configured, the password works. */
	cf.apop_file = NULL;
	assert_int_equal(check(&cf, AUTH_KIND_PASS, "apopuser",
	    "right-password", &u), AUTH_OK);
	/* With the secrets file broken after startup, no password login
	 * slips through: it fails closed. */
	cf.apop_file = apop;
	assert_int_equal(chmod(apop, 0604), 0);
	assert_int_not_equal(check(&cf, AUTH_KIND_PASS, "apopuser",
	    "right-password", &u), AUTH_OK);
	free(lines);
	free(pwfile);
	free(apop);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_apop_digest_rfc1939),
		cmocka_unit_test(test_apop_digest_other),
		cmocka_unit_test(test_expand_ok),
		cmocka_unit_test(test_expand_bad_template),
		cmocka_unit_test(test_expand_bad_names),
		cmocka_unit_test(test_expand_overflow),
		cmocka_unit_test(test_name_valid),
		cmocka_unit_test(test_base64_rfc4648),
		cmocka_unit_test(test_base64_binary),
		cmocka_unit_test(test_base64_bad_padding),
		cmocka_unit_test(test_base64_bad_chars),
		cmocka_unit_test(test_base64_output_too_small),
		cmocka_unit_test_setup_teardown(test_apop_usable_modes,
		    dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_apop_usable_owner,
		    dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_apop_usable_not_regular,
		    dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_check_apop,
		    dir_setup, dir_teardown),
		cmocka_unit_test_setup_teardown(test_check_pass_of_apop_user,
		    dir_setup, dir_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
