/*
 * fuzz_privsep.c: libFuzzer harness for the records between pop3d's
 * processes (privsep.c).  It runs as whoever runs the fuzzer and needs
 * no privilege: one SOCK_SEQPACKET socketpair, made once.  Each input is
 * used three ways:
 *
 * 1. As one packet, for ps_recv.  A decoder written here from the wire
 *    format in privsep.h says what ps_recv must make of it (accept with
 *    exactly these fields, EOF, or reject with EBADMSG / EMSGSIZE and a
 *    wiped message).  An accepted record is sent again with ps_send_* and
 *    must come back byte for byte and field for field.
 * 2. As the raw structures the senders take (struct auth_request, struct
 *    auth_user, a status, handover bytes): what ps_send_* puts on the wire
 *    must be accepted exactly when the structure keeps the record's rules,
 *    and then decode to the same fields.
 * 3. Split into packets (a 2-byte big-endian length before each) that a
 *    pre-login process might send to ps_monitor, with a check function of
 *    the harness's.  A model of the monitor's rules predicts every check
 *    (and its request), every PS_RESULT sent back, and the outcome: no
 *    more checks than the tally allows, and no login without a handover.
 * 4. As the monitor's answer to the pre-login side's ps_child_authenticate
 *    (its status only if it is a good PS_RESULT, else TEMPFAIL, and the
 *    request wiped), and as the unread input ps_child_handover sends.
 */
#include <sys/socket.h>

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "auth.h"
#include "io.h"
#include "log.h"
#include "privsep.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);
int	LLVMFuzzerInitialize(int *, char ***);

/* Single packets up to this size; larger inputs are cut. */
#define ONE_MAX		(PS_RECORD_MAX + 16)
/* Packets sent to the monitor at most: enough for every rule. */
#define MON_PACKETS	16

/* The wire values, written out again rather than taken from the enums. */
#define W_AUTH		1
#define W_RESULT	2
#define W_HANDOVER	3
#define W_CHECKED	4
#define W_STATUS_MAX	2	/* OK 0, FAIL 1, TEMPFAIL 2 */

/* sv[0]: the receiving end (the monitor's); sv[1]: the peer's. */
static int		 sv[2] = { -1, -1 };
static struct ps_msg	 got, want, again;
static unsigned char	 raw[ONE_MAX + 1];

/* What the monitor is expected to do with one run of packets. */
struct monrun {
	struct auth_request	 want_req[MON_PACKETS];
	enum auth_status	 want_st[MON_PACKETS];
	int			 want_calls;
	int			 calls;
	struct auth_user	 user;	/* what the check filled */
};

static struct monrun	 run;
static struct ps_msg	 handover;
static struct auth_user	 user_r;

/*
 * The monitor logs every bad record; millions of them would go to the
 * mail log of the machine that runs the fuzzer.  The message is still
 * formatted (log.c's vsnprintf), only not sent.
 */
void
syslog(int pri, const char *fmt, ...)
{
	(void)pri;
	(void)fmt;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int	 sz = 4 * 1024 * 1024;

	(void)argc;
	(void)argv;
	log_init("fuzz", 0, 0);
	/* Non-blocking: a record nobody sent is EAGAIN, not a hang. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sv) == -1)
		abort();
	/* Room for MON_PACKETS of the largest records, queued at once. */
	(void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz));
	(void)setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz));
	return 0;
}

