/*
 * monitor.h: the root side of a login.  The monitor greets the client,
 * forks the pre-login process, and checks each request it sends in a
 * checker process of its own (PAM runs there, with no client in reach)
 * that exits after one check.  Runs as root; reads nothing from the
 * network itself.
 */
#ifndef POP3D_MONITOR_H
#define POP3D_MONITOR_H

#include "auth.h"
#include "privsep.h"

struct io;
struct peer;
struct pop3d_config;

/*
 * Greets through io with banner, then serves the pre-login process.
 * Returns 1 on a login, with the user in *user_r and the input the
 * client already sent in *hand_r; 0 when the session ended without one,
 * with pop3d's exit status in *exit_r (0 after QUIT); -1, before the
 * greeting, when the pre-login account or chroot is unusable (logged).
 */
int	 monitor_login(const struct pop3d_config *, const struct peer *,
	    struct io *io, const char *banner, int cleartext_ok,
	    struct auth_user *user_r, struct ps_msg *hand_r, int *exit_r);

/* Reaps the last checker process, if one is left. */
void	 monitor_reap(void);

/*
 * The rule for the pre-login chroot, checked without changing anything
 * (monitor_login() creates a missing one first): a directory of root's,
 * not a symlink, not writable by group or others, and empty.  Returns 0,
 * or -1 with a reason in *why_r, or with *why_r NULL and errno set by
 * the call that failed.  Logs nothing.
 */
int	 monitor_chroot_check(const char *dir, const char **why_r);

/*
 * The account the pre-login process runs as: user when it exists and is
 * not root; for the default user only, nobody (with *fallback_r set)
 * when it does not.  Returns getpwnam()'s entry, or NULL when there is
 * no such account.  Logs nothing.
 */
struct passwd;
const struct passwd *monitor_prelogin_pw(const char *user, int *fallback_r);

#endif
