/*
 * maildrop.c: the texts of the maildrop statuses (maildrop.h), shared by
 * every mailbox format.  Runs wherever a status is reported: as the mail
 * user in the session, and in pop3d -r.
 */
#include "maildrop.h"

/* The e2e tests and clients match these texts: change them with care. */
const char *const maildrop_status_text[MAILDROP_STATUS_MAX] = {
	[MAILDROP_OK] = "OK",
	[MAILDROP_INUSE] = "[IN-USE] Maildrop is in use by another session",
	[MAILDROP_LOCKED] = "[SYS/TEMP] Mailbox is locked by another program",
	[MAILDROP_BADFORMAT] = "[SYS/PERM] Mailbox is not in mbox format",
	[MAILDROP_BADFILE] = "[SYS/PERM] Mailbox is not a regular file of "
	    "yours",
	[MAILDROP_NOACCESS] = "[SYS/PERM] Mailbox cannot be read (permission "
	    "denied)",
	[MAILDROP_CHANGED] = "[SYS/TEMP] Mailbox was changed by another "
	    "program",
	[MAILDROP_READONLY] = "[SYS/PERM] Mailbox is read-only",
	[MAILDROP_IOERR] = "[SYS/TEMP] Mailbox I/O error",
	[MAILDROP_NOMEM] = "[SYS/TEMP] Out of memory",
};