static uint32_t
rd32(const unsigned char *p)
{
	uint32_t	 v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* A string field: no NUL byte, and room for one after it in bufsize. */
static int
field_ok(const unsigned char *p, uint64_t n, size_t bufsize)
{
	uint64_t	 i;

	if (n >= bufsize)
		return 0;
	for (i = 0; i < n; i++)
		if (p[i] == '\0')
			return 0;
	return 1;
}

/* A user name: 1 to 255 bytes, none below 0x20 nor DEL. */
static int
name_ok(const unsigned char *p, uint64_t n)
{
	uint64_t	 i;

	if (n == 0 || n > 255)
		return 0;
	for (i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return 0;
	return 1;
}

/*
 * What ps_recv must make of the packet p[0..n): 1 with *w as the decoded
 * record, 0 (EOF), or -1 (rejected).  Straight from privsep.h's table.
 */
static int
expect_record(const unsigned char *p, size_t n, struct ps_msg *w)
{
	uint64_t	 a, b, c;
	uint32_t	 k;

	memset(w, 0, sizeof(*w));
	if (n == 0)
		return 0;
	if (n > PS_RECORD_MAX || n < 4)
		return -1;
	switch (rd32(p)) {
	case W_AUTH:
		if (n < 16)
			return -1;
		k = rd32(p + 4);
		a = rd32(p + 8);
		b = rd32(p + 12);
		if ((k != 1 && k != 2) || 16 + a + b != n ||
		    !name_ok(p + 16, a) ||
		    !field_ok(p + 16 + a, b, sizeof(w->req.pass)))
			return -1;
		w->type = PS_AUTH;
		w->req.kind = k;
		memcpy(w->req.user, p + 16, a);
		memcpy(w->req.pass, p + 16 + a, b);
		return 1;
	case W_RESULT:
		if (n != 8 || rd32(p + 4) > W_STATUS_MAX)
			return -1;
		w->type = PS_RESULT;
		w->status = (enum auth_status)rd32(p + 4);
		return 1;
	case W_HANDOVER:
		w->type = PS_HANDOVER;
		w->len = n - 4;
		memcpy(w->data, p + 4, n - 4);
		return 1;
	case W_CHECKED:
		if (n < 32 || rd32(p + 4) > W_STATUS_MAX)
			return -1;
		a = rd32(p + 20);
		b = rd32(p + 24);
		c = rd32(p + 28);
		if (32 + a + b + c != n ||
		    !field_ok(p + 32, a, sizeof(w->user.name)) ||
		    !field_ok(p + 32 + a, b, sizeof(w->user.account)) ||
		    !field_ok(p + 32 + a + b, c, sizeof(w->user.mailbox)))
			return -1;
		w->type = PS_CHECKED;
		w->status = (enum auth_status)rd32(p + 4);
		w->user.uid = (uid_t)rd32(p + 8);
		w->user.gid = (gid_t)rd32(p + 12);
		w->user.known = (int)rd32(p + 16);
		memcpy(w->user.name, p + 32, a);
		memcpy(w->user.account, p + 32 + a, b);
		memcpy(w->user.mailbox, p + 32 + a + b, c);
		return 1;
	default:
		return -1;
	}
}

static int
all_zero(const void *p, size_t n)
{
	const unsigned char	*b = p;
	size_t			 i;

	for (i = 0; i < n; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}

static void
send_all(const void *p, size_t n)
{
	if (send(sv[1], p, n, MSG_NOSIGNAL) != (ssize_t)n)
		abort();
}

/* Nothing may be left over in either direction. */
static void
assert_empty(void)
{
	char	 c;

	if (recv(sv[0], &c, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN ||
	    recv(sv[1], &c, 1, MSG_DONTWAIT) != -1 || errno != EAGAIN)
		abort();
}

/* ps_recv on sv[0] must agree with the model, whatever it returns. */
static int
recv_checked(const unsigned char *p, size_t n, struct ps_msg *m)
{
	int	 r, w;

	w = expect_record(p, n, &want);
	r = ps_recv(sv[0], m);
	if (r != w)
		abort();
	if (r == -1 && (errno != (n > PS_RECORD_MAX ? EMSGSIZE : EBADMSG) ||
	    !all_zero(m, sizeof(*m))))
		abort();	/* the reason given, and nothing kept */
	if (r == 0 && !all_zero(m, sizeof(*m)))
		abort();
	if (r == 1 && memcmp(m, &want, sizeof(want)) != 0)
		abort();
	return r;
}

/* Sends m again through privsep.c's encoder. */
static void
resend(const struct ps_msg *m)
{
	int	 r = -1;

	switch (m->type) {
	case PS_AUTH:
		r = ps_send_auth(sv[1], &m->req);
		break;
	case PS_RESULT:
		r = ps_send_result(sv[1], m->status);
		break;
	case PS_HANDOVER:
		r = ps_send_handover(sv[1], m->data, m->len);
		break;
	case PS_CHECKED:
		r = ps_send_checked(sv[1], m->status, &m->user);
		break;
	}
	if (r != 0)
		abort();
}

/* Part 1: the input as one packet, and an accepted one sent back. */
static void
one_packet(const uint8_t *data, size_t size)
{
	ssize_t	 n;

	if (size > ONE_MAX)
		size = ONE_MAX;
	send_all(data, size);
	if (recv_checked(data, size, &got) != 1) {
		assert_empty();
		return;
	}
	/*
	 * The encoder writes the same bytes back; only PS_CHECKED's
	 * "known", a flag, is normalised to 0 or 1 (the decoder takes any
	 * value: noted, harmless, the checker is root).
	 */
	resend(&got);
	if ((n = recv(sv[0], raw, sizeof(raw), MSG_TRUNC)) != (ssize_t)size)
		abort();
	if (got.type == PS_CHECKED) {
		if (rd32(raw + 16) != (got.user.known != 0) ||
		    memcmp(raw, data, 16) != 0 ||
		    memcmp(raw + 20, data + 20, size - 20) != 0)
			abort();
	} else if (memcmp(raw, data, size) != 0)
		abort();
	/* And decodes to the same message. */
	resend(&got);
	if (ps_recv(sv[0], &again) != 1)
		abort();
	if (got.type == PS_CHECKED)
		got.user.known = got.user.known != 0;
	if (memcmp(&got, &again, sizeof(got)) != 0)
		abort();
	assert_empty();
}

/* Part 2: the senders given whatever structures the input spells. */
static void
senders(const uint8_t *data, size_t size)
{
	struct auth_request	 rq;
	struct auth_user	 u;
	size_t			 ul, pl;
	uint32_t		 st;
	int			 ok, r;

	memset(&rq, 0, sizeof(rq));
	memcpy(&rq, data, size < sizeof(rq) ? size : sizeof(rq));
	if (ps_send_auth(sv[1], &rq) != 0)
		abort();
	ul = strnlen(rq.user, sizeof(rq.user));
	pl = strnlen(rq.pass, sizeof(rq.pass));
	ok = (rq.kind == 1 || rq.kind == 2) &&
	    name_ok((const unsigned char *)rq.user, ul) &&
	    pl < sizeof(rq.pass);
	r = ps_recv(sv[0], &got);
	if (r != (ok ? 1 : -1))
		abort();
	if (ok && (got.type != PS_AUTH || got.req.kind != rq.kind ||
	    strcmp(got.req.user, rq.user) != 0 ||
	    strcmp(got.req.pass, rq.pass) != 0))
		abort();

	memset(&u, 0, sizeof(u));
	memcpy(&u, data, size < sizeof(u) ? size : sizeof(u));
	st = size > 0 ? data[size - 1] % 4 : 0;	/* 3 is no status */
	if (ps_send_checked(sv[1], (enum auth_status)st, &u) != 0)
		abort();
	ok = st <= W_STATUS_MAX &&
	    strnlen(u.name, sizeof(u.name)) < sizeof(u.name) &&
	    strnlen(u.account, sizeof(u.account)) < sizeof(u.account) &&
	    strnlen(u.mailbox, sizeof(u.mailbox)) < sizeof(u.mailbox);
	r = ps_recv(sv[0], &got);
	if (r != (ok ? 1 : -1))
		abort();
	if (ok && (got.type != PS_CHECKED || got.status != st ||
	    got.user.uid != u.uid || got.user.gid != u.gid ||
	    got.user.known != (u.known != 0) ||
	    strcmp(got.user.name, u.name) != 0 ||
	    strcmp(got.user.account, u.account) != 0 ||
	    strcmp(got.user.mailbox, u.mailbox) != 0))
		abort();

	st = size >= 4 ? rd32(data) : 0;
	if (ps_send_result(sv[1], (enum auth_status)st) != 0)
		abort();
	r = ps_recv(sv[0], &got);
	if (r != (st <= W_STATUS_MAX ? 1 : -1) ||
	    (r == 1 && (got.type != PS_RESULT || got.status != st)))
		abort();

	/* A handover larger than the input buffer is refused unsent. */
	r = ps_send_handover(sv[1], data, size);
	if (size > IO_INBUF_SIZE) {
		if (r != -1 || errno != EMSGSIZE)
			abort();
	} else if (r != 0 || ps_recv(sv[0], &got) != 1 ||
	    got.type != PS_HANDOVER || got.len != size ||
	    memcmp(got.data, data, size) != 0)
		abort();
	assert_empty();
}

/* The check function's verdict: from the password's first byte. */
static enum auth_status
verdict(const struct auth_request *req)
{
	static const enum auth_status v[3] = {
		AUTH_OK, AUTH_FAIL, AUTH_TEMPFAIL
	};

	if (req->pass[0] == '\0')
		return AUTH_FAIL;
	return v[(unsigned char)req->pass[0] % 3];
}

static enum auth_status
fake_check(void *arg, struct auth_request *req, struct auth_user *u)
{
	struct monrun	*mr = arg;
	enum auth_status st;

	/* Never more checks than the model, nor than the tally allows. */
	if (mr->calls >= mr->want_calls ||
	    mr->calls >= AUTH_MAX_FAILS + AUTH_MAX_TEMPFAILS)
		abort();
	if (memcmp(req, &mr->want_req[mr->calls], sizeof(*req)) != 0)
		abort();
	st = verdict(req);
	if (st != mr->want_st[mr->calls])
		abort();
	mr->calls++;
	if (st == AUTH_OK) {
		memset(u, 0, sizeof(*u));
		memcpy(u->name, req->user, sizeof(u->name));
		memcpy(u->account, req->user, sizeof(u->account));
		(void)strcpy(u->mailbox, "/var/mail/fuzz");
		u->uid = 1000 + (uid_t)mr->calls;
		u->gid = 100;
		u->known = 1;
		mr->user = *u;
	}
	return st;
}

/* Part 3: a pre-login process's packets against ps_monitor. */
static void
monitor_dialogue(const uint8_t *data, size_t size)
{
	const uint8_t	*pk[MON_PACKETS];
	size_t		 pl[MON_PACKETS], off = 0, len;
	struct auth_tally tally = { 0, 0 };
	int		 np = 0, i, r, want_r = 0;
	ssize_t		 n;

	while (np < MON_PACKETS && size - off >= 2) {
		len = (size_t)data[off] << 8 | data[off + 1];
		off += 2;
		if (len > size - off)
			len = size - off;
		pk[np] = data + off;
		pl[np] = len;
		off += len;
		if (send(sv[1], pk[np], pl[np], MSG_NOSIGNAL) !=
		    (ssize_t)pl[np])
			abort();
		np++;
	}

	/* The model: the monitor's rules, one packet after another. */
	memset(&run, 0, sizeof(run));
	memset(&handover, 0, sizeof(handover));
	for (i = 0; i < np; i++) {
		if (expect_record(pk[i], pl[i], &want) != 1 ||
		    want.type != PS_AUTH ||
		    tally.fails >= AUTH_MAX_FAILS ||
		    tally.tempfails >= AUTH_MAX_TEMPFAILS)
			break;
		run.want_req[run.want_calls] = want.req;
		run.want_st[run.want_calls] = verdict(&want.req);
		if (run.want_st[run.want_calls] == AUTH_FAIL)
			tally.fails++;
		else if (run.want_st[run.want_calls] == AUTH_TEMPFAIL)
			tally.tempfails++;
		if (run.want_st[run.want_calls++] != AUTH_OK)
			continue;
		if (i + 1 < np &&
		    expect_record(pk[i + 1], pl[i + 1], &want) == 1 &&
		    want.type == PS_HANDOVER) {
			want_r = 1;
			handover = want;
		}
		break;
	}

	memset(&user_r, 0, sizeof(user_r));
	r = ps_monitor(sv[0], fake_check, &run, &user_r, &got);
	if (r != want_r || run.calls != run.want_calls)
		abort();
	if (r == 1 && (memcmp(&got, &handover, sizeof(got)) != 0 ||
	    memcmp(&user_r, &run.user, sizeof(user_r)) != 0))
		abort();

	/* One PS_RESULT back per check, with its verdict, and no more. */
	for (i = 0; i < run.calls; i++) {
		n = recv(sv[1], raw, sizeof(raw), MSG_TRUNC);
		if (n != 8 || rd32(raw) != W_RESULT ||
		    rd32(raw + 4) != (uint32_t)run.want_st[i])
			abort();
	}
	/* What the monitor did not read stays unread; drop it. */
	while ((n = recv(sv[0], raw, sizeof(raw), MSG_TRUNC)) >= 0)
		;
	if (errno != EAGAIN)
		abort();
	assert_empty();
}

/* Part 4: the pre-login side of the dialogue. */
static void
child_side(const uint8_t *data, size_t size)
{
	static const char user[] = "alice", pass[] = "secret";
	struct auth_request rq;
	enum auth_status want_st;
	struct io	*io;
	const uint8_t	*lf;
	char		 line[256];
	size_t		 n, len, skip = 0;
	int		 fd = sv[0];

	n = size < ONE_MAX ? size : ONE_MAX;
	/* The answer waits before the question is asked: no second thread. */
	send_all(data, n);
	want_st = expect_record(data, n, &want) == 1 &&
	    want.type == PS_RESULT ? want.status : AUTH_TEMPFAIL;
	memset(&rq, 0, sizeof(rq));
	rq.kind = AUTH_KIND_PASS;
	memcpy(rq.user, user, sizeof(user));
	memcpy(rq.pass, pass, sizeof(pass));
	if (ps_child_authenticate(&fd, &rq) != want_st ||
	    !all_zero(&rq, sizeof(rq)))
		abort();
	if (recv(sv[1], raw, sizeof(raw), MSG_TRUNC) != 16 + 5 + 6 ||
	    expect_record(raw, 16 + 5 + 6, &want) != 1 ||
	    want.type != PS_AUTH || strcmp(want.req.user, user) != 0 ||
	    strcmp(want.req.pass, pass) != 0)
		abort();
	assert_empty();

	/* The handover: what the dialogue left unread, and only that. */
	n = size < IO_INBUF_SIZE ? size : IO_INBUF_SIZE;
	if ((io = io_new(sv[0], sv[0], 5)) == NULL ||
	    io_preload(io, data, n) != 0)
		abort();
	if ((lf = memchr(data, '\n', n)) != NULL) {
		skip = (size_t)(lf - data) + 1;
		(void)io_getline(io, line, sizeof(line), sizeof(line) - 1,
		    &len);
	}
	if (ps_child_handover(sv[0], io) != 0 ||
	    recv(sv[1], raw, sizeof(raw), MSG_TRUNC) !=
	    (ssize_t)(4 + n - skip) || rd32(raw) != W_HANDOVER ||
	    memcmp(raw + 4, data + skip, n - skip) != 0)
		abort();
	io_free(io);
	assert_empty();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	one_packet(data, size);
	senders(data, size);
	monitor_dialogue(data, size);
	child_side(data, size);
	return 0;
}
