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

/* Names the socket's peer; returns 0, or -1 when it has no usable name. */
static int
socket_peer(int fd, struct peer *p)
{
	struct sockaddr_storage	 ss;
	socklen_t		 len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) == -1 || relayed(&ss))
		return -1;
	if (ss.ss_family == AF_INET) {
		const struct in_addr *a = &((struct sockaddr_in *)&ss)->sin_addr;

		if (inet_ntop(AF_INET, a, p->name, sizeof(p->name)) == NULL)
			return -1;
		p->local = (ntohl(a->s_addr) >> 24) == 127;
		return 0;
	}
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a =
		    &((struct sockaddr_in6 *)&ss)->sin6_addr;

		if (inet_ntop(AF_INET6, a, p->name, sizeof(p->name)) == NULL)
			return -1;
		p->local = IN6_IS_ADDR_LOOPBACK(a) ||
		    (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
		return 0;
	}
	/* A Unix socket is local unless a relay (socat) names the peer. */
	if (ss.ss_family == AF_UNIX && getenv("REMOTE_ADDR") == NULL &&
	    getenv("REMOTE_HOST") == NULL) {
		(void)snprintf(p->name, sizeof(p->name), "local");
		p->local = 1;
		return 0;
	}
	return -1;
}

void
peer_identify(int fd, struct peer *p)
{
	const char	*env;

	memset(p, 0, sizeof(*p));
	if (socket_peer(fd, p) == 0)
		return;
	if ((env = getenv("REMOTE_ADDR")) == NULL)
		env = getenv("REMOTE_HOST");
	if (env != NULL && *env != '\0') {
		/* Said by a launcher; nothing proves it is local. */
		(void)log_sanitize(p->name, sizeof(p->name), env, strlen(env));
		p->local = 0;
		return;
	}
	(void)snprintf(p->name, sizeof(p->name), "local");
	p->local = 1;
}
