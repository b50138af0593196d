/*
 * date.h - RFC 5322 date-time strings ("Sun, 29 Nov 2026 07:35:39 +0000"),
 * never through the locale (strftime's day and month names follow it).  Used
 * for Received, Date and DSN fields.
 */
#ifndef TERN_UTIL_DATE_H
#define TERN_UTIL_DATE_H

#include <stddef.h>
#include <time.h>

#define DATE_RFC5322_MAX 40

/* In UTC ("+0000"): trace fields and reports. */
void date_rfc5322(time_t t, char *out, size_t n);
/* In local time with its offset ("+0100"): Date fields of messages people read. */
void date_rfc5322_local(time_t t, char *out, size_t n);

#endif
