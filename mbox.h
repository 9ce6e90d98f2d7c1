/*
 * mbox.h: what the Unix mbox implementation of maildrop.h offers beyond
 * it, for tests, fuzzing and the log.  Runs as the mail user.  The
 * POP3 layer never includes this file: it sees only maildrop.h.
 */
#ifndef POP3D_MBOX_H
#define POP3D_MBOX_H

#include <sys/types.h>

#include <stddef.h>

#include "maildrop.h"

/*
 * The parser alone: parses the open file fd, which stays the caller's
 * (maildrop_send reads it; maildrop_close leaves it open).
 */
enum maildrop_status mbox_parse_fd(int fd, struct maildrop **md_r);

/* How maildrop_open() got its table of messages. */
enum mbox_table_source {
	MBOX_TABLE_PARSED,	/* the mailbox was parsed from the start */
	MBOX_TABLE_INDEX,	/* the index, as it was */
	MBOX_TABLE_INDEX_GROWN	/* the index, plus the mail added since */
};
enum mbox_table_source mbox_table_source(const struct maildrop *);

/* File offsets of message idx: the message bytes are [*start_r, *end_r). */
void		 mbox_extent(const struct maildrop *, size_t idx,
		    off_t *start_r, off_t *end_r);

#endif
