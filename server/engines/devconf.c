/* devconf.c: device-selection config (INI file through inih, FRACTALD_DEVICES, flags), device
 * discovery (the CPU engine and every OpenCL device) and applying the one to the other. */
#include "devconf.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "log.h"
#ifdef FRACTALD_HAVE_OPENCL
#include "engine_cl.h"
#include "engine_cl_deep.h"
#endif

#define RULE_FORMS "all, gpu, cpu, accelerator, platform:TEXT, vendor:TEXT, name:GLOB, index:P[:D], id:ID or cl:..."

void devconf_defaults(struct devconf *out)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");

    memset(out, 0, sizeof(*out));
    out->include.count = 1;
    out->include.rules[0].kind = DEVCONF_ALL;
    snprintf(out->include.rules[0].text, sizeof(out->include.rules[0].text), "all");
    snprintf(out->include.origin, sizeof(out->include.origin), "default");
    snprintf(out->exclude.origin, sizeof(out->exclude.origin), "default");
    out->cpu_engine = true;
    snprintf(out->cpu_engine_origin, sizeof(out->cpu_engine_origin), "default");
    out->calibrate = true;
    out->share_cpu_priority = true;
    out->opencl = true;
    out->max_launch_ms = 50;
    out->fault_after = -1;
    /* The XDG base directory rule: $XDG_CACHE_HOME if set and absolute, else ~/.cache. */
    if (xdg && xdg[0] == '/')
        snprintf(out->cache_dir, sizeof(out->cache_dir), "%s/fractald", xdg);
    else if (home && home[0] == '/')
        snprintf(out->cache_dir, sizeof(out->cache_dir), "%s/.cache/fractald", home);
}

/* Copies `text` without leading and trailing blanks into out (outlen > 0). */
static void trim_copy(char *out, size_t outlen, const char *text, size_t len)
{
    while (len > 0 && isspace((unsigned char)*text)) {
        text++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)text[len - 1]))
        len--;
    if (len >= outlen)
        len = outlen - 1;
    memcpy(out, text, len);
    out[len] = '\0';
}

static int parse_bool(bool *out, const char *origin, const char *key, const char *value, char *msg,
                      size_t msglen)
{
    if (!strcasecmp(value, "on") || !strcasecmp(value, "true") || !strcasecmp(value, "yes") ||
        !strcmp(value, "1")) {
        *out = true;
        return 0;
    }
    if (!strcasecmp(value, "off") || !strcasecmp(value, "false") || !strcasecmp(value, "no") ||
        !strcmp(value, "0")) {
        *out = false;
        return 0;
    }
    snprintf(msg, msglen, "%s: %s must be on or off, got '%s'", origin, key, value);
    return ERR_INVALID;
}

/* An integer lo..hi with an optional binary suffix K, M, G or T (x1024^n); msg gets "ORIGIN: key ...". */
static int parse_size(uint64_t *out, const char *origin, const char *key, const char *value, uint64_t lo,
                      uint64_t hi, char *msg, size_t msglen)
{
    char what[DEVCONF_ORIGIN_MAX + 64];

    snprintf(what, sizeof(what), "%s: %s", origin, key);
    return config_parse_size(out, what, value, lo, hi, msg, msglen);
}

