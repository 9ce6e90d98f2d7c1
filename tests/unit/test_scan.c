/*
 * test_scan.c: the vector byte loops (scan.h) against plain byte-by-byte
 * references, on edge cases at every vector boundary and on random text
 * made of the bytes that matter (LF, CR, 'F', "From ", '.').  The AVX2
 * loop, where the CPU has it, and the portable one are both checked.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scan.h"

/* What scan_lines promises, one line at a time. */
static size_t
ref_lines(const char *buf, size_t len, struct scan_count *c, int *more_r)
{
	size_t		 s = 0;
	const char	*lf;

	c->lines = c->crlf = 0;
	for (;;) {
		if (s < len && buf[s] == 'F') {
			if (len - s < 5) {
				*more_r = 1;
				return s;
			}
			if (memcmp(buf + s, "From ", 5) == 0) {
				*more_r = 0;
				return s;
			}
		}
		if (s == len || (lf = memchr(buf + s, '\n', len - s)) == NULL) {
			*more_r = 1;
			return s;
		}
		c->lines++;
		if (lf > buf + s && lf[-1] == '\r')
			c->crlf++;
		s = (size_t)(lf - buf) + 1;
	}
}

static void
check_lines(const char *buf, size_t len)
{
	struct scan_count	 a, b;
	int			 ma, mb;
	size_t			 na, nb;

	nb = ref_lines(buf, len, &b, &mb);
	na = scan_lines(buf, len, &a, &ma);
	assert_int_equal(na, nb);
	assert_int_equal(ma, mb);
	assert_int_equal(a.lines, b.lines);
	assert_int_equal(a.crlf, b.crlf);
	na = scan_lines_portable(buf, len, &a, &ma);
	assert_int_equal(na, nb);
	assert_int_equal(ma, mb);
	assert_int_equal(a.lines, b.lines);
	assert_int_equal(a.crlf, b.crlf);
}

static void
test_lines_edges(void **state)
{
	static const char *const cases[] = {
		"", "\n", "F", "From", "From ", "From x\n", "x\nFrom ",
		"x\nFrom", "x\nFro", "x\nFrox\n", "\r\n\r\n", "a\r", "a\rb\n",
		"x\n>From y\n", "x\nFROM y\n", "x\nfrom y\n", "\n\nFrom a\n",
	};
	char	 buf[300];
	size_t	 i, at, k;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_lines(cases[i], strlen(cases[i]));
	/* "\nFrom " and "\r\n" at every offset across two vectors and more. */
	for (k = 0; k < 4; k++) {
		static const char *const pats[] = { "\nFrom x\n", "\r\n",
		    "\nF\n", "\nFrom" };

		for (at = 0; at < 100; at++) {
			memset(buf, 'a', sizeof(buf));
			for (i = 7; i < sizeof(buf); i += 13)
				buf[i] = '\n';
			memcpy(buf + at, pats[k], strlen(pats[k]));
			check_lines(buf, at + strlen(pats[k]));
			check_lines(buf, sizeof(buf));
			check_lines(buf, 97);
		}
	}
}

static void
test_lines_random(void **state)
{
	static const char alphabet[] = "\n\n\n\r.FFromx ";
	static const char *const words[] = { "From ", "\nFrom ", "\r\n",
	    "\n.", "\n\n", "F", "rom " };
	char	*buf;
	size_t	 len, i, round;

	(void)state;
	srandom(1939);
	buf = malloc(70000);
	assert_non_null(buf);
	for (round = 0; round < 3000; round++) {
		len = (size_t)random() % (round < 2500 ? 600 : 70000);
		for (i = 0; i < len; i++) {
			if (random() % 8 == 0) {
				const char *w = words[random() % 7];
				size_t	 n = strlen(w);

				if (i + n <= len) {
					memcpy(buf + i, w, n);
					i += n - 1;
					continue;
				}
			}
			buf[i] = random() % 3 == 0 ?
			    alphabet[random() % (sizeof(alphabet) - 1)] :
			    (char)('a' + random() % 26);
		}
		check_lines(buf, len);
		/* From the middle too: the start need not be aligned. */
		if (len > 3)
			check_lines(buf + 3, len - 3);
	}
	free(buf);
}

