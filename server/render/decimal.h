/* decimal.h: the decimal text of deep views (fractal.v1.View's *_text fields): syntax, digit
 * count, magnitude and a normal form, without arbitrary-precision arithmetic (that is the deep
 * engine's, server/deep/). */
#ifndef FRACTALD_DECIMAL_H
#define FRACTALD_DECIMAL_H

#include <stdbool.h>
#include <stddef.h>

/* Longest exponent accepted, in digits: |exponent| < 10^9 keeps every position in an int. */
#define DECIMAL_MAX_EXPONENT_DIGITS 9

/* What decimal_parse found out about a number. */
struct decimal {
    bool negative;
    bool zero;                  /* every digit is 0 */
    size_t digits;              /* mantissa digits, leading and trailing zeros included */
    double log10_abs;           /* log10 |x| to about 15 digits; -HUGE_VAL for zero */
};

/* Parses text of the form [+-](DIGITS[.DIGITS*] | .DIGITS)([eE][+-]DIGITS)? with at most
 * DECIMAL_MAX_EXPONENT_DIGITS exponent digits, nothing before or after (no spaces, no hex, no
 * inf or nan). Returns 0 and fills *out, or -1 when text is not such a number. */
int decimal_parse(struct decimal *out, const char *text);

/* Writes the normal form of a text decimal_parse accepted into out (room for strlen(text) + 2
 * bytes): no '+' signs, a 0 before a leading '.', no '.' without digits after it, 'e' for the
 * exponent; the digits themselves are kept, so the value is exactly the same. */
void decimal_normalize(char *out, const char *text);

/* Writes 10^log10_value as "1.23e-400" (three significant digits) into out; works far outside
 * double's range, where "%g" of the value would print 0 or inf. */
void decimal_format_pow10(char *out, size_t outlen, double log10_value);

#endif
