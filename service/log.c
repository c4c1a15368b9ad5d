/* Logging to stderr: one line per message, UTC timestamp, level. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "km.h"

static enum log_level log_threshold = LOG_INFO;
static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_set_level(enum log_level lvl)
{
	log_threshold = lvl;
}

int
log_level_parse(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	return -1;
}

void
log_msg(enum log_level lvl, const char *fmt, ...)
{
	char ts[40], line[2048];
	va_list ap;

	if (lvl > log_threshold)
		return;
	km_time_format(km_now_us(), 1, ts, sizeof(ts));
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	/* One fprintf per line so concurrent threads do not interleave. */
	fprintf(stderr, "%s kmsd[%s] %s\n", ts, level_names[lvl], line);
}