/*
 * Runs of nothing but line ends, and of lines that begin with 'F' but
 * not "From ": the lane counters must not overflow, and every 'F' must
 * be looked at and passed over.
 */
static void
test_lines_dense(void **state)
{
	static const char *const pats[] = { "\n", "\r\n", "\nF", "\nFrom",
	    "\nFrox ", "\r" };
	char	*buf;
	size_t	 len = 40000, i, k, n;

	(void)state;
	buf = malloc(len);
	assert_non_null(buf);
	for (k = 0; k < sizeof(pats) / sizeof(pats[0]); k++) {
		n = strlen(pats[k]);
		for (i = 0; i < len; i++)
			buf[i] = pats[k][i % n];
		check_lines(buf, len);
		check_lines(buf + 1, len - 1);
		/* A separator at the end of the run, then after it. */
		memcpy(buf + len - 300, "\nFrom x\n", 8);
		check_lines(buf, len);
		check_lines(buf, len - 290);
		check_lines(buf, len - 295);
	}
	free(buf);
}

/* What scan_crlf promises. */
static size_t
ref_crlf(char *dst, size_t dstsize, const char *src, size_t len,
    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r)
{
	size_t		 s = 0, out = 0, n;
	const char	*lf;

	*lines_r = *stuffed_r = 0;
	while (s < len && (lf = memchr(src + s, '\n', len - s)) != NULL) {
		n = (size_t)(lf - (src + s));
		if (n > 0 && lf[-1] == '\r')
			n--;
		if (out + n + 2 + (src[s] == '.') > dstsize)
			break;
		if (src[s] == '.') {
			dst[out++] = '.';
			(*stuffed_r)++;
		}
		memcpy(dst + out, src + s, n);
		out += n;
		dst[out++] = '\r';
		dst[out++] = '\n';
		(*lines_r)++;
		s = (size_t)(lf - src) + 1;
	}
	*out_r = out;
	return s;
}

/* scan_crlf and scan_crlf_portable against ref_crlf, room bytes of dst. */
static void
check_crlf(const char *src, size_t len, size_t room)
{
	static char	 d1[12000], d2[12000];
	size_t		 o1, o2, n1, n2;
	uint64_t	 l1, l2, s1, s2;
	int		 k;

	assert_true(room <= sizeof(d1));
	n2 = ref_crlf(d2, room, src, len, &o2, &l2, &s2);
	for (k = 0; k < 2; k++) {
		n1 = (k == 0 ? scan_crlf : scan_crlf_portable)(d1, room, src,
		    len, &o1, &l1, &s1);
		assert_int_equal(n1, n2);
		assert_int_equal(o1, o2);
		assert_int_equal(l1, l2);
		assert_int_equal(s1, s2);
		assert_memory_equal(d1, d2, o1);
	}
}

static void
test_crlf(void **state)
{
	static const char *const cases[] = { "", "a", "a\n", ".\n", "..\n",
	    "a\r\n", "\r\n", "\r\r\n", ".x\r\nb\nc", "\n\n\n" };
	char		 src[5000];
	size_t		 i, len, room;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		len = strlen(cases[i]);
		for (room = 0; room < 12; room++)
			check_crlf(cases[i], len, room);
	}
	srandom(5034);
	for (i = 0; i < 4000; i++) {
		/* Dense line ends, then lines of about 40 and 200 bytes. */
		static const char alphabet[] = "\n\r.abc";
		size_t	 k, sparse = i < 2000 ? 0 : i < 3000 ? 40 : 200;

		len = (size_t)random() % sizeof(src);
		for (k = 0; k < len; k++)
			src[k] = sparse == 0 ? alphabet[random() % 6] :
			    random() % sparse == 0 ? alphabet[random() % 3] :
			    'x';
		check_crlf(src, len, (size_t)random() % (2 * len + 100));
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lines_edges),
		cmocka_unit_test(test_lines_random),
		cmocka_unit_test(test_lines_dense),
		cmocka_unit_test(test_crlf),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
