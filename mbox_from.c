/*
 * mbox_from.c: From_ line recognition for the mbox maildrop (RFC 4155;
 * README.md, "Mailbox format").  A separator is "From ", a sender and a
 * ctime-like date; checking the date as well keeps a body line that
 * merely starts with "From " from splitting a message.  Runs as the mail
 * user; pure functions of the bytes they are given.
 */
#include <ctype.h>
#include <stddef.h>
#include <string.h>

#include "mbox_impl.h"

/* Is p the start of one of the 3-letter words packed in words? */
static int
match_word(const char *p, const char *end, const char *words)
{
	if (end - p < 3)
		return 0;
	/* A byte compare, no call: this runs for every separator. */
	for (; *words != '\0'; words += 3)
		if (p[0] == words[0] && p[1] == words[1] && p[2] == words[2])
			return 1;
	return 0;
}

/* Skips n_min..n_max digits; returns the new position or NULL. */
static const char *
skip_digits(const char *p, const char *end, int n_min, int n_max)
{
	int	 n = 0;

	while (p < end && n < n_max && isdigit((unsigned char)*p)) {
		p++;
		n++;
	}
	return n >= n_min ? p : NULL;
}

/*
 * Matches a ctime-like date at p: "Www Mmm dd hh:mm[:ss] [zone ]yyyy"
 * and what Dovecot, mutt and qpopper also accept (a zone before or after
 * the year, two-digit years, "remote from" suffixes).
 */
static int
match_date(const char *p, const char *end)
{
	static const char wdays[] = "MonTueWedThuFriSatSun";
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
	const char	*q;

	if (!match_word(p, end, wdays) || end - p < 4 || p[3] != ' ')
		return 0;
	p += 4;
	if (!match_word(p, end, months) || end - p < 4 || p[3] != ' ')
		return 0;
	p += 4;
	while (p < end && *p == ' ')
		p++;
	if ((p = skip_digits(p, end, 1, 2)) == NULL || p >= end || *p != ' ')
		return 0;
	p++;
	if ((p = skip_digits(p, end, 1, 2)) == NULL || p >= end || *p != ':')
		return 0;
	if ((p = skip_digits(p + 1, end, 2, 2)) == NULL)
		return 0;
	if (p < end && *p == ':' && (p = skip_digits(p + 1, end, 2, 2)) == NULL)
		return 0;
	if (p >= end || *p != ' ')
		return 0;
	p++;
	/* An optional zone ("PST", "+0100", "-07") before the year. */
	if (p < end && !isdigit((unsigned char)*p)) {
		q = p;
		while (q < end && *q != ' ')
			q++;
		if (q == p || q >= end)
			return 0;
		p = q + 1;
	}
	q = skip_digits(p, end, 2, 4);
	if (q == NULL || q - p == 3)
		return 0;
	return q == end || *q == ' ';
}

/* A separator: "From " + sender + date, the whole line (no terminator). */
int
mbox_is_from_line(const char *line, size_t len)
{
	const char	*end = line + len, *p, *sp;

	if (len < 5 || memcmp(line, "From ", 5) != 0)
		return 0;
	/* A date may start after any space (a sender may hold some). */
	for (p = line + 5;; p = sp + 1) {
		if (match_date(p, end))
			return 1;
		if ((sp = memchr(p, ' ', (size_t)(end - p))) == NULL)
			return 0;
	}
}
