/*
 * test_session.c: command-line parsing, the POP3 dispatcher and SASL
 * (session.h), driven through session_command() over a socketpair, and
 * the summary line a session ends with.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "mbox.h"
#include "session.h"
#include "testutil.h"

/* ---- session_parse -------------------------------------------------- */

static int
parse(char *line, struct pop3_cmdline *cl)
{
	return session_parse(line, strlen(line), cl);
}

static void
test_parse_keyword_only(void **state)
{
	struct pop3_cmdline	 cl;
	char			 l1[] = "STAT", l2[] = "";

	(void)state;
	assert_int_equal(parse(l1, &cl), 0);
	assert_string_equal(cl.keyword, "STAT");
	assert_int_equal(cl.argc, 0);
	assert_null(cl.rest);
	assert_int_equal(parse(l2, &cl), 0);
	assert_string_equal(cl.keyword, "");
	assert_int_equal(cl.argc, 0);
	assert_null(cl.rest);
}

static void
test_parse_args(void **state)
{
	struct pop3_cmdline	 cl;
	char			 l1[] = "LIST 1", l2[] = "TOP 12 0",
				 l3[] = "PASS a b  c";

	(void)state;
	assert_int_equal(parse(l1, &cl), 0);
	assert_string_equal(cl.keyword, "LIST");
	assert_int_equal(cl.argc, 1);
	assert_string_equal(cl.argv[0], "1");
	assert_ptr_equal(cl.rest, l1 + 5);

	assert_int_equal(parse(l2, &cl), 0);
	assert_string_equal(cl.keyword, "TOP");
	assert_int_equal(cl.argc, 2);
	assert_string_equal(cl.argv[0], "12");
	assert_string_equal(cl.argv[1], "0");
	assert_ptr_equal(cl.rest, l2 + 4);

	/* rest starts after "KEYWORD "; the caller rejoins it for PASS. */
	assert_int_equal(parse(l3, &cl), 0);
	assert_string_equal(cl.keyword, "PASS");
	assert_ptr_equal(cl.rest, l3 + 5);
	assert_int_equal(cl.argc, 3);	/* "a", "b", "", "c": too many */
}

/* Single spaces separate arguments; empty arguments count. */
static void
test_parse_empty_args(void **state)
{
	struct pop3_cmdline	 cl;
	char			 l1[] = "LIST ", l2[] = "LIST  ",
				 l3[] = "LIST  1", l4[] = "LIST 1 ",
				 l5[] = " LIST";

	(void)state;
	assert_int_equal(parse(l1, &cl), 0);
	assert_string_equal(cl.keyword, "LIST");
	assert_int_equal(cl.argc, 1);
	assert_string_equal(cl.argv[0], "");
	assert_string_equal(cl.rest, "");

	assert_int_equal(parse(l2, &cl), 0);
	assert_int_equal(cl.argc, 2);
	assert_string_equal(cl.argv[0], "");
	assert_string_equal(cl.argv[1], "");

	assert_int_equal(parse(l3, &cl), 0);
	assert_int_equal(cl.argc, 2);
	assert_string_equal(cl.argv[0], "");
	assert_string_equal(cl.argv[1], "1");

	assert_int_equal(parse(l4, &cl), 0);
	assert_int_equal(cl.argc, 2);
	assert_string_equal(cl.argv[0], "1");
	assert_string_equal(cl.argv[1], "");

	assert_int_equal(parse(l5, &cl), 0);
	assert_string_equal(cl.keyword, "");
	assert_int_equal(cl.argc, 1);
	assert_string_equal(cl.argv[0], "LIST");
}

static void
test_parse_too_many(void **state)
{
	struct pop3_cmdline	 cl;
	char			 l1[] = "TOP 1 2 3", l2[] = "X a b c d e",
				 l3[] = "X   ";

	(void)state;
	assert_int_equal(parse(l1, &cl), 0);
	assert_int_equal(cl.argc, POP3_ARGS_MAX + 1);
	assert_string_equal(cl.argv[0], "1");
	assert_string_equal(cl.argv[1], "2");
	assert_int_equal(parse(l2, &cl), 0);
	assert_int_equal(cl.argc, POP3_ARGS_MAX + 1);
	assert_int_equal(parse(l3, &cl), 0);
	assert_int_equal(cl.argc, POP3_ARGS_MAX + 1);
}

static void
test_parse_bad_bytes(void **state)
{
	struct pop3_cmdline	 cl;
	char			 l1[] = "NO\0OP", l2[] = "NOOP\r",
				 l3[] = "LI\rST 1", l4[] = "PASS a\0b",
				 l5[] = "\0";

	(void)state;
	assert_int_equal(session_parse(l1, 5, &cl), -1);
	assert_int_equal(session_parse(l2, 5, &cl), -1);
	assert_int_equal(session_parse(l3, 7, &cl), -1);
	assert_int_equal(session_parse(l4, 8, &cl), -1);
	assert_int_equal(session_parse(l5, 1, &cl), -1);
}

/* ---- session_parse_number ------------------------------------------- */

static void
expect_number(const char *s, uint64_t max, uint64_t want)
{
	uint64_t	 n = 12345;

	if (session_parse_number(s, max, &n) != 0)
		fail_msg("\"%s\" (max %llu) was refused", s,
		    (unsigned long long)max);
	assert_int_equal(n, want);
}

static void
expect_no_number(const char *s, uint64_t max)
{
	uint64_t	 n = 12345;

	if (session_parse_number(s, max, &n) != -1)
		fail_msg("\"%s\" (max %llu) was accepted as %llu", s,
		    (unsigned long long)max, (unsigned long long)n);
}

static void
test_number_valid(void **state)
{
	(void)state;
	expect_number("0", UINT64_MAX, 0);
	expect_number("1", UINT64_MAX, 1);
	expect_number("007", UINT64_MAX, 7);
	expect_number("0000000000000000000000000000042", UINT64_MAX, 42);
	expect_number("4294967297", UINT64_MAX, 4294967297ULL);
	expect_number("18446744073709551615", UINT64_MAX, UINT64_MAX);
	expect_number("9223372036854775807", INT64_MAX, INT64_MAX);
	expect_number("86400", 86400, 86400);
	expect_number("10", 10, 10);
	expect_number("99", 99, 99);
}

static void
test_number_invalid(void **state)
{
	static const char *const bad[] = { "", "+1", "-1", " 1", "1 ",
	    "1a", "a1", "0x1", "1.0", "1e3", "\t1", "1\n", "١",
	    "123456789012345678901234567890", "18446744073709551616",
	    "99999999999999999999", NULL };
	size_t	 i;

	(void)state;
	for (i = 0; bad[i] != NULL; i++)
		expect_no_number(bad[i], UINT64_MAX);
	expect_no_number("9223372036854775808", INT64_MAX);
	expect_no_number("86401", 86400);
	expect_no_number("100000", 86400);
	expect_no_number("11", 10);
	expect_no_number("100", 99);
}

