/*
 * privsep.c: the records between pop3d's processes (see privsep.h).
 * The pre-login side runs unprivileged in a chroot; the monitor and the
 * checker sides run as root.  Every record is built and checked here,
 * field by field, with its exact length.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "privsep.h"

/* A record being built or taken apart: a bounded cursor over buf. */
struct rec {
	unsigned char	*buf;
	size_t		 len;	/* bytes used (building) or held (reading) */
	size_t		 off;	/* read position */
	int		 bad;	/* a read ran past the end, or a write did */
};

static void
put(struct rec *r, const void *p, size_t n)
{
	if (r->bad || n > PS_RECORD_MAX - r->len) {
		r->bad = 1;
		return;
	}
	memcpy(r->buf + r->len, p, n);
	r->len += n;
}

static void
put_u32(struct rec *r, uint32_t v)
{
	put(r, &v, sizeof(v));
}

static uint32_t
get_u32(struct rec *r)
{
	uint32_t	 v = 0;

	if (r->bad || r->len - r->off < sizeof(v))
		r->bad = 1;
	else {
		memcpy(&v, r->buf + r->off, sizeof(v));
		r->off += sizeof(v);
	}
	return v;
}

/*
 * Copies n bytes of string into dst (dstsize > n) and NUL-terminates it;
 * a NUL inside, or a string that does not fit, spoils the record.
 */
static void
get_str(struct rec *r, size_t n, char *dst, size_t dstsize)
{
	if (r->bad || n >= dstsize || r->len - r->off < n ||
	    memchr(r->buf + r->off, '\0', n) != NULL) {
		r->bad = 1;
		return;
	}
	memcpy(dst, r->buf + r->off, n);
	dst[n] = '\0';
	r->off += n;
}

static int
send_rec(int fd, struct rec *r)
{
	ssize_t	 n;

	if (r->bad) {
		errno = EMSGSIZE;
		return -1;
	}
	do
		n = send(fd, r->buf, r->len, MSG_NOSIGNAL);
	while (n == -1 && errno == EINTR);
	explicit_bzero(r->buf, r->len);
	if (n != (ssize_t)r->len) {
		if (n >= 0)
			errno = EMSGSIZE;
		return -1;
	}
	return 0;
}

int
ps_send_auth(int fd, const struct auth_request *req)
{
	unsigned char	 buf[PS_RECORD_MAX];
	struct rec	 r = { buf, 0, 0, 0 };
	size_t		 ul = strnlen(req->user, sizeof(req->user));
	size_t		 pl = strnlen(req->pass, sizeof(req->pass));

	put_u32(&r, PS_AUTH);
	put_u32(&r, req->kind);
	put_u32(&r, (uint32_t)ul);
	put_u32(&r, (uint32_t)pl);
	put(&r, req->user, ul);
	put(&r, req->pass, pl);
	return send_rec(fd, &r);
}

int
ps_send_result(int fd, enum auth_status st)
{
	unsigned char	 buf[8];
	struct rec	 r = { buf, 0, 0, 0 };

	put_u32(&r, PS_RESULT);
	put_u32(&r, (uint32_t)st);
	return send_rec(fd, &r);
}

int
ps_send_handover(int fd, const void *data, size_t len)
{
	unsigned char	 buf[PS_RECORD_MAX];
	struct rec	 r = { buf, 0, 0, 0 };

	if (len > IO_INBUF_SIZE) {
		errno = EMSGSIZE;
		return -1;
	}
	put_u32(&r, PS_HANDOVER);
	put(&r, data, len);
	return send_rec(fd, &r);
}

int
ps_send_checked(int fd, enum auth_status st, const struct auth_user *u)
{
	unsigned char	 buf[PS_RECORD_MAX];
	struct rec	 r = { buf, 0, 0, 0 };
	size_t		 nl = strnlen(u->name, sizeof(u->name));
	size_t		 al = strnlen(u->account, sizeof(u->account));
	size_t		 ml = strnlen(u->mailbox, sizeof(u->mailbox));

	put_u32(&r, PS_CHECKED);
	put_u32(&r, (uint32_t)st);
	put_u32(&r, (uint32_t)u->uid);
	put_u32(&r, (uint32_t)u->gid);
	put_u32(&r, (uint32_t)(u->known != 0));
	put_u32(&r, (uint32_t)nl);
	put_u32(&r, (uint32_t)al);
	put_u32(&r, (uint32_t)ml);
	put(&r, u->name, nl);
	put(&r, u->account, al);
	put(&r, u->mailbox, ml);
	return send_rec(fd, &r);
}

