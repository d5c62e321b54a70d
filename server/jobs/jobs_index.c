/* jobs_index.c: the job store's in-memory index: job ids, the hash on them, the seq-ordered list of
 * every job, the queue and the done list, and the counts by state (jobs_index.h). */
#include "jobs_index.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "err.h"
#include "jobs_internal.h"

static const char base32_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

/* ---- ids ---- */

bool jobs_id_valid(const char *id)
{
    size_t n = 0;

    if (!id)
        return false;
    for (; id[n]; n++)
        if (n >= JOBS_ID_LEN || !strchr(base32_alphabet, id[n]))
            return false;
    return n == JOBS_ID_LEN;
}

/* 128 bits from getrandom() in base32: 26 characters of 5 bits, the last one carrying 3. */
int jobs_id_generate(char id[JOBS_ID_SIZE])
{
    uint8_t raw[17] = {0};
    size_t got = 0;

    while (got < 16) {
        ssize_t n = getrandom(raw + got, 16 - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return ERR_INTERNAL;
        got += (size_t)n;
    }
    for (int i = 0; i < JOBS_ID_LEN; i++) {
        int bit = i * 5, byte = bit / 8, shift = bit % 8;
        unsigned v = ((unsigned)raw[byte] << 8 | raw[byte + 1]) >> (11 - shift);

        id[i] = base32_alphabet[v & 31];
    }
    id[JOBS_ID_LEN] = '\0';
    return 0;
}

static size_t id_hash(const char *id)
{
    uint64_t h = 1469598103934665603u;

    for (; *id; id++)
        h = (h ^ (uint8_t)*id) * 1099511628211u;
    return (size_t)h;
}

bool jobs_state_finished(enum jobs_state state)
{
    return state == JOBS_SUCCEEDED || state == JOBS_FAILED || state == JOBS_CANCELLED;
}

/* ---- the hash and the lists ---- */

int jobs_index_init(jobs_store *s, uint64_t rows)
{
    s->nbuckets = 64;
    while (s->nbuckets < s->opts.max_jobs || s->nbuckets < rows)
        s->nbuckets *= 2;
    if (!(s->buckets = calloc(s->nbuckets, sizeof(*s->buckets))))
        return ERR_NOMEM;
    return 0;
}

void jobs_index_dispose(jobs_store *s)
{
    for (struct job *j = s->all_head, *next; j; j = next) {
        next = j->all_next;
        jobs_job_free(j);
    }
    free(s->buckets);
}

struct job *jobs_find(jobs_store *s, const char *id)
{
    if (!jobs_id_valid(id))
        return NULL;
    for (struct job *j = s->buckets[id_hash(id) & (s->nbuckets - 1)]; j; j = j->hash_next)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

static void list_unlink(struct job **head, struct job **tail, struct job *j)
{
    if (j->list_prev)
        j->list_prev->list_next = j->list_next;
    else
        *head = j->list_next;
    if (j->list_next)
        j->list_next->list_prev = j->list_prev;
    else
        *tail = j->list_prev;
    j->list_prev = j->list_next = NULL;
}

/* Inserts j after the last element `before` says precedes it, searching from the tail: both
 * lists almost always grow at the tail (new submissions, jobs finishing now). */
static void list_insert_sorted(struct job **head, struct job **tail, struct job *j,
                               bool (*before)(const struct job *a, const struct job *b))
{
    struct job *p = *tail;

    while (p && !before(p, j))
        p = p->list_prev;
    j->list_prev = p;
    j->list_next = p ? p->list_next : *head;
    if (j->list_next)
        j->list_next->list_prev = j;
    else
        *tail = j;
    if (p)
        p->list_next = j;
    else
        *head = j;
}

static bool seq_before(const struct job *a, const struct job *b)
{
    return a->seq <= b->seq;
}

static bool expiry_before(const struct job *a, const struct job *b)
{
    return a->expires_ms <= b->expires_ms;
}

static void queue_add(jobs_store *s, struct job *j)
{
    list_insert_sorted(&s->queue_head, &s->queue_tail, j, seq_before);
}

static void done_add(jobs_store *s, struct job *j)
{
    list_insert_sorted(&s->done_head, &s->done_tail, j, expiry_before);
}

void jobs_index_add(jobs_store *s, struct job *j)
{
    size_t b = id_hash(j->id) & (s->nbuckets - 1);

    j->hash_next = s->buckets[b];
    s->buckets[b] = j;
    j->all_prev = s->all_tail;
    j->all_next = NULL;
    if (s->all_tail)
        s->all_tail->all_next = j;
    else
        s->all_head = j;
    s->all_tail = j;
    if (j->state == JOBS_QUEUED)
        queue_add(s, j);
    else if (jobs_state_finished(j->state))
        done_add(s, j);
    s->counts[j->state]++;
    s->held++;
    if (j->state == JOBS_SUCCEEDED)
        s->spool_bytes += j->result_bytes;
}

void jobs_index_remove(jobs_store *s, struct job *j)
{
    struct job **pp = &s->buckets[id_hash(j->id) & (s->nbuckets - 1)];

    while (*pp != j)
        pp = &(*pp)->hash_next;
    *pp = j->hash_next;
    if (j->all_prev)
        j->all_prev->all_next = j->all_next;
    else
        s->all_head = j->all_next;
    if (j->all_next)
        j->all_next->all_prev = j->all_prev;
    else
        s->all_tail = j->all_prev;
    if (j->state == JOBS_QUEUED)
        list_unlink(&s->queue_head, &s->queue_tail, j);
    else if (jobs_state_finished(j->state))
        list_unlink(&s->done_head, &s->done_tail, j);
    s->counts[j->state]--;
    s->held--;
    if (j->state == JOBS_SUCCEEDED)
        s->spool_bytes -= j->result_bytes;
}

void jobs_index_set_state(jobs_store *s, struct job *j, enum jobs_state state)
{
    if (j->state == JOBS_QUEUED)
        list_unlink(&s->queue_head, &s->queue_tail, j);
    else if (jobs_state_finished(j->state))
        list_unlink(&s->done_head, &s->done_tail, j);
    s->counts[j->state]--;
    j->state = state;
    s->counts[state]++;
    if (state == JOBS_QUEUED) {
        queue_add(s, j);
        pthread_cond_signal(&s->queued);
    } else if (jobs_state_finished(state)) {
        done_add(s, j);
    }
}

void jobs_index_apply_finish(jobs_store *s, struct job *j, const struct finish_row *r, void *stats, char *message)
{
    free(j->stats);
    j->stats = stats;
    j->stats_len = stats ? r->stats_len : 0;
    free(j->error_message);
    j->error_message = message;
    j->error_code = r->error_code;
    j->finished_ms = r->finished_ms;
    j->expires_ms = r->expires_ms;
    snprintf(j->content_type, sizeof(j->content_type), "%s", r->content_type ? r->content_type : "");
    j->width = r->width;
    j->height = r->height;
    if (j->state == JOBS_SUCCEEDED)
        s->spool_bytes -= j->result_bytes;
    j->result_bytes = r->result_bytes;
    j->result_crc = r->result_crc;
    if (r->state == JOBS_SUCCEEDED)
        s->spool_bytes += j->result_bytes;
    jobs_index_set_state(s, j, r->state);
}

uint32_t jobs_index_position(const jobs_store *s, const struct job *target)
{
    uint32_t pos = 1;

    for (const struct job *j = s->queue_head; j; j = j->list_next, pos++)
        if (j == target)
            return pos;
    return 0;
}