/*
 * Product bug (session.c, session_parse_number): "(max - digit) / 10"
 * wraps around when a digit is larger than max, so with max < 9 numbers
 * above max are accepted.  The header promises "at most max".
 */
static void
test_number_small_max(void **state)
{
	(void)state;
	expect_number("5", 5, 5);
	expect_no_number("6", 5);
	expect_no_number("1", 0);
	expect_no_number("9", 0);
	expect_no_number("17", 5);
}

/* ---- the reply tables ----------------------------------------------- */

static void
test_result_text(void **state)
{
	int	 i;

	(void)state;
	for (i = 0; i < CMD_RESULT_MAX; i++) {
		assert_non_null(cmd_result_text[i]);
		if (i != CMD_OK && i != CMD_ERR_MAILDROP)
			assert_true(strlen(cmd_result_text[i]) > 0);
	}
	for (i = 0; i < MAILDROP_STATUS_MAX; i++)
		assert_non_null(maildrop_status_text[i]);
}

/* ---- the dispatcher -------------------------------------------------- */

struct fake_auth {
	enum auth_status	 result;
	int			 calls;
	struct auth_request	 last;
};

static enum auth_status
fake_authenticate(void *arg, struct auth_request *req)
{
	struct fake_auth	*fa = arg;

	fa->calls++;
	fa->last = *req;
	return fa->result;
}

struct conn {
	int			 sv[2];
	struct io		*io;
	struct session		 s;
	struct fake_auth	 auth;
	struct maildrop		*mb;
	int			 mb_fd;
	char			*out;	/* the last reply */
	size_t			 out_len;
	char			*dir;	/* scratch directory, if any */
	char			*path;
};

static int
conn_setup(void **state)
{
	struct conn	*c = calloc(1, sizeof(*c));

	assert_non_null(c);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
	    c->sv), 0);
	c->io = io_new(c->sv[0], c->sv[0], 5);
	assert_non_null(c->io);
	c->mb_fd = -1;
	session_init(&c->s, c->io, fake_authenticate, &c->auth);
	assert_int_equal(c->s.state, STATE_AUTHORIZATION);
	assert_int_equal(c->s.end, END_NONE);
	*state = c;
	return 0;
}

static int
conn_teardown(void **state)
{
	struct conn	*c = *state;

	if (c->mb != NULL)
		maildrop_close(c->mb);
	if (c->mb_fd != -1)
		close(c->mb_fd);
	if (c->path != NULL) {
		char	*j;

		(void)unlink(c->path);
		if (asprintf(&j, "%s.pop3d-journal", c->path) != -1) {
			(void)unlink(j);
			free(j);
		}
		free(c->path);
	}
	if (c->dir != NULL) {
		(void)rmdir(c->dir);
		free(c->dir);
	}
	io_free(c->io);
	close(c->sv[0]);
	close(c->sv[1]);
	free(c->out);
	free(c);
	return 0;
}

/* Everything sent so far. */
static void
conn_read(struct conn *c)
{
	free(c->out);
	c->out = tu_drain(c->sv[1], &c->out_len);
}

/* Runs one command line (no terminator); returns the reply. */
static const char *
cmd_len(struct conn *c, const char *line, size_t len)
{
	char	 buf[POP3_LINE_MAX + 1];

	assert_true(len < sizeof(buf));
	memcpy(buf, line, len);
	buf[len] = '\0';
	session_command(&c->s, buf, len);
	assert_int_equal(io_flush(c->io), IO_OK);
	conn_read(c);
	return c->out;
}

static const char *
cmd(struct conn *c, const char *line)
{
	return cmd_len(c, line, strlen(line));
}

#define EXPECT(c, line, reply) do {					\
	const char *got_ = cmd((c), (line));				\
	if (strcmp(got_, (reply)) != 0)					\
		fail_msg("%s: got \"%s\", want \"%s\"", (line), got_,	\
		    (reply));						\
} while (0)

#define ERR_STATE	"-ERR Command not valid in this state\r\n"
#define ERR_SYNTAX	"-ERR Syntax error in arguments\r\n"
#define ERR_UNKNOWN	"-ERR Unknown command\r\n"
#define ERR_NUMBER	"-ERR Invalid message number\r\n"
#define ERR_NOMSG	"-ERR No such message\r\n"
#define ERR_DELETED	"-ERR Message is deleted\r\n"
#define ERR_AUTH	"-ERR [AUTH] Authentication failed\r\n"
#define ERR_AUTH_LAST	"-ERR [AUTH] Authentication failed; too many " \
			"failures, closing\r\n"
#define ERR_AUTH_TEMP	"-ERR [SYS/TEMP] Authentication is unavailable, " \
			"try again later\r\n"
#define CAPA_REPLY	"+OK Capability list follows\r\n" \
			"TOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n" \
			"AUTH-RESP-CODE\r\nPIPELINING\r\n" \
			"SASL PLAIN LOGIN\r\nIMPLEMENTATION pop3d\r\n.\r\n"

static void
test_greet(void **state)
{
	struct conn	*c = *state;

	assert_int_equal(session_greet(&c->s, "pop3d ready"), 0);
	conn_read(c);
	assert_string_equal(c->out, "+OK pop3d ready\r\n");
}

static void
test_capa(void **state)
{
	struct conn	*c = *state;

	EXPECT(c, "CAPA", CAPA_REPLY);
	EXPECT(c, "capa", CAPA_REPLY);
	EXPECT(c, "CAPA x", ERR_SYNTAX);
	assert_int_equal(c->s.end, END_NONE);
}

static void
test_user_pass_ok(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_OK;
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	/* Accepted: no reply yet, it waits for the maildrop. */
	EXPECT(c, "PASS a b  c", "");
	assert_int_equal(c->s.end, END_LOGIN);
	assert_int_equal(c->auth.calls, 1);
	assert_int_equal(c->auth.last.kind, AUTH_KIND_PASS);
	assert_string_equal(c->auth.last.user, "alice");
	assert_string_equal(c->auth.last.pass, "a b  c");
}

static void
test_pass_edge_values(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_FAIL;
	EXPECT(c, "USER bob", "+OK Send your password\r\n");
	EXPECT(c, "PASS  lead and trail ", ERR_AUTH);
	assert_string_equal(c->auth.last.pass, " lead and trail ");
	EXPECT(c, "USER bob", "+OK Send your password\r\n");
	EXPECT(c, "PASS ", ERR_AUTH);
	assert_string_equal(c->auth.last.pass, "");
	assert_int_equal(c->auth.calls, 2);
	/* "PASS" without an argument is a syntax error, not a try. */
	EXPECT(c, "USER bob", "+OK Send your password\r\n");
	EXPECT(c, "PASS", ERR_SYNTAX);
	assert_int_equal(c->auth.calls, 2);
}

