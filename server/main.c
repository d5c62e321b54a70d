/* main.c: fractald's entry point: reads the configuration, starts the CPU engine and the gRPC
 * server, rereads its tokens on SIGHUP, and shuts down cleanly on SIGINT or SIGTERM. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "devconf.h"
#include "devices.h"
#include "engine_cpu.h"
#include "err.h"
#include "http.h"
#include "imgcache.h"
#include "jobs.h"
#include "log.h"
#include "rpc.h"
#include "sched.h"

int main(int argc, char **argv)
{
    struct config cfg;
    struct devices devs = {0};
    static struct devconf dconf;    /* static: tens of KiB of rule tables */
    engine_cpu *engine = NULL;
    sched *scheduler = NULL;
    jobs_store *jobs = NULL;
    rpc_server *srv = NULL;
    imgcache *cache = NULL;
    http_server *http = NULL;
    sigset_t stop_signals;
    char msg[512] = "";
    int err, port = 0, http_port = 0, sig = 0, status = 1;

    config_defaults(&cfg);
    err = config_parse_args(&cfg, argc, argv, msg, sizeof(msg));
    if (err == 1)
        return 0;
    if (err < 0) {
        fprintf(stderr, "fractald: %s\n", msg);
        return 2;
    }
    log_min_level = cfg.log_level;
    /* Bad device config stops the server here, before any thread starts, naming file and line. */
    if (devconf_from_config(&dconf, &cfg, msg, sizeof(msg)) < 0) {
        fprintf(stderr, "fractald: %s\n", msg);
        return 2;
    }

    /* Block the stop signals before any thread exists, so every thread inherits the mask and
     * only sigwait below receives them. */
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGHUP); /* reload the tokens */
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    if ((err = engine_cpu_new(&engine, cfg.engine_threads)) < 0) {
        fprintf(stderr, "fractald: cannot start the CPU engine: %s\n", err_name(err));
        goto done;
    }
    if ((err = devconf_discover(&devs, &dconf, engine, msg, sizeof(msg))) < 0) {
        fprintf(stderr, "fractald: %s\n", msg);
        status = 2;
        goto done;
    }
    if (cfg.list_devices) {
        devices_print(&devs);
        status = 0;
        goto done;
    }
    {
        struct sched_options so = SCHED_OPTIONS_INIT;
        so.calibrate = dconf.calibrate;
        so.colocated_nice = dconf.share_cpu_priority ? SCHED_DEFAULT_COLOCATED_NICE : 0;
        so.deep_ref_cache = cfg.limits.deep_ref_cache;
        so.deep_threads = cfg.engine_threads;
        if ((err = sched_new(&scheduler, &devs, &so, msg, sizeof(msg))) < 0) {
            fprintf(stderr, "fractald: %s\n", msg);
            goto done;
        }
    }
    if (cfg.spool_dir[0] || cfg.job_store[0]) {
        struct jobs_options jo = JOBS_OPTIONS_INIT;
        jo.spool_dir = cfg.spool_dir;
        jo.retention_ms = (int64_t)cfg.job_retention_ms;
        jo.disk_budget = cfg.job_disk_budget;
        jo.max_jobs = cfg.max_jobs;
        jo.job_store = cfg.job_store;
        jo.lease_ms = cfg.job_lease_ms;
        if ((err = jobs_open(&jobs, &jo, msg, sizeof(msg))) < 0 && cfg.job_store[0]) {
            /* A bad or unreachable --job-store is a configuration error: one line, exit status 2. */
            fprintf(stderr, "fractald: --job-store: %s\n", msg);
            status = 2;
            goto done;
        }
        if (err < 0) {
            fprintf(stderr, "fractald: job spool %s: %s (--spool-dir DIR chooses another, \"\" disables jobs)\n",
                    cfg.spool_dir, msg);
            goto done;
        }
    }
    if ((err = imgcache_new(&cache, cfg.image_cache)) < 0) {
        fprintf(stderr, "fractald: cannot make the image cache: %s\n", err_name(err));
        goto done;
    }
    {
        struct rpc_deps deps = {&cfg, engine, &devs, jobs, scheduler, cache};
        if ((err = rpc_server_start(&srv, &port, &deps, msg, sizeof(msg))) < 0) {
            fprintf(stderr, "fractald: %s\n", msg);
            goto done;
        }
    }
    if (cfg.http_listen[0]) {
        struct http_deps hdeps = {&cfg, srv, &devs, jobs, scheduler, cache};
        if ((err = http_server_start(&http, &http_port, &hdeps, msg, sizeof(msg))) < 0) {
            fprintf(stderr, "fractald: %s\n", msg);
            goto done;
        }
    }
    /* The ready line on stdout: tests and scripts read the bound port from it. */
    {
        const char *colon = strrchr(cfg.listen, ':');
        if (strncmp(cfg.listen, "unix:", 5) == 0 || !colon)
            printf("fractald listening on %s\n", cfg.listen);
        else
            printf("fractald listening on %.*s:%d\n", (int)(colon - cfg.listen), cfg.listen, port);
        /* The HTTP listener's line comes second, so readers of the first one are unchanged. */
        if (http) {
            const char *hcolon = strrchr(cfg.http_listen, ':');
            printf("fractald http listening on %.*s:%d\n", (int)(hcolon - cfg.http_listen), cfg.http_listen, http_port);
        }
        fflush(stdout);
    }
    log_at(LOG_INFO, "fractald serving on %s (port %d), %u engine threads, %u render workers, jobs %s%s",
           cfg.listen, port, engine_cpu_threads(engine), cfg.render_workers, jobs ? "in " : "disabled",
           !jobs ? "" : cfg.job_store[0] ? "PostgreSQL (--job-store)" : cfg.spool_dir);

    /* Wake once a second for upkeep (expired job results) while waiting for a stop signal. */
    for (;;) {
        struct timespec tick = {1, 0};
        sig = sigtimedwait(&stop_signals, NULL, &tick);
        if (sig == SIGINT || sig == SIGTERM)
            break;
        if (sig == SIGHUP)
            rpc_server_reload(srv);
        rpc_server_tick(srv);
    }
    log_at(LOG_INFO, "received %s; draining (grace %u ms)", sig == SIGINT ? "SIGINT" : "SIGTERM", cfg.grace_ms);
    /* HTTP first stops taking work and lets go of the gRPC server; the renders it queued there
     * drain with the gRPC ones, and its listener closes once they are done. */
    http_server_drain(http, cfg.grace_ms);
    rpc_server_stop(srv, cfg.grace_ms);
    srv = NULL;
    http_server_stop(http);
    http = NULL;
    log_at(LOG_INFO, "fractald stopped");
    status = 0;

done:
    http_server_drain(http, 0);
    rpc_server_stop(srv, 0);
    http_server_stop(http);
    imgcache_free(cache);
    jobs_close(jobs);
    /* The scheduler's workers use the devices' backends: stop them before those go. */
    sched_free(scheduler);
    devices_dispose(&devs);
    engine_cpu_free(engine);
    return status;
}
