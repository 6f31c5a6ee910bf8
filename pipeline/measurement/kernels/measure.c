/*
 * Fused CPU kernel for the per-layer counts of the measurement contract (sections 3 and 4).
 *
 * One call measures a contiguous float32 tensor of `planes` H x W channel maps (N * C planes).
 * The planes are processed in chunks of whole planes (about CHUNK cells, so small maps such as
 * 4 x 4 or 7 x 7 still give long loops) as flat arrays, with no per-row loop:
 *   1. z[e] = (x[e] == 0); zeros = sum z.
 *   2. all-zero s x s windows (stride 1, unpadded), by their bottom-right cell e:
 *      S_1 = z, S_s[e] = S_{s-1}[e] & S_{s-1}[e-1] & S_{s-1}[e-W] & S_{s-1}[e-W-1] & (row, col >= s-1);
 *      the four (s-1)-squares ending at (r, c), (r, c-1), (r-1, c), (r-1, c-1) cover the s-square.
 *      Branch-free loops over bytes: the compiler vectorizes them.
 *   3. k x k tile prediction with a k x k pattern (contract sections 3 and 7). A tile with an
 *      in-bounds pattern cell fires when
 *        mode 1 (tile):        every in-bounds pattern cell has a value <= threshold;
 *        mode 2 (tile_oracle): every in-bounds cell of the tile is 0;
 *        mode 4 (given tiles): `given[tile]` is set (one byte per tile, tiles numbered through the
 *                              planes: the random control's draws);
 *      its pattern cells are zero_diag (modes 1, 2: they are <= threshold / zero) and its other
 *      in-bounds cells are predicted (pred_hit when 0, pred_miss otherwise) and, when `apply` is set,
 *      zeroed in place; its pattern cells keep their values. Mode 0: no prediction.
 *   Cell predictions that need no tiles of their own:
 *        mode 3 (zero cells):  exactly the zero cells are predicted, no basis (the oracle);
 *        mode 5 (given cells): the non-pattern cells with `given[cell]` set are predicted (a learned
 *                              predictor's decision; a pattern cell is computed whatever `given` says);
 *                              zero_diag = the zero pattern cells.
 * out[0..8] += zeros, zero_diag, pred_hit, pred_miss, zero_windows_1..5;
 * mass[0..1] += sum of the values, sum of the values of pred_miss cells (double). When `predicted` is given
 * (one byte per cell of all planes), it receives 1 for every predicted cell and 0 elsewhere.
 * With `extra` (contract section 10):
 *   out[9..14] += skip_cells_g1, g2, g4, g8, g16, g32: after the planes are measured, a second pass over
 *     each image's channels in blocks of 32 ANDs the predicted masks of channel pairs, then pairs of pairs
 *     (groups of 2g are pairs of groups of g; channels past C count as predicted and as no cells), and
 *     counts each group's all-predicted positions times its channels;
 *   mass[2..5] += zero_windows_indep_2..5: per plane with z zeros, (H-s+1)(W-s+1) * prod_{i<s*s}
 *     (z-i)/(HW-i), from a table over z built once per call. Float sums are
 * taken per chunk and added in chunk order, so they do not depend on the thread count.
 * Chunks are split over `threads` OpenMP threads. The pure-torch path in pipeline/measurement/counts.py is
 * the reference this kernel is tested against.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOUT 15
#define NMASS 6
#define NGROUPS 6 /* g = 1, 2, 4, 8, 16, 32 */
#define NINDEP 4  /* s = 2..5 */
#define CHUNK 16384

