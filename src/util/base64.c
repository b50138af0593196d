/*
 * base64.c - strict RFC 4648 base64 (see base64.h).
 */
#include "util/base64.h"

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of one base64 character, or -1. */
static int
base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long
base64_decode(const char *in, size_t len, unsigned char *out)
{
    size_t i, n = 0;
    int v[4], k, pad;

    if (len % 4 != 0)
        return -1;
    for (i = 0; i < len; i += 4) {
        pad = 0;
        for (k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            /* '=' only as the last one or two characters of the last quantum */
            if (c == '=' && i + 4 == len && k >= 2 && (k == 3 || in[i + 3] == '=')) {
                v[k] = 0;
                pad++;
                continue;
            }
            if ((v[k] = base64_value(c)) == -1)
                return -1;
        }
        /* RFC 4648 §3.5: the unused bits before the padding must be zero. */
        if ((pad == 1 && (v[2] & 0x3)) || (pad == 2 && (v[1] & 0xf)))
            return -1;
        out[n++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (pad < 2)
            out[n++] = (unsigned char)((v[1] & 0xf) << 4 | v[2] >> 2);
        if (pad < 1)
            out[n++] = (unsigned char)((v[2] & 0x3) << 6 | v[3]);
    }
    return (long)n;
}

void
base64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i;
    char *o = out;

    for (i = 0; i + 2 < n; i += 3) {
        *o++ = base64_alphabet[in[i] >> 2];
        *o++ = base64_alphabet[(in[i] & 0x3) << 4 | in[i + 1] >> 4];
        *o++ = base64_alphabet[(in[i + 1] & 0xf) << 2 | in[i + 2] >> 6];
        *o++ = base64_alphabet[in[i + 2] & 0x3f];
    }
    if (n - i == 1) {
        *o++ = base64_alphabet[in[i] >> 2];
        *o++ = base64_alphabet[(in[i] & 0x3) << 4];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        *o++ = base64_alphabet[in[i] >> 2];
        *o++ = base64_alphabet[(in[i] & 0x3) << 4 | in[i + 1] >> 4];
        *o++ = base64_alphabet[(in[i + 1] & 0xf) << 2];
        *o++ = '=';
    }
    *o = '\0';
}