static void
test_pass_fail_three_times(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_FAIL;
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	EXPECT(c, "PASS wrong", ERR_AUTH);
	assert_int_equal(c->s.end, END_NONE);
	/* A failure forgets the user. */
	EXPECT(c, "PASS wrong", "-ERR USER first\r\n");
	assert_int_equal(c->auth.calls, 1);
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	EXPECT(c, "PASS wrong", ERR_AUTH);
	assert_int_equal(c->s.end, END_NONE);
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	EXPECT(c, "PASS wrong", ERR_AUTH_LAST);
	assert_int_equal(c->s.end, END_AUTHFAIL);
	assert_int_equal(c->auth.calls, 3);
}

static void
test_pass_tempfail(void **state)
{
	struct conn	*c = *state;
	int		 i;

	c->auth.result = AUTH_TEMPFAIL;
	for (i = 0; i < AUTH_MAX_TEMPFAILS - 1; i++) {
		EXPECT(c, "USER alice", "+OK Send your password\r\n");
		EXPECT(c, "PASS x", ERR_AUTH_TEMP);
		assert_int_equal(c->s.end, END_NONE);
	}
	/* Temporary failures are not wrong passwords. */
	assert_int_equal(c->s.tally.fails, 0);
	c->auth.result = AUTH_OK;
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	EXPECT(c, "PASS x", "");
	assert_int_equal(c->s.end, END_LOGIN);
}

/* The monitor answers no more checks than this: the session stops first. */
static void
test_pass_tempfail_limit(void **state)
{
	struct conn	*c = *state;
	int		 i;

	c->auth.result = AUTH_TEMPFAIL;
	for (i = 0; i < AUTH_MAX_TEMPFAILS - 1; i++) {
		EXPECT(c, "USER alice", "+OK Send your password\r\n");
		EXPECT(c, "PASS x", ERR_AUTH_TEMP);
	}
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	EXPECT(c, "PASS x", "-ERR [SYS/TEMP] Authentication is unavailable, "
	    "try again later; closing\r\n");
	assert_int_equal(c->s.end, END_TEMPFAIL);
	assert_int_equal(c->auth.calls, AUTH_MAX_TEMPFAILS);
}

static void
test_pass_without_user(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_OK;
	EXPECT(c, "PASS secret", "-ERR USER first\r\n");
	assert_int_equal(c->auth.calls, 0);
	assert_int_equal(c->s.end, END_NONE);
}

static void
test_user_syntax(void **state)
{
	struct conn	*c = *state;

	EXPECT(c, "USER", ERR_SYNTAX);
	EXPECT(c, "USER a b", ERR_SYNTAX);
	EXPECT(c, "USER ", "-ERR Invalid user name\r\n");
	EXPECT(c, "USER a\x01", "-ERR Invalid user name\r\n");
	EXPECT(c, "USER a\x7f", "-ERR Invalid user name\r\n");
	/* A bad USER forgets an earlier good one. */
	EXPECT(c, "USER good", "+OK Send your password\r\n");
	EXPECT(c, "USER ", "-ERR Invalid user name\r\n");
	EXPECT(c, "PASS x", "-ERR USER first\r\n");
	assert_int_equal(c->auth.calls, 0);
}

static void
test_keywords_case_insensitive(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_OK;
	EXPECT(c, "uSeR alice", "+OK Send your password\r\n");
	EXPECT(c, "pass Secret", "");
	assert_int_equal(c->s.end, END_LOGIN);
	assert_string_equal(c->auth.last.pass, "Secret");
}

static void
test_unknown(void **state)
{
	struct conn	*c = *state;

	EXPECT(c, "FOO", ERR_UNKNOWN);
	EXPECT(c, "FOO bar baz qux", ERR_UNKNOWN);
	EXPECT(c, "", ERR_UNKNOWN);
	EXPECT(c, " USER a", ERR_UNKNOWN);
	EXPECT(c, "USERX a", ERR_UNKNOWN);
	EXPECT(c, "APOP a b", "-ERR APOP is not enabled\r\n");
	assert_int_equal(c->s.end, END_NONE);
}

static void
test_bad_bytes(void **state)
{
	struct conn	*c = *state;
	const char	*r;

	r = cmd_len(c, "NO\0OP", 5);
	assert_string_equal(r, "-ERR Invalid characters in command\r\n");
	r = cmd_len(c, "CAPA\r", 5);
	assert_string_equal(r, "-ERR Invalid characters in command\r\n");
	c->auth.result = AUTH_OK;
	EXPECT(c, "USER alice", "+OK Send your password\r\n");
	r = cmd_len(c, "PASS a\0b", 8);
	assert_string_equal(r, "-ERR Invalid characters in command\r\n");
	assert_int_equal(c->auth.calls, 0);
}

static void
test_transaction_cmds_in_authorization(void **state)
{
	static const char *const lines[] = { "STAT", "LIST", "LIST 1",
	    "UIDL", "UIDL 1", "RETR 1", "TOP 1 1", "DELE 1", "NOOP", "RSET",
	    "stat", "retr", NULL };
	struct conn	*c = *state;
	size_t		 i;

	for (i = 0; lines[i] != NULL; i++)
		EXPECT(c, lines[i], ERR_STATE);
	assert_int_equal(c->s.end, END_NONE);
}

static void
test_quit_authorization(void **state)
{
	struct conn	*c = *state;

	EXPECT(c, "QUIT x", ERR_SYNTAX);
	EXPECT(c, "quit", "+OK pop3d signing off\r\n");
	assert_int_equal(c->s.end, END_QUIT);
}

/* ---- TRANSACTION ---------------------------------------------------- */

struct msgs {
	size_t	 n;
	char	*eml[8];
	size_t	 len[8];
	uint64_t total;
};

static void
load_expect(const char *name, struct msgs *m)
{
	char	*p;

	memset(m, 0, sizeof(*m));
	for (;;) {
		if (asprintf(&p, "%s/%s.expect/%zu.eml", tu_fixtures_dir(),
		    name, m->n + 1) == -1)
			abort();
		m->eml[m->n] = tu_read_file(p, &m->len[m->n]);
		free(p);
		if (m->eml[m->n] == NULL)
			break;
		m->total += m->len[m->n];
		if (++m->n == 8)
			break;
	}
}

static void
free_msgs(struct msgs *m)
{
	size_t	 i;

	for (i = 0; i < m->n; i++)
		free(m->eml[i]);
}

/* Puts the session in TRANSACTION over the fixture name (parsed by fd). */
static void
enter_transaction(struct conn *c, const char *name)
{
	char	*p;

	if (asprintf(&p, "%s/%s.mbox", tu_fixtures_dir(), name) == -1)
		abort();
	c->mb_fd = open(p, O_RDONLY | O_CLOEXEC);
	if (c->mb_fd == -1)
		fail_msg("open %s: %s", p, strerror(errno));
	free(p);
	assert_int_equal(mbox_parse_fd(c->mb_fd, &c->mb), MAILDROP_OK);
	c->s.state = STATE_TRANSACTION;
	c->s.maildrop = c->mb;
	c->s.login = "test";
}

static char *
fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));