/* Parses one rule (see RULE_FORMS); msg gets "ORIGIN: problem". */
static int parse_rule(struct devconf_rule *out, const char *origin, const char *key, const char *text,
                      char *msg, size_t msglen)
{
    const char *colon = strchr(text, ':');
    size_t plen = colon ? (size_t)(colon - text) : strlen(text);
    const char *arg = colon ? colon + 1 : "";

    memset(out, 0, sizeof(*out));
    snprintf(out->text, sizeof(out->text), "%s", text);
    if (strlen(text) >= sizeof(out->text) || strlen(text) == 0)
        goto bad;
    if (!colon) {
        if (!strcasecmp(text, "all")) {
            out->kind = DEVCONF_ALL;
            return 0;
        }
        out->kind = DEVCONF_TYPE;
        if (!strcasecmp(text, "gpu"))
            out->type = DEVICE_GPU;
        else if (!strcasecmp(text, "cpu"))
            out->type = DEVICE_CPU;
        else if (!strcasecmp(text, "accelerator"))
            out->type = DEVICE_ACCELERATOR;
        else
            goto bad;
        return 0;
    }
    if (arg[0] == '\0')
        goto bad;
    snprintf(out->arg, sizeof(out->arg), "%s", arg);
    if (plen == 8 && !strncasecmp(text, "platform", plen))
        out->kind = DEVCONF_PLATFORM;
    else if (plen == 6 && !strncasecmp(text, "vendor", plen))
        out->kind = DEVCONF_VENDOR;
    else if (plen == 4 && !strncasecmp(text, "name", plen))
        out->kind = DEVCONF_NAME;
    else if (plen == 2 && !strncasecmp(text, "id", plen))
        out->kind = DEVCONF_ID;
    else if (plen == 2 && !strncasecmp(text, "cl", plen)) {
        /* A full OpenCL device id, as ListDevices shows it. */
        out->kind = DEVCONF_ID;
        snprintf(out->arg, sizeof(out->arg), "%s", text);
    } else if (plen == 5 && !strncasecmp(text, "index", plen)) {
        char *end = NULL;
        unsigned long p, d = 0;
        errno = 0;
        p = strtoul(arg, &end, 10);
        if (!isdigit((unsigned char)arg[0]) || errno || p > 4096)
            goto bad;
        if (*end == ':') {
            const char *ds = end + 1;
            d = strtoul(ds, &end, 10);
            if (!isdigit((unsigned char)ds[0]) || errno || d > 4096)
                goto bad;
            out->has_device = true;
        }
        if (*end)
            goto bad;
        out->kind = DEVCONF_INDEX;
        out->platform = (unsigned)p;
        out->device = (unsigned)d;
    } else
        goto bad;
    return 0;

bad:
    snprintf(msg, msglen, "%s: %s: bad device rule '%.100s' (expected %s)", origin, key, text, RULE_FORMS);
    return ERR_INVALID;
}

/* Parses a comma-separated list of rules into *list (replacing it). */
static int parse_list(struct devconf_list *list, const char *origin, const char *key, const char *value,
                      char *msg, size_t msglen)
{
    struct devconf_list parsed;
    const char *p = value;

    memset(&parsed, 0, sizeof(parsed));
    snprintf(parsed.origin, sizeof(parsed.origin), "%s", origin);
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[256];
        int err;
        trim_copy(item, sizeof(item), p, len);
        if (item[0] == '\0') {
            /* "exclude =" (empty) clears the list; an empty item inside one is a typo. */
            if (!comma && parsed.count == 0 && strspn(value, " \t") == strlen(value))
                break;
            snprintf(msg, msglen, "%s: %s: empty device rule in '%s'", origin, key, value);
            return ERR_INVALID;
        }
        if (parsed.count == DEVCONF_MAX_RULES) {
            snprintf(msg, msglen, "%s: %s: more than %d rules", origin, key, DEVCONF_MAX_RULES);
            return ERR_INVALID;
        }
        if ((err = parse_rule(&parsed.rules[parsed.count++], origin, key, item, msg, msglen)) < 0)
            return err;
        if (!comma)
            break;
        p = comma + 1;
    }
    *list = parsed;
    return 0;
}

