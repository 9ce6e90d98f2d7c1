/*
 * test_privsep.c: the monitor trusts nothing the pre-login process sends.
 * Records are built byte by byte here, as the wire format in privsep.h
 * describes them, not with privsep.c's own encoder: short, long,
 * malformed, out-of-order and excess records end the dialogue; good ones
 * are answered; the handover carries the unread input; the checker's
 * record round-trips.
 */
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth.h"
#include "log.h"
#include "privsep.h"

static int	 checks;
static enum auth_status next_status = AUTH_FAIL;

static enum auth_status
check(void *arg, struct auth_request *req, struct auth_user *u)
{
	(void)arg;
	checks++;
	if (strcmp(req->user, "alice") == 0 && strcmp(req->pass, "secret") == 0) {
		memset(u, 0, sizeof(*u));
		strcpy(u->name, "alice");
		u->uid = 1000;
		return AUTH_OK;
	}
	return next_status;
}

/* A record under construction, in the wire format of privsep.h. */
struct wire {
	unsigned char	 b[PS_RECORD_MAX + 64];
	size_t		 n;
};

static void
w_u32(struct wire *w, uint32_t v)
{
	memcpy(w->b + w->n, &v, 4);
	w->n += 4;
}

static void
w_bytes(struct wire *w, const void *p, size_t n)
{
	memcpy(w->b + w->n, p, n);
	w->n += n;
}

static void
w_auth(struct wire *w, uint32_t kind, const char *user, size_t ulen,
    const char *pass, size_t plen)
{
	w->n = 0;
	w_u32(w, PS_AUTH);
	w_u32(w, kind);
	w_u32(w, (uint32_t)ulen);
	w_u32(w, (uint32_t)plen);
	w_bytes(w, user, ulen);
	w_bytes(w, pass, plen);
}

static void
w_login(struct wire *w, const char *user, const char *pass)
{
	w_auth(w, AUTH_KIND_PASS, user, strlen(user), pass, strlen(pass));
}

static void
w_handover(struct wire *w, const char *data, size_t len)
{
	w->n = 0;
	w_u32(w, PS_HANDOVER);
	w_bytes(w, data, len);
}

struct run {
	int		 sv[2];
};

static void
start(struct run *r)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, r->sv), 0);
}

/* Queues a record (it waits in the socket) before the monitor runs. */
static void
queue(struct run *r, const struct wire *w, size_t len)
{
	assert_int_equal(send(r->sv[1], w->b, len, 0), (ssize_t)len);
}

static int
monitor(struct run *r, struct auth_user *u, struct ps_msg *hand)
{
	int	 ok;

	/* Our end stays open to take the replies; every case ends by itself. */
	ok = ps_monitor(r->sv[0], check, NULL, u, hand);
	close(r->sv[0]);
	close(r->sv[1]);
	return ok;
}

/* Runs the monitor on records that must all be refused unchecked. */
static void
refused(const struct wire *w, size_t len)
{
	static struct ps_msg hand;
	struct run	 r;
	struct auth_user u;

	start(&r);
	queue(&r, w, len);
	assert_int_equal(shutdown(r.sv[1], SHUT_WR), 0);
	checks = 0;
	assert_int_equal(monitor(&r, &u, &hand), 0);
	assert_int_equal(checks, 0);
}

static void
test_login_and_handover(void **state)
{
	static struct ps_msg hand;
	struct wire	 w;
	struct run	 r;
	struct auth_user u;

	(void)state;
	start(&r);
	w_login(&w, "alice", "wrong");
	queue(&r, &w, w.n);
	w_login(&w, "alice", "secret");
	queue(&r, &w, w.n);
	w_handover(&w, "STAT\r\nLIST\r", 11);
	queue(&r, &w, w.n);
	checks = 0;
	assert_int_equal(monitor(&r, &u, &hand), 1);
	assert_int_equal(checks, 2);
	assert_string_equal(u.name, "alice");
	assert_int_equal(hand.len, 11);
	assert_memory_equal(hand.data, "STAT\r\nLIST\r", 11);
}

/* A record one byte short, at every length, is refused unchecked. */
static void
test_short_record(void **state)
{
	struct wire	 w;
	size_t		 len;

	(void)state;
	w_login(&w, "alice", "secret");
	for (len = 1; len < w.n; len++)
		refused(&w, len);
}

