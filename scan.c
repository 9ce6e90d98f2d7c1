/*
 * scan.c: vector byte loops for the parser and the body writer (see
 * scan.h), written with GCC vector extensions; the byte loops after them
 * finish what is left.  The unit tests compare both with plain
 * references.  Runs as the mail user, on mailbox bytes any sender may
 * have written; every loop is bounded by the length it is given.
 */
#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__)
#include <immintrin.h>
#endif


#include "scan.h"

#define VEC	32
/*
 * How far ahead of the parser's scan memory is asked for; the address is
 * made as an integer, since it may lie past the end of the buffer (a
 * prefetch never faults).
 */
#define SCAN_PREFETCH	4096
#define PREFETCH(p)	__builtin_prefetch((const void *)((uintptr_t)(p) + \
			    SCAN_PREFETCH))
typedef char		 vbytes __attribute__((vector_size(VEC)));
typedef uint64_t	 vwords __attribute__((vector_size(VEC)));

/*
 * On x86-64 the vector loop is built twice, for AVX2 and for the SSE2
 * every such CPU has, and picked on first use from the CPU features
 * glibc's loader has already read (no cpuid of our own at start-up: in
 * a virtual machine each one traps, and pop3d starts per connection).
 */
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__clang__)
#include <sys/platform/x86.h>
#define SCAN_DISPATCH	1
#endif

/* A vector from unaligned bytes; is any lane set; the sum of byte lanes. */
#define VLOAD(v, p)	memcpy(&(v), (p), sizeof(v))
#define VANY(v)		((((vwords)(v))[0] | ((vwords)(v))[1] | \
			    ((vwords)(v))[2] | ((vwords)(v))[3]) != 0)

static inline uint64_t
vsum(const vbytes *acc)
{
	uint64_t	 s = 0;
	int		 i;

	for (i = 0; i < VEC; i++)
		s += (unsigned char)(*acc)[i];
	return s;
}

/*
 * The portable loop, from buf[i] on: the bytes before i are whole lines
 * or part of one, already looked at and counted in lines and crlf.
 */
static inline __attribute__((always_inline)) size_t
scan_lines_from(const char *buf, size_t len, size_t i, uint64_t lines,
    uint64_t crlf, struct scan_count *c, int *more_r)
{
	const vbytes	 nl = (vbytes){ 0 } + '\n', cr = (vbytes){ 0 } + '\r',
			 ef = (vbytes){ 0 } + 'F';
	const char	*lf;
	size_t		 lim, stop;

	for (;;) {
		/*
		 * Whole vectors while one more byte follows each (the byte
		 * after an LF tells whether the next line may begin with
		 * "From ").  Lines are counted in byte lanes, summed every
		 * 255 vectors.  A vector with an LF before an 'F' is left to
		 * the byte loop.
		 */
		while (i + VEC < len) {
			vbytes	 acc_l = { 0 }, acc_c = { 0 };
			int	 hit = 0;

			lim = (len - 1 - i) / VEC;
			if (lim > 255)
				lim = 255;
			for (; lim > 0; lim--, i += VEC) {
				vbytes	 v, w, is_lf;

				PREFETCH(buf + i);
				VLOAD(v, buf + i);
				VLOAD(w, buf + i + 1);
				is_lf = v == nl;
				if (VANY(is_lf & (w == ef))) {
					hit = 1;
					break;
				}
				acc_l -= is_lf;
				acc_c -= (v == cr) & (w == nl);
			}
			lines += vsum(&acc_l);
			crlf += vsum(&acc_c);
			if (hit)
				break;
		}
		/* That vector, or the tail, byte by byte. */
		stop = len - i > VEC ? i + VEC : len;
		for (; i < stop; i++) {
			if (buf[i] == '\r' && i + 1 < len && buf[i + 1] == '\n')
				crlf++;
			if (buf[i] != '\n')
				continue;
			lines++;
			if (i + 1 < len && buf[i + 1] == 'F' &&
			    (len - (i + 1) < 5 ||
			    memcmp(buf + i + 1, "From ", 5) == 0)) {
				*more_r = len - (i + 1) < 5;
				c->lines = lines;
				c->crlf = crlf;
				return i + 1;
			}
		}
		if (i >= len)
			break;
	}
	/* No "From " line: end after the last LF; the rest is unfinished. */
	c->lines = lines;
	c->crlf = crlf;
	lf = memrchr(buf, '\n', len);
	return lf == NULL ? 0 : (size_t)(lf - buf) + 1;
}

static inline __attribute__((always_inline)) size_t
scan_lines_body(const char *buf, size_t len, struct scan_count *c,
    int *more_r)
{
	*more_r = 1;
	c->lines = c->crlf = 0;
	if (len == 0)
		return 0;
	if (buf[0] == 'F') {
		if (len < 5)
			return 0;
		if (memcmp(buf, "From ", 5) == 0) {
			*more_r = 0;
			return 0;
		}
	}
	return scan_lines_from(buf, len, 0, 0, 0, c, more_r);
}