int devconf_set(struct devconf *conf, const char *origin, const char *key, const char *value, char *msg,
                size_t msglen)
{
    uint64_t v = 0;
    int err;

    if (!strcmp(key, "include"))
        return parse_list(&conf->include, origin, key, value, msg, msglen);
    if (!strcmp(key, "exclude"))
        return parse_list(&conf->exclude, origin, key, value, msg, msglen);
    if (!strcmp(key, "cpu_engine")) {
        if ((err = parse_bool(&conf->cpu_engine, origin, key, value, msg, msglen)) < 0)
            return err;
        snprintf(conf->cpu_engine_origin, sizeof(conf->cpu_engine_origin), "%s", origin);
        return 0;
    }
    if (!strcmp(key, "opencl"))
        return parse_bool(&conf->opencl, origin, key, value, msg, msglen);
    if (!strcmp(key, "calibrate"))
        return parse_bool(&conf->calibrate, origin, key, value, msg, msglen);
    if (!strcmp(key, "share_cpu")) {
        if (strcmp(value, "priority") && strcmp(value, "equal")) {
            snprintf(msg, msglen, "%s: share_cpu must be 'priority' or 'equal', got '%s'", origin, value);
            return ERR_INVALID;
        }
        conf->share_cpu_priority = !strcmp(value, "priority");
        return 0;
    }
    if (!strcmp(key, "cache_dir")) {
        if (strlen(value) >= sizeof(conf->cache_dir)) {
            snprintf(msg, msglen, "%s: cache_dir is longer than %zu bytes", origin, sizeof(conf->cache_dir) - 1);
            return ERR_INVALID;
        }
        /* "~/" is the one expansion offered: it is what people write in config files. */
        if (!strncmp(value, "~/", 2) && getenv("HOME"))
            snprintf(conf->cache_dir, sizeof(conf->cache_dir), "%s/%s", getenv("HOME"), value + 2);
        else
            snprintf(conf->cache_dir, sizeof(conf->cache_dir), "%s", value);
        return 0;
    }
    if (!strcmp(key, "shortcuts"))
        return parse_bool(&conf->cl_shortcuts, origin, key, value, msg, msglen);
    if (!strcmp(key, "max_launch_ms")) {
        if ((err = parse_size(&v, origin, key, value, 1, 10000, msg, msglen)) < 0)
            return err;
        conf->max_launch_ms = (unsigned)v;
        return 0;
    }
    if (!strcmp(key, "fault_inject")) {
        /* DEVICE_ID:N; the id may hold colons itself, so N follows the last one. */
        const char *colon = strrchr(value, ':');
        char *end = NULL;
        long long n;
        errno = 0;
        n = colon ? strtoll(colon + 1, &end, 10) : -1;
        if (!colon || colon == value || (size_t)(colon - value) >= sizeof(conf->fault_device) ||
            !isdigit((unsigned char)colon[1]) || *end || errno || n < 0) {
            snprintf(msg, msglen, "%s: fault_inject must be DEVICE_ID:N (fail after N tiles), got '%s'", origin,
                     value);
            return ERR_INVALID;
        }
        snprintf(conf->fault_device, sizeof(conf->fault_device), "%.*s", (int)(colon - value), value);
        conf->fault_after = n;
        snprintf(conf->fault_origin, sizeof(conf->fault_origin), "%s", origin);
        return 0;
    }
    snprintf(msg, msglen,
             "%s: unknown key '%s' (keys: include, exclude, cpu_engine, opencl, calibrate, share_cpu, "
             "fault_inject, cache_dir, max_launch_ms, shortcuts)", origin, key);
    return ERR_INVALID;
}