static char *
fmt(const char *f, ...)
{
	static char	 buf[8][1024];
	static int	 k;
	va_list		 ap;
	char		*b = buf[k++ % 8];

	va_start(ap, f);
	(void)vsnprintf(b, sizeof(buf[0]), f, ap);
	va_end(ap);
	return b;
}

static void
expect_multiline(struct conn *c, const char *line, const char *first,
    const char *msg, size_t msg_len)
{
	char	*stuffed;
	size_t	 slen, flen = strlen(first);

	stuffed = tu_stuff(msg, msg_len, &slen);
	cmd(c, line);
	if (c->out_len != flen + slen || memcmp(c->out, first, flen) != 0 ||
	    memcmp(c->out + flen, stuffed, slen) != 0)
		fail_msg("%s: wrong reply (%zu bytes, want %zu)", line,
		    c->out_len, flen + slen);
	free(stuffed);
}

static void
test_stat_list(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;

	load_expect("simple", &m);
	assert_int_equal(m.n, 3);
	enter_transaction(c, "simple");
	EXPECT(c, "STAT", fmt("+OK 3 %llu\r\n", (unsigned long long)m.total));
	EXPECT(c, "LIST", fmt("+OK 3 messages (%llu octets)\r\n"
	    "1 %zu\r\n2 %zu\r\n3 %zu\r\n.\r\n", (unsigned long long)m.total,
	    m.len[0], m.len[1], m.len[2]));
	EXPECT(c, "LIST 1", fmt("+OK 1 %zu\r\n", m.len[0]));
	EXPECT(c, "list 3", fmt("+OK 3 %zu\r\n", m.len[2]));
	EXPECT(c, "CAPA", CAPA_REPLY);
	free_msgs(&m);
}

static void
test_uidl(void **state)
{
	struct conn	*c = *state;
	char		 u[3][MAILDROP_UIDL_MAX];
	size_t		 i;

	enter_transaction(c, "simple");
	for (i = 0; i < 3; i++)
		maildrop_uidl(c->mb, i, u[i]);
	EXPECT(c, "UIDL", fmt("+OK Unique-ID listing follows\r\n"
	    "1 %s\r\n2 %s\r\n3 %s\r\n.\r\n", u[0], u[1], u[2]));
	EXPECT(c, "UIDL 2", fmt("+OK 2 %s\r\n", u[1]));
	EXPECT(c, "UIDL 0", ERR_NOMSG);
	EXPECT(c, "UIDL 4", ERR_NOMSG);
	EXPECT(c, "UIDL x", ERR_NUMBER);
	EXPECT(c, "UIDL 1 2", ERR_SYNTAX);
}

static void
test_retr_top(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;
	size_t		 i;

	load_expect("simple", &m);
	enter_transaction(c, "simple");
	for (i = 0; i < m.n; i++)
		expect_multiline(c, fmt("RETR %zu", i + 1),
		    fmt("+OK %zu octets\r\n", m.len[i]), m.eml[i], m.len[i]);
	/* TOP 1 n: the header, the empty line, n body lines. */
	expect_multiline(c, "TOP 1 0", "+OK Top of message follows\r\n",
	    m.eml[0], tu_top_len(m.eml[0], m.len[0], 0));
	expect_multiline(c, "TOP 1 1", "+OK Top of message follows\r\n",
	    m.eml[0], tu_top_len(m.eml[0], m.len[0], 1));
	expect_multiline(c, "TOP 1 2", "+OK Top of message follows\r\n",
	    m.eml[0], tu_top_len(m.eml[0], m.len[0], 2));
	expect_multiline(c, "TOP 1 9223372036854775807",
	    "+OK Top of message follows\r\n", m.eml[0], m.len[0]);
	expect_multiline(c, "top 1 00", "+OK Top of message follows\r\n",
	    m.eml[0], tu_top_len(m.eml[0], m.len[0], 0));
	assert_true(tu_top_len(m.eml[0], m.len[0], 1) <
	    tu_top_len(m.eml[0], m.len[0], 2));
	EXPECT(c, "TOP 1 9223372036854775808", ERR_SYNTAX);
	EXPECT(c, "TOP 1 -1", ERR_SYNTAX);
	EXPECT(c, "TOP 1 x", ERR_SYNTAX);
	EXPECT(c, "TOP 1 ", ERR_SYNTAX);
	EXPECT(c, "TOP 0 1", ERR_NOMSG);
	EXPECT(c, "TOP 4 1", ERR_NOMSG);
	EXPECT(c, "TOP x 1", ERR_NUMBER);
	free_msgs(&m);
}

/* RETR stuffs dots on the wire. */
static void
test_retr_dots(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;

	load_expect("dots", &m);
	assert_int_equal(m.n, 2);
	enter_transaction(c, "dots");
	expect_multiline(c, "RETR 1", fmt("+OK %zu octets\r\n", m.len[0]),
	    m.eml[0], m.len[0]);
	assert_non_null(strstr(c->out, "\r\n...\r\n"));
	expect_multiline(c, "RETR 2", fmt("+OK %zu octets\r\n", m.len[1]),
	    m.eml[1], m.len[1]);
	assert_non_null(strstr(c->out, "\r\n..\r\n.\r\n"));
	free_msgs(&m);
}

static void
test_dele_rset(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;

	load_expect("simple", &m);
	enter_transaction(c, "simple");
	EXPECT(c, "DELE 2", "+OK Message 2 deleted\r\n");
	assert_true(maildrop_deleted(c->mb, 1));
	EXPECT(c, "DELE 2", ERR_DELETED);
	EXPECT(c, "RETR 2", ERR_DELETED);
	EXPECT(c, "TOP 2 0", ERR_DELETED);
	EXPECT(c, "LIST 2", ERR_DELETED);
	EXPECT(c, "UIDL 2", ERR_DELETED);
	EXPECT(c, "STAT", fmt("+OK 2 %llu\r\n",
	    (unsigned long long)(m.total - m.len[1])));
	EXPECT(c, "LIST", fmt("+OK 2 messages (%llu octets)\r\n"
	    "1 %zu\r\n3 %zu\r\n.\r\n",
	    (unsigned long long)(m.total - m.len[1]), m.len[0], m.len[2]));
	{
		char	 u1[MAILDROP_UIDL_MAX], u3[MAILDROP_UIDL_MAX];

		maildrop_uidl(c->mb, 0, u1);
		maildrop_uidl(c->mb, 2, u3);
		EXPECT(c, "UIDL", fmt("+OK Unique-ID listing follows\r\n"
		    "1 %s\r\n3 %s\r\n.\r\n", u1, u3));
	}
	EXPECT(c, "DELE 1", "+OK Message 1 deleted\r\n");
	EXPECT(c, "DELE 3", "+OK Message 3 deleted\r\n");
	EXPECT(c, "STAT", "+OK 0 0\r\n");
	EXPECT(c, "LIST", "+OK 0 messages (0 octets)\r\n.\r\n");
	EXPECT(c, "RSET x", ERR_SYNTAX);
	EXPECT(c, "RSET", fmt("+OK Maildrop has 3 messages (%llu octets)\r\n",
	    (unsigned long long)m.total));
	assert_false(maildrop_deleted(c->mb, 0));
	assert_false(maildrop_deleted(c->mb, 1));
	assert_false(maildrop_deleted(c->mb, 2));
	expect_multiline(c, "RETR 2", fmt("+OK %zu octets\r\n", m.len[1]),
	    m.eml[1], m.len[1]);
	free_msgs(&m);
}

