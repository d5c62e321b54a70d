/* decimal.c: syntax, digit count, magnitude and normal form of deep views' decimal text. */
#include "decimal.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* Digits of the mantissa that fix log10 |x| to double precision; the rest cannot change it. */
#define LOG10_DIGITS 17

int decimal_parse(struct decimal *out, const char *text)
{
    const char *p = text;
    size_t int_digits = 0, frac_digits = 0, first_nonzero = (size_t)-1, index = 0;
    long exponent = 0;
    double lead = 0.0, scale = 1.0;
    size_t used = 0;

    memset(out, 0, sizeof(*out));
    if (*p == '+' || *p == '-')
        out->negative = *p++ == '-';
    for (; isdigit((unsigned char)*p); p++, index++, int_digits++)
        if (*p != '0' && first_nonzero == (size_t)-1)
            first_nonzero = index;
    if (*p == '.') {
        for (p++; isdigit((unsigned char)*p); p++, index++, frac_digits++)
            if (*p != '0' && first_nonzero == (size_t)-1)
                first_nonzero = index;
    }
    if (int_digits + frac_digits == 0)
        return -1;
    if (*p == 'e' || *p == 'E') {
        bool negative = false;
        size_t n = 0;
        p++;
        if (*p == '+' || *p == '-')
            negative = *p++ == '-';
        for (; isdigit((unsigned char)*p); p++, n++)
            if (n < DECIMAL_MAX_EXPONENT_DIGITS)
                exponent = exponent * 10 + (*p - '0');
        if (n == 0 || n > DECIMAL_MAX_EXPONENT_DIGITS)
            return -1;
        if (negative)
            exponent = -exponent;
    }
    if (*p != '\0')
        return -1;
    out->digits = int_digits + frac_digits;
    if (first_nonzero == (size_t)-1) {
        out->zero = true;
        out->log10_abs = -HUGE_VAL;
        return 0;
    }
    /* |x| = d.ddd... x 10^power, d the first nonzero digit, at index first_nonzero of the
     * mantissa's digits, whose point sits after int_digits of them. */
    {
        double power = (double)int_digits - 1.0 - (double)first_nonzero + (double)exponent;
        const char *d = text + (text[0] == '+' || text[0] == '-');
        for (index = 0; *d && used < LOG10_DIGITS; d++) {
            if (!isdigit((unsigned char)*d)) {
                if (*d == '.')
                    continue;
                break;
            }
            if (index++ < first_nonzero)
                continue;
            lead += (*d - '0') * scale;
            scale /= 10.0;
            used++;
        }
        out->log10_abs = log10(lead) + power;
    }
    return 0;
}

void decimal_normalize(char *out, const char *text)
{
    const char *p = text;
    char *o = out;

    if (*p == '+' || *p == '-')
        if (*p++ == '-')
            *o++ = '-';
    if (*p == '.')
        *o++ = '0';
    while (isdigit((unsigned char)*p))
        *o++ = *p++;
    if (*p == '.') {
        p++;
        if (isdigit((unsigned char)*p)) {
            *o++ = '.';
            while (isdigit((unsigned char)*p))
                *o++ = *p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        *o++ = 'e';
        if (*p == '+')
            p++;
        while (*p)
            *o++ = *p++;
    }
    *o = '\0';
}

void decimal_format_pow10(char *out, size_t outlen, double log10_value)
{
    double e, m;

    if (!isfinite(log10_value)) {
        snprintf(out, outlen, "%s", log10_value < 0 ? "0" : "inf");
        return;
    }
    e = floor(log10_value);
    m = pow(10.0, log10_value - e);
    /* Rounding to three digits can carry to 10.0. */
    if (m >= 9.995) {
        m /= 10.0;
        e += 1.0;
    }
    snprintf(out, outlen, "%.3ge%+.0f", m, e);
}