typedef struct {
    int64_t h, w, hw, k, chunk_planes, tiles;
    int mode, apply;
    float threshold;
    const uint8_t *given; /* modes 4 and 5: per tile / per cell of all planes */
    uint8_t *predicted;   /* NULL, or per cell of all planes: 1 where predicted */
    int extra;            /* the section-10 counts */
    double *indep;        /* [NINDEP * (hw + 1)] expected all-zero s-windows of a plane with z zeros */
    uint8_t *edge;       /* [chunk_planes * hw] min(row, col, 5): s-windows end where edge >= s-1 */
    int32_t *tile_of;    /* [chunk_planes * hw] the tile of each cell (numbered through the chunk) */
    uint8_t *other;      /* [chunk_planes * hw] not a pattern cell (predicted when its tile fires) */
    int32_t *basis;      /* [chunk_planes * tiles] in-bounds pattern cells of each tile */
    int32_t *pattern_cells, *pattern_tile, npattern; /* [chunk_planes * npattern] pattern cells, their tiles */
} layout_t;

typedef struct {
    const layout_t *layout;
    float *data;
    int64_t first, last; /* planes */
    int64_t out[NOUT];
    double *mass;        /* [chunks * NMASS] per-chunk float sums, indexed by global chunk */
} job_t;

/* S_s from S_{s-1} (see the header); returns how many s x s windows are all zero. */
static int64_t square_step(const uint8_t *restrict in, uint8_t *restrict next, const uint8_t *restrict edge,
                           int64_t n, int64_t w, uint8_t need) {
    const int64_t start = w + 1 < n ? w + 1 : n;
    memset(next, 0, (size_t)start); /* row 0 and (row 1, col 0): no window ends there */
    int32_t count = 0;
    for (int64_t e = start; e < n; e++) {
        uint8_t v = in[e] & in[e - 1] & in[e - w] & in[e - w - 1] & (edge[e] >= need);
        next[e] = v;
        count += v;
    }
    return count;
}

/* sum of x[e] (where mask[e], when a mask is given) in double, from float sums of SUM_BLOCK cells
   (vectorized; a float sum of at most SUM_BLOCK non-negative values loses no more than ~1e-7 of it) */
#define SUM_BLOCK 1024
static double block_sum(const float *restrict x, const uint8_t *restrict mask, int64_t n) {
    double total = 0.0;
    for (int64_t start = 0; start < n; start += SUM_BLOCK) {
        const int64_t stop = n - start < SUM_BLOCK ? n : start + SUM_BLOCK;
        float part = 0.0f;
        if (mask) {
#pragma omp simd reduction(+ : part)
            for (int64_t e = start; e < stop; e++) part += mask[e] ? x[e] : 0.0f;
        } else {
#pragma omp simd reduction(+ : part)
            for (int64_t e = start; e < stop; e++) part += x[e];
        }
        total += (double)part;
    }
    return total;
}

