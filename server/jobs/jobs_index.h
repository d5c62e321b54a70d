/* jobs_index.h: the job store's in-memory index: job ids, the hash on them, the list of every job,
 * the queue, the done list and the counts, kept in step with each job's state. Internal to
 * server/jobs/. */
#ifndef FRACTALD_JOBS_INDEX_H
#define FRACTALD_JOBS_INDEX_H

#include <stdbool.h>
#include <stdint.h>

#include "jobs.h"

/* The index is the fields of struct jobs_store between `buckets` and `held`, plus spool_bytes as
 * far as SUCCEEDED jobs count in it (jobs_internal.h). It does no I/O and takes no lock: each
 * function says which lock its caller holds. Readers hold store->lock. A change holds store->lock
 * and, because every state change goes to the journal first, store->db_lock too, taken before it
 * (jobs_internal.h's lock order); a job therefore leaves the index, or changes state, only under
 * both. During jobs_open and jobs_close no other thread can reach the store, so they call in
 * without either. */

struct job;
struct finish_row;

/* Whether id is a well-formed job id (JOBS_ID_LEN characters of the base32 alphabet). NULL is not.
 * Needs no lock. */
bool jobs_id_valid(const char *id);

/* Writes a new random id (128 bits from getrandom()) with its NUL into id. Returns 0, or
 * ERR_INTERNAL when getrandom fails (errno says why). Does not check that the id is unused;
 * jobs_find does that. Needs no lock. */
int jobs_id_generate(char id[JOBS_ID_SIZE]);

/* Whether state is one a job ends in: SUCCEEDED, FAILED or CANCELLED. */
bool jobs_state_finished(enum jobs_state state);

/* Sizes the hash for at least `rows` jobs (and the store's max_jobs) and allocates it, empty.
 * For jobs_open, before the journal is loaded. Returns 0 or ERR_NOMEM. */
int jobs_index_init(jobs_store *s, uint64_t rows);

/* Frees every job in the index and the hash. For jobs_close; safe on a store whose index was
 * never initialised. */
void jobs_index_dispose(jobs_store *s);

/* The job with this id, or NULL (also for a string that is not a well-formed id). Caller holds
 * s->lock, or is jobs_open before the store is handed out. The job is borrowed: it stays valid
 * while the caller holds s->lock or s->db_lock, since jobs leave the index only under both. */
struct job *jobs_find(jobs_store *s, const char *id);

/* Adds job j, which the index then owns, to the hash, the seq-ordered list of all jobs and the
 * list its state belongs to, and counts it (in spool_bytes too if it is SUCCEEDED). The id must
 * not be in the index yet. Caller holds db_lock and lock, or is jobs_open. */
void jobs_index_add(jobs_store *s, struct job *j);

/* Takes job j out of the index and out of the counts, undoing jobs_index_add; j is the caller's
 * again, to free. Caller holds db_lock and lock. */
void jobs_index_remove(jobs_store *s, struct job *j);

/* Moves job j to `state`, keeping the lists and counts right, and wakes one waiting worker when
 * the job is QUEUED. Touches no other field: it is for the moves without a finish_row (to RUNNING,
 * back to QUEUED); a finish goes through jobs_index_apply_finish, which also moves the job's
 * result bytes in spool_bytes. Caller holds db_lock and lock. */
void jobs_index_set_state(jobs_store *s, struct job *j, enum jobs_state state);

/* Applies finish_row r, already committed to the journal, to job j: its fields, its result bytes
 * in spool_bytes, and its state (jobs_index_set_state). Takes ownership of stats and message
 * (either may be NULL); r is borrowed. Caller holds db_lock and lock. */
void jobs_index_apply_finish(jobs_store *s, struct job *j, const struct finish_row *r, void *stats, char *message);

/* The 1-based place of job target in the queue, or 0 when it is not queued. Walks the queue.
 * Caller holds lock. */
uint32_t jobs_index_position(const jobs_store *s, const struct job *target);

#endif