#ifdef SCAN_DISPATCH
/*
 * The bytes of a line that begins with 'F' at buf[pos]: 1 when it is a
 * "From " line or too short to tell (the scan stops there), else 0.
 */
static inline int
scan_stops(const char *buf, size_t len, size_t pos, int *more_r)
{
	if (len - pos < 5) {
		*more_r = 1;
		return 1;
	}
	if (memcmp(buf + pos, "From ", 5) == 0) {
		*more_r = 0;
		return 1;
	}
	return 0;
}

/* The sum of the four 64-bit lanes. */
static inline __attribute__((target("avx2"), always_inline)) uint64_t
hsum64(__m256i v)
{
	__m128i	 h = _mm_add_epi64(_mm256_castsi256_si128(v),
		    _mm256_extracti128_si256(v, 1));

	return (uint64_t)_mm_cvtsi128_si64(h) +
	    (uint64_t)_mm_extract_epi64(h, 1);
}

/*
 * AVX2: 64 bytes a step, four loads and a handful of compares, the
 * lines counted in byte lanes and summed with psadbw at most every 127
 * steps (two LFs a lane a step).  A step with an LF before an 'F' looks
 * at each such line through 64-bit masks, and goes on unless the line
 * is "From " (or too short to tell); the end, under 65 bytes, is left to
 * the portable loop.
 */
static __attribute__((target("avx2"))) size_t
scan_lines_avx2(const char *buf, size_t len, struct scan_count *c,
    int *more_r)
{
	const __m256i	 nl = _mm256_set1_epi8('\n'), cr = _mm256_set1_epi8('\r'),
			 ef = _mm256_set1_epi8('F'), zero = _mm256_setzero_si256();
	__m256i		 sum_l = zero, sum_c = zero;
	size_t		 i = 0, lim, pos;
	uint64_t	 lines, crlf, m_lf, m_cr, m_hit, below;
	int		 bit;

	*more_r = 1;
	c->lines = c->crlf = 0;
	if (len == 0)
		return 0;
	if (buf[0] == 'F' && scan_stops(buf, len, 0, more_r))
		return 0;
	while (i + 64 < len) {
		__m256i	 acc_l = zero, acc_c = zero;

		lim = (len - 1 - i) / 64;
		if (lim > 127)
			lim = 127;
		for (; lim > 0; lim--, i += 64) {
			__m256i	 a0, a1, b0, b1, l0, l1, c0, c1, hit;

			/*
			 * Well ahead: on mail not yet in the CPU's caches
			 * this halves the time (the hardware's own
			 * prefetch does not keep up).
			 */
			PREFETCH(buf + i);
			a0 = _mm256_loadu_si256((const __m256i *)(buf + i));
			a1 = _mm256_loadu_si256((const __m256i *)(buf + i + 32));
			b0 = _mm256_loadu_si256((const __m256i *)(buf + i + 1));
			b1 = _mm256_loadu_si256((const __m256i *)(buf + i + 33));
			l0 = _mm256_cmpeq_epi8(a0, nl);
			l1 = _mm256_cmpeq_epi8(a1, nl);
			c0 = _mm256_and_si256(_mm256_cmpeq_epi8(a0, cr),
			    _mm256_cmpeq_epi8(b0, nl));
			c1 = _mm256_and_si256(_mm256_cmpeq_epi8(a1, cr),
			    _mm256_cmpeq_epi8(b1, nl));
			hit = _mm256_or_si256(
			    _mm256_and_si256(l0, _mm256_cmpeq_epi8(b0, ef)),
			    _mm256_and_si256(l1, _mm256_cmpeq_epi8(b1, ef)));
			if (!_mm256_testz_si256(hit, hit)) {
				m_lf = (uint32_t)_mm256_movemask_epi8(l0) |
				    (uint64_t)(uint32_t)
				    _mm256_movemask_epi8(l1) << 32;
				m_cr = (uint32_t)_mm256_movemask_epi8(c0) |
				    (uint64_t)(uint32_t)
				    _mm256_movemask_epi8(c1) << 32;
				m_hit = m_lf &
				    ((uint32_t)_mm256_movemask_epi8(
				    _mm256_cmpeq_epi8(b0, ef)) |
				    (uint64_t)(uint32_t)_mm256_movemask_epi8(
				    _mm256_cmpeq_epi8(b1, ef)) << 32);
				for (; m_hit != 0; m_hit &= m_hit - 1) {
					bit = __builtin_ctzll(m_hit);
					pos = i + (size_t)bit + 1;
					if (!scan_stops(buf, len, pos, more_r))
						continue;
					/* The LFs up to bit, CRs before it. */
					below = (2ULL << bit) - 1;
					sum_l = _mm256_add_epi64(sum_l,
					    _mm256_sad_epu8(acc_l, zero));
					sum_c = _mm256_add_epi64(sum_c,
					    _mm256_sad_epu8(acc_c, zero));
					lines = (uint64_t)
					    __builtin_popcountll(m_lf & below);
					crlf = (uint64_t)__builtin_popcountll(
					    m_cr & (below >> 1));
					goto out;
				}
			}
			acc_l = _mm256_sub_epi8(_mm256_sub_epi8(acc_l, l0), l1);
			acc_c = _mm256_sub_epi8(_mm256_sub_epi8(acc_c, c0), c1);
		}
		sum_l = _mm256_add_epi64(sum_l, _mm256_sad_epu8(acc_l, zero));
		sum_c = _mm256_add_epi64(sum_c, _mm256_sad_epu8(acc_c, zero));
	}
	/* The last bytes, under 65: the portable loop. */
	return scan_lines_from(buf, len, i, hsum64(sum_l), hsum64(sum_c), c,
	    more_r);
out:
	c->lines = lines + hsum64(sum_l);
	c->crlf = crlf + hsum64(sum_c);
	return pos;
}
#endif