static void
test_noop(void **state)
{
	struct conn	*c = *state;

	enter_transaction(c, "simple");
	EXPECT(c, "NOOP", "+OK\r\n");
	EXPECT(c, "noop", "+OK\r\n");
	EXPECT(c, "NOOP x", ERR_SYNTAX);
	EXPECT(c, "NOOP ", ERR_SYNTAX);
}

static void
test_numbers(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;

	load_expect("simple", &m);
	enter_transaction(c, "simple");
	EXPECT(c, "LIST 0", ERR_NOMSG);
	EXPECT(c, "LIST 4", ERR_NOMSG);
	EXPECT(c, "LIST 4294967297", ERR_NOMSG);
	EXPECT(c, "LIST 18446744073709551617", ERR_NUMBER);
	EXPECT(c, "LIST 18446744073709551615", ERR_NOMSG);
	EXPECT(c, "LIST 99999999999999999999999999999", ERR_NUMBER);
	EXPECT(c, "LIST 1 ", ERR_SYNTAX);
	EXPECT(c, "LIST  1", ERR_SYNTAX);
	EXPECT(c, "LIST +1", ERR_NUMBER);
	EXPECT(c, "LIST -1", ERR_NUMBER);
	EXPECT(c, "LIST 1a", ERR_NUMBER);
	EXPECT(c, "LIST 0x1", ERR_NUMBER);
	EXPECT(c, "LIST ", ERR_NUMBER);
	EXPECT(c, "LIST 01", fmt("+OK 1 %zu\r\n", m.len[0]));
	EXPECT(c, "LIST 003", fmt("+OK 3 %zu\r\n", m.len[2]));
	EXPECT(c, "RETR 0", ERR_NOMSG);
	EXPECT(c, "RETR +1", ERR_NUMBER);
	EXPECT(c, "RETR 1 ", ERR_SYNTAX);
	EXPECT(c, "DELE 0", ERR_NOMSG);
	EXPECT(c, "DELE 4", ERR_NOMSG);
	EXPECT(c, "DELE -1", ERR_NUMBER);
	EXPECT(c, "DELE 01", "+OK Message 1 deleted\r\n");
	EXPECT(c, "DELE 1", ERR_DELETED);
	free_msgs(&m);
}

static void
test_arity(void **state)
{
	static const char *const bad[] = { "STAT 1", "STAT ", "LIST 1 2",
	    "UIDL 1 2", "RETR", "RETR 1 2", "TOP", "TOP 1", "TOP 1 2 3",
	    "DELE", "DELE 1 2", "RSET 1", "QUIT 1", "CAPA 1", NULL };
	struct conn	*c = *state;
	size_t		 i;

	enter_transaction(c, "simple");
	for (i = 0; bad[i] != NULL; i++)
		EXPECT(c, bad[i], ERR_SYNTAX);
	assert_int_equal(c->s.end, END_NONE);
	assert_false(maildrop_deleted(c->mb, 0));
}

static void
test_authorization_cmds_in_transaction(void **state)
{
	struct conn	*c = *state;

	enter_transaction(c, "simple");
	EXPECT(c, "USER alice", ERR_STATE);
	EXPECT(c, "PASS x", ERR_STATE);
	EXPECT(c, "pass", ERR_STATE);
	EXPECT(c, "FOO", ERR_UNKNOWN);
	assert_int_equal(c->auth.calls, 0);
}

static void
test_quit_nothing_deleted(void **state)
{
	struct conn	*c = *state;

	enter_transaction(c, "simple");
	EXPECT(c, "QUIT", "+OK pop3d signing off (3 messages left)\r\n");
	assert_int_equal(c->s.end, END_QUIT);
}

/* mbox_parse_fd() maildrops cannot be written: QUIT reports it. */
static void
test_quit_readonly(void **state)
{
	struct conn	*c = *state;

	enter_transaction(c, "simple");
	EXPECT(c, "DELE 1", "+OK Message 1 deleted\r\n");
	EXPECT(c, "QUIT", "-ERR [SYS/PERM] Mailbox is read-only\r\n");
	assert_int_equal(c->s.end, END_QUIT);
}

/* QUIT in TRANSACTION commits the deletions (a real maildrop_open). */
static void
test_quit_commits(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;
	char		*src, *got, *want;
	size_t		 src_len, got_len;

	load_expect("simple", &m);
	src = tu_read_file(fmt("%s/simple.mbox", tu_fixtures_dir()),
	    &src_len);
	assert_non_null(src);
	c->dir = tu_mkdtemp();
	if (asprintf(&c->path, "%s/mbox", c->dir) == -1)
		abort();
	assert_int_equal(tu_write_file(c->path, src, src_len), 0);
	assert_int_equal(maildrop_open(c->path, c->dir, NULL, &c->mb), MAILDROP_OK);
	c->s.state = STATE_TRANSACTION;
	c->s.maildrop = c->mb;
	c->s.login = "test";
	EXPECT(c, "DELE 1", "+OK Message 1 deleted\r\n");
	EXPECT(c, "QUIT", "+OK pop3d signing off (2 messages left)\r\n");
	assert_int_equal(c->s.end, END_QUIT);
	/* The first message went, From_ line and framing included. */
	got = tu_read_file(c->path, &got_len);
	assert_non_null(got);
	want = strstr(src, "\n\nFrom carol@example.org ");
	assert_non_null(want);
	want += 2;
	assert_int_equal(got_len, src_len - (size_t)(want - src));
	assert_memory_equal(got, want, got_len);
	free(got);
	free(src);
	free_msgs(&m);
}

/* ---- the loops -------------------------------------------------------- */

static void
peer_send(struct conn *c, const void *buf, size_t len)
{
	assert_int_equal(write(c->sv[1], buf, len), (ssize_t)len);
}

/* Pipelined input after PASS stays buffered for the next stage. */
static void
test_authorization_pipelined(void **state)
{
	static const char in[] = "CAPA\r\nUSER alice\r\nPASS pw\r\n"
	    "STAT\r\nLIST\r\n";
	struct conn	*c = *state;
	const void	*pend;
	size_t		 n;

	c->auth.result = AUTH_OK;
	peer_send(c, in, sizeof(in) - 1);
	assert_int_equal(session_authorization(&c->s), END_LOGIN);
	assert_int_equal(io_flush(c->io), IO_OK);
	conn_read(c);
	assert_string_equal(c->out, CAPA_REPLY "+OK Send your password\r\n");
	n = io_pending(c->io, &pend);
	assert_int_equal(n, 12);
	assert_memory_equal(pend, "STAT\r\nLIST\r\n", 12);
	assert_string_equal(c->auth.last.pass, "pw");
}

