/*
 * session.c: the POP3 state machine and its commands (see session.h).
 * Runs unprivileged: before login in whichever process reads the
 * network, after login as the mail user.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "maildrop.h"
#include "session.h"

#define ANY_STATE	(STATE_AUTHORIZATION | STATE_TRANSACTION)
#define REST		-1	/* the argument is the rest of the line */

const char *const session_end_name[END_MAX] = {
	[END_NONE] = "none",
	[END_LOGIN] = "login",
	[END_QUIT] = "quit",
	[END_EOF] = "disconnect",
	[END_TIMEOUT] = "timeout",
	[END_IOERR] = "error",
	[END_AUTHFAIL] = "authfail",
	[END_TEMPFAIL] = "tempfail",
	[END_ABUSE] = "abuse",
};

const char *const cmd_result_text[CMD_RESULT_MAX] = {
	[CMD_OK] = "",
	[CMD_ERR_UNKNOWN] = "Unknown command",
	[CMD_ERR_STATE] = "Command not valid in this state",
	[CMD_ERR_SYNTAX] = "Syntax error in arguments",
	[CMD_ERR_LINE] = "Line too long",
	[CMD_ERR_BADBYTE] = "Invalid characters in command",
	[CMD_ERR_NUMBER] = "Invalid message number",
	[CMD_ERR_NOMSG] = "No such message",
	[CMD_ERR_DELETED] = "Message is deleted",
	[CMD_ERR_NOUSER] = "USER first",
	[CMD_ERR_BADNAME] = "Invalid user name",
	[CMD_ERR_AUTH] = "[AUTH] Authentication failed",
	[CMD_ERR_AUTH_LAST] = "[AUTH] Authentication failed; too many "
	    "failures, closing",
	[CMD_ERR_AUTH_TEMP] = "[SYS/TEMP] Authentication is unavailable, "
	    "try again later",
	[CMD_ERR_AUTH_TEMP_LAST] = "[SYS/TEMP] Authentication is unavailable, "
	    "try again later; closing",
	[CMD_ERR_CLEARTEXT] = "[AUTH] Cleartext logins are refused on this "
	    "connection; use TLS (port 995)",
	[CMD_ERR_NOAPOP] = "APOP is not enabled",
	[CMD_ERR_MECH] = "Unsupported authentication mechanism",
	[CMD_ERR_SASL_CANCEL] = "Authentication cancelled",
	[CMD_ERR_SASL_BAD] = "[AUTH] Invalid SASL response",
	[CMD_ERR_ABUSE] = "Too many invalid commands, closing",
	[CMD_ERR_MAILDROP] = "",
};


typedef enum cmd_result (*cmd_fn)(struct session *, struct pop3_cmdline *);

struct pop3_command {
	const char	*name;		/* NULL: the catch-all last row */
	unsigned int	 states;
	int		 min_args;
	int		 max_args;	/* REST: one argument, spaces and all */
	cmd_fn		 fn;
};

static void
reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reply(struct session *s, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	(void)vsnprintf(s->reply, sizeof(s->reply), fmt, ap);
	va_end(ap);
}