static void measure_chunk(const layout_t *lay, float *x, int64_t first_plane, int64_t nplanes, uint8_t *restrict z,
                          uint8_t *restrict a, uint8_t *restrict b, int32_t *restrict fire, int64_t *out,
                          double *mass) {
    const int64_t n = nplanes * lay->hw, w = lay->w;
    int32_t count = 0;
    for (int64_t e = 0; e < n; e++) {
        z[e] = x[e] == 0.0f;
        count += z[e];
    }
    out[0] += count;
    out[4] += count; /* 1x1 all-zero windows are the zero cells */
    mass[0] += block_sum(x, NULL, n);
    if (lay->extra) { /* the chance level of every plane, in plane order */
        for (int64_t q = 0; q < nplanes; q++) {
            int32_t zq = 0;
            const uint8_t *restrict zp = z + q * lay->hw;
            for (int64_t e = 0; e < lay->hw; e++) zq += zp[e];
            for (int i = 0; i < NINDEP; i++) mass[2 + i] += lay->indep[i * (lay->hw + 1) + zq];
        }
    }

    const uint8_t *in = z;
    uint8_t *next = a;
    for (int s = 2; s <= 5; s++) {
        out[3 + s] += square_step(in, next, lay->edge, n, w, (uint8_t)(s - 1));
        in = next;
        next = (next == a) ? b : a;
    }

    uint8_t *restrict mask = lay->predicted ? lay->predicted + first_plane * lay->hw : NULL;
    if (lay->mode == 0 || (lay->k <= 1 && lay->mode != 3)) {
        if (mask) memset(mask, 0, (size_t)n); /* nothing predicted */
    }
    if (lay->mode == 0) return;
    if (lay->mode == 3) { /* the zero cells: all hits, nothing lost, nothing to zero */
        out[2] += count;
        if (mask) memcpy(mask, z, (size_t)n);
        return;
    }
    const float t = lay->threshold;
    if (lay->k <= 1) { /* 1x1 tiles: each cell is its own pattern cell, nothing is predicted */
        int32_t fired = 0;
        if (lay->mode == 4) {
            const uint8_t *restrict given = lay->given + first_plane * lay->hw;
            for (int64_t e = 0; e < n; e++) fired += given[e] != 0;
        } else if (lay->mode == 2 || lay->mode == 5 || t == 0.0f) {
            fired = count;
        } else {
#pragma omp simd reduction(+ : fired)
            for (int64_t e = 0; e < n; e++) fired += x[e] <= t;
        }
        out[1] += fired;
        return;
    }
    /* fire per tile (a scatter over the cells the rule reads), then the fired flag of every cell
       (a gather), then branch-free counting and zeroing over the whole chunk (vectorized) */
    uint8_t *restrict fired = a; /* the window buffers are free again */
    const int64_t ntiles = nplanes * lay->tiles, npattern = nplanes * lay->npattern;
    const int32_t *restrict basis = lay->basis, *restrict tile_of = lay->tile_of;
    int64_t zero_diag = 0;
    const uint8_t *restrict other_cell = lay->other;
    if (lay->mode == 5) { /* given cells: the decision is made, count it */
        const uint8_t *restrict given = lay->given + first_plane * lay->hw;
        for (int64_t e = 0; e < n; e++) {
            fired[e] = (given[e] != 0) & other_cell[e]; /* a pattern cell is computed, never predicted */
            zero_diag += z[e] & !other_cell[e];
        }
        goto count_predicted;
    }
    if (lay->mode == 4) {
        const uint8_t *restrict given = lay->given + first_plane * lay->tiles;
        for (int64_t tile = 0; tile < ntiles; tile++) fire[tile] = given[tile] != 0;
    } else {
        for (int64_t tile = 0; tile < ntiles; tile++) fire[tile] = basis[tile] > 0;
    }
    if (lay->mode == 4) {
        /* fired as given */
    } else if (lay->mode == 1 && t == 0.0f) { /* the paper's rule: pattern cells equal to 0 */
        for (int64_t m = 0; m < npattern; m++) fire[lay->pattern_tile[m]] &= z[lay->pattern_cells[m]];
    } else if (lay->mode == 1) {
        for (int64_t m = 0; m < npattern; m++) fire[lay->pattern_tile[m]] &= x[lay->pattern_cells[m]] <= t;
    } else {
        for (int64_t e = 0; e < n; e++) fire[tile_of[e]] &= z[e];
    }
    for (int64_t tile = 0; tile < ntiles; tile++) zero_diag += fire[tile] * basis[tile];
    for (int64_t e = 0; e < n; e++) fired[e] = (uint8_t)fire[tile_of[e]] & other_cell[e]; /* predicted */
count_predicted:;
    int32_t predicted = 0, hit = 0;
    for (int64_t e = 0; e < n; e++) {
        predicted += fired[e];
        hit += fired[e] & z[e];
    }
    const double lost = block_sum(x, fired, n); /* zero cells add nothing: the pred_miss mass */
    if (mask) memcpy(mask, fired, (size_t)n);
    if (lay->apply) {
        uint32_t *restrict bits = (uint32_t *)x; /* -fno-strict-aliasing: float bits as integers */
        for (int64_t e = 0; e < n; e++) bits[e] &= (uint32_t)fired[e] - 1u; /* predicted: +0.0f */
    }
    out[1] += zero_diag;
    out[2] += hit;
    out[3] += predicted - hit;
    mass[1] += lost;
}