/* The keys a [device "RULE"] section takes. */
static int section_set(struct devconf_section *sec, const char *origin, const char *key, const char *value,
                       char *msg, size_t msglen)
{
    uint64_t v = 0;
    int err;

    if (!strcmp(key, "max_tile_samples")) {
        if ((err = parse_size(&v, origin, key, value, 1, (uint64_t)1 << 40, msg, msglen)) < 0)
            return err;
        sec->max_tile_samples = v;
        return 0;
    }
    if (!strcmp(key, "max_memory")) {
        if ((err = parse_size(&v, origin, key, value, 4096, (uint64_t)1 << 50, msg, msglen)) < 0)
            return err;
        sec->max_memory_bytes = v;
        return 0;
    }
    if (!strcmp(key, "weight")) {
        char *end = NULL;
        double w = strtod(value, &end);
        if (end == value || *end || !isfinite(w) || w <= 0 || w > 1000) {
            snprintf(msg, msglen, "%s: weight must be a number > 0 and <= 1000, got '%s'", origin, value);
            return ERR_INVALID;
        }
        sec->weight = w;
        return 0;
    }
    if (!strcmp(key, "fp64")) {
        bool on = false;
        if ((err = parse_bool(&on, origin, key, value, msg, msglen)) < 0)
            return err;
        sec->fp64 = on;
        return 0;
    }
    snprintf(msg, msglen, "%s: unknown key '%s' in a [device] section (keys: max_tile_samples, max_memory, "
             "weight, fp64)", origin, key);
    return ERR_INVALID;
}

/* State of one INI file being read. inih gives its handler no line number (Debian builds it
 * without INI_HANDLER_LINENO), so the reader counts lines itself. */
struct file_parse {
    struct devconf *conf;
    const char *path;
    FILE *file;
    int line;                   /* physical line last read */
    bool mid_line;              /* the last read stopped before a newline */
    int err_line;               /* first error found by the reader or the handler */
    char err[512];
    char section[256];          /* the section the current [device] entry belongs to */
    struct devconf_section *cur;
};

static char *file_reader(char *str, int num, void *stream)
{
    struct file_parse *fp = stream;
    char *got = fgets(str, num, fp->file);
    size_t len;

    if (!got)
        return NULL;
    if (!fp->mid_line)
        fp->line++;
    len = strlen(str);
    fp->mid_line = len > 0 && str[len - 1] != '\n' && !feof(fp->file);
    if (fp->mid_line && !fp->err_line) {
        fp->err_line = fp->line;
        snprintf(fp->err, sizeof(fp->err), "%s:%d: line longer than %d characters", fp->path, fp->line,
                 num - 3);
    }
    return got;
}

static void file_error(struct file_parse *fp, const char *msg)
{
    if (fp->err_line)
        return;
    fp->err_line = fp->line;
    snprintf(fp->err, sizeof(fp->err), "%s", msg);
}

/* Splits a section header's text `device "RULE"` (or `device RULE`) into the rule. */
static bool device_section_rule(const char *section, char *rule, size_t rulelen)
{
    const char *p = section + 6;
    size_t len;

    if (strncmp(section, "device", 6) != 0 || !isspace((unsigned char)*p))
        return false;
    while (isspace((unsigned char)*p))
        p++;
    len = strlen(p);
    if (len >= 2 && p[0] == '"' && p[len - 1] == '"') {
        p++;
        len -= 2;
    }
    trim_copy(rule, rulelen, p, len);
    return rule[0] != '\0';
}

