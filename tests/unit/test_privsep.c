/*
 * test_privsep.c: the monitor trusts nothing the pre-login process sends.
 * Malformed, out-of-order and excess records end the dialogue; good ones
 * are answered; the handover carries the unread input.
 */
#include <sys/socket.h>
#include <sys/wait.h>

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
	return AUTH_FAIL;
}

/* Runs the monitor on one end while the test writes raw bytes to the other. */
struct run {
	int		 sv[2];
};

static void
start(struct run *r)
{
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, r->sv), 0);
}

static int
monitor(struct run *r, int max_tries, struct auth_user *u, struct ps_msg *hand)
{
	int	 ok;

	/* Our end stays open to take the replies; every case ends by itself. */
	ok = ps_monitor(r->sv[0], check, NULL, max_tries, u, hand);
	close(r->sv[0]);
	close(r->sv[1]);
	return ok;
}

static void
auth_msg(struct ps_msg *m, const char *user, const char *pass)
{
	memset(m, 0, sizeof(*m));
	m->type = PS_AUTH;
	m->req.kind = AUTH_KIND_PASS;
	strcpy(m->req.user, user);
	strcpy(m->req.pass, pass);
}

/* Queues records (they wait in the socket) before the monitor runs. */
static void
queue(struct run *r, const void *buf, size_t len)
{
	assert_int_equal(send(r->sv[1], buf, len, 0), (ssize_t)len);
}

static void
test_login_and_handover(void **state)
{
	struct run	 r;
	struct ps_msg	 m, hand;
	struct auth_user u;

	(void)state;
	start(&r);
	auth_msg(&m, "alice", "wrong");
	queue(&r, &m, sizeof(m));
	auth_msg(&m, "alice", "secret");
	queue(&r, &m, sizeof(m));
	memset(&m, 0, sizeof(m));
	m.type = PS_HANDOVER;
	m.len = 11;
	memcpy(m.data, "STAT\r\nLIST\r", 11);
	queue(&r, &m, sizeof(m));
	checks = 0;
	assert_int_equal(monitor(&r, 3, &u, &hand), 1);
	assert_int_equal(checks, 2);
	assert_string_equal(u.name, "alice");
	assert_int_equal(hand.len, 11);
	assert_memory_equal(hand.data, "STAT\r\nLIST\r", 11);
}

static void
test_short_record(void **state)
{
	struct run	 r;
	struct ps_msg	 m, hand;
	struct auth_user u;

	(void)state;
	start(&r);
	auth_msg(&m, "alice", "secret");
	queue(&r, &m, sizeof(m) - 1);
	checks = 0;
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);
	assert_int_equal(checks, 0);
}

static void
test_long_record(void **state)
{
	struct run	 r;
	char		 big[sizeof(struct ps_msg) + 16];
	struct ps_msg	 hand;
	struct auth_user u;

	(void)state;
	start(&r);
	memset(big, 0, sizeof(big));
	auth_msg((struct ps_msg *)(void *)big, "alice", "secret");
	queue(&r, big, sizeof(big));
	checks = 0;
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);
	assert_int_equal(checks, 0);
}

static void
test_unterminated_strings(void **state)
{
	struct run	 r;
	struct ps_msg	 m, hand;
	struct auth_user u;

	(void)state;
	start(&r);
	auth_msg(&m, "alice", "secret");
	memset(m.req.user, 'a', sizeof(m.req.user));
	queue(&r, &m, sizeof(m));
	checks = 0;
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);
	assert_int_equal(checks, 0);

	start(&r);
	auth_msg(&m, "alice", "secret");
	memset(m.req.pass, 'p', sizeof(m.req.pass));
	queue(&r, &m, sizeof(m));
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);
	assert_int_equal(checks, 0);
}

static void
test_bad_fields(void **state)
{
	struct run	 r;
	struct ps_msg	 m, hand;
	struct auth_user u;
	int		 i;

	(void)state;
	for (i = 0; i < 5; i++) {
		start(&r);
		auth_msg(&m, "alice", "secret");
		switch (i) {
		case 0:
			m.type = 99;			/* unknown type */
			break;
		case 1:
			m.req.kind = 7;			/* unknown kind */
			break;
		case 2:
			strcpy(m.req.user, "al\x01ice");	/* control byte */
			break;
		case 3:
			m.req.user[0] = '\0';		/* empty name */
			break;
		case 4:
			m.type = PS_RESULT;		/* wrong direction */
			break;
		}
		queue(&r, &m, sizeof(m));
		checks = 0;
		assert_int_equal(monitor(&r, 3, &u, &hand), 0);
		assert_int_equal(checks, 0);
	}
}

static void
test_too_many_tries(void **state)
{
	struct run	 r;
	struct ps_msg	 m, hand;
	struct auth_user u;
	int		 i;

	(void)state;
	start(&r);
	for (i = 0; i < 3; i++) {
		auth_msg(&m, "alice", "wrong");
		queue(&r, &m, sizeof(m));
	}
	auth_msg(&m, "alice", "secret");	/* one more than allowed */
	queue(&r, &m, sizeof(m));
	checks = 0;
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);
	assert_int_equal(checks, 3);
}

static void
test_no_second_request_after_login(void **state)
{
	struct run	 r;
	struct ps_msg	 m, hand;
	struct auth_user u;

	(void)state;
	start(&r);
	auth_msg(&m, "alice", "secret");
	queue(&r, &m, sizeof(m));
	auth_msg(&m, "alice", "secret");	/* not a handover */
	queue(&r, &m, sizeof(m));
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);

	start(&r);
	auth_msg(&m, "alice", "secret");
	queue(&r, &m, sizeof(m));
	memset(&m, 0, sizeof(m));
	m.type = PS_HANDOVER;
	m.len = sizeof(m.data) + 1;		/* more than the buffer */
	queue(&r, &m, sizeof(m));
	assert_int_equal(monitor(&r, 3, &u, &hand), 0);
}

static void
test_child_side(void **state)
{
	int		 sv[2], fd;
	struct auth_request req;
	struct ps_msg	 m;
	pid_t		 pid;
	int		 status;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	if ((pid = fork()) == 0) {
		struct auth_user u;
		struct ps_msg	 hand;

		close(sv[1]);
		_exit(ps_monitor(sv[0], check, NULL, 3, &u, &hand) == 1 &&
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
	memset(&m, 0, sizeof(m));
	m.type = PS_HANDOVER;
	assert_int_equal(ps_send(fd, &m), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(fd);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_login_and_handover),
		cmocka_unit_test(test_short_record),
		cmocka_unit_test(test_long_record),
		cmocka_unit_test(test_unterminated_strings),
		cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_too_many_tries),
		cmocka_unit_test(test_no_second_request_after_login),
		cmocka_unit_test(test_child_side),
	};

	log_init("test_privsep", 1, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
