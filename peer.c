/*
 * peer.c: names the client of the connection (see peer.h).  Runs before
 * the greeting, as whatever pop3d was started as; reads the socket and
 * the launcher's environment, both of which only claim things.
 */
#include <sys/types.h>
#include <sys/socket.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "peer.h"
#include "session.h"

/*
 * Is the socket a relay's (stunnel exec= gives its child a loopback TCP
 * pair) rather than the client's?  A launcher that names another port in
 * REMOTE_PORT than the socket's peer says so; systemd's matches.
 */
static int
relayed(const struct sockaddr_storage *ss)
{
	const char	*env = getenv("REMOTE_PORT");
	unsigned int	 port;
	uint64_t	 n;

	if (ss->ss_family == AF_INET)
		port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
	else if (ss->ss_family == AF_INET6)
		port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	else
		return 0;
	if (env == NULL || session_parse_number(env, 65535, &n) == -1)
		return 0;
	return n != port;
}

/*
 * Names an IPv4 or IPv6 address (an IPv4-mapped one as IPv4, so that
 * logs and fail2ban see one form); returns 0, or -1 for another family.
 */
static int
name_addr(const struct sockaddr_storage *ss, struct peer *p)
{
	if (ss->ss_family == AF_INET) {
		const struct in_addr *a =
		    &((const struct sockaddr_in *)ss)->sin_addr;

		if (inet_ntop(AF_INET, a, p->name, sizeof(p->name)) == NULL)
			return -1;
		p->local = (ntohl(a->s_addr) >> 24) == 127;
		return 0;
	}
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a =
		    &((const struct sockaddr_in6 *)ss)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a)) {
			if (inet_ntop(AF_INET, &a->s6_addr[12], p->name,
			    sizeof(p->name)) == NULL)
				return -1;
			p->local = a->s6_addr[12] == 127;
			return 0;
		}
		if (inet_ntop(AF_INET6, a, p->name, sizeof(p->name)) == NULL)
			return -1;
		p->local = IN6_IS_ADDR_LOOPBACK(a);
		return 0;
	}
	return -1;
}

/* Names the socket's peer; returns 0, or -1 when it has no usable name. */
static int
socket_peer(const struct sockaddr_storage *ss, struct peer *p)
{
	if (relayed(ss))
		return -1;
	if (name_addr(ss, p) == 0)
		return 0;
	/* A Unix socket is local unless a relay (socat) names the peer. */
	if (ss->ss_family == AF_UNIX && getenv("REMOTE_ADDR") == NULL &&
	    getenv("REMOTE_HOST") == NULL) {
		(void)snprintf(p->name, sizeof(p->name), "local");
		p->local = 1;
		return 0;
	}
	return -1;
}

/*
 * The balancer's header: its client becomes the peer.  0, or -1 (logged)
 * when the header is missing or bad.
 */
static int
proxied_peer(int fd, const struct sockaddr_storage *ss, int timeout_ms,
    struct peer *p)
{
	struct proxy_info	 info;
	struct peer		 src;
	const char		*why;

	memset(&src, 0, sizeof(src));
	if (name_addr(ss, &src) == -1)
		(void)snprintf(src.name, sizeof(src.name), "?");
	if (proxy_read(fd, timeout_ms, &info, &why) == -1) {
		log_warnx("proxy: bad header from %s: %s", src.name, why);
		return -1;
	}
	/* LOCAL (a health check): the balancer's own connection. */
	if (info.local || name_addr(&info.src, p) == -1)
		*p = src;
	p->proxied = 1;
	p->protected = info.ssl;
	return 0;
}

int
peer_identify(int fd, const struct proxy_nets *nets, int timeout_ms,
    struct peer *p)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);
	const char		*env;

	memset(p, 0, sizeof(*p));
	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (nets != NULL && nets->n > 0 &&
		    proxy_nets_match(nets, (struct sockaddr *)&ss))
			return proxied_peer(fd, &ss, timeout_ms, p);
		if (socket_peer(&ss, p) == 0)
			return 0;
	}
	if ((env = getenv("REMOTE_ADDR")) == NULL)
		env = getenv("REMOTE_HOST");
	if (env != NULL && *env != '\0') {
		/* Said by a launcher; nothing proves it is local. */
		(void)log_sanitize(p->name, sizeof(p->name), env, strlen(env));
		p->local = 0;
		return 0;
	}
	(void)snprintf(p->name, sizeof(p->name), "local");
	p->local = 1;
	return 0;
}