static int run_job(job_t *job) { /* 0 on success */
    const layout_t *lay = job->layout;
    int64_t n = lay->chunk_planes * lay->hw;
    int32_t *fire = (int32_t *)malloc((size_t)(lay->chunk_planes * lay->tiles + 16) * sizeof(int32_t));
    uint8_t *buffer = (uint8_t *)malloc((size_t)(3 * n + 64));
    if (!buffer || !fire) { free(buffer); free(fire); return 1; }
    uint8_t *z = buffer, *a = z + n, *b = a + n;
    for (int64_t p = job->first; p < job->last; p += lay->chunk_planes) {
        int64_t nplanes = job->last - p < lay->chunk_planes ? job->last - p : lay->chunk_planes;
        double *mass = job->mass + (p / lay->chunk_planes) * NMASS;
        measure_chunk(lay, job->data + p * lay->hw, p, nplanes, z, a, b, fire, job->out, mass);
    }
    free(buffer);
    free(fire);
    return 0;
}

static int build_layout(layout_t *lay, int64_t h, int64_t w, int64_t k, const uint8_t *pattern, int mode,
                        float threshold, int apply, const uint8_t *given, uint8_t *predicted, int extra) {
    memset(lay, 0, sizeof(*lay));
    lay->h = h; lay->w = w; lay->hw = h * w; lay->k = k; lay->mode = mode; lay->threshold = threshold;
    lay->apply = apply; lay->given = given; lay->predicted = predicted; lay->extra = extra;
    if (extra) {
        lay->indep = (double *)malloc((size_t)(NINDEP * (lay->hw + 1)) * sizeof(double));
        if (!lay->indep) return 1;
        for (int i = 0; i < NINDEP; i++) {
            const int64_t s = 2 + i, need = s * s;
            const double windows = (s <= h && s <= w) ? (double)((h - s + 1) * (w - s + 1)) : 0.0;
            for (int64_t z = 0; z <= lay->hw; z++) {
                double p = windows;
                for (int64_t j = 0; j < need && p > 0.0; j++) p *= z > j ? (double)(z - j) / (double)(lay->hw - j) : 0.0;
                lay->indep[i * (lay->hw + 1) + z] = p;
            }
        }
    }
    lay->chunk_planes = lay->hw >= CHUNK ? 1 : CHUNK / lay->hw;
    int64_t n = lay->chunk_planes * lay->hw;
    lay->edge = (uint8_t *)malloc((size_t)n);
    if (!lay->edge) return 1;
    for (int64_t r = 0; r < h; r++)
        for (int64_t c = 0; c < w; c++) {
            int64_t m = r < c ? r : c;
            lay->edge[r * w + c] = (uint8_t)(m < 5 ? m : 5);
        }
    for (int64_t q = 1; q < lay->chunk_planes; q++) memcpy(lay->edge + q * lay->hw, lay->edge, (size_t)lay->hw);
    if (mode == 0 || mode == 3 || k <= 1) return 0;
    int64_t th = (h + k - 1) / k, tw = (w + k - 1) / k;
    lay->tiles = th * tw;
    int64_t cp = lay->chunk_planes, tiles = lay->tiles, hw = lay->hw;
    lay->tile_of = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    lay->other = (uint8_t *)malloc((size_t)n);
    lay->basis = (int32_t *)calloc((size_t)(cp * tiles), sizeof(int32_t));
    lay->pattern_cells = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    lay->pattern_tile = (int32_t *)malloc((size_t)n * sizeof(int32_t));
    if (!lay->tile_of || !lay->other || !lay->basis || !lay->pattern_cells || !lay->pattern_tile) return 1;
    for (int64_t r = 0; r < h; r++)
        for (int64_t c = 0; c < w; c++) {
            int64_t cell = r * w + c, tile = (r / k) * tw + c / k;
            lay->tile_of[cell] = (int32_t)tile;
            lay->other[cell] = !pattern[(r % k) * k + c % k];
            if (pattern[(r % k) * k + c % k]) {
                lay->basis[tile]++;
                lay->pattern_cells[lay->npattern] = (int32_t)cell;
                lay->pattern_tile[lay->npattern++] = (int32_t)tile;
            }
        }
    for (int64_t q = 1; q < cp; q++) { /* the same layout for every plane of a chunk */
        memcpy(lay->other + q * hw, lay->other, (size_t)hw);
        memcpy(lay->basis + q * tiles, lay->basis, (size_t)tiles * sizeof(int32_t));
        for (int64_t e = 0; e < hw; e++) lay->tile_of[q * hw + e] = lay->tile_of[e] + (int32_t)(q * tiles);
        for (int32_t m = 0; m < lay->npattern; m++) {
            lay->pattern_cells[q * lay->npattern + m] = lay->pattern_cells[m] + (int32_t)(q * hw);
            lay->pattern_tile[q * lay->npattern + m] = lay->pattern_tile[m] + (int32_t)(q * tiles);
        }
    }
    return 0;
}

