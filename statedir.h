/*
 * statedir.h: the per-user state directory (-S DIR), where a maildrop's
 * session lock, commit journal and index live: DIR/ACCOUNT, owned by the
 * user, mode 0700.  Prepared before the privilege drop, by root (or, in
 * the single-process mode, by the user themselves); the maildrop code
 * re-checks it and every file in it after the drop (mbox_impl.h).
 */
#ifndef POP3D_STATEDIR_H
#define POP3D_STATEDIR_H

#include <sys/types.h>

#include <stddef.h>

/*
 * Makes sure DIR/ACCOUNT exists as a directory owned by uid, mode 0700,
 * and writes its path into path_r.  DIR must be a real directory (not a
 * symlink) owned by root or by the caller that neither group nor others
 * may write; it is created when missing (0755 by root, else 0700 with
 * its parents).  A subdirectory made here gets owner uid:gid and mode
 * 0700; an existing one must already be exactly that (never a symlink,
 * never another's): it is never "fixed", since its owner may have put it
 * there to mislead us.  account must be a plain file name.  Returns 0,
 * or -1 with the reason logged.
 */
int	 statedir_prepare(const char *dir, const char *account, uid_t uid,
	    gid_t gid, char *path_r, size_t path_size);

#endif