int
session_parse_number(const char *str, uint64_t max, uint64_t *n_r)
{
	uint64_t	 n = 0;
	const char	*p;

	if (*str == '\0')
		return -1;
	for (p = str; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		if ((uint64_t)(*p - '0') > max ||
		    n > (max - (uint64_t)(*p - '0')) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	*n_r = n;
	return 0;
}

int
session_parse(char *line, size_t len, struct pop3_cmdline *cl)
{
	char	*p, *sp;

	memset(cl, 0, sizeof(*cl));
	if (memchr(line, '\0', len) != NULL || memchr(line, '\r', len) != NULL)
		return -1;
	cl->keyword = line;
	if ((sp = strchr(line, ' ')) == NULL)
		return 0;
	*sp = '\0';
	cl->rest = sp + 1;
	/* Arguments are separated by single spaces; empty ones count. */
	for (p = sp + 1; ; p = sp + 1) {
		if (cl->argc == POP3_ARGS_MAX) {
			cl->argc++;	/* too many, whatever the command */
			break;
		}
		cl->argv[cl->argc++] = p;
		if ((sp = strchr(p, ' ')) == NULL)
			break;
		*sp = '\0';
	}
	return 0;
}

/* Restores the spaces session_parse() cut, so that rest is whole again. */
static void
unsplit(char *rest, size_t len)
{
	size_t	 i;

	for (i = 0; i < len; i++)
		if (rest[i] == '\0')
			rest[i] = ' ';
}

/* Converts a message number argument to an index of a live message. */
static enum cmd_result
get_msg(struct session *s, const char *arg, int allow_deleted, size_t *idx_r)
{
	uint64_t	 msn;

	if (session_parse_number(arg, UINT64_MAX, &msn) == -1)
		return CMD_ERR_NUMBER;
	if (msn == 0 || msn > maildrop_count(s->maildrop))
		return CMD_ERR_NOMSG;
	if (!allow_deleted && maildrop_deleted(s->maildrop, (size_t)msn - 1))
		return CMD_ERR_DELETED;
	*idx_r = (size_t)msn - 1;
	return CMD_OK;
}

/* ---- AUTHORIZATION ------------------------------------------------- */

static enum cmd_result
cmd_user(struct session *s, struct pop3_cmdline *cl)
{
	const char	*name = cl->argv[0];
	size_t		 len = strlen(name);

	s->have_user = 0;
	if (!s->cleartext_ok)
		return CMD_ERR_CLEARTEXT;
	if (!auth_name_valid(name, len))
		return CMD_ERR_BADNAME;
	memcpy(s->user, name, len + 1);
	s->have_user = 1;
	reply(s, "Send your password");
	return CMD_OK;
}

/* Hands req to the checker, wipes it, and turns the outcome into a reply. */
static enum cmd_result
login(struct session *s, struct auth_request *req)
{
	enum auth_status	 st;

	st = s->authenticate(s->auth_arg, req);
	explicit_bzero(req, sizeof(*req));
	if (st == AUTH_OK) {
		s->end = END_LOGIN;
		return CMD_OK;
	}
	/* The monitor counts by the same rule, and answers no more. */
	if (auth_tally_add(&s->tally, st)) {
		s->end = st == AUTH_TEMPFAIL ? END_TEMPFAIL : END_AUTHFAIL;
		return st == AUTH_TEMPFAIL ? CMD_ERR_AUTH_TEMP_LAST :
		    CMD_ERR_AUTH_LAST;
	}
	return st == AUTH_TEMPFAIL ? CMD_ERR_AUTH_TEMP : CMD_ERR_AUTH;
}

static enum cmd_result
cmd_pass(struct session *s, struct pop3_cmdline *cl)
{
	struct auth_request	 req;
	size_t			 len = strlen(cl->rest);

	if (!s->cleartext_ok)
		return CMD_ERR_CLEARTEXT;
	if (!s->have_user)
		return CMD_ERR_NOUSER;
	s->have_user = 0;
	memset(&req, 0, sizeof(req));
	req.kind = AUTH_KIND_PASS;
	memcpy(req.user, s->user, sizeof(req.user));
	if (len >= sizeof(req.pass))
		len = sizeof(req.pass) - 1;	/* cannot happen: line limit */
	memcpy(req.pass, cl->rest, len);
	explicit_bzero(cl->rest, strlen(cl->rest));
	return login(s, &req);
}

static enum cmd_result
cmd_apop(struct session *s, struct pop3_cmdline *cl)
{
	struct auth_request	 req;
	const char		*d = cl->argv[1];
	size_t			 i, len = strlen(cl->argv[0]);

	if (s->apop_stamp == NULL)
		return CMD_ERR_NOAPOP;
	if (!auth_name_valid(cl->argv[0], len))
		return CMD_ERR_BADNAME;
	if (strlen(d) != AUTH_APOP_DIGEST ||
	    strspn(d, "0123456789abcdefABCDEF") != AUTH_APOP_DIGEST)
		return CMD_ERR_SYNTAX;
	s->have_user = 0;
	memset(&req, 0, sizeof(req));
	req.kind = AUTH_KIND_APOP;
	memcpy(req.user, cl->argv[0], len);
	for (i = 0; i < AUTH_APOP_DIGEST; i++)
		req.pass[i] = (char)tolower((unsigned char)d[i]);
	return login(s, &req);
}

int
session_base64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t outsize)
{
	static const char alphabet[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t		 i, n = 0, pad = 0;
	uint32_t	 acc = 0;
	const char	*p;

	if (inlen % 4 != 0)
		return -1;
	for (i = 0; i < inlen; i++) {
		if (in[i] == '=') {
			/* Padding only at the end: "x=" or "==". */
			if (i < inlen - 2 || (i == inlen - 2 && in[i + 1] != '='))
				return -1;
			pad++;
			acc <<= 6;
		} else {
			if (in[i] == '\0' ||
			    (p = strchr(alphabet, in[i])) == NULL)
				return -1;
			acc = acc << 6 | (uint32_t)(p - alphabet);
		}
		if (i % 4 == 3) {
			unsigned char b[3] = { acc >> 16, acc >> 8, acc };
			size_t k = 3 - pad;

			if (n + k > outsize)
				return -1;
			memcpy(out + n, b, k);
			n += k;
			acc = 0;
		}
	}
	return (int)n;
}

/*
 * Reads the client's answer to the SASL challenge "+ challenge" into
 * line (bufsize > POP3_SASL_MAX).  "*" cancels (RFC 5034).  The input
 * buffer keeps no copy of the line: it may be a password.
 */
static enum cmd_result
sasl_read(struct session *s, const char *challenge, char *line,
    size_t bufsize, size_t *len_r)
{
	enum io_status	 st;

	if (io_printf(s->io, "+ %s\r\n", challenge) != IO_OK)
		return CMD_ERR_SASL_BAD;
	st = io_getline(s->io, line, bufsize, POP3_SASL_MAX, len_r);
	io_wipe_consumed(s->io);
	switch (st) {
	case IO_OK:
		break;
	case IO_TOOLONG:
		return CMD_ERR_SASL_BAD;
	case IO_EOF:
		s->end = END_EOF;
		return CMD_ERR_SASL_CANCEL;
	case IO_TIMEOUT:
		s->end = END_TIMEOUT;
		return CMD_ERR_SASL_CANCEL;
	case IO_ERROR:
		s->end = END_IOERR;
		return CMD_ERR_SASL_CANCEL;
	}
	if (*len_r == 1 && line[0] == '*')
		return CMD_ERR_SASL_CANCEL;
	if (memchr(line, '\0', *len_r) != NULL)
		return CMD_ERR_SASL_BAD;
	return CMD_OK;
}

/*
 * One SASL round: the response is initial when AUTH carried one, else
 * the client's answer to "+ challenge".  Decodes it into out ("=" is the
 * empty response) and returns CMD_OK with *n_r, or why it failed.
 */
static enum cmd_result
sasl_step(struct session *s, const char *initial, const char *challenge,
    unsigned char *out, size_t outsize, size_t *n_r)
{
	char		 line[POP3_SASL_MAX + 1];
	const char	*resp = initial;
	size_t		 len = 0;
	enum cmd_result	 r = CMD_OK;
	int		 n = 0;

	if (resp == NULL) {
		r = sasl_read(s, challenge, line, sizeof(line), &len);
		resp = line;
	} else
		len = strlen(resp);
	if (r == CMD_OK && !(len == 1 && resp[0] == '=') &&
	    (n = session_base64_decode(resp, len, out, outsize)) < 0)
		r = CMD_ERR_SASL_BAD;
	*n_r = (size_t)n;
	explicit_bzero(line, sizeof(line));
	return r;
}

/*
 * SASL PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd.  An authzid
 * other than the authcid is refused: nobody may act for someone else.
 */
static enum cmd_result
sasl_plain(struct session *s, const char *initial)
{
	struct auth_request	 req;
	unsigned char		 buf[AUTH_NAME_MAX * 2 + AUTH_PASS_MAX];
	const char		*authz, *authc, *pass;
	size_t			 n, zl, cl, pl;
	enum cmd_result		 r;

	if ((r = sasl_step(s, initial, "", buf, sizeof(buf), &n)) != CMD_OK)
		goto done;
	r = CMD_ERR_SASL_BAD;
	authz = (const char *)buf;
	zl = strnlen(authz, n);
	if (zl + 1 >= n)
		goto done;
	authc = authz + zl + 1;
	cl = strnlen(authc, n - zl - 1);
	if (zl + 1 + cl + 1 > n)
		goto done;
	pass = authc + cl + 1;
	pl = n - zl - 1 - cl - 1;
	if (memchr(pass, '\0', pl) != NULL || pl >= AUTH_PASS_MAX ||
	    !auth_name_valid(authc, cl) ||
	    (zl > 0 && (zl != cl || memcmp(authz, authc, cl) != 0)))
		goto done;
	memset(&req, 0, sizeof(req));
	req.kind = AUTH_KIND_PASS;
	memcpy(req.user, authc, cl);
	memcpy(req.pass, pass, pl);
	explicit_bzero(buf, sizeof(buf));
	return login(s, &req);
done:
	explicit_bzero(buf, sizeof(buf));
	return r;
}

/*
 * SASL LOGIN (draft-murchison-sasl-login): the user name and then the
 * password, each asked for ("Username:", "Password:" in base64) unless
 * AUTH carried the name as its initial response.
 */
static enum cmd_result
sasl_login(struct session *s, const char *initial)
{
	struct auth_request	 req;
	unsigned char		 buf[AUTH_PASS_MAX];
	size_t			 n;
	enum cmd_result		 r;

	memset(&req, 0, sizeof(req));
	req.kind = AUTH_KIND_PASS;
	if ((r = sasl_step(s, initial, "VXNlcm5hbWU6", buf, sizeof(buf),
	    &n)) != CMD_OK)
		goto done;
	r = CMD_ERR_SASL_BAD;
	if (!auth_name_valid((const char *)buf, n))
		goto done;
	memcpy(req.user, buf, n);
	if ((r = sasl_step(s, NULL, "UGFzc3dvcmQ6", buf, sizeof(buf),
	    &n)) != CMD_OK)
		goto done;
	r = CMD_ERR_SASL_BAD;
	if (n >= AUTH_PASS_MAX || memchr(buf, '\0', n) != NULL)
		goto done;
	memcpy(req.pass, buf, n);
	explicit_bzero(buf, sizeof(buf));
	return login(s, &req);
done:
	explicit_bzero(buf, sizeof(buf));
	explicit_bzero(&req, sizeof(req));
	return r;
}

/* The SASL mechanisms, in the order CAPA and AUTH list them. */
static const struct sasl_mech {
	const char	*name;
	enum cmd_result	(*run)(struct session *, const char *initial);
} sasl_mechs[] = {
	{ "PLAIN", sasl_plain },
	{ "LOGIN", sasl_login }
};

#define NMECHS	(sizeof(sasl_mechs) / sizeof(sasl_mechs[0]))

/* Every mechanism needs cleartext logins: none are listed without. */
static void
body_mechs(struct session *s)
{
	size_t	 i;

	for (i = 0; s->cleartext_ok && i < NMECHS; i++)
		(void)io_printf(s->io, "%s\r\n", sasl_mechs[i].name);
	(void)io_write(s->io, ".\r\n", 3);
}

static enum cmd_result
cmd_auth(struct session *s, struct pop3_cmdline *cl)
{
	size_t	 i;

	s->have_user = 0;
	if (cl->argc == 0) {
		reply(s, "Methods follow");
		s->body = body_mechs;
		return CMD_OK;
	}
	for (i = 0; i < NMECHS; i++)
		if (strcasecmp(cl->argv[0], sasl_mechs[i].name) == 0)
			break;
	if (i == NMECHS)
		return CMD_ERR_MECH;
	if (!s->cleartext_ok)
		return CMD_ERR_CLEARTEXT;
	return sasl_mechs[i].run(s, cl->argc == 2 ? cl->argv[1] : NULL);
}

static enum cmd_result
cmd_quit_auth(struct session *s, struct pop3_cmdline *cl)
{
	(void)cl;
	s->end = END_QUIT;
	reply(s, "pop3d signing off");
	return CMD_OK;
}

/* The same list in both states; cleartext ones only where allowed. */
static void
body_capa(struct session *s)
{
	size_t	 i;

	(void)io_printf(s->io, "TOP\r\nUIDL\r\n%sRESP-CODES\r\n"
	    "AUTH-RESP-CODE\r\nPIPELINING\r\n",
	    s->cleartext_ok ? "USER\r\n" : "");
	if (s->cleartext_ok) {
		(void)io_printf(s->io, "SASL");
		for (i = 0; i < NMECHS; i++)
			(void)io_printf(s->io, " %s", sasl_mechs[i].name);
		(void)io_printf(s->io, "\r\n");
	}
	(void)io_printf(s->io, "IMPLEMENTATION pop3d\r\n.\r\n");
}

static enum cmd_result
cmd_capa(struct session *s, struct pop3_cmdline *cl)
{
	(void)cl;
	reply(s, "Capability list follows");
	s->body = body_capa;
	return CMD_OK;
}

/* ---- TRANSACTION --------------------------------------------------- */

static enum cmd_result
cmd_stat(struct session *s, struct pop3_cmdline *cl)
{
	size_t		 n;
	uint64_t	 octets;

	(void)cl;
	maildrop_stat(s->maildrop, &n, &octets);
	reply(s, "%zu %llu", n, (unsigned long long)octets);
	return CMD_OK;
}

static void
body_list(struct session *s)
{
	size_t	 i, n = maildrop_count(s->maildrop);

	for (i = 0; i < n; i++)
		if (!maildrop_deleted(s->maildrop, i) &&
		    io_printf(s->io, "%zu %llu\r\n", i + 1,
		    (unsigned long long)maildrop_size(s->maildrop, i)) != IO_OK)
			return;
	(void)io_write(s->io, ".\r\n", 3);
}

static enum cmd_result
cmd_list(struct session *s, struct pop3_cmdline *cl)
{
	enum cmd_result	 r;
	size_t		 idx, n;
	uint64_t	 octets;

	if (cl->argc == 1) {
		if ((r = get_msg(s, cl->argv[0], 0, &idx)) != CMD_OK)
			return r;
		reply(s, "%zu %llu", idx + 1,
		    (unsigned long long)maildrop_size(s->maildrop, idx));
		return CMD_OK;
	}
	maildrop_stat(s->maildrop, &n, &octets);
	reply(s, "%zu messages (%llu octets)", n, (unsigned long long)octets);
	s->body = body_list;
	return CMD_OK;
}

static void
body_uidl(struct session *s)
{
	char	 uid[MAILDROP_UIDL_MAX];
	size_t	 i, n = maildrop_count(s->maildrop);

	for (i = 0; i < n; i++) {
		if (maildrop_deleted(s->maildrop, i))
			continue;
		maildrop_uidl(s->maildrop, i, uid);
		if (io_printf(s->io, "%zu %s\r\n", i + 1, uid) != IO_OK)
			return;
	}
	(void)io_write(s->io, ".\r\n", 3);
}

static enum cmd_result
cmd_uidl(struct session *s, struct pop3_cmdline *cl)
{
	char		 uid[MAILDROP_UIDL_MAX];
	enum cmd_result	 r;
	size_t		 idx;

	if (cl->argc == 1) {
		if ((r = get_msg(s, cl->argv[0], 0, &idx)) != CMD_OK)
			return r;
		maildrop_uidl(s->maildrop, idx, uid);
		reply(s, "%zu %s", idx + 1, uid);
		return CMD_OK;
	}
	reply(s, "Unique-ID listing follows");
	s->body = body_uidl;
	return CMD_OK;
}

static void
body_message(struct session *s)
{
	enum maildrop_status st;
	uint64_t	 sent = io_output_octets(s->io);

	st = maildrop_send(s->maildrop, s->body_idx, s->io, s->body_lines);
	sent = io_output_octets(s->io) - sent;
	if (st == MAILDROP_OK && sent >= 3)
		sent -= 3;		/* the final ".", not the message's */
	if (s->body_lines < 0) {
		s->stats.retr++;
		s->stats.retr_octets += sent;
	} else {
		s->stats.top++;
		s->stats.top_octets += sent;
	}
	switch (st) {
	case MAILDROP_OK:
		break;
	case MAILDROP_CHANGED:
		/* The reply cannot be finished honestly: hang up. */
		s->end = END_IOERR;
		break;
	default:
		/* A client that stops reading meets the autologout here. */
		s->end = io_timed_out(s->io) ? END_TIMEOUT : END_IOERR;
		break;
	}
}

static enum cmd_result
cmd_retr(struct session *s, struct pop3_cmdline *cl)
{
	enum cmd_result	 r;
	size_t		 idx;

	if ((r = get_msg(s, cl->argv[0], 0, &idx)) != CMD_OK)
		return r;
	reply(s, "%llu octets",
	    (unsigned long long)maildrop_size(s->maildrop, idx));
	s->body = body_message;
	s->body_idx = idx;
	s->body_lines = -1;
	return CMD_OK;
}

static enum cmd_result
cmd_top(struct session *s, struct pop3_cmdline *cl)
{
	enum cmd_result	 r;
	size_t		 idx;
	uint64_t	 lines;

	if ((r = get_msg(s, cl->argv[0], 0, &idx)) != CMD_OK)
		return r;
	if (session_parse_number(cl->argv[1], INT64_MAX, &lines) == -1)
		return CMD_ERR_SYNTAX;
	reply(s, "Top of message follows");
	s->body = body_message;
	s->body_idx = idx;
	s->body_lines = (int64_t)lines;
	return CMD_OK;
}

static enum cmd_result
cmd_dele(struct session *s, struct pop3_cmdline *cl)
{
	enum cmd_result	 r;
	size_t		 idx;

	if ((r = get_msg(s, cl->argv[0], 0, &idx)) != CMD_OK)
		return r;
	maildrop_set_deleted(s->maildrop, idx, 1);
	reply(s, "Message %zu deleted", idx + 1);
	return CMD_OK;
}

static enum cmd_result
cmd_noop(struct session *s, struct pop3_cmdline *cl)
{
	(void)s;
	(void)cl;
	return CMD_OK;
}

static enum cmd_result
cmd_rset(struct session *s, struct pop3_cmdline *cl)
{
	size_t		 i, n = maildrop_count(s->maildrop);
	uint64_t	 octets;

	(void)cl;
	for (i = 0; i < n; i++)
		maildrop_set_deleted(s->maildrop, i, 0);
	maildrop_stat(s->maildrop, &n, &octets);
	reply(s, "Maildrop has %zu messages (%llu octets)", n,
	    (unsigned long long)octets);
	return CMD_OK;
}

/* UPDATE: commit the deletions, then say how it went. */
static enum cmd_result
cmd_quit(struct session *s, struct pop3_cmdline *cl)
{
	size_t		 i, n = maildrop_count(s->maildrop), ndel = 0, nleft;
	uint64_t	 del = 0, left;
	enum maildrop_status st;

	(void)cl;
	s->end = END_QUIT;
	for (i = 0; i < n; i++)
		if (maildrop_deleted(s->maildrop, i)) {
			ndel++;
			del += maildrop_size(s->maildrop, i);
		}
	maildrop_stat(s->maildrop, &nleft, &left);
	if ((st = maildrop_commit(s->maildrop)) != MAILDROP_OK) {
		log_warnx("%s: commit failed (%s)", s->login,
		    maildrop_status_text[st]);
		s->maildrop_error = st;
		return CMD_ERR_MAILDROP;
	}
	s->stats.committed = 1;
	s->stats.dele = ndel;
	s->stats.dele_octets = del;
	s->stats.left = nleft;
	s->stats.left_octets = left;
	/* The client has its answer before the log has its line. */
	reply(s, "pop3d signing off (%zu messages left)", nleft);
	(void)io_flush(s->io);
	log_info("%s: %zu (%llu) deleted, %zu (%llu) left", s->login, ndel,
	    (unsigned long long)del, nleft, (unsigned long long)left);
	return CMD_OK;
}

static enum cmd_result
cmd_unknown(struct session *s, struct pop3_cmdline *cl)
{
	(void)s;
	(void)cl;
	return CMD_ERR_UNKNOWN;
}

static const struct pop3_command commands[] = {
	{ "USER", STATE_AUTHORIZATION, 1, 1, cmd_user },
	{ "PASS", STATE_AUTHORIZATION, 1, REST, cmd_pass },
	{ "APOP", STATE_AUTHORIZATION, 2, 2, cmd_apop },
	{ "AUTH", STATE_AUTHORIZATION, 0, 2, cmd_auth },
	{ "CAPA", ANY_STATE, 0, 0, cmd_capa },
	{ "STAT", STATE_TRANSACTION, 0, 0, cmd_stat },
	{ "LIST", STATE_TRANSACTION, 0, 1, cmd_list },
	{ "UIDL", STATE_TRANSACTION, 0, 1, cmd_uidl },
	{ "RETR", STATE_TRANSACTION, 1, 1, cmd_retr },
	{ "TOP", STATE_TRANSACTION, 2, 2, cmd_top },
	{ "DELE", STATE_TRANSACTION, 1, 1, cmd_dele },
	{ "NOOP", STATE_TRANSACTION, 0, 0, cmd_noop },
	{ "RSET", STATE_TRANSACTION, 0, 0, cmd_rset },
	{ "QUIT", STATE_AUTHORIZATION, 0, 0, cmd_quit_auth },
	{ "QUIT", STATE_TRANSACTION, 0, 0, cmd_quit },
	{ NULL, ANY_STATE, 0, REST, cmd_unknown }
};

/* Finds the row for keyword in the current state. */
static const struct pop3_command *
lookup(const struct session *s, const char *keyword, int *wrong_state_r)
{
	const struct pop3_command *c;

	*wrong_state_r = 0;
	for (c = commands; c->name != NULL; c++) {
		if (strcasecmp(c->name, keyword) != 0)
			continue;
		if (c->states & s->state)
			return c;
		*wrong_state_r = 1;
	}
	return c;
}

static enum cmd_result
dispatch(struct session *s, char *line, size_t len)
{
	const struct pop3_command *c;
	struct pop3_cmdline	 cl;
	int			 wrong_state;

	if (session_parse(line, len, &cl) == -1)
		return CMD_ERR_BADBYTE;
	c = lookup(s, cl.keyword, &wrong_state);
	if (c->name == NULL && wrong_state)
		return CMD_ERR_STATE;
	if (c->max_args == REST) {
		if (c->name != NULL && cl.rest == NULL)
			return CMD_ERR_SYNTAX;
		if (cl.rest != NULL)
			unsplit(cl.rest, len - (size_t)(cl.rest - line));
	} else if (cl.argc < c->min_args || cl.argc > c->max_args)
		return CMD_ERR_SYNTAX;
	return c->fn(s, &cl);
}

/*
 * Counts commands that no correct client sends; past POP3_MAX_BAD the
 * connection ends (a scanner or a confused peer, as Dovecot judges).
 */
static int
count_bad(struct session *s, enum cmd_result r)
{
	switch (r) {
	case CMD_ERR_UNKNOWN:
	case CMD_ERR_STATE:
	case CMD_ERR_SYNTAX:
	case CMD_ERR_LINE:
	case CMD_ERR_BADBYTE:
	case CMD_ERR_NUMBER:
	case CMD_ERR_NOUSER:
	case CMD_ERR_BADNAME:
	case CMD_ERR_MECH:
	case CMD_ERR_SASL_BAD:
	case CMD_ERR_SASL_CANCEL:	/* endless AUTH/"*" pairs */
	case CMD_ERR_NOAPOP:
	case CMD_ERR_CLEARTEXT:
		break;
	default:
		return 0;
	}
	if (++s->bad < POP3_MAX_BAD)
		return 0;
	s->end = END_ABUSE;
	return 1;
}

void
session_command(struct session *s, char *line, size_t len)
{
	enum cmd_result	 r;
	const char	*text;

	s->body = NULL;
	s->reply[0] = '\0';
	r = dispatch(s, line, len);
	/* It may have held a password: no copy stays here or in the io. */
	explicit_bzero(line, len);
	io_wipe_consumed(s->io);
	if (r == CMD_OK) {
		if (s->end == END_LOGIN)
			return;		/* answered once the maildrop is open */
		if (s->reply[0] == '\0')
			(void)io_write(s->io, "+OK\r\n", 5);
		else
			(void)io_printf(s->io, "+OK %s\r\n", s->reply);
		if (s->body != NULL)
			s->body(s);
		return;
	}
	if (count_bad(s, r))
		r = CMD_ERR_ABUSE;
	text = r == CMD_ERR_MAILDROP ? maildrop_status_text[s->maildrop_error] :
	    cmd_result_text[r];
	(void)io_printf(s->io, "-ERR %s\r\n", text);
}

void
session_init(struct session *s, struct io *io, session_auth_fn fn, void *arg)
{
	memset(s, 0, sizeof(*s));
	s->io = io;
	s->state = STATE_AUTHORIZATION;
	s->authenticate = fn;
	s->auth_arg = arg;
	s->cleartext_ok = 1;
	(void)clock_gettime(CLOCK_MONOTONIC, &s->start);
}

int
session_greet(struct session *s, const char *banner)
{
	if (io_printf(s->io, "+OK %s\r\n", banner) != IO_OK)
		return -1;
	return io_flush(s->io) == IO_OK ? 0 : -1;
}

/* Reads and runs commands until the session ends or logs in. */
static enum session_end
session_loop(struct session *s)
{
	char		 line[POP3_LINE_MAX + 1];
	size_t		 len;
	enum io_status	 st;

	while (s->end == END_NONE) {
		st = io_getline(s->io, line, sizeof(line), POP3_LINE_MAX, &len);
		switch (st) {
		case IO_OK:
			session_command(s, line, len);
			break;
		case IO_TOOLONG:
			io_wipe_consumed(s->io);	/* "PASS" and a long one */
			(void)io_printf(s->io, "-ERR %s\r\n", cmd_result_text[
			    count_bad(s, CMD_ERR_LINE) ? CMD_ERR_ABUSE :
			    CMD_ERR_LINE]);
			break;
		case IO_EOF:
			return END_EOF;
		case IO_TIMEOUT:
			return END_TIMEOUT;
		case IO_ERROR:
			return END_IOERR;
		}
	}
	if (s->end != END_LOGIN && io_flush(s->io) != IO_OK &&
	    s->end == END_QUIT)
		return io_timed_out(s->io) ? END_TIMEOUT : END_IOERR;
	return s->end;
}

enum session_end
session_authorization(struct session *s)
{
	s->state = STATE_AUTHORIZATION;
	s->end = END_NONE;
	return session_loop(s);
}

enum session_end
session_transaction(struct session *s, const char *login, struct maildrop *mb,
    enum maildrop_status st)
{
	size_t		 n;
	uint64_t	 octets;

	s->login = login;
	if (st != MAILDROP_OK) {
		(void)io_printf(s->io, "-ERR %s\r\n", maildrop_status_text[st]);
		(void)io_flush(s->io);
		return END_IOERR;
	}
	s->maildrop = mb;
	s->state = STATE_TRANSACTION;
	s->end = END_NONE;
	maildrop_stat(mb, &n, &octets);
	log_info("%s: %zu messages (%llu octets) loaded", login, n,
	    (unsigned long long)octets);
	if (io_printf(s->io, "+OK Maildrop has %zu messages (%llu octets)\r\n",
	    n, (unsigned long long)octets) != IO_OK)
		return END_IOERR;
	return session_loop(s);
}

void
session_log_end(enum session_end end, const char *login, const char *peer)
{
	const char	*who = login != NULL ? login : "before login";

	switch (end) {
	case END_QUIT:
	case END_LOGIN:
	case END_NONE:
	case END_MAX:
		break;
	case END_TIMEOUT:
		log_info("timeout, %s from %s", who, peer);
		break;
	case END_EOF:
		log_info("premature disconnect, %s from %s", who, peer);
		break;
	case END_AUTHFAIL:
		log_notice("too many failed logins from %s", peer);
		break;
	case END_TEMPFAIL:
		log_warnx("authentication unavailable, closing connection from %s",
		    peer);
		break;
	case END_ABUSE:
		log_notice("too many invalid commands from %s", peer);
		break;
	case END_IOERR:
		log_info("session ended on an error, %s from %s", who, peer);
		break;
	}
}

char *
session_escape(char *dst, size_t dstsize, const char *src)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p;
	size_t		 n = 0;

	for (p = (const unsigned char *)src; *p != '\0'; p++) {
		if (*p > 0x20 && *p < 0x7f && *p != '%') {
			if (n + 1 >= dstsize)
				break;
			dst[n++] = (char)*p;
		} else {
			if (n + 3 >= dstsize)
				break;
			dst[n++] = '%';
			dst[n++] = hex[*p >> 4];
			dst[n++] = hex[*p & 0xf];
		}
	}
	dst[n] = '\0';
	return dst;
}

void
session_log_summary(const struct session *s, enum session_end end,
    const char *peer)
{
	const struct session_stats *st = &s->stats;
	struct timespec	 now;
	char		 user[AUTH_NAME_MAX * 3], addr[256];
	size_t		 i, left = 0;
	uint64_t	 left_octets = 0;
	long long	 ms;

	if (st->committed) {
		left = st->left;
		left_octets = st->left_octets;
	} else if (s->maildrop != NULL) {
		/* No commit: every message is still there, marked or not. */
		left = maildrop_count(s->maildrop);
		for (i = 0; i < left; i++)
			left_octets += maildrop_size(s->maildrop, i);
	}
	/* A QUIT whose deletions could not be written is an error. */
	if (end == END_QUIT && s->maildrop_error != MAILDROP_OK)
		end = END_IOERR;
	if ((unsigned int)end >= END_MAX)
		end = END_IOERR;
	(void)clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(now.tv_sec - s->start.tv_sec) * 1000 +
	    (now.tv_nsec - s->start.tv_nsec) / 1000000;
	if (ms < 0)
		ms = 0;
	log_info("session end: user=%s peer=%s end=%s retr=%llu/%llu "
	    "top=%llu/%llu dele=%llu/%llu left=%zu/%llu time=%lld.%03llds",
	    s->login != NULL ? session_escape(user, sizeof(user), s->login) :
	    "-", session_escape(addr, sizeof(addr), peer),
	    session_end_name[end],
	    (unsigned long long)st->retr, (unsigned long long)st->retr_octets,
	    (unsigned long long)st->top, (unsigned long long)st->top_octets,
	    (unsigned long long)st->dele, (unsigned long long)st->dele_octets,
	    left, (unsigned long long)left_octets, ms / 1000, ms % 1000);
}