static void
test_authorization_loop_ends(void **state)
{
	struct conn	*c = *state;
	char		 longline[400];

	memset(longline, 'A', sizeof(longline));
	memcpy(longline + sizeof(longline) - 2, "\r\n", 2);
	peer_send(c, longline, sizeof(longline));
	peer_send(c, "NOOP\r\nbare lf\n", 14);
	assert_int_equal(shutdown(c->sv[1], SHUT_WR), 0);
	assert_int_equal(session_authorization(&c->s), END_EOF);
	assert_int_equal(io_flush(c->io), IO_OK);
	conn_read(c);
	assert_string_equal(c->out, "-ERR Line too long\r\n" ERR_STATE
	    ERR_UNKNOWN);
}

static void
test_authorization_fails(void **state)
{
	struct conn	*c = *state;
	static const char in[] = "USER a\r\nPASS 1\r\nUSER a\r\nPASS 2\r\n"
	    "USER a\r\nPASS 3\r\nNOOP\r\n";

	c->auth.result = AUTH_FAIL;
	peer_send(c, in, sizeof(in) - 1);
	assert_int_equal(session_authorization(&c->s), END_AUTHFAIL);
	conn_read(c);
	assert_string_equal(c->out, "+OK Send your password\r\n" ERR_AUTH
	    "+OK Send your password\r\n" ERR_AUTH
	    "+OK Send your password\r\n" ERR_AUTH_LAST);
}

static void
test_transaction_loop(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;
	char		*p;
	int		 fd;
	struct maildrop	*mb;

	load_expect("simple", &m);
	if (asprintf(&p, "%s/simple.mbox", tu_fixtures_dir()) == -1)
		abort();
	c->mb_fd = fd = open(p, O_RDONLY | O_CLOEXEC);
	free(p);
	assert_true(fd >= 0);
	assert_int_equal(mbox_parse_fd(fd, &mb), MAILDROP_OK);
	c->mb = mb;
	peer_send(c, "STAT\r\nQUIT\r\n", 12);
	assert_int_equal(session_transaction(&c->s, "test", mb, MAILDROP_OK),
	    END_QUIT);
	conn_read(c);
	assert_string_equal(c->out, fmt("+OK Maildrop has 3 messages "
	    "(%llu octets)\r\n+OK 3 %llu\r\n"
	    "+OK pop3d signing off (3 messages left)\r\n",
	    (unsigned long long)m.total, (unsigned long long)m.total));
	free_msgs(&m);
}

static void
test_transaction_open_failed(void **state)
{
	struct conn	*c = *state;

	assert_int_equal(session_transaction(&c->s, "test", NULL,
	    MAILDROP_LOCKED), END_IOERR);
	conn_read(c);
	assert_string_equal(c->out, "-ERR [SYS/TEMP] Mailbox is locked by "
	    "another program\r\n");
}

/* ---- SASL: the mechanism list, PLAIN and LOGIN ----------------------- */

#define ERR_SASL_BAD	"-ERR [AUTH] Invalid SASL response\r\n"
#define ERR_CANCEL	"-ERR Authentication cancelled\r\n"
#define ERR_CLEARTEXT	"-ERR [AUTH] Cleartext logins are refused on this " \
			"connection; use TLS (port 995)\r\n"
#define ASK_USER	"+ VXNlcm5hbWU6\r\n"	/* "Username:" */
#define ASK_PASS	"+ UGFzc3dvcmQ6\r\n"	/* "Password:" */

/* Queues the client's continuation lines, then runs the AUTH command. */
static const char *
auth_cmd(struct conn *c, const char *line, const char *cont)
{
	if (cont != NULL)
		assert_int_equal(write(c->sv[1], cont, strlen(cont)),
		    (ssize_t)strlen(cont));
	return cmd(c, line);
}

#define EXPECT_AUTH(c, line, cont, reply) do {				\
	const char *got_ = auth_cmd((c), (line), (cont));		\
	if (strcmp(got_, (reply)) != 0)					\
		fail_msg("%s: got \"%s\", want \"%s\"", (line), got_,	\
		    (reply));						\
} while (0)

static void
test_auth_mechanisms(void **state)
{
	struct conn	*c = *state;

	EXPECT(c, "AUTH", "+OK Methods follow\r\nPLAIN\r\nLOGIN\r\n.\r\n");
	EXPECT(c, "AUTH CRAM-MD5", "-ERR Unsupported authentication "
	    "mechanism\r\n");
	EXPECT(c, "AUTH LOGINX", "-ERR Unsupported authentication "
	    "mechanism\r\n");
	assert_int_equal(c->auth.calls, 0);
}

static void
test_auth_login_ok(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_OK;
	/* base64 "alice", then "pass word". */
	EXPECT_AUTH(c, "AUTH LOGIN", "YWxpY2U=\r\ncGFzcyB3b3Jk\r\n",
	    ASK_USER ASK_PASS);
	assert_int_equal(c->s.end, END_LOGIN);
	assert_int_equal(c->auth.calls, 1);
	assert_int_equal(c->auth.last.kind, AUTH_KIND_PASS);
	assert_string_equal(c->auth.last.user, "alice");
	assert_string_equal(c->auth.last.pass, "pass word");
}

/* The initial response is the user name: only the password is asked. */
static void
test_auth_login_initial(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_OK;
	EXPECT_AUTH(c, "auth login YWxpY2U=", "c2VjcmV0\r\n", ASK_PASS);
	assert_int_equal(c->s.end, END_LOGIN);
	assert_string_equal(c->auth.last.user, "alice");
	assert_string_equal(c->auth.last.pass, "secret");
}

