/*
 * The random control's draws (contract section 7, kind `random`), fused: which tiles fire in each
 * channel map of a contiguous float32 tensor (N, C, H, W) cut into k x k tiles with a k x k pattern.
 *
 * In every map exactly as many tiles fire as the tile rule fires there (every in-bounds pattern cell
 * is 0; the budget), chosen among the map's tiles that have an in-bounds pattern cell (the eligible
 * ones) by uniform keys: the `budget` eligible tiles with the lowest keys fire, a tie of keys going
 * to the lower tile index.
 *
 * The keys are those of the pure-torch reference (pipeline/predictors/random_tiles.py): image n draws
 * from its own generator, torch's CPU Mersenne Twister seeded with seeds[n] (torch seeds MT19937 with
 * the low 32 bits), C * T floats in (channel, tile) order, each (32-bit draw & 0xFFFFFF) * 2^-24 as
 * torch.rand makes them. Keys are compared as those 24-bit integers (the floats are exact multiples of
 * 2^-24, so the order is the same), joined with the tile index into one 64-bit key with no ties.
 * Images are split over `threads` OpenMP threads; the result does not depend on the thread count.
 * out: (N, C, th, tw) bytes, 1 where a tile fires.
 */
#include <stdint.h>
#include <stdlib.h>

#define MT_N 624
#define MT_M 397
/* the twist of words u (upper bit) and v (lower bits) */
#define MT_MIX(u, v) \
    ((((u) & 0x80000000u) | ((v) & 0x7fffffffu)) >> 1 ^ ((0u - ((v) & 1u)) & 0x9908b0dfu))

typedef struct {
    uint32_t state[MT_N];
    int next;
} mt19937_t;

static void mt_seed(mt19937_t *mt, uint32_t seed) {
    mt->state[0] = seed;
    for (int i = 1; i < MT_N; i++)
        mt->state[i] = 1812433253u * (mt->state[i - 1] ^ (mt->state[i - 1] >> 30)) + (uint32_t)i;
    mt->next = MT_N;
}