static void free_layout(layout_t *lay) {
    free(lay->indep);
    free(lay->edge); free(lay->tile_of); free(lay->other); free(lay->basis); free(lay->pattern_cells); free(lay->pattern_tile);
}

static int64_t byte_sum(const uint8_t *restrict v, int64_t n) {
    int64_t total = 0;
    int32_t part = 0;
    for (int64_t e = 0; e < n; e++) {
        part += v[e];
        if ((e & 0xFFFFF) == 0xFFFFF) { total += part; part = 0; }
    }
    return total + part;
}

/* skip_cells_g<g> for g = 2..32 of the predicted masks `mask` ([images * channels * hw]) into out[1..5]
   (out[0], g = 1, is the predicted cells: the caller has it). 0 on success. */
static int skip_counts(const uint8_t *mask, int64_t images, int64_t channels, int64_t hw, int threads, int64_t *out) {
    const int64_t blocks = (channels + 31) / 32;
    int failed = 0;
    int64_t total[NGROUPS] = {0};
    if (threads > images * blocks) threads = (int)(images * blocks);
    if (threads < 1) threads = 1;
#pragma omp parallel num_threads(threads) reduction(+ : failed)
    {
        int64_t mine[NGROUPS] = {0};
        uint8_t *level = (uint8_t *)malloc((size_t)(16 * hw + 64));
        if (!level) failed += 1;
#pragma omp for schedule(static)
        for (int64_t job = 0; job < images * blocks; job++) {
            if (!level) continue;
            const int64_t image = job / blocks, first = (job % blocks) * 32;
            const uint8_t *base = mask + (image * channels) * hw;
            for (int64_t j = 0; j < 16; j++) { /* groups of 2: channels first + 2j, first + 2j + 1 */
                const int64_t c0 = first + 2 * j, c1 = c0 + 1;
                uint8_t *restrict out2 = level + j * hw;
                if (c0 >= channels) { memset(out2, 1, (size_t)hw); continue; }
                const uint8_t *restrict p0 = base + c0 * hw;
                if (c1 >= channels) { memcpy(out2, p0, (size_t)hw); continue; }
                const uint8_t *restrict p1 = base + c1 * hw;
                for (int64_t e = 0; e < hw; e++) out2[e] = p0[e] & p1[e];
            }
            int64_t groups = 16, g = 2;
            for (int lvl = 1; lvl < NGROUPS; lvl++) {
                for (int64_t j = 0; j < groups; j++) {
                    int64_t real = channels - (first + j * g);
                    real = real < 0 ? 0 : (real > g ? g : real);
                    if (real > 0) mine[lvl] += byte_sum(level + j * hw, hw) * real;
                }
                if (lvl + 1 == NGROUPS) break;
                for (int64_t j = 0; j < groups / 2; j++) { /* in place: group j of 2g from groups 2j, 2j+1 of g */
                    uint8_t *dst = level + j * hw; /* no restrict: dst is the first source when j = 0 */
                    const uint8_t *first_half = level + 2 * j * hw, *second_half = level + (2 * j + 1) * hw;
                    for (int64_t e = 0; e < hw; e++) dst[e] = first_half[e] & second_half[e];
                }
                groups /= 2;
                g *= 2;
            }
        }
        free(level);
#pragma omp critical
        {
            for (int i = 0; i < NGROUPS; i++) total[i] += mine[i];
        }
    }
    for (int i = 1; i < NGROUPS; i++) out[i] += total[i];
    return failed != 0;
}

