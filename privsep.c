/*
 * privsep.c: the records between the pre-login process and the root
 * monitor (see privsep.h).  The child side runs unprivileged in a chroot;
 * the monitor side runs as root and validates every record.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "privsep.h"

int
ps_send(int fd, const struct ps_msg *m)
{
	ssize_t	 n;

	do
		n = send(fd, m, sizeof(*m), MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	if (n != (ssize_t)sizeof(*m)) {
		if (n >= 0)
			errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

int
ps_recv(int fd, struct ps_msg *m)
{
	ssize_t	 n;

	memset(m, 0, sizeof(*m));
	do
		n = recv(fd, m, sizeof(*m), MSG_TRUNC);
	while (n == -1 && errno == EINTR);
	if (n == 0)
		return 0;
	if (n != (ssize_t)sizeof(*m)) {
		explicit_bzero(m, sizeof(*m));
		if (n > 0)
			errno = EBADMSG;
		return -1;
	}
	switch (m->type) {
	case PS_AUTH:
		if ((m->req.kind != AUTH_KIND_PASS &&
		    m->req.kind != AUTH_KIND_APOP) ||
		    memchr(m->req.user, '\0', sizeof(m->req.user)) == NULL ||
		    memchr(m->req.pass, '\0', sizeof(m->req.pass)) == NULL ||
		    !auth_name_valid(m->req.user, strlen(m->req.user)))
			goto bad;
		return 1;
	case PS_RESULT:
		if (m->status != AUTH_OK && m->status != AUTH_FAIL &&
		    m->status != AUTH_TEMPFAIL)
			goto bad;
		return 1;
	case PS_HANDOVER:
		if (m->len > sizeof(m->data))
			goto bad;
		return 1;
	}
bad:
	explicit_bzero(m, sizeof(*m));
	errno = EBADMSG;
	return -1;
}

enum auth_status
ps_child_authenticate(void *arg, struct auth_request *req)
{
	int		 fd = *(int *)arg;
	struct ps_msg	 m;
	int		 r;

	memset(&m, 0, sizeof(m));
	m.type = PS_AUTH;
	m.req = *req;
	explicit_bzero(req, sizeof(*req));
	r = ps_send(fd, &m);
	explicit_bzero(&m, sizeof(m));
	if (r == -1 || (r = ps_recv(fd, &m)) == -1) {
		log_warn("pre-login: talking to the monitor");
		return AUTH_TEMPFAIL;
	}
	if (r == 0 || m.type != PS_RESULT) {
		log_warnx("pre-login: the monitor did not answer");
		return AUTH_TEMPFAIL;
	}
	return (enum auth_status)m.status;
}

int
ps_child_handover(int fd, struct io *io)
{
	struct ps_msg	 m;
	const void	*buf;
	size_t		 len;
	int		 r;

	memset(&m, 0, sizeof(m));
	m.type = PS_HANDOVER;
	len = io_pending(io, &buf);
	if (len > sizeof(m.data))
		len = sizeof(m.data);	/* cannot happen: same buffer size */
	memcpy(m.data, buf, len);
	m.len = (uint32_t)len;
	r = ps_send(fd, &m);
	explicit_bzero(&m, sizeof(m));
	return r;
}

int
ps_monitor(int fd, ps_check_fn check, void *arg, int max_tries,
    struct auth_user *user_r, struct ps_msg *handover_r)
{
	struct ps_msg	 m, reply;
	enum auth_status st;
	int		 fails = 0, requests = 0, r;

	for (;;) {
		if ((r = ps_recv(fd, &m)) != 1) {
			if (r == -1)
				log_warn("monitor: bad record from pre-login "
				    "process");
			return 0;
		}
		/*
		 * As the session counts: max_tries failures end it; temporary
		 * failures do not count, but nobody gets more than thrice
		 * that many checks.
		 */
		if (m.type != PS_AUTH || fails >= max_tries ||
		    requests >= 3 * max_tries) {
			log_warnx("monitor: pre-login process broke the "
			    "protocol");
			explicit_bzero(&m, sizeof(m));
			return 0;
		}
		requests++;
		st = check(arg, &m.req, user_r);
		if (st == AUTH_FAIL)
			fails++;
		explicit_bzero(&m, sizeof(m));
		memset(&reply, 0, sizeof(reply));
		reply.type = PS_RESULT;
		reply.status = st;
		if (ps_send(fd, &reply) == -1)
			return 0;
		if (st != AUTH_OK)
			continue;
		/* Logged in: the only record left is the handover. */
		if (ps_recv(fd, handover_r) != 1 ||
		    handover_r->type != PS_HANDOVER) {
			log_warnx("monitor: no input handed over after login");
			return 0;
		}
		return 1;
	}
}
