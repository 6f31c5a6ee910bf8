/*
 * Fused CPU kernel for the per-layer counts of the measurement contract (sections 3 and 4).
 *
 * One call measures a contiguous float32 tensor of `planes` H x W channel maps (N * C planes) in a
 * single pass per plane (the plane stays in cache between the two loops):
 *   1. zeros and the stride-1 all-zero s x s windows (s = 1..5): dp[i][j] is the side of the
 *      largest all-zero square whose bottom-right cell is (i, j), capped at 5; an s x s window is
 *      all zero exactly when the dp value at its bottom-right cell is >= s.
 *   2. k x k tile prediction: a tile fires when all its in-bounds pattern cells are zero; then its
 *      other in-bounds cells are predicted (pred_hit when 0, pred_miss otherwise) and, when
 *      `apply` is set, zeroed in place.
 * out[0..8] += zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5.
 * Planes are split over `threads` POSIX threads; the pure-torch path in pipeline/counts.py is the
 * reference this kernel is tested against.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOUT 9

typedef struct {
    float *data;
    int64_t first, last, h, w, k;
    const uint8_t *pattern;
    int apply;
    int64_t out[NOUT];
} job_t;

static void measure_plane(float *p, int64_t h, int64_t w, int64_t k, const uint8_t *pattern, int apply,
                          uint8_t *buffer, int64_t *out) {
    /* run[j]: zeros in column j ending at the current row, capped at 5. An s x s all-zero window
       ends at (i, j) exactly when min(run[j-s+1..j]) >= s. run has 4 leading zeros, so windows
       that would start left of column 0 never count. Branch-free loops over uint8: vectorized. */
    uint8_t *run = buffer + 4, *fire = buffer + w + 8;
    memset(buffer, 0, (size_t)(w + 4));
    int64_t windows[6] = {0, 0, 0, 0, 0, 0};
    for (int64_t i = 0; i < h; i++) {
        const float *row = p + i * w;
        for (int64_t j = 0; j < w; j++) {
            uint8_t next = (uint8_t)(run[j] + (run[j] < 5));
            run[j] = row[j] == 0.0f ? next : 0;
        }
        int32_t c1 = 0, c2 = 0, c3 = 0, c4 = 0, c5 = 0;
        for (int64_t j = 0; j < w; j++) {
            uint8_t m1 = run[j];
            uint8_t m2 = run[j - 1] < m1 ? run[j - 1] : m1;
            uint8_t m3 = run[j - 2] < m2 ? run[j - 2] : m2;
            uint8_t m4 = run[j - 3] < m3 ? run[j - 3] : m3;
            uint8_t m5 = run[j - 4] < m4 ? run[j - 4] : m4;
            c1 += m1 >= 1; c2 += m2 >= 2; c3 += m3 >= 3; c4 += m4 >= 4; c5 += m5 >= 5;
        }
        windows[1] += c1; windows[2] += c2; windows[3] += c3; windows[4] += c4; windows[5] += c5;
    }
    out[0] += windows[1]; /* zeros = 1x1 all-zero windows */
    for (int s = 1; s <= 5; s++) out[3 + s] += windows[s];

    if (k == 1 && pattern[0]) out[1] += windows[1]; /* 1x1 tiles: every zero cell is a zero diagonal */
    if (k <= 1) return;                               /* k = 0: layer out of scope, nothing predicted */
    /* fire[t]: tile t of the current band of k rows still has only zero pattern cells.
       Pattern cells are visited row by row, strided over the tiles: branch-free. */
    int64_t tiles = (w + k - 1) / k, full_basis = 0;
    for (int64_t q = 0; q < k * k; q++) full_basis += pattern[q];
    int64_t zero_diag = 0, zeros_fired = 0, area_fired = 0;
    for (int64_t r0 = 0; r0 < h; r0 += k) {
        int64_t rows = h - r0 < k ? h - r0 : k;
        memset(fire, 1, (size_t)tiles);
        for (int64_t i = 0; i < rows; i++) {
            const float *row = p + (r0 + i) * w;
            for (int64_t j = 0; j < k; j++) {
                if (!pattern[i * k + j]) continue;
                for (int64_t t = 0, c = j; c < w; t++, c += k) fire[t] &= row[c] == 0.0f;
            }
        }
        for (int64_t t = 0; t < tiles; t++) {
            if (!fire[t]) continue;
            int64_t c0 = t * k, cols = w - c0 < k ? w - c0 : k, basis = full_basis;
            if (rows < k || cols < k) { /* an edge tile: count its in-bounds pattern cells */
                basis = 0;
                for (int64_t i = 0; i < rows; i++)
                    for (int64_t j = 0; j < cols; j++) basis += pattern[i * k + j];
                if (basis == 0) continue; /* no in-bounds pattern cell: no evidence, no firing */
            }
            int32_t zeros = 0;
            for (int64_t i = 0; i < rows; i++) {
                float *row = p + (r0 + i) * w + c0;
                for (int64_t j = 0; j < cols; j++) zeros += row[j] == 0.0f;
                if (apply) memset(row, 0, (size_t)cols * sizeof(float)); /* pattern cells are 0 already */
            }
            zero_diag += basis;
            zeros_fired += zeros;
            area_fired += rows * cols;
        }
    }
    int64_t predicted = area_fired - zero_diag, hit = zeros_fired - zero_diag;
    out[1] += zero_diag;
    out[2] += hit;
    out[3] += predicted - hit;
}

static void *run_job(void *arg) {
    job_t *job = (job_t *)arg;
    uint8_t *buffer = (uint8_t *)calloc((size_t)(2 * job->w + 16), 1); /* run (4 + w), fire (<= w) */
    if (!buffer) return (void *)1;
    for (int64_t plane = job->first; plane < job->last; plane++)
        measure_plane(job->data + plane * job->h * job->w, job->h, job->w, job->k, job->pattern, job->apply,
                      buffer, job->out);
    free(buffer);
    return NULL;
}

/* Returns 0 on success. */
int cnp_measure(float *data, int64_t planes, int64_t h, int64_t w, int64_t k, const uint8_t *pattern,
                int apply, int threads, int64_t *out) {
    if (threads < 1) threads = 1;
    if (threads > planes) threads = planes > 0 ? (int)planes : 1;
    job_t *jobs = (job_t *)calloc((size_t)threads, sizeof(job_t));
    pthread_t *ids = (pthread_t *)calloc((size_t)threads, sizeof(pthread_t));
    if (!jobs || !ids) { free(jobs); free(ids); return 1; }
    int failed = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job_t){data, planes * t / threads, planes * (t + 1) / threads, h, w, k, pattern, apply, {0}};
    }
    uint8_t *started = (uint8_t *)calloc((size_t)threads, 1);
    if (!started) { free(jobs); free(ids); return 1; }
    for (int t = 1; t < threads; t++) {
        started[t] = pthread_create(&ids[t], NULL, run_job, &jobs[t]) == 0;
        if (!started[t] && run_job(&jobs[t]) != NULL) failed = 1; /* no thread: run it here */
    }
    if (run_job(&jobs[0]) != NULL) failed = 1;
    for (int t = 1; t < threads; t++) {
        void *result = NULL;
        if (!started[t]) continue;
        pthread_join(ids[t], &result);
        if (result != NULL) failed = 1;
    }
    free(started);
    for (int t = 0; t < threads; t++)
        for (int i = 0; i < NOUT; i++) out[i] += jobs[t].out[i];
    free(jobs);
    free(ids);
    return failed;
}