static int file_handler(void *user, const char *section, const char *name, const char *value)
{
    struct file_parse *fp = user;
    char origin[DEVCONF_ORIGIN_MAX], msg[512], rule[200];

    if (fp->err_line)
        return 1;   /* the first error is the one reported; skip the rest */
    snprintf(origin, sizeof(origin), "%s:%d", fp->path, fp->line);
    if (!strcmp(section, "server"))
        return 1;   /* the server's own settings (config.c) */
    if (!strcmp(section, "devices") || !strcmp(section, "opencl")) {
        bool opencl_key = !strcmp(name, "cache_dir") || !strcmp(name, "max_launch_ms") ||
                          !strcmp(name, "shortcuts");
        if (opencl_key != !strcmp(section, "opencl")) {
            snprintf(msg, sizeof(msg), "%s: key '%s' belongs in [%s], not [%s]", origin, name,
                     opencl_key ? "opencl" : "devices", section);
            file_error(fp, msg);
            return 0;
        }
        if (devconf_set(fp->conf, origin, name, value, msg, sizeof(msg)) < 0) {
            file_error(fp, msg);
            return 0;
        }
        return 1;
    }
    if (device_section_rule(section, rule, sizeof(rule))) {
        /* inih reports keys, not headers: a new section starts when the name changes. */
        if (!fp->cur || strcmp(fp->section, section) != 0) {
            struct devconf_section *sec;
            if (fp->conf->nsections == DEVCONF_MAX_SECTIONS) {
                snprintf(msg, sizeof(msg), "%s: more than %d [device] sections", origin, DEVCONF_MAX_SECTIONS);
                file_error(fp, msg);
                return 0;
            }
            sec = &fp->conf->sections[fp->conf->nsections];
            memset(sec, 0, sizeof(*sec));
            sec->fp64 = -1;
            snprintf(sec->origin, sizeof(sec->origin), "%s", origin);
            if (parse_rule(&sec->match, origin, "[device]", rule, msg, sizeof(msg)) < 0) {
                file_error(fp, msg);
                return 0;
            }
            fp->conf->nsections++;
            fp->cur = sec;
            snprintf(fp->section, sizeof(fp->section), "%s", section);
        }
        if (section_set(fp->cur, origin, name, value, msg, sizeof(msg)) < 0) {
            file_error(fp, msg);
            return 0;
        }
        return 1;
    }
    if (section[0] == '\0')
        snprintf(msg, sizeof(msg), "%s: key '%s' outside any section (sections: [server], [devices], [opencl], "
                 "[device \"RULE\"])", origin, name);
    else
        snprintf(msg, sizeof(msg), "%s: unknown section [%.100s] (sections: [server], [devices], [opencl], "
                 "[device \"RULE\"])", origin, section);
    file_error(fp, msg);
    return 0;
}

/* Line `n` of the file, trimmed, for a syntax error message. */
static void file_line(char *out, size_t outlen, const char *path, int n)
{
    char buf[512];
    FILE *f = fopen(path, "r");
    int i = 0;

    out[0] = '\0';
    if (!f)
        return;
    while (fgets(buf, sizeof(buf), f))
        if (++i == n) {
            trim_copy(out, outlen, buf, strlen(buf));
            break;
        }
    fclose(f);
}

int devconf_load_file(struct devconf *conf, const char *path, char *msg, size_t msglen)
{
    struct file_parse fp;
    struct devconf work = *conf;
    int ret, err = 0;

    memset(&fp, 0, sizeof(fp));
    fp.conf = &work;
    fp.path = path;
    if (!(fp.file = fopen(path, "r"))) {
        snprintf(msg, msglen, "%s: cannot read: %s", path, strerror(errno));
        return ERR_INVALID;
    }
    ret = ini_parse_stream(file_reader, &fp, file_handler, &fp);
    fclose(fp.file);
    /* inih returns the first line it found wrong; a line the handler accepted but inih could not
     * parse (no '=', an unclosed '[') only shows up there. The earliest error wins. */
    if (ret > 0 && (!fp.err_line || ret < fp.err_line)) {
        char text[128];
        file_line(text, sizeof(text), path, ret);
        snprintf(msg, msglen, "%s:%d: %s, got '%s'", path, ret,
                 text[0] == '[' ? "section header must be [name] on one line" : "expected key = value or [section]",
                 text);
        err = ERR_INVALID;
    } else if (fp.err_line) {
        snprintf(msg, msglen, "%s", fp.err);
        err = ERR_INVALID;
    } else if (ret < 0) {
        snprintf(msg, msglen, "%s: cannot read", path);
        err = ERR_INVALID;
    }
    if (err == 0)
        *conf = work;
    return err;
}

