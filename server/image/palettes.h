/* palettes.h: the built-in palette tables behind color_palette_names() and color_palette_load().
 * Internal to the colour module; everything else goes through color.h. */
#ifndef FRACTALD_PALETTES_H
#define FRACTALD_PALETTES_H

#include <stddef.h>
#include <stdint.h>

/* One built-in palette: nstops sRGB colours at positions pos[] (0..1, non-decreasing, first 0,
 * last 1), or evenly spaced (pos[k] = k / (nstops - 1)) when pos is NULL. */
struct palette {
    const char *name;
    uint32_t nstops;
    const float *pos;
    const uint8_t (*rgb)[3];
};

/* The built-in palettes, "inferno" first; palette_names[k] is palette_table[k].name.
 * Both arrays hold palette_count entries and are static. */
extern const struct palette palette_table[];
extern const char *const palette_names[];
extern const size_t palette_count;

#endif