static void
test_auth_login_bad(void **state)
{
	struct conn	*c = *state;
	char		 line[400];
	int		 i;

	c->auth.result = AUTH_OK;
	/* "*" cancels at either prompt. */
	EXPECT_AUTH(c, "AUTH LOGIN", "*\r\n", ASK_USER ERR_CANCEL);
	EXPECT_AUTH(c, "AUTH LOGIN", "YWxpY2U=\r\n*\r\n",
	    ASK_USER ASK_PASS ERR_CANCEL);
	EXPECT_AUTH(c, "AUTH LOGIN YWxpY2U=", "*\r\n", ASK_PASS ERR_CANCEL);
	/* An empty name ("="), bad base64, a name with a control byte. */
	EXPECT_AUTH(c, "AUTH LOGIN", "=\r\n", ASK_USER ERR_SASL_BAD);
	EXPECT(c, "AUTH LOGIN =", ERR_SASL_BAD);
	EXPECT(c, "AUTH LOGIN YWxpY2U", ERR_SASL_BAD);
	EXPECT_AUTH(c, "AUTH LOGIN", "!!!!\r\n", ASK_USER ERR_SASL_BAD);
	EXPECT(c, "AUTH LOGIN YQli", ERR_SASL_BAD);		/* "a\tb" */
	/* A password holding a NUL; a NUL on the wire. */
	EXPECT_AUTH(c, "AUTH LOGIN YWxpY2U=", "YQBi\r\n",	/* "a\0b" */
	    ASK_PASS ERR_SASL_BAD);
	peer_send(c, "YWJj\0\r\n", 7);
	EXPECT(c, "AUTH LOGIN YWxpY2U=", ASK_PASS ERR_SASL_BAD);
	/* A name of AUTH_NAME_MAX - 1 octets is the longest. */
	line[0] = '\0';
	for (i = 0; i < 85; i++)
		strcat(line, "YWFh");			/* "aaa" */
	EXPECT_AUTH(c, "AUTH LOGIN", fmt("%sYQ==\r\n", line),
	    ASK_USER ERR_SASL_BAD);			/* 256 octets */
	EXPECT_AUTH(c, "AUTH LOGIN", fmt("%s\r\n*\r\n", line),
	    ASK_USER ASK_PASS ERR_CANCEL);		/* 255 */
	assert_int_equal(c->auth.calls, 0);
	assert_int_equal(c->s.end, END_NONE);
	/* An empty password ("=") is a password, checked like PASS's. */
	c->auth.result = AUTH_FAIL;
	EXPECT_AUTH(c, "AUTH LOGIN YWxpY2U=", "=\r\n", ASK_PASS ERR_AUTH);
	assert_int_equal(c->auth.calls, 1);
	assert_string_equal(c->auth.last.pass, "");
}

/* One failure per exchange, as PASS and PLAIN count them. */
static void
test_auth_login_fails(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_FAIL;
	EXPECT_AUTH(c, "AUTH LOGIN", "YWxpY2U=\r\neA==\r\n",
	    ASK_USER ASK_PASS ERR_AUTH);
	EXPECT_AUTH(c, "AUTH LOGIN YWxpY2U=", "eA==\r\n", ASK_PASS ERR_AUTH);
	assert_int_equal(c->s.end, END_NONE);
	EXPECT_AUTH(c, "AUTH PLAIN", "AGFsaWNlAHg=\r\n", "+ \r\n"
	    ERR_AUTH_LAST);
	assert_int_equal(c->s.end, END_AUTHFAIL);
	assert_int_equal(c->auth.calls, 3);
	assert_int_equal(c->s.tally.fails, 3);
}

static void
test_auth_login_eof(void **state)
{
	struct conn	*c = *state;

	c->auth.result = AUTH_OK;
	assert_int_equal(write(c->sv[1], "YWxpY2U=\r\n", 10), 10);
	assert_int_equal(shutdown(c->sv[1], SHUT_WR), 0);
	EXPECT(c, "AUTH LOGIN", ASK_USER ASK_PASS ERR_CANCEL);
	assert_int_equal(c->s.end, END_EOF);
	assert_int_equal(c->auth.calls, 0);
}

/* -c without protection: LOGIN is refused like PLAIN and USER. */
static void
test_auth_cleartext_refused(void **state)
{
	struct conn	*c = *state;

	c->s.cleartext_ok = 0;
	EXPECT(c, "AUTH", "+OK Methods follow\r\n.\r\n");
	EXPECT(c, "AUTH LOGIN", ERR_CLEARTEXT);
	EXPECT(c, "AUTH LOGIN YWxpY2U=", ERR_CLEARTEXT);
	EXPECT(c, "AUTH PLAIN", ERR_CLEARTEXT);
	EXPECT(c, "CAPA", "+OK Capability list follows\r\nTOP\r\nUIDL\r\n"
	    "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\n"
	    "IMPLEMENTATION pop3d\r\n.\r\n");
	assert_int_equal(c->auth.calls, 0);
}

/* Count of needle in the io's whole input buffer. */
static int
inbuf_has(struct conn *c, const char *needle)
{
	const char	*buf;
	size_t		 size;

	buf = io_inbuf(c->io, &size);
	return memmem(buf, size, needle, strlen(needle)) != NULL;
}

/* No credential line stays in the io's input buffer once it is used. */
static void
test_credentials_wiped(void **state)
{
	static const char in[] = "USER alice\r\nPASS pw-one\r\n"
	    "APOP alice 0123456789abcdef0123456789abcdef\r\n"
	    "AUTH LOGIN YWxpY2U=\r\ncHctdHdv\r\n"	/* "pw-two" */
	    "AUTH PLAIN\r\nAGFsaWNlAHB3LXRocmVl\r\n";	/* "pw-three" */
	struct conn	*c = *state;

	c->auth.result = AUTH_FAIL;
	c->s.apop_stamp = "<1.2@example.org>";
	peer_send(c, in, sizeof(in) - 1);
	peer_send(c, "NOOP\r\n", 6);
	assert_int_equal(session_authorization(&c->s), END_AUTHFAIL);
	assert_int_equal(c->auth.calls, 4 - 1);	/* the third failure ends */
	assert_false(inbuf_has(c, "pw-one"));
	assert_false(inbuf_has(c, "0123456789abcdef"));
	assert_false(inbuf_has(c, "cHctdHdv"));
	assert_false(inbuf_has(c, "PASS"));
	/* What was not read yet is still there. */
	assert_true(inbuf_has(c, "AGFsaWNlAHB3LXRocmVl"));
}

/* ---- the summary line ------------------------------------------------- */

static void
test_escape(void **state)
{
	char	 buf[64], small[8];

	(void)state;
	assert_string_equal(session_escape(buf, sizeof(buf), "alice"),
	    "alice");
	assert_string_equal(session_escape(buf, sizeof(buf),
	    "x from 10.9.9.9"), "x%20from%2010.9.9.9");
	assert_string_equal(session_escape(buf, sizeof(buf),
	    "100%\x7f\xc3\xa9=ok"), "100%25%7F%C3%A9=ok");
	assert_string_equal(session_escape(buf, sizeof(buf), ""), "");
	/* Truncated to fit, never in the middle of an escape. */
	assert_string_equal(session_escape(small, sizeof(small), "ab cde"),
	    "ab%20cd");
	assert_string_equal(session_escape(small, sizeof(small), "abcde f"),
	    "abcde");
}

static void
test_end_names(void **state)
{
	int	 i, j;

	(void)state;
	for (i = 0; i < END_MAX; i++) {
		assert_non_null(session_end_name[i]);
		assert_true(strlen(session_end_name[i]) > 0);
		assert_null(strchr(session_end_name[i], ' '));
		for (j = 0; j < i; j++)
			assert_string_not_equal(session_end_name[i],
			    session_end_name[j]);
	}
}