size_t
scan_lines_portable(const char *buf, size_t len, struct scan_count *c,
    int *more_r)
{
	return scan_lines_body(buf, len, c, more_r);
}

size_t
scan_lines(const char *buf, size_t len, struct scan_count *c, int *more_r)
{
	static size_t	(*fn)(const char *, size_t, struct scan_count *,
			    int *);

	if (fn == NULL) {
		fn = scan_lines_portable;
#ifdef SCAN_DISPATCH
		if (CPU_FEATURE_ACTIVE(AVX2))
			fn = scan_lines_avx2;
#endif
	}
	return fn(buf, len, c, more_r);
}

/*
 * Copies one line's content (n bytes) and appends CRLF; dst has room for
 * n + 2 + 16 bytes, so short lines are copied 16 bytes at a time without
 * a call when the source has those bytes too.
 */
static inline size_t
put_line(char *dst, const char *src, size_t n, int over_ok)
{
	size_t	 k;

	if (over_ok) {
		for (k = 0; k < n; k += 16)
			memcpy(dst + k, src + k, 16);
	} else
		memcpy(dst, src, n);
	dst[n] = '\r';
	dst[n + 1] = '\n';
	return n + 2;
}

#ifdef __SSE2__
/* Copies 16 bytes; returns the mask of the LFs among them. */
static inline __attribute__((always_inline)) unsigned int
copy16(char *dst, const char *src)
{
	__m128i	 v = _mm_loadu_si128((const __m128i *)(const void *)src);

	_mm_storeu_si128((__m128i *)(void *)dst, v);
	return (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(v,
	    _mm_set1_epi8('\n')));
}

#ifdef SCAN_DISPATCH
static inline __attribute__((target("avx2"), always_inline)) unsigned int
copy32(char *dst, const char *src)
{
	__m256i	 v = _mm256_loadu_si256((const __m256i *)(const void *)src);

	_mm256_storeu_si256((__m256i *)(void *)dst, v);
	return (unsigned int)_mm256_movemask_epi8(_mm256_cmpeq_epi8(v,
	    _mm256_set1_epi8('\n')));
}
#endif

/*
 * The bulk of scan_crlf, w bytes a step (copy() moves w and finds their
 * LFs), while src has 2w bytes more and dst 4w: each step's bytes are
 * stored as they are, and at each LF the w bytes that follow are stored
 * again one or two places on, after the CR put before a bare LF and the
 * dot put before a line's leading '.'.  dst is src with d bytes
 * inserted so far: no line is copied on its own.  Returns the start of
 * the first line not finished, *out_r where it goes in dst; what was
 * written after that is left to the exact loop to write again.
 */
static inline __attribute__((always_inline)) size_t
crlf_bulk(char *dst, size_t dstsize, const char *src, size_t len,
    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r, size_t w,
    unsigned int (*copy)(char *, const char *))
{
	size_t		 i = 0, start = 0, ostart = 0, d, j, ilim, olim;
	uint64_t	 lines = 0, stuffed = 0;
	unsigned int	 mask, dot;

	*out_r = 0;
	*lines_r = *stuffed_r = 0;
	if (len < 2 * w || dstsize < 4 * w)
		return 0;
	ilim = len - 2 * w;
	olim = dstsize - 4 * w;
	dot = src[0] == '.';
	dst[0] = '.';
	d = dot;
	/* Each step adds at most 2w bytes (a CR and a dot a line). */
	for (; i <= ilim && i + d <= olim; i += w) {
		for (mask = copy(dst + i + d, src + i); mask != 0;
		    mask &= mask - 1) {
			j = i + (size_t)__builtin_ctz(mask);
			if (j == start || src[j - 1] != '\r') {
				dst[j + d] = '\r';
				d++;
				dst[j + d] = '\n';
			}
			lines++;
			stuffed += dot;
			start = j + 1;
			ostart = start + d;
			dot = src[start] == '.';
			dst[start + d] = '.';
			d += dot;
			(void)copy(dst + start + d, src + start);
		}
	}
	*out_r = ostart;
	*lines_r = lines;
	*stuffed_r = stuffed;
	return start;
}