int devconf_load_string(struct devconf *conf, const char *origin, const char *text, char *msg,
                        size_t msglen)
{
    struct devconf work = *conf;
    const char *p = text;

    while (*p) {
        const char *semi = strchr(p, ';');
        size_t len = semi ? (size_t)(semi - p) : strlen(p);
        char item[1024], key[64];
        char *eq;
        int err;
        trim_copy(item, sizeof(item), p, len);
        p += len + (semi ? 1 : 0);
        if (item[0] == '\0')
            continue;
        if (!(eq = strchr(item, '='))) {
            snprintf(msg, msglen, "%s: expected key = value, got '%s'", origin, item);
            return ERR_INVALID;
        }
        trim_copy(key, sizeof(key), item, (size_t)(eq - item));
        if ((err = devconf_set(&work, origin, key, eq + 1 + strspn(eq + 1, " \t"), msg, msglen)) < 0)
            return err;
    }
    *conf = work;
    return 0;
}

int devconf_from_config(struct devconf *out, const struct config *cfg, char *msg, size_t msglen)
{
    const char *env;
    int err;

    devconf_defaults(out);
    if (cfg->config_file && (err = devconf_load_file(out, cfg->config_file, msg, msglen)) < 0)
        return err;
    if ((env = getenv("FRACTALD_DEVICES")) && (err = devconf_load_string(out, "FRACTALD_DEVICES", env, msg, msglen)) < 0)
        return err;
    if ((env = getenv("FRACTALD_FAULT_INJECT")) && env[0] &&
        (err = devconf_set(out, "FRACTALD_FAULT_INJECT", "fault_inject", env, msg, msglen)) < 0)
        return err;
    if (cfg->devices && (err = devconf_load_string(out, "--devices", cfg->devices, msg, msglen)) < 0)
        return err;
    if (cfg->cpu_engine && (err = devconf_set(out, "--cpu-engine", "cpu_engine", cfg->cpu_engine, msg, msglen)) < 0)
        return err;
    if (cfg->cache_dir && (err = devconf_set(out, "--cache-dir", "cache_dir", cfg->cache_dir, msg, msglen)) < 0)
        return err;
    return 0;
}

bool devconf_rule_match(const struct devconf_rule *rule, const struct device *d)
{
    bool opencl = strcmp(d->engine, "opencl") == 0;

    switch (rule->kind) {
    case DEVCONF_ALL: return true;
    case DEVCONF_TYPE: return (int)d->type == rule->type;
    case DEVCONF_PLATFORM: return strcasestr(d->platform, rule->arg) != NULL;
    case DEVCONF_VENDOR: return strcasestr(d->vendor, rule->arg) != NULL;
    case DEVCONF_NAME: return fnmatch(rule->arg, d->name, FNM_CASEFOLD) == 0;
    case DEVCONF_INDEX:
        return opencl && d->platform_index == rule->platform &&
               (!rule->has_device || d->device_index == rule->device);
    case DEVCONF_ID: return strcmp(d->id, rule->arg) == 0;
    }
    return false;
}

/* "gpu, name:*RTX*": the rules of a list as written. */
static void list_text(char *out, size_t outlen, const struct devconf_list *list)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < list->count && used < outlen; i++)
        used += (size_t)snprintf(out + used, outlen - used, "%s%s", i ? ", " : "", list->rules[i].text);
}