static void
test_long_record(void **state)
{
	struct wire	 w;

	(void)state;
	/* One byte of trailing junk after a complete record. */
	w_login(&w, "alice", "secret");
	w.b[w.n++] = 'x';
	refused(&w, w.n);
	/* More than any record may hold. */
	memset(&w, 'a', sizeof(w));
	w.n = 0;
	w_u32(&w, PS_HANDOVER);
	refused(&w, PS_RECORD_MAX + 1);
	/* Lengths that claim more than the fields can hold. */
	w_auth(&w, AUTH_KIND_PASS, "alice", 5, "secret", 6);
	memcpy(w.b + 8, &(uint32_t){ AUTH_NAME_MAX }, 4);
	refused(&w, w.n);
	{
		static char	 pass[AUTH_PASS_MAX];

		memset(pass, 'p', sizeof(pass));
		w_auth(&w, AUTH_KIND_PASS, "alice", 5, pass, sizeof(pass));
		refused(&w, w.n);
		/* The longest password that fits is taken. */
		w_auth(&w, AUTH_KIND_PASS, "alice", 5, pass, sizeof(pass) - 1);
		{
			static struct ps_msg hand;
			struct run	 r;
			struct auth_user u;

			start(&r);
			queue(&r, &w, w.n);
			/* Then EOF: the answered monitor waits for no more. */
			assert_int_equal(shutdown(r.sv[1], SHUT_WR), 0);
			checks = 0;
			next_status = AUTH_FAIL;
			(void)monitor(&r, &u, &hand);
			assert_int_equal(checks, 1);
		}
	}
	/* A huge length must not wrap the bounds check. */
	w_auth(&w, AUTH_KIND_PASS, "alice", 5, "secret", 6);
	memcpy(w.b + 12, &(uint32_t){ UINT32_MAX }, 4);
	refused(&w, w.n);
}

static void
test_nul_inside_strings(void **state)
{
	struct wire	 w;

	(void)state;
	w_auth(&w, AUTH_KIND_PASS, "ali\0e", 5, "secret", 6);
	refused(&w, w.n);
	w_auth(&w, AUTH_KIND_PASS, "alice", 5, "sec\0et", 6);
	refused(&w, w.n);
}

static void
test_bad_fields(void **state)
{
	struct wire	 w;

	(void)state;
	w_login(&w, "alice", "secret");
	memcpy(w.b, &(uint32_t){ 99 }, 4);		/* unknown type */
	refused(&w, w.n);
	w_auth(&w, 7, "alice", 5, "secret", 6);		/* unknown kind */
	refused(&w, w.n);
	w_login(&w, "al\x01ice", "secret");		/* control byte */
	refused(&w, w.n);
	w_login(&w, "", "secret");			/* empty name */
	refused(&w, w.n);
	w.n = 0;					/* wrong direction */
	w_u32(&w, PS_RESULT);
	w_u32(&w, AUTH_OK);
	refused(&w, w.n);
	w.n = 0;					/* a checker's record */
	w_u32(&w, PS_CHECKED);
	refused(&w, w.n);
	refused(&w, 0);					/* an empty packet */
}

static void
test_too_many_tries(void **state)
{
	static struct ps_msg hand;
	struct wire	 w;
	struct run	 r;
	struct auth_user u;
	int		 i;

	(void)state;
	start(&r);
	for (i = 0; i < AUTH_MAX_FAILS; i++) {
		w_login(&w, "alice", "wrong");
		queue(&r, &w, w.n);
	}
	w_login(&w, "alice", "secret");	/* one more than allowed */
	queue(&r, &w, w.n);
	checks = 0;
	next_status = AUTH_FAIL;
	assert_int_equal(monitor(&r, &u, &hand), 0);
	assert_int_equal(checks, AUTH_MAX_FAILS);
}

/* Temporary failures have their own limit, the one the session keeps. */
static void
test_too_many_tempfails(void **state)
{
	static struct ps_msg hand;
	struct wire	 w;
	struct run	 r;
	struct auth_user u;
	int		 i;

	(void)state;
	start(&r);
	for (i = 0; i < AUTH_MAX_TEMPFAILS; i++) {
		w_login(&w, "alice", "wrong");
		queue(&r, &w, w.n);
	}
	w_login(&w, "alice", "secret");
	queue(&r, &w, w.n);
	checks = 0;
	next_status = AUTH_TEMPFAIL;
	assert_int_equal(monitor(&r, &u, &hand), 0);
	assert_int_equal(checks, AUTH_MAX_TEMPFAILS);
	next_status = AUTH_FAIL;

	/* Fewer than the limit, then a login: fine. */
	start(&r);
	for (i = 0; i < AUTH_MAX_TEMPFAILS - 1; i++) {
		w_login(&w, "alice", "wrong");
		queue(&r, &w, w.n);
	}
	w_login(&w, "alice", "secret");
	queue(&r, &w, w.n);
	w_handover(&w, "", 0);
	queue(&r, &w, w.n);
	checks = 0;
	next_status = AUTH_TEMPFAIL;
	assert_int_equal(monitor(&r, &u, &hand), 1);
	next_status = AUTH_FAIL;
}