static uint32_t mt_draw(mt19937_t *mt) {
    if (mt->next >= MT_N) { /* the twist, in the three ranges where i + 1 and i + M wrap or not */
        uint32_t *s = mt->state;
        int i = 0;
        for (; i < MT_N - MT_M; i++) s[i] = s[i + MT_M] ^ MT_MIX(s[i], s[i + 1]);
        for (; i < MT_N - 1; i++) s[i] = s[i + MT_M - MT_N] ^ MT_MIX(s[i], s[i + 1]);
        s[MT_N - 1] = s[MT_M - 1] ^ MT_MIX(s[MT_N - 1], s[0]);
        mt->next = 0;
    }
    uint32_t y = mt->state[mt->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* the value of rank `rank` (0-based) among keys[0..n-1], all distinct; reorders keys. Quickselect with a
   median-of-three pivot and a branch-free partition (the keys are random: a branch on them is a coin flip),
   then a selection sort of the last few. */
static uint64_t select_rank(uint64_t *keys, int64_t n, int64_t rank) {
    int64_t lo = 0, hi = n - 1; /* keys[rank] lies in [lo, hi] */
    while (hi - lo > 8) {
        const int64_t mid = lo + (hi - lo) / 2;
        const uint64_t a = keys[lo], b = keys[mid], c = keys[hi];
        const int64_t at = (a < b) == (b < c) ? mid : ((b < a) == (a < c) ? lo : hi); /* the median of three */
        const uint64_t pivot = keys[at];
        keys[at] = keys[hi];
        keys[hi] = pivot;
        int64_t store = lo; /* keys[lo..store) < pivot <= keys[store..i) */
        for (int64_t i = lo; i < hi; i++) {
            const uint64_t v = keys[i];
            keys[i] = keys[store];
            keys[store] = v;
            store += v < pivot;
        }
        keys[hi] = keys[store];
        keys[store] = pivot;
        if (rank == store) return pivot;
        if (rank < store)
            hi = store - 1;
        else
            lo = store + 1;
    }
    for (int64_t i = lo; i <= rank; i++) { /* selection sort of [lo, hi] up to rank */
        int64_t least = i;
        for (int64_t j = i + 1; j <= hi; j++) least = keys[j] < keys[least] ? j : least;
        const uint64_t t = keys[i];
        keys[i] = keys[least];
        keys[least] = t;
    }
    return keys[rank];
}

/* returns 0, or 1 when a buffer cannot be allocated */
int cnp_random_tiles(const float *x, int64_t n, int64_t c, int64_t h, int64_t w, int64_t k, const uint8_t *pattern,
                     const uint64_t *seeds, int threads, uint8_t *out) {
    const int64_t th = (h + k - 1) / k, tw = (w + k - 1) / k, tiles = th * tw;
    /* the in-bounds pattern cells, by tile: cell offsets in the map, tile t's are cells[first[t]..first[t+1]) */
    int64_t *first = (int64_t *)malloc(sizeof(int64_t) * (size_t)(tiles + 1));
    int64_t *cells = (int64_t *)malloc(sizeof(int64_t) * (size_t)(h * w + 1));
    int failed = first == NULL || cells == NULL;
    if (!failed) {
        int64_t count = 0;
        for (int64_t t = 0; t < tiles; t++) {
            first[t] = count;
            const int64_t r0 = (t / tw) * k, c0 = (t % tw) * k;
            for (int64_t i = 0; i < k && r0 + i < h; i++)
                for (int64_t j = 0; j < k && c0 + j < w; j++)
                    if (pattern[i * k + j]) cells[count++] = (r0 + i) * w + c0 + j;
        }
        first[tiles] = count;
    }
    if (failed) {
        free(first);
        free(cells);
        return 1;
    }
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        mt19937_t *mt = (mt19937_t *)malloc(sizeof(mt19937_t));
        uint64_t *keys = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)tiles);
        uint64_t *pool = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)tiles);
        if (mt == NULL || keys == NULL || pool == NULL) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (int64_t image = 0; image < n; image++) {
            if (failed) continue;
            mt_seed(mt, (uint32_t)seeds[image]);
            for (int64_t channel = 0; channel < c; channel++) {
                const float *map = x + (image * c + channel) * h * w;
                uint8_t *fire = out + (image * c + channel) * tiles;
                int64_t budget = 0, eligible = 0; /* the tile rule's fires, the tiles that may fire */
                for (int64_t t = 0; t < tiles; t++) {
                    int zero = first[t] < first[t + 1]; /* no in-bounds pattern cell: never fires */
                    eligible += zero;
                    for (int64_t e = first[t]; e < first[t + 1]; e++) zero &= map[cells[e]] == 0.0f;
                    budget += zero;
                }
                if (budget == 0 || budget == eligible) { /* no choice: nothing, or every eligible tile */
                    for (int64_t t = 0; t < tiles; t++) {
                        mt_draw(mt); /* the map's draws are taken all the same: the next map's come after */
                        fire[t] = budget > 0 && first[t] < first[t + 1];
                    }
                    continue;
                }
                eligible = 0;
                for (int64_t t = 0; t < tiles; t++) {
                    const uint64_t draw = mt_draw(mt) & 0xFFFFFFu; /* drawn for every tile, as torch.rand does */
                    keys[t] = UINT64_MAX; /* above every drawn key: never fires */
                    if (first[t] == first[t + 1]) continue;
                    keys[t] = (draw << 32) | (uint64_t)t;
                    pool[eligible++] = keys[t];
                }
                const uint64_t last = select_rank(pool, eligible, budget - 1); /* the highest key that fires */
                for (int64_t t = 0; t < tiles; t++) fire[t] = keys[t] <= last;
            }
        }
        free(mt);
        free(keys);
        free(pool);
    }
    free(first);
    free(cells);
    return failed;
}