int devconf_apply(const struct devconf *conf, struct devices *devs, char *msg, size_t msglen)
{
    bool fault_found = conf->fault_device[0] == '\0';

    for (size_t i = 0; i < devs->count; i++) {
        struct device *d = &devs->list[i];
        if (!strcmp(d->engine, "cpu")) {
            if (!conf->cpu_engine) {
                d->enabled = false;
                snprintf(d->disabled_reason, sizeof(d->disabled_reason), "turned off by cpu_engine = off (%s)",
                         conf->cpu_engine_origin);
            }
        } else if (d->enabled) {
            /* Include and exclude choose among the OpenCL devices; the CPU engine has its own switch. */
            bool included = false;
            for (size_t k = 0; k < conf->include.count && !included; k++)
                included = devconf_rule_match(&conf->include.rules[k], d);
            if (!included) {
                char text[256];
                list_text(text, sizeof(text), &conf->include);
                d->enabled = false;
                snprintf(d->disabled_reason, sizeof(d->disabled_reason), "not matched by include = %s (%s)",
                         text, conf->include.origin);
            }
            for (size_t k = 0; k < conf->exclude.count && d->enabled; k++)
                if (devconf_rule_match(&conf->exclude.rules[k], d)) {
                    d->enabled = false;
                    snprintf(d->disabled_reason, sizeof(d->disabled_reason), "excluded by exclude rule %s (%s)",
                             conf->exclude.rules[k].text, conf->exclude.origin);
                }
        }
        for (size_t k = 0; k < conf->nsections; k++) {
            const struct devconf_section *sec = &conf->sections[k];
            if (!devconf_rule_match(&sec->match, d))
                continue;
            if (sec->max_tile_samples)
                d->max_tile_samples = sec->max_tile_samples;
            if (sec->max_memory_bytes)
                d->max_memory_bytes = sec->max_memory_bytes;
            if (sec->weight > 0)
                d->weight = sec->weight;
            /* fp64 = on cannot give a device what it lacks; off keeps fp64 work away from it. */
            if (sec->fp64 == 0)
                d->fp64 = false;
        }
        if (conf->fault_device[0] && !strcmp(conf->fault_device, d->id)) {
            d->fault_after = conf->fault_after;
            fault_found = true;
            log_at(LOG_WARN, "fault injection: device %s fails after %lld tiles (%s)", d->id,
                   (long long)conf->fault_after, conf->fault_origin);
        }
    }
    if (!fault_found) {
        snprintf(msg, msglen, "%s: fault_inject names device '%s', which is not there (see --list-devices)",
                 conf->fault_origin, conf->fault_device);
        return ERR_INVALID;
    }
    return 0;
}

void devconf_device_id(char *out, size_t outlen, const char *platform, const char *name, unsigned n)
{
    char plat[11], dev[45];
    size_t k;

    /* The platform's first word is enough to tell platforms apart ("nvidia", "amd", "intel",
     * "portable" for PoCL, "rusticl") and keeps ids short; the device name tells the rest. */
    k = 0;
    for (const char *p = platform; *p && k + 1 < sizeof(plat); p++) {
        if (!isalnum((unsigned char)*p)) {
            if (k > 0)
                break;
            continue;
        }
        plat[k++] = (char)tolower((unsigned char)*p);
    }
    plat[k] = '\0';
    k = 0;
    for (const char *p = name; *p && k + 1 < sizeof(dev); p++) {
        if (isalnum((unsigned char)*p))
            dev[k++] = (char)tolower((unsigned char)*p);
        else if (k > 0 && dev[k - 1] != '-')
            dev[k++] = '-';
    }
    while (k > 0 && dev[k - 1] == '-')
        k--;
    dev[k] = '\0';
    snprintf(out, outlen, "cl:%s:%s:%u", plat[0] ? plat : "opencl", dev[0] ? dev : "device", n);
}

#ifdef FRACTALD_HAVE_OPENCL
static int cl_render(void *backend, const struct render_spec *spec, const struct spec_rect *rect,
                     uint32_t *counts, float *smooth, const atomic_int *cancel,
                     struct engine_cpu_stats *stats, char *msg, size_t msglen)
{
    return engine_cl_render(backend, spec, rect, counts, smooth, cancel, stats, msg, msglen);
}

static size_t cl_lower_priority(void *backend, int nice)
{
    return engine_cl_lower_priority(backend, nice);
}

static const struct device_ops cl_ops = {cl_render, cl_lower_priority};

struct cl_owner {
    engine_cl **engines;
    size_t count;
};

static void cl_owner_free(void *owner)
{
    struct cl_owner *o = owner;

    if (!o)
        return;
    /* The deep-zoom programs and buffers (engine_cl_deep.c) hang off the engines. */
    for (size_t i = 0; i < o->count; i++)
        engine_cl_deep_release(o->engines[i]);
    engine_cl_free_all(o->engines, o->count);
    free(o);
}