static int
valid_status(uint32_t st)
{
	return st == AUTH_OK || st == AUTH_FAIL || st == AUTH_TEMPFAIL;
}

/* Takes the payload of r apart into m; 0, or -1 when it is malformed. */
static int
decode(struct rec *r, struct ps_msg *m)
{
	uint32_t	 a, b, c;

	m->type = (enum ps_type)get_u32(r);
	switch (m->type) {
	case PS_AUTH:
		m->req.kind = get_u32(r);
		a = get_u32(r);
		b = get_u32(r);
		get_str(r, a, m->req.user, sizeof(m->req.user));
		get_str(r, b, m->req.pass, sizeof(m->req.pass));
		if (m->req.kind != AUTH_KIND_PASS &&
		    m->req.kind != AUTH_KIND_APOP)
			return -1;
		if (!r->bad && !auth_name_valid(m->req.user, a))
			return -1;
		break;
	case PS_RESULT:
		if (!valid_status(a = get_u32(r)))
			return -1;
		m->status = (enum auth_status)a;
		break;
	case PS_HANDOVER:
		m->len = r->len - r->off;
		if (m->len > sizeof(m->data))
			return -1;
		memcpy(m->data, r->buf + r->off, m->len);
		r->off += m->len;
		break;
	case PS_CHECKED:
		if (!valid_status(a = get_u32(r)))
			return -1;
		m->status = (enum auth_status)a;
		m->user.uid = (uid_t)get_u32(r);
		m->user.gid = (gid_t)get_u32(r);
		m->user.known = (int)get_u32(r);
		a = get_u32(r);
		b = get_u32(r);
		c = get_u32(r);
		get_str(r, a, m->user.name, sizeof(m->user.name));
		get_str(r, b, m->user.account, sizeof(m->user.account));
		get_str(r, c, m->user.mailbox, sizeof(m->user.mailbox));
		break;
	default:
		return -1;
	}
	/* Exactly the length the type defines: nothing missing, nothing more. */
	return r->bad || r->off != r->len ? -1 : 0;
}

int
ps_recv(int fd, struct ps_msg *m)
{
	unsigned char	 buf[PS_RECORD_MAX + 1];
	struct rec	 r = { buf, 0, 0, 0 };
	ssize_t		 n;
	int		 ok;

	memset(m, 0, sizeof(*m));
	/* MSG_TRUNC: the packet's real length, even when it did not fit. */
	do
		n = recv(fd, buf, sizeof(buf), MSG_TRUNC);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if (n == 0)
		return 0;
	if ((size_t)n > PS_RECORD_MAX) {
		explicit_bzero(buf, sizeof(buf));
		errno = EMSGSIZE;
		return -1;
	}
	r.len = (size_t)n;
	ok = decode(&r, m) == 0;
	explicit_bzero(buf, r.len);
	if (!ok) {
		explicit_bzero(m, sizeof(*m));
		errno = EBADMSG;
		return -1;
	}
	return 1;
}

enum auth_status
ps_child_authenticate(void *arg, struct auth_request *req)
{
	int		 fd = *(int *)arg;
	struct ps_msg	 m;
	int		 r;

	r = ps_send_auth(fd, req);
	explicit_bzero(req, sizeof(*req));
	if (r == -1 || (r = ps_recv(fd, &m)) == -1) {
		log_warn("pre-login: talking to the monitor");
		return AUTH_TEMPFAIL;
	}
	if (r == 0 || m.type != PS_RESULT) {
		log_warnx("pre-login: the monitor did not answer");
		return AUTH_TEMPFAIL;
	}
	return m.status;
}

int
ps_child_handover(int fd, struct io *io)
{
	const void	*buf;
	size_t		 len;

	len = io_pending(io, &buf);
	return ps_send_handover(fd, buf, len);
}

int
ps_monitor(int fd, ps_check_fn check, void *arg, struct auth_user *user_r,
    struct ps_msg *handover_r)
{
	struct ps_msg	 m;
	struct auth_tally tally = { 0, 0 };
	enum auth_status st;
	int		 r;

	for (;;) {
		if ((r = ps_recv(fd, &m)) != 1) {
			if (r == -1)
				log_warn("monitor: bad record from the "
				    "pre-login process");
			return 0;
		}
		if (m.type != PS_AUTH || !auth_tally_open(&tally)) {
			log_warnx("monitor: the pre-login process broke the "
			    "protocol");
			explicit_bzero(&m, sizeof(m));
			return 0;
		}
		st = check(arg, &m.req, user_r);
		explicit_bzero(&m, sizeof(m));
		(void)auth_tally_add(&tally, st);
		if (ps_send_result(fd, st) == -1)
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
