/* unary.c: the unary calls Render, ListDevices and Health/Check over fractal.c's call layer, the
 * images and device lists they hand out, and atomic file writes (a temporary file renamed into
 * place) for the images. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* open, fsync, getpid */
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "internal.h"

/* What fractal_render hands out: the public image first, then the reply it borrows from. */
typedef struct image_impl {
    fractal_image pub;
    Fractal__V1__RenderResponse *reply;
} image_impl;

typedef struct device_list_impl {
    fractal_device_list pub;
    fractal_device *devices;
    Fractal__V1__ListDevicesResponse *reply;
} device_list_impl;

/* ---- render ---------------------------------------------------------------------------------- */

void fr_stats_from_wire(fractal_render_stats *out, const Fractal__V1__RenderStats *st)
{
    out->iterations = st->iterations;
    out->samples = st->samples;
    out->queue_ms = st->queue_ms;
    out->compute_ms = st->compute_ms;
    out->encode_ms = st->encode_ms;
    out->total_ms = st->total_ms;
    out->precision = (fractal_precision)st->precision;
    out->tiles = st->tiles;
    out->n_devices = st->n_devices;
    out->devices = (const char *const *)st->devices;
}

int fractal_render(fractal_image **out, fractal_client *client, const fractal_render_options *opts)
{
    const fractal_render_options defaults = FRACTAL_RENDER_OPTIONS_INIT;
    opts_wire *wire = NULL;
    ProtobufCMessage *msg = NULL;
    Fractal__V1__RenderResponse *reply;
    image_impl *img = NULL;
    const Fractal__V1__RenderStats *st;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_render: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if ((err = opts_check(opts, fr_client_errbuf(client), FR_ERROR_MAX)) < 0)
        return err;
    if ((wire = malloc(sizeof *wire)) == NULL)
        return client_error(client, FRACTAL_ENOMEM, "out of memory");
    opts_to_request(wire, opts);
    err = fr_call_unary(&msg, client, FR_M_RENDER, &wire->req.base,
                        &fractal__v1__render_response__descriptor, 1);
    free(wire);
    if (err < 0)
        return err;
    reply = (Fractal__V1__RenderResponse *)msg;

    /* Raw formats carry no header, so their size is the only check that the reply is whole. */
    if (reply->format == FRACTAL__V1__FORMAT__FORMAT_RAW_U32 ||
        reply->format == FRACTAL__V1__FORMAT__FORMAT_RAW_F32) {
        if ((uint64_t)reply->width * reply->height * 4 != reply->data.len) {
            err = client_error(client, FRACTAL_EPROTOCOL,
                               "raw image of %ux%u pixels arrived with %zu bytes, not %llu",
                               reply->width, reply->height, reply->data.len,
                               (unsigned long long)reply->width * reply->height * 4);
            goto done;
        }
    }
    if ((img = calloc(1, sizeof *img)) == NULL) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    img->reply = reply;
    img->pub.data = reply->data.data;
    img->pub.size = reply->data.len;
    img->pub.content_type = reply->content_type ? reply->content_type : "";
    img->pub.format = (fractal_format)reply->format;
    img->pub.width = reply->width;
    img->pub.height = reply->height;
    if ((st = reply->stats) != NULL)
        fr_stats_from_wire(&img->pub.stats, st);
    *out = &img->pub;
    msg = NULL;
done:
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

void fractal_image_free(fractal_image *image)
{
    image_impl *img = (image_impl *)image;

    if (img == NULL)
        return;
    protobuf_c_message_free_unpacked(&img->reply->base, NULL);
    free(img);
}

int fr_write_all(int fd, const unsigned char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int fr_tmpfile_open(int *fd_out, char **tmp_out, const char *path, char *err, size_t errlen)
{
    static atomic_uint counter; /* several threads may save at once */
    char *tmp = NULL;
    size_t tmp_len;
    int fd = -1, attempt;

    *fd_out = -1;
    *tmp_out = NULL;
    tmp_len = strlen(path) + 48;
    if ((tmp = malloc(tmp_len)) == NULL)
        return fr_errorf(err, errlen, FRACTAL_ENOMEM, "out of memory");
    /* The temporary file sits next to the destination, so that rename() stays on one file system
     * and is atomic. open() with 0666 (not mkstemp's 0600) lets the umask decide the final mode,
     * as it would for any new file; O_EXCL plus pid and counter keep concurrent writers apart. */
    for (attempt = 0; attempt < 100; attempt++) {
        snprintf(tmp, tmp_len, "%s.tmp.%ld.%u", path, (long)getpid(),
                 (unsigned)atomic_fetch_add(&counter, 1u));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0 || errno != EEXIST)
            break;
    }
    if (fd < 0) {
        free(tmp);
        return fr_errorf(err, errlen, FRACTAL_EIO, "%s: cannot create a temporary file beside it: %s",
                         path, strerror(errno));
    }
    *fd_out = fd;
    *tmp_out = tmp;
    return 0;
}

void fr_tmpfile_abort(int fd, char *tmp)
{
    if (fd >= 0)
        close(fd);
    if (tmp)
        unlink(tmp);
    free(tmp);
}

int fr_tmpfile_commit(int fd, char *tmp, const char *path, char *err, size_t errlen)
{
    int e = 0;

    if (fsync(fd) < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", tmp, strerror(errno));
        fr_tmpfile_abort(fd, tmp);
        return e;
    }
    if (close(fd) < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", tmp, strerror(errno));
        fr_tmpfile_abort(-1, tmp);
        return e;
    }
    if (rename(tmp, path) < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", path, strerror(errno));
        fr_tmpfile_abort(-1, tmp);
        return e;
    }
    free(tmp);
    return 0;
}

int fractal_image_save(const fractal_image *image, const char *path, char *err, size_t errlen)
{
    char *tmp = NULL;
    int fd = -1, e;

    if (image == NULL || path == NULL || path[0] == '\0')
        return fr_errorf(err, errlen, FRACTAL_EINVAL, "fractal_image_save: no image or no path");
    if ((e = fr_tmpfile_open(&fd, &tmp, path, err, errlen)) < 0)
        return e;
    if (fr_write_all(fd, image->data, image->size) < 0) {
        e = fr_errorf(err, errlen, FRACTAL_EIO, "%s: %s", tmp, strerror(errno));
        fr_tmpfile_abort(fd, tmp);
        return e;
    }
    return fr_tmpfile_commit(fd, tmp, path, err, errlen);
}

int fractal_render_to_file(fractal_client *client, const fractal_render_options *opts, const char *path)
{
    fractal_image *image = NULL;
    int err;

    if (client == NULL)
        return FRACTAL_EINVAL;
    if (path == NULL || path[0] == '\0')
        return client_error(client, FRACTAL_EINVAL, "fractal_render_to_file: no path");
    if ((err = fractal_render(&image, client, opts)) < 0)
        return err;
    err = fractal_image_save(image, path, fr_client_errbuf(client), FR_ERROR_MAX);
    fractal_image_free(image);
    return err;
}

/* ---- devices --------------------------------------------------------------------------------- */

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

int fractal_list_devices(fractal_device_list **out, fractal_client *client)
{
    Fractal__V1__ListDevicesRequest req = FRACTAL__V1__LIST_DEVICES_REQUEST__INIT;
    Fractal__V1__ListDevicesResponse *reply;
    ProtobufCMessage *msg = NULL;
    device_list_impl *list = NULL;
    size_t i;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_list_devices: out is NULL") : FRACTAL_EINVAL;
    *out = NULL;
    if ((err = fr_call_unary(&msg, client, FR_M_LIST_DEVICES, &req.base,
                             &fractal__v1__list_devices_response__descriptor, 1)) < 0)
        return err;
    reply = (Fractal__V1__ListDevicesResponse *)msg;
    if ((list = calloc(1, sizeof *list)) == NULL ||
        (reply->n_devices && (list->devices = calloc(reply->n_devices, sizeof *list->devices)) == NULL)) {
        err = client_error(client, FRACTAL_ENOMEM, "out of memory");
        goto done;
    }
    for (i = 0; i < reply->n_devices; i++) {
        const Fractal__V1__Device *d = reply->devices[i];
        fractal_device *p = &list->devices[i];

        p->id = str_or_empty(d->id);
        p->name = str_or_empty(d->name);
        p->vendor = str_or_empty(d->vendor);
        p->platform = str_or_empty(d->platform);
        p->type = (fractal_device_type)d->type;
        p->engine = str_or_empty(d->engine);
        p->fp64 = d->fp64 != 0;
        p->compute_units = d->compute_units;
        p->memory_bytes = d->memory_bytes;
        p->enabled = d->enabled != 0;
        p->disabled_reason = str_or_empty(d->disabled_reason);
        p->status = str_or_empty(d->status);
        p->status_reason = str_or_empty(d->status_reason);
        p->giter_per_s = d->giter_per_s;
        p->tiles_done = d->tiles_done;
        p->iterations_done = d->iterations_done;
    }
    list->reply = reply;
    list->pub.count = reply->n_devices;
    list->pub.devices = list->devices;
    *out = &list->pub;
    list = NULL;
    msg = NULL;
done:
    if (list) {
        free(list->devices);
        free(list);
    }
    if (msg)
        protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

void fractal_device_list_free(fractal_device_list *list)
{
    device_list_impl *impl = (device_list_impl *)list;

    if (impl == NULL)
        return;
    protobuf_c_message_free_unpacked(&impl->reply->base, NULL);
    free(impl->devices);
    free(impl);
}

/* ---- health ---------------------------------------------------------------------------------- */

int fractal_health_check(fractal_health_status *out, fractal_client *client, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    Grpc__Health__V1__HealthCheckResponse *reply;
    ProtobufCMessage *msg = NULL;
    int err;

    if (out == NULL || client == NULL)
        return client ? client_error(client, FRACTAL_EINVAL, "fractal_health_check: out is NULL") : FRACTAL_EINVAL;
    *out = FRACTAL_HEALTH_UNKNOWN;
    req.service = (char *)(service ? service : ""); /* read only by the packer */
    if ((err = fr_call_unary(&msg, client, FR_M_HEALTH_CHECK, &req.base,
                             &grpc__health__v1__health_check_response__descriptor, 1)) < 0)
        return err;
    reply = (Grpc__Health__V1__HealthCheckResponse *)msg;
    switch (reply->status) {
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
        *out = FRACTAL_HEALTH_SERVING;
        break;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
        *out = FRACTAL_HEALTH_NOT_SERVING;
        break;
    case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
        *out = FRACTAL_HEALTH_SERVICE_UNKNOWN;
        break;
    default:
        *out = FRACTAL_HEALTH_UNKNOWN;
        break;
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