/* Adds every OpenCL device to devs; devs owns the engines from here on. */
static int add_opencl(struct devices *devs, const struct devconf *conf, char *msg, size_t msglen)
{
    struct engine_cl_options opts = ENGINE_CL_OPTIONS_INIT;
    struct cl_owner *owner = calloc(1, sizeof(*owner));
    char clmsg[512] = "";
    int err;

    if (!owner) {
        snprintf(msg, msglen, "out of memory");
        return ERR_NOMEM;
    }
    opts.cache_dir = conf->cache_dir[0] ? conf->cache_dir : NULL;
    opts.max_launch_ms = conf->max_launch_ms;
    opts.brute_force = !conf->cl_shortcuts;
    if ((err = engine_cl_discover(&owner->engines, &owner->count, &opts, clmsg, sizeof(clmsg))) < 0) {
        snprintf(msg, msglen, "OpenCL discovery: %s", clmsg[0] ? clmsg : err_name(err));
        free(owner);
        return err;
    }
    devs->owner = owner;
    devs->owner_free = cl_owner_free;
    if (owner->count == 0) {
        log_at(LOG_INFO, "no OpenCL device (%s); the CPU engine serves alone", clmsg[0] ? clmsg : "none found");
        return 0;
    }
    for (size_t i = 0; i < owner->count; i++) {
        const struct engine_cl_info *info = engine_cl_get_info(owner->engines[i]);
        const char *failure = engine_cl_failure(owner->engines[i]);
        struct device d;
        unsigned same = 0;
        memset(&d, 0, sizeof(d));
        /* Ids count earlier devices of the same platform and name, so they do not depend on
         * which other platforms are installed. */
        for (size_t k = 0; k < i; k++) {
            const struct engine_cl_info *o = engine_cl_get_info(owner->engines[k]);
            same += !strcmp(o->platform, info->platform) && !strcmp(o->name, info->name);
        }
        devconf_device_id(d.id, sizeof(d.id), info->platform, info->name, same);
        snprintf(d.name, sizeof(d.name), "%s", info->name);
        snprintf(d.vendor, sizeof(d.vendor), "%s", info->vendor);
        snprintf(d.platform, sizeof(d.platform), "%.63s", info->platform);
        snprintf(d.engine, sizeof(d.engine), "opencl");
        d.type = (enum device_type)info->type;
        d.fp64 = info->fp64;
        d.compute_units = info->compute_units;
        d.memory_bytes = info->memory_bytes;
        d.max_alloc_bytes = info->max_alloc_bytes;
        d.platform_index = info->platform_index;
        d.device_index = info->device_index;
        d.enabled = failure == NULL;
        if (failure)
            snprintf(d.disabled_reason, sizeof(d.disabled_reason), "%s", failure);
        d.weight = 1;
        d.fault_after = -1;
        d.ops = &cl_ops;
        d.backend = owner->engines[i];
        if ((err = devices_add(NULL, devs, &d)) < 0) {
            snprintf(msg, msglen, "out of memory");
            return err;
        }
    }
    return 0;
}
#endif

int devconf_discover(struct devices *devs, const struct devconf *conf, engine_cpu *cpu, char *msg,
                     size_t msglen)
{
    int err;

    if ((err = devices_init(devs, engine_cpu_threads(cpu))) < 0) {
        snprintf(msg, msglen, "out of memory");
        return err;
    }
    devs->list[0].ops = &devices_cpu_ops;
    devs->list[0].backend = cpu;
#ifdef FRACTALD_HAVE_OPENCL
    if (conf->opencl && (err = add_opencl(devs, conf, msg, msglen)) < 0)
        goto done;
#else
    log_at(LOG_DEBUG, "fractald is built without the OpenCL engine; the CPU engine serves alone");
#endif
    err = devconf_apply(conf, devs, msg, msglen);

#ifdef FRACTALD_HAVE_OPENCL
done:
#endif
    if (err < 0)
        devices_dispose(devs);
    return err;
}
