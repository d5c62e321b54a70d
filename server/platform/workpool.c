/* workpool.c: a persistent pool of helper threads running the iterations of parallel-for loops;
 * loops wait in a FIFO queue, and their callers work on them too. */
#include "workpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "err.h"

/* One workpool_run call with more than one iteration. Lives on the caller's stack; queued while
 * it has unclaimed iterations. Fields below fn/ctx/count are under pool->lock. */
struct wp_loop {
    struct wp_loop *next;
    workpool_fn fn;
    void *ctx;
    size_t count;
    size_t claimed;
    size_t done;
};

struct workpool {
    pthread_mutex_t lock;
    pthread_cond_t work;            /* a loop was queued, or stop */
    pthread_cond_t finished;        /* some loop's last iteration returned */
    struct wp_loop *head, *tail;
    int stop;
    unsigned nthreads;
    pthread_t *threads;
};

/* Claims the next iteration of the loop at the head of the queue, dequeuing the loop once all its
 * iterations are claimed. Called under pool->lock with a non-empty queue. */
static struct wp_loop *claim_head(workpool *pool, size_t *index)
{
    struct wp_loop *loop = pool->head;

    *index = loop->claimed++;
    if (loop->claimed == loop->count) {
        pool->head = loop->next;
        if (!pool->head)
            pool->tail = NULL;
    }
    return loop;
}

static void *helper_main(void *arg)
{
    workpool *pool = arg;

    pthread_mutex_lock(&pool->lock);
    for (;;) {
        while (!pool->head && !pool->stop)
            pthread_cond_wait(&pool->work, &pool->lock);
        if (pool->stop)
            break;
        size_t index;
        struct wp_loop *loop = claim_head(pool, &index);

        pthread_mutex_unlock(&pool->lock);
        loop->fn(loop->ctx, index);
        pthread_mutex_lock(&pool->lock);
        if (++loop->done == loop->count)
            pthread_cond_broadcast(&pool->finished);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

int workpool_new(workpool **out, unsigned helpers)
{
    workpool *pool = calloc(1, sizeof(*pool));

    *out = NULL;
    if (!pool)
        return ERR_NOMEM;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->finished, NULL);
    if (helpers > 0 && !(pool->threads = calloc(helpers, sizeof(*pool->threads)))) {
        workpool_free(pool);
        return ERR_NOMEM;
    }
    for (; pool->nthreads < helpers; pool->nthreads++) {
        if (pthread_create(&pool->threads[pool->nthreads], NULL, helper_main, pool) != 0) {
            workpool_free(pool);
            return ERR_NOMEM;
        }
    }
    *out = pool;
    return 0;
}

void workpool_free(workpool *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < pool->nthreads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->finished);
    pthread_cond_destroy(&pool->work);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

void workpool_run(workpool *pool, size_t count, workpool_fn fn, void *ctx)
{
    struct wp_loop loop = {NULL, fn, ctx, count, 0, 0};

    if (!pool || pool->nthreads == 0 || count <= 1) {
        for (size_t i = 0; i < count; i++)
            fn(ctx, i);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->tail)
        pool->tail->next = &loop;
    else
        pool->head = &loop;
    pool->tail = &loop;
    pthread_cond_broadcast(&pool->work);
    /* The caller claims from its own loop only, never from others': its loop keeps moving even
     * when the helpers are all busy with earlier loops. */
    while (loop.claimed < loop.count) {
        size_t index = loop.claimed++;

        if (loop.claimed == loop.count) {
            /* Unlink it: it may sit anywhere in the queue. */
            struct wp_loop **p = &pool->head, *prev = NULL;

            while (*p != &loop) {
                prev = *p;
                p = &(*p)->next;
            }
            *p = loop.next;
            if (pool->tail == &loop)
                pool->tail = prev;
        }
        pthread_mutex_unlock(&pool->lock);
        fn(ctx, index);
        pthread_mutex_lock(&pool->lock);
        loop.done++;
    }
    while (loop.done < loop.count)
        pthread_cond_wait(&pool->finished, &pool->lock);
    pthread_mutex_unlock(&pool->lock);
}

static workpool *shared_pool;
static pthread_once_t shared_once = PTHREAD_ONCE_INIT;

static void shared_start(void)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    if (workpool_new(&shared_pool, cpus > 1 ? (unsigned)(cpus - 1) : 0) < 0)
        shared_pool = NULL;
}

workpool *workpool_shared(void)
{
    pthread_once(&shared_once, shared_start);
    return shared_pool;
}