static void
test_no_second_request_after_login(void **state)
{
	static struct ps_msg hand;
	static char	 big[IO_INBUF_SIZE + 1];
	struct wire	 w;
	struct run	 r;
	struct auth_user u;

	(void)state;
	start(&r);
	w_login(&w, "alice", "secret");
	queue(&r, &w, w.n);
	w_login(&w, "alice", "secret");	/* not a handover */
	queue(&r, &w, w.n);
	assert_int_equal(monitor(&r, &u, &hand), 0);

	start(&r);
	w_login(&w, "alice", "secret");
	queue(&r, &w, w.n);
	w_handover(&w, big, sizeof(big));	/* more than the buffer */
	queue(&r, &w, w.n);
	assert_int_equal(monitor(&r, &u, &hand), 0);
}

static void
test_child_side(void **state)
{
	int		 sv[2], fd;
	struct auth_request req;
	pid_t		 pid;
	int		 status;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	if ((pid = fork()) == 0) {
		static struct ps_msg hand;
		struct auth_user u;

		close(sv[1]);
		_exit(ps_monitor(sv[0], check, NULL, &u, &hand) == 1 &&
		    hand.len == 0 ? 0 : 1);
	}
	close(sv[0]);
	fd = sv[1];
	memset(&req, 0, sizeof(req));
	req.kind = AUTH_KIND_PASS;
	strcpy(req.user, "alice");
	strcpy(req.pass, "wrong");
	assert_int_equal(ps_child_authenticate(&fd, &req), AUTH_FAIL);
	/* The request was wiped once sent. */
	assert_int_equal(req.pass[0], '\0');
	strcpy(req.user, "alice");
	strcpy(req.pass, "secret");
	req.kind = AUTH_KIND_PASS;
	assert_int_equal(ps_child_authenticate(&fd, &req), AUTH_OK);
	assert_int_equal(ps_send_handover(fd, "", 0), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(fd);
}

/* The checker's record: every field survives, and it is checked too. */
static void
test_checked_record(void **state)
{
	static struct ps_msg m;
	struct auth_user u;
	struct wire	 w;
	int		 sv[2];

	(void)state;
	memset(&u, 0, sizeof(u));
	strcpy(u.name, "alice");
	strcpy(u.account, "alice");
	strcpy(u.mailbox, "/var/mail/alice");
	u.uid = 1000;
	u.gid = 1001;
	u.known = 1;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	assert_int_equal(ps_send_checked(sv[0], AUTH_OK, &u), 0);
	assert_int_equal(ps_recv(sv[1], &m), 1);
	assert_int_equal(m.type, PS_CHECKED);
	assert_int_equal(m.status, AUTH_OK);
	assert_string_equal(m.user.name, "alice");
	assert_string_equal(m.user.mailbox, "/var/mail/alice");
	assert_int_equal(m.user.uid, 1000);
	assert_int_equal(m.user.gid, 1001);
	assert_int_equal(m.user.known, 1);

	/* A bad status, and a mailbox length past the record. */
	w.n = 0;
	w_u32(&w, PS_CHECKED);
	w_u32(&w, 9);
	w_u32(&w, 1000);
	w_u32(&w, 1000);
	w_u32(&w, 1);
	w_u32(&w, 0);
	w_u32(&w, 0);
	w_u32(&w, 0);
	assert_int_equal(send(sv[0], w.b, w.n, 0), (ssize_t)w.n);
	assert_int_equal(ps_recv(sv[1], &m), -1);
	assert_int_equal(errno, EBADMSG);
	memcpy(w.b + 4, &(uint32_t){ AUTH_OK }, 4);
	memcpy(w.b + 28, &(uint32_t){ 5 }, 4);
	assert_int_equal(send(sv[0], w.b, w.n, 0), (ssize_t)w.n);
	assert_int_equal(ps_recv(sv[1], &m), -1);
	/* Oversized: EMSGSIZE, and nothing of it is kept. */
	memset(w.b, 'x', sizeof(w.b));
	assert_int_equal(send(sv[0], w.b, PS_RECORD_MAX + 1, 0),
	    PS_RECORD_MAX + 1);
	assert_int_equal(ps_recv(sv[1], &m), -1);
	assert_int_equal(errno, EMSGSIZE);
	assert_int_equal(m.type, 0);
	close(sv[0]);
	assert_int_equal(ps_recv(sv[1], &m), 0);
	close(sv[1]);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_login_and_handover),
		cmocka_unit_test(test_short_record),
		cmocka_unit_test(test_long_record),
		cmocka_unit_test(test_nul_inside_strings),
		cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_too_many_tries),
		cmocka_unit_test(test_too_many_tempfails),
		cmocka_unit_test(test_no_second_request_after_login),
		cmocka_unit_test(test_child_side),
		cmocka_unit_test(test_checked_record),
	};

	log_init("test_privsep", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