/* Returns 0 on success. mode 0: statistics only (a layer that predicts nothing); 1: tile rule with
   `threshold`; 2: tile oracle; 3: the zero cells; 4: given tiles; 5: given cells (see the header).
   `pattern` is the k x k pattern (uint8), read in modes 1, 2, 4 and 5; `given` in modes 4 and 5;
   `predicted` (NULL: not written) receives the predicted cells; `extra`: the section-10 counts too, over
   `channels` channels per image (planes = images * channels). */
int cnp_measure(float *data, int64_t planes, int64_t h, int64_t w, int64_t k, const uint8_t *pattern, int mode,
                float threshold, int apply, int threads, int64_t *out, double *mass, const uint8_t *given,
                uint8_t *predicted, int extra, int64_t channels) {
    if (planes <= 0 || h <= 0 || w <= 0) return 0;
    if (extra && (channels <= 0 || planes % channels)) return 2;
    uint8_t *own = NULL; /* the predicted cells when the caller wants the skip counts but not the mask */
    const int predicting = mode != 0 && !(k <= 1 && mode != 3);
    if (extra && predicting && !predicted) {
        own = (uint8_t *)malloc((size_t)(planes * h * w));
        if (!own) return 1;
        predicted = own;
    }
    if (mode < 0 || mode > 5 || ((mode == 4 || mode == 5) && !given)) return 2;
    if (mode != 0 && mode != 3 && k < 1) return 2;
    layout_t lay;
    if (build_layout(&lay, h, w, k, pattern, mode, threshold, apply, given, predicted, extra)) {
        free_layout(&lay); free(own); return 1;
    }
    int64_t chunks = (planes + lay.chunk_planes - 1) / lay.chunk_planes;
    double *chunk_mass = (double *)calloc((size_t)(chunks * NMASS), sizeof(double));
    if (!chunk_mass) { free_layout(&lay); free(own); return 1; }
    if (threads < 1) threads = 1;
    const int all_threads = threads;
    if (threads > chunks) threads = (int)chunks;
    int failed = 0;
    int64_t total[NOUT] = {0};
    /* OpenMP: loaded after torch, this library shares torch's libgomp (same soname) and so its
       thread pool: no second set of threads competing with torch's for the cores. */
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : failed)
    for (int t = 0; t < threads; t++) {
        job_t job = {&lay, data, chunks * t / threads * lay.chunk_planes, chunks * (t + 1) / threads * lay.chunk_planes,
                     {0}, chunk_mass};
        if (job.last > planes) job.last = planes;
        if (run_job(&job) != 0) failed += 1;
#pragma omp critical
        {
            for (int i = 0; i < NOUT; i++) total[i] += job.out[i];
        }
    }
    if (!failed && extra) {
        total[9] = total[2] + total[3]; /* g = 1: every predicted cell */
        if (predicting) failed += skip_counts(predicted, planes / channels, channels, h * w, all_threads, total + 9);
    }
    if (!failed) {
        for (int i = 0; i < NOUT; i++) out[i] += total[i];
        for (int64_t c = 0; c < chunks; c++) /* in chunk order: the same sums for any thread count */
            for (int i = 0; i < NMASS; i++) mass[i] += chunk_mass[c * NMASS + i];
    }
    free(chunk_mass);
    free_layout(&lay);
    free(own);
    return failed != 0;
}
