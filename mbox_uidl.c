/*
 * mbox_uidl.c: UIDLs for the mbox maildrop (RFC 1939).  A message's UID
 * is the MD5 of its From_ line and of the header lines that mail readers
 * never rewrite, as popa3d makes it: the first Received:, Delivered-To:,
 * X-Delivery-ID:, and Date: and Message-ID: before any Received:.
 * Nothing is written into the mailbox, so a UID is the same in every
 * session.  Identical messages are numbered in file order (h, h-2, h-3).
 * Runs as the mail user.
 */
#include <md5.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mbox_impl.h"

static void
uid_add(struct uid_hash *u, const struct line *l)
{
	size_t	 n = l->content < l->hlen ? (size_t)l->content : l->hlen;

	MD5Update(&u->md5, (const unsigned char *)l->head, n);
	MD5Update(&u->md5, (const unsigned char *)"\n", 1);
}

void
mbox_uid_begin(struct uid_hash *u, const struct line *from)
{
	MD5Init(&u->md5);
	u->received = 0;
	uid_add(u, from);
}

void
mbox_uid_header(struct uid_hash *u, const struct line *l)
{
	/* Most header lines are none of these: one look at the first byte. */
	switch (l->head[0] | 0x20) {
	case 'r':
		if (header_is(l, "Received:") && u->received++ == 0)
			uid_add(u, l);
		return;
	case 'd':
		if (header_is(l, "Delivered-To:") ||
		    (u->received == 0 && header_is(l, "Date:")))
			uid_add(u, l);
		return;
	case 'x':
		if (header_is(l, "X-Delivery-ID:"))
			uid_add(u, l);
		return;
	case 'm':
		if (u->received == 0 && header_is(l, "Message-ID:"))
			uid_add(u, l);
		return;
	default:
		return;
	}
}

void
mbox_uid_end(struct uid_hash *u, unsigned char uid[16])
{
	MD5Final(uid, &u->md5);
}

/*
 * An open-addressing table of message indexes keyed by the digest, whose
 * slot always holds the latest message of that digest.
 */
enum maildrop_status
mbox_uid_number(struct maildrop *mb)
{
	uint32_t	*slot;
	size_t		 i, cap = 16, h;
	uint64_t	 k;

	if (mb->nmsgs == 0)
		return MAILDROP_OK;
	if (mb->nmsgs > UINT32_MAX - 1)
		return MAILDROP_NOMEM;
	while (cap < mb->nmsgs * 2)
		cap *= 2;
	/* Slots hold index + 1; 0 is free. */
	if ((slot = calloc(cap, sizeof(*slot))) == NULL)
		return MAILDROP_NOMEM;
	for (i = 0; i < mb->nmsgs; i++) {
		struct mbox_msg	*m = &mb->msgs[i];

		memcpy(&k, m->uid, sizeof(k));
		m->uid_seq = 1;
		for (h = (size_t)k & (cap - 1); slot[h] != 0;
		    h = (h + 1) & (cap - 1)) {
			struct mbox_msg *o = &mb->msgs[slot[h] - 1];

			if (memcmp(o->uid, m->uid, sizeof(m->uid)) == 0) {
				m->uid_seq = o->uid_seq + 1;
				break;
			}
		}
		slot[h] = (uint32_t)i + 1;
	}
	free(slot);
	return MAILDROP_OK;
}

void
mbox_uid_format(const struct mbox_msg *m, char *buf)
{
	static const char hexd[] = "0123456789abcdef";
	size_t	 i;

	for (i = 0; i < sizeof(m->uid); i++) {
		buf[2 * i] = hexd[m->uid[i] >> 4];
		buf[2 * i + 1] = hexd[m->uid[i] & 0xf];
	}
	buf[2 * i] = '\0';
	if (m->uid_seq > 1)
		(void)snprintf(buf + 2 * i, MAILDROP_UIDL_MAX - 2 * i, "-%lu",
		    (unsigned long)m->uid_seq);
}
