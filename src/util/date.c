/*
 * date.c - RFC 5322 date-time strings (see date.h).
 */
#include "util/date.h"

#include <stdio.h>

static void
date_format(const struct tm *tm, long off_minutes, char *out, size_t n)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    long a = off_minutes < 0 ? -off_minutes : off_minutes;

    snprintf(out, n, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld", days[tm->tm_wday % 7],
        tm->tm_mday, months[tm->tm_mon % 12], tm->tm_year + 1900, tm->tm_hour, tm->tm_min,
        tm->tm_sec, off_minutes < 0 ? '-' : '+', a / 60, a % 60);
}

void
date_rfc5322(time_t t, char *out, size_t n)
{
    struct tm tm;

    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, n, "Thu, 1 Jan 1970 00:00:00 +0000");
        return;
    }
    date_format(&tm, 0, out, n);
}

void
date_rfc5322_local(time_t t, char *out, size_t n)
{
    struct tm tm;

    if (localtime_r(&t, &tm) == NULL) {
        date_rfc5322(t, out, n);
        return;
    }
    date_format(&tm, tm.tm_gmtoff / 60, out, n);
}
