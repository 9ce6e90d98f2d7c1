/*
 * pop3d.h: the configuration main() builds from the command line, shared
 * by the processes it starts (monitor, pre-login, session).  Read-only
 * once the options are parsed.
 */
#ifndef POP3D_POP3D_H
#define POP3D_POP3D_H

#include "auth.h"
#include "proxy.h"

#define POP3D_VERSION		"0.2"

struct pop3d_config {
	struct auth_config	 auth;
	int			 timeout;	/* -t: seconds of silence */
	const char		*rundir;	/* -R: host-local run directory */
	const char		*recover;	/* -r: recover this and exit */
	const char		*list;		/* -l: list its UIDLs and exit */
	int			 uidl_scheme;	/* -U: enum maildrop_uidl_scheme */
	int			 dotlock_stale;	/* -L: seconds, on shared storage */
	const char		*prelogin_user;	/* -u */
	const char		*chroot_dir;	/* -C */
	const char		*state_dir;	/* -S: per-user state, shareable */
	int			 check_only;	/* -n: check the setup, exit */
	int			 fail_delay_ms;	/* -D */
	int			 cleartext_protected;	/* -c */
	int			 marked_protected;	/* -T */
	int			 log_stderr;	/* -d */
	int			 verbose;	/* -v */
	struct proxy_nets	 proxy_nets;	/* -P: where PROXY headers come from */
};

#endif
