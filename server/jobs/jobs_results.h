/* jobs_results.h: the job store's result files, one per SUCCEEDED job in <spool>/results/, named
 * by the job's id: what jobs.c calls to check, sweep and delete them. Internal to server/jobs/. */
#ifndef FRACTALD_JOBS_RESULTS_H
#define FRACTALD_JOBS_RESULTS_H

#include <stddef.h>
#include <stdint.h>

#include "jobs.h"

/* jobs_results.c also defines the public writer and reader of jobs.h (jobs_result_open ...
 * jobs_result_free, jobs_reader_open ... jobs_reader_free): it writes a result to a temporary file
 * while reserving its bytes against disk_budget in store->spool_bytes, fsyncs and renames it into
 * place, and reads it back checking its CRC-32. The state changes those need go through jobs.c
 * (jobs_commit_success, jobs_mark_data_loss in jobs_internal.h), so this file never takes
 * store->db_lock and never touches the journal; it takes store->lock only briefly (a lookup, the
 * budget), never across disk I/O.
 *
 * The functions below take no lock: jobs_results_check and jobs_results_delete read only
 * store->results_dir, fixed at jobs_open, and what their caller passes. */

/* Builds the CRC-32 table the writer and reader use. jobs_open calls it before any writer or
 * reader can exist; safe to call again, from any thread. */
void jobs_results_init(void);

/* Checks at open that the result file of job `id` is a regular file of `size` bytes. Returns 0
 * when it is, 1 when it is not (why gets one line saying what is wrong, for the job's error
 * message), or ERR_NOMEM. */
int jobs_results_check(const jobs_store *s, const char *id, uint64_t size, char *why, size_t whylen);

/* Continues CRC-32 crc (0 to start) over len bytes; the checksum of every result, whichever
 * backend stores it. */
uint32_t jobs_results_crc(uint32_t crc, const void *data, size_t len);

/* Deletes the result file of job `id`, if there is one. Call it only after the commit that
 * removed the job or its result from the journal, so a crash in between leaves a stray file for
 * the next open's sweep, never a job without its result. Failures are ignored for that reason. */
void jobs_results_delete(const jobs_store *s, const char *id);

/* Deletes every file in the results folder that is not the result of a SUCCEEDED job: temporary
 * files of renders the last process did not finish, and a result renamed into place by a process
 * that died before it committed the job (that job is queued again and will rewrite it). For
 * jobs_open only, once the index is loaded and before the store is handed out (it reads the
 * index without store->lock). Returns 0, or ERR_IO when the folder cannot be read; files that
 * cannot be deleted are logged and left. */
int jobs_results_sweep(jobs_store *s, char *msg, size_t msglen);

#endif
