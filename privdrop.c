/*
 * privdrop.c: gives up root for good and proves it (see privdrop.h).
 * Runs as root and returns as the target user; the only file besides the
 * pre-login process's chroot that changes a process's credentials.
 */
#include <sys/types.h>

#include <errno.h>
#include <grp.h>
#include <unistd.h>

#include "log.h"
#include "privdrop.h"

#define OLD_GROUPS_MAX	64	/* supplementary groups checked after a drop */

/*
 * Fails unless every way back to an old gid is closed.  The saved set is
 * checked too: setresgid(-1, old, -1) succeeds if old is still the real
 * or the saved gid.
 */
static void
prove_gid_gone(gid_t old, gid_t gid)
{
	if (old == gid)
		return;
	if (setegid(old) != -1 || setresgid((gid_t)-1, old, (gid_t)-1) != -1 ||
	    setgid(old) != -1)
		fatalx("could regain gid %lu after dropping privileges",
		    (unsigned long)old);
}

void
privdrop_permanently(uid_t uid, gid_t gid)
{
	gid_t	 old[OLD_GROUPS_MAX], now[2];
	gid_t	 rg, eg, sg, oldrg, oldeg, oldsg;
	uid_t	 ru, eu, su, oldru, oldeu, oldsu;
	int	 nold, n, i;

	if (uid == 0)
		fatalx("refusing to drop to uid 0");
	if (getresuid(&oldru, &oldeu, &oldsu) == -1 ||
	    getresgid(&oldrg, &oldeg, &oldsg) == -1)
		fatal("getresuid");
	if ((nold = getgroups(OLD_GROUPS_MAX, old)) == -1)
		nold = 0;	/* more than we check; the kernel's list goes anyway */

	if (setgroups(1, &gid) == -1)
		fatal("setgroups");
	if (setresgid(gid, gid, gid) == -1)
		fatal("setresgid");
	if (setresuid(uid, uid, uid) == -1)
		fatal("setresuid");

	/* What the kernel holds now is exactly what was asked for. */
	if (getresuid(&ru, &eu, &su) == -1 || ru != uid || eu != uid ||
	    su != uid)
		fatalx("uid drop did not take");
	if (getresgid(&rg, &eg, &sg) == -1 || rg != gid || eg != gid ||
	    sg != gid)
		fatalx("gid drop did not take");
	if ((n = getgroups(2, now)) == -1 || n > 1 || (n == 1 && now[0] != gid))
		fatalx("supplementary groups were not dropped");

	/* And nothing held before can be had back. */
	if (setuid(0) != -1 || seteuid(0) != -1 ||
	    setresuid((uid_t)-1, 0, (uid_t)-1) != -1)
		fatalx("could regain root after dropping privileges");
	if ((oldru != uid && seteuid(oldru) != -1) ||
	    (oldsu != uid && seteuid(oldsu) != -1))
		fatalx("could regain an old uid after dropping privileges");
	prove_gid_gone(0, gid);
	prove_gid_gone(oldrg, gid);
	prove_gid_gone(oldeg, gid);
	prove_gid_gone(oldsg, gid);
	for (i = 0; i < nold; i++)
		prove_gid_gone(old[i], gid);
	/*
	 * setgroups() needs CAP_SETGID, and so would setegid(0) above: its
	 * failure is the proof that the group list cannot be changed back.
	 */
	errno = 0;
}
