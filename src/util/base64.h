/*
 * base64.h - strict RFC 4648 base64 (the standard alphabet, with padding),
 * for the AUTH exchange (RFC 4954) and for tests.
 *
 * Strict on purpose: no whitespace, no missing padding, no bits left over
 * after the last character.  A peer's sloppy encoding is refused, not
 * guessed at.
 */
#ifndef TERN_UTIL_BASE64_H
#define TERN_UTIL_BASE64_H

#include <stddef.h>

/* Octets base64_decode may write for len input characters. */
#define BASE64_DECODED_MAX(len) ((len) / 4 * 3)

/* Characters base64_encode writes for n octets, without the NUL. */
#define BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

/*
 * Decode in[0..len) into out (room for BASE64_DECODED_MAX(len) octets).
 * Returns the decoded length, or -1 when in is not valid base64.  An empty
 * input decodes to zero octets.
 */
long base64_decode(const char *in, size_t len, unsigned char *out);

/* Encode in[0..n) into out (room for BASE64_ENCODED_LEN(n) + 1); NUL-terminated. */
void base64_encode(const unsigned char *in, size_t n, char *out);

#endif
