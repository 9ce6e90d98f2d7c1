/*
 * parse_bench.c: the mbox parser alone on a page-cached file, beside
 * the floor of one pass over the same bytes (wc -l).  Runs as whoever
 * starts it, on a mailbox it only reads.
 *
 *	bench/parse_bench [-n runs] mailbox
 *
 * The file is read once to bring it into the page cache; then
 * mbox_parse_fd() (with its table freed) and `wc -l` each run the given
 * number of times, interleaved.  Printed: the best and median wall-clock
 * GB/s of each, the CPU time (user, system) of the best run and the mean
 * CPU time of a run, which a loaded machine disturbs less than the clock.
 */
#include <sys/types.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "maildrop.h"
#include "mbox.h"

#define RUNS_MAX	1000

extern char **environ;

struct sample {
	double	 wall;		/* seconds */
	double	 user;		/* CPU seconds in user space */
	double	 sys;		/* and in the kernel (the reads) */
};

static double
now(void)
{
	struct timespec	 ts;

	(void)clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double
seconds(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

/* Sets s's CPU times to those who used since *ru. */
static void
cpu_since(int who, const struct rusage *ru, struct sample *s)
{
	struct rusage	 now_ru;

	(void)getrusage(who, &now_ru);
	s->user = seconds(&now_ru.ru_utime) - seconds(&ru->ru_utime);
	s->sys = seconds(&now_ru.ru_stime) - seconds(&ru->ru_stime);
}

/* One parse of the whole file; the message count in *n_r. */
static struct sample
run_parse(int fd, size_t *n_r)
{
	struct maildrop	*md;
	struct rusage	 ru;
	struct sample	 s;
	double		 t;

	(void)getrusage(RUSAGE_SELF, &ru);
	t = now();
	if (mbox_parse_fd(fd, &md) != MAILDROP_OK)
		errx(1, "the parser refused the file");
	s.wall = now() - t;
	cpu_since(RUSAGE_SELF, &ru, &s);
	*n_r = maildrop_count(md);
	maildrop_close(md);
	return s;
}

/* One `wc -l path`, its output thrown away. */
static struct sample
run_wc(const char *path)
{
	posix_spawn_file_actions_t fa;
	struct rusage	 ru;
	struct sample	 s;
	char		*argv[] = { "wc", "-l", (char *)path, NULL };
	double		 t;
	pid_t		 pid;
	int		 status;

	if (posix_spawn_file_actions_init(&fa) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY,
	    0) != 0)
		errx(1, "posix_spawn_file_actions");
	(void)getrusage(RUSAGE_CHILDREN, &ru);
	t = now();
	if (posix_spawnp(&pid, "wc", &fa, NULL, argv, environ) != 0)
		err(1, "wc");
	if (waitpid(pid, &status, 0) == -1)
		err(1, "waitpid");
	s.wall = now() - t;
	cpu_since(RUSAGE_CHILDREN, &ru, &s);
	(void)posix_spawn_file_actions_destroy(&fa);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		errx(1, "wc -l failed");
	return s;
}

static int
by_wall(const void *a, const void *b)
{
	const struct sample *x = a, *y = b;

	return (x->wall > y->wall) - (x->wall < y->wall);
}

static void
report(const char *what, struct sample *s, int runs, off_t size)
{
	double	 gb = (double)size / 1e9;

	qsort(s, (size_t)runs, sizeof(*s), by_wall);
	printf("%-14s best %6.2f GB/s (%7.2f ms; cpu user %6.2f, sys %6.2f)"
	    "  median %6.2f GB/s\n", what, gb / s[0].wall, s[0].wall * 1e3,
	    s[0].user * 1e3, s[0].sys * 1e3, gb / s[runs / 2].wall);
}

static void
usage(void)
{
	fprintf(stderr, "usage: parse_bench [-n runs] mailbox\n");
	exit(2);
}

int
main(int argc, char *argv[])
{
	static struct sample parse[RUNS_MAX], wc[RUNS_MAX];
	static char	 buf[1 << 20];
	struct stat	 sb;
	char		*end;
	long		 n;
	size_t		 nmsgs = 0;
	ssize_t		 r;
	int		 ch, fd, i, runs = 10;

	while ((ch = getopt(argc, argv, "n:")) != -1) {
		switch (ch) {
		case 'n':
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno != 0 || end == optarg || *end != '\0' ||
			    n < 1 || n > RUNS_MAX)
				errx(2, "-n %s: not a number of runs 1-%d",
				    optarg, RUNS_MAX);
			runs = (int)n;
			break;
		default:
			usage();
		}
	}
	if (argc - optind != 1)
		usage();
	log_init("parse_bench", 1, 0);
	if ((fd = open(argv[optind], O_RDONLY)) == -1)
		err(1, "%s", argv[optind]);
	if (fstat(fd, &sb) == -1)
		err(1, "fstat");
	/* Into the page cache: the parse, not the disk, is measured. */
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		;
	if (r == -1)
		err(1, "read");
	for (i = 0; i < runs; i++) {
		parse[i] = run_parse(fd, &nmsgs);
		wc[i] = run_wc(argv[optind]);
	}
	printf("%s: %jd bytes, %zu messages, %d runs\n", argv[optind],
	    (intmax_t)sb.st_size, nmsgs, runs);
	report("mbox_parse_fd", parse, runs, sb.st_size);
	report("wc -l", wc, runs, sb.st_size);
	printf("parse/wc (best wall) %.2f\n", wc[0].wall / parse[0].wall);
	return 0;
}