#ifdef SCAN_DISPATCH
static __attribute__((target("avx2"))) size_t
crlf_bulk_avx2(char *dst, size_t dstsize, const char *src, size_t len,
    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r)
{
	return crlf_bulk(dst, dstsize, src, len, out_r, lines_r, stuffed_r,
	    32, copy32);
}
#endif

static size_t
crlf_bulk_sse2(char *dst, size_t dstsize, const char *src, size_t len,
    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r)
{
	return crlf_bulk(dst, dstsize, src, len, out_r, lines_r, stuffed_r,
	    16, copy16);
}
#endif

/*
 * scan_crlf with bulk, if not NULL, doing most of the work, and the exact
 * loop the rest.
 */
static size_t
crlf_with(size_t (*bulk)(char *, size_t, const char *, size_t, size_t *,
    uint64_t *, uint64_t *), char *dst, size_t dstsize, const char *src,
    size_t len, size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r)
{
	size_t		 out = 0, start = 0, i = 0, n, c, need, j;
	uint64_t	 lines = 0, stuffed = 0;
	unsigned int	 mask;

	if (bulk != NULL)
		start = i = bulk(dst, dstsize, src, len, &out, &lines,
		    &stuffed);
	/*
	 * What is left: LF positions 16 at a time as a bit mask (SSE2, or
	 * the plain loop below), then each line [start, LF) copied out with
	 * its CRLF.
	 */
	for (;;) {
#ifdef __SSE2__
		if (i + 16 > len)
			break;
		mask = (unsigned int)_mm_movemask_epi8(_mm_cmpeq_epi8(
		    _mm_loadu_si128((const __m128i *)(const void *)(src + i)),
		    _mm_set1_epi8('\n')));
#else
		if (i + 1 > len)
			break;
		mask = src[i] == '\n';
#endif
		for (; mask != 0; mask &= mask - 1) {
			j = i + (size_t)__builtin_ctz(mask);
			n = j - start;
			c = n > 0 && src[j - 1] == '\r' ? n - 1 : n;
			need = c + 2 + (src[start] == '.');
			if (dstsize - out < need)
				goto done;
			if (src[start] == '.') {
				dst[out++] = '.';
				stuffed++;
			}
			out += put_line(dst + out, src + start, c,
			    dstsize - out >= c + 18 && start + c + 16 <= len);
			lines++;
			start = j + 1;
		}
#ifdef __SSE2__
		i += 16;
#else
		i++;
#endif
	}
	/* The last few bytes. */
	for (; i < len; i++) {
		if (src[i] != '\n')
			continue;
		n = i - start;
		c = n > 0 && src[i - 1] == '\r' ? n - 1 : n;
		if (dstsize - out < c + 2 + (src[start] == '.'))
			break;
		if (src[start] == '.') {
			dst[out++] = '.';
			stuffed++;
		}
		out += put_line(dst + out, src + start, c, 0);
		lines++;
		start = i + 1;
	}
done:
	*out_r = out;
	*lines_r = lines;
	*stuffed_r = stuffed;
	return start;
}

size_t
scan_crlf(char *dst, size_t dstsize, const char *src, size_t len,
    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r)
{
	static size_t	(*bulk)(char *, size_t, const char *, size_t, size_t *,
			    uint64_t *, uint64_t *);
	static int	 chosen;

	if (!chosen) {
#ifdef __SSE2__
		bulk = crlf_bulk_sse2;
#endif
#ifdef SCAN_DISPATCH
		if (CPU_FEATURE_ACTIVE(AVX2))
			bulk = crlf_bulk_avx2;
#endif
		chosen = 1;
	}
	return crlf_with(bulk, dst, dstsize, src, len, out_r, lines_r,
	    stuffed_r);
}

size_t
scan_crlf_portable(char *dst, size_t dstsize, const char *src, size_t len,
    size_t *out_r, uint64_t *lines_r, uint64_t *stuffed_r)
{
#ifdef __SSE2__
	return crlf_with(crlf_bulk_sse2, dst, dstsize, src, len, out_r,
	    lines_r, stuffed_r);
#else
	return crlf_with(NULL, dst, dstsize, src, len, out_r, lines_r,
	    stuffed_r);
#endif
}
