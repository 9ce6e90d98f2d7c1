/*
 * privdrop.h: the one way pop3d gives up root.  Every process that stops
 * being root (the pre-login process, the session, pop3d -r) goes through
 * privdrop_permanently(), which proves the drop before it returns.
 */
#ifndef POP3D_PRIVDROP_H
#define POP3D_PRIVDROP_H

#include <sys/types.h>

/*
 * Becomes uid and gid for good: real, effective and saved ids, and no
 * supplementary group but gid.  Then proves it: the ids read back are
 * exactly these, and every id held before (uid 0, the old gids and
 * groups) can no longer be regained.  uid 0 is refused.  Any failure is
 * fatal: a process that is not sure who it is must not go on.
 */
void	 privdrop_permanently(uid_t uid, gid_t gid);

#endif
