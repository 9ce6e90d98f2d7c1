/*
 * peer.h: who is on the other end of the connection, for the logs,
 * PAM_RHOST, the cleartext policy (-c) and the failure limits.  Read
 * before the greeting, in the process that pop3d starts as (root under
 * xinetd or systemd).  Nothing here proves anything: it is what the
 * socket or the launcher says.
 */
#ifndef POP3D_PEER_H
#define POP3D_PEER_H

#include <netinet/in.h>

#include <stddef.h>

#include "proxy.h"

#define PEER_NAME_MAX	(INET6_ADDRSTRLEN + 64)

struct peer {
	char	 name[PEER_NAME_MAX];	/* an address, or "local" */
	int	 local;		/* loopback, a Unix socket, or no socket */
	int	 protected;	/* a balancer in front took TLS (PROXY v2 SSL) */
	int	 proxied;	/* the name came from a PROXY header */
};

/*
 * Names the peer of the connection on fd.  When the socket's peer is in
 * nets (pop3d -P), the connection must begin with a PROXY protocol
 * header, read within timeout_ms, and the client it names is the peer;
 * without one, or with a bad one, it logs one line naming the source and
 * returns -1 (the caller closes the connection, sending nothing).  Else
 * the peer is the socket's address, or what the launcher put in
 * REMOTE_ADDR or REMOTE_HOST (systemd, stunnel, xinetd), or "local".
 * Returns 0.
 */
int	 peer_identify(int fd, const struct proxy_nets *nets, int timeout_ms,
	    struct peer *);

#endif