/* What session_log_summary logs (to stderr, which is captured). */
static char *
summary(struct conn *c, enum session_end end, const char *peer)
{
	char	*out;
	size_t	 len;
	FILE	*f;
	int	 saved;

	assert_non_null(f = tmpfile());
	saved = dup(STDERR_FILENO);
	assert_true(saved != -1);
	fflush(stderr);
	assert_int_equal(dup2(fileno(f), STDERR_FILENO), STDERR_FILENO);
	session_log_summary(&c->s, end, peer);
	fflush(stderr);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	rewind(f);
	out = tu_read_fd(fileno(f), &len);
	fclose(f);
	assert_non_null(out);
	return out;
}

/* The line, its time= replaced by "T", for comparisons. */
static char *
summary_untimed(struct conn *c, enum session_end end, const char *peer)
{
	char	*out = summary(c, end, peer), *t;
	size_t	 n;

	t = strstr(out, " time=");
	assert_non_null(t);
	t += 6;
	n = strspn(t, "0123456789");
	assert_true(n > 0 && t[n] == '.');
	assert_int_equal(strspn(t + n + 1, "0123456789"), 3);
	assert_string_equal(t + n + 4, "s\n");
	strcpy(t, "T\n");
	return out;
}

static void
test_summary_before_login(void **state)
{
	struct conn	*c = *state;
	char		*l;

	l = summary_untimed(c, END_TIMEOUT, "192.0.2.7");
	assert_string_equal(l, "test_session: session end: user=- "
	    "peer=192.0.2.7 end=timeout retr=0/0 top=0/0 dele=0/0 left=0/0 "
	    "time=T\n");
	free(l);
	l = summary_untimed(c, END_AUTHFAIL, "2001:db8::1");
	assert_non_null(strstr(l, " peer=2001:db8::1 end=authfail "));
	free(l);
	/* A peer name with a space could not pass for two fields. */
	l = summary_untimed(c, END_EOF, "a b");
	assert_non_null(strstr(l, " peer=a%20b end=disconnect "));
	free(l);
}

/* RETR and TOP counts and octets, a commit's deletions, what is left. */
static void
test_summary_counts(void **state)
{
	struct conn	*c = *state;
	struct msgs	 m;
	char		*src, *l, *want;
	size_t		 src_len, top_len;

	load_expect("simple", &m);
	assert_int_equal(m.n, 3);
	src = tu_read_file(fmt("%s/simple.mbox", tu_fixtures_dir()),
	    &src_len);
	assert_non_null(src);
	c->dir = tu_mkdtemp();
	if (asprintf(&c->path, "%s/mbox", c->dir) == -1)
		abort();
	assert_int_equal(tu_write_file(c->path, src, src_len), 0);
	free(src);
	assert_int_equal(maildrop_open(c->path, c->dir, NULL, &c->mb), MAILDROP_OK);
	c->s.state = STATE_TRANSACTION;
	c->s.maildrop = c->mb;
	c->s.login = "al ice";
	/* Before any command: everything is left, nothing sent. */
	l = summary_untimed(c, END_EOF, "local");
	assert_string_equal(l, fmt("test_session: session end: user=al%%20ice "
	    "peer=local end=disconnect retr=0/0 top=0/0 dele=0/0 "
	    "left=3/%zu time=T\n", m.total));
	free(l);
	cmd(c, "RETR 1");
	cmd(c, "RETR 2");
	cmd(c, "TOP 3 0");
	top_len = tu_top_len(m.eml[2], m.len[2], 0);
	cmd(c, "RETR 9");			/* not sent: not counted */
	EXPECT(c, "DELE 2", "+OK Message 2 deleted\r\n");
	/* Marked, not committed: nothing is deleted yet. */
	l = summary_untimed(c, END_TIMEOUT, "local");
	want = fmt("retr=2/%zu top=1/%zu dele=0/0 left=3/%zu ",
	    m.len[0] + m.len[1], top_len, m.total);
	if (strstr(l, want) == NULL)
		fail_msg("%s lacks %s", l, want);
	free(l);
	EXPECT(c, "QUIT", "+OK pop3d signing off (2 messages left)\r\n");
	l = summary_untimed(c, END_QUIT, "local");
	want = fmt("end=quit retr=2/%zu top=1/%zu dele=1/%zu left=2/%zu ",
	    m.len[0] + m.len[1], top_len, m.len[1], m.len[0] + m.len[2]);
	if (strstr(l, want) == NULL)
		fail_msg("%s lacks %s", l, want);
	free(l);
	free_msgs(&m);
}

/* A QUIT whose deletions could not be written ends in an error. */
static void
test_summary_commit_failed(void **state)
{
	struct conn	*c = *state;
	char		*l;

	enter_transaction(c, "simple");
	EXPECT(c, "DELE 1", "+OK Message 1 deleted\r\n");
	EXPECT(c, "QUIT", "-ERR [SYS/PERM] Mailbox is read-only\r\n");
	l = summary_untimed(c, END_QUIT, "local");
	assert_non_null(strstr(l, " end=error "));
	assert_non_null(strstr(l, " dele=0/0 left=3/"));
	free(l);
}

#define T(f)	cmocka_unit_test_setup_teardown(f, conn_setup, conn_teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_keyword_only),
		cmocka_unit_test(test_parse_args),
		cmocka_unit_test(test_parse_empty_args),
		cmocka_unit_test(test_parse_too_many),
		cmocka_unit_test(test_parse_bad_bytes),
		cmocka_unit_test(test_number_valid),
		cmocka_unit_test(test_number_invalid),
		cmocka_unit_test(test_number_small_max),
		cmocka_unit_test(test_result_text),
		T(test_greet),
		T(test_capa),
		T(test_user_pass_ok),
		T(test_pass_edge_values),
		T(test_pass_fail_three_times),
		T(test_pass_tempfail),
		T(test_pass_tempfail_limit),
		T(test_pass_without_user),
		T(test_user_syntax),
		T(test_keywords_case_insensitive),
		T(test_unknown),
		T(test_bad_bytes),
		T(test_transaction_cmds_in_authorization),
		T(test_quit_authorization),
		T(test_stat_list),
		T(test_uidl),
		T(test_retr_top),
		T(test_retr_dots),
		T(test_dele_rset),
		T(test_noop),
		T(test_numbers),
		T(test_arity),
		T(test_authorization_cmds_in_transaction),
		T(test_quit_nothing_deleted),
		T(test_quit_readonly),
		T(test_quit_commits),
		T(test_authorization_pipelined),
		T(test_authorization_loop_ends),
		T(test_authorization_fails),
		T(test_transaction_loop),
		T(test_transaction_open_failed),
		T(test_auth_mechanisms),
		T(test_auth_login_ok),
		T(test_auth_login_initial),
		T(test_auth_login_bad),
		T(test_auth_login_fails),
		T(test_auth_login_eof),
		T(test_auth_cleartext_refused),
		T(test_credentials_wiped),
		cmocka_unit_test(test_escape),
		cmocka_unit_test(test_end_names),
		T(test_summary_before_login),
		T(test_summary_counts),
		T(test_summary_commit_failed),
	};

	signal(SIGPIPE, SIG_IGN);
	log_init("test_session", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
