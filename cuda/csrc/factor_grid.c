
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "trilinear.h"


#define BLOCK 16  /* components per backward work unit: one 64-byte cache line of a row */
#define AHEAD 4   /* prefetch distance in samples */
#define MAX_GROUPS 8
#define MAX_THREADS 32

/* One product: a VM mode (kind 0: table 0 = plane [H, W, C] over axes (u, v) = axis[0..1],
   table 1 = line [L, C] over axis[2]; size = H, W, L) or the CP product (kind 1: three lines
   [size_m, C] over axis[m]). Its outputs are columns off .. off + C of the feature matrix. */
typedef struct {
    int kind, axis[3];
    const float *table[3];
    float *dtable[3];
    int64_t size[3], channels, off;
} group_t;

typedef struct { int64_t row[6]; float w[6]; } corners_t;

/* VM: rows 0-3 plane corners, 4-5 line corners. CP: rows (2m, 2m + 1) for line m. */
static inline void corners(const group_t *g, const float *x, corners_t *c) {
    if (g->kind == 0) {
        int64_t u0, u1, v0, v1; float wu0, wu1, wv0, wv1;
        axis_corners(x[g->axis[0]], g->size[1], &u0, &u1, &wu0, &wu1);
        axis_corners(x[g->axis[1]], g->size[0], &v0, &v1, &wv0, &wv1);
        const int64_t W = g->size[1];
        c->row[0] = v0 * W + u0; c->w[0] = wv0 * wu0;
        c->row[1] = v0 * W + u1; c->w[1] = wv0 * wu1;
        c->row[2] = v1 * W + u0; c->w[2] = wv1 * wu0;
        c->row[3] = v1 * W + u1; c->w[3] = wv1 * wu1;
        axis_corners(x[g->axis[2]], g->size[2], &c->row[4], &c->row[5], &c->w[4], &c->w[5]);
    } else {
        for (int m = 0; m < 3; ++m)
            axis_corners(x[g->axis[m]], g->size[m], &c->row[2 * m], &c->row[2 * m + 1], &c->w[2 * m], &c->w[2 * m + 1]);
    }
}

static inline const float *row_of(const group_t *g, const float *const *tables, const corners_t *c, int r) {
    const int t = g->kind == 0 ? (r < 4 ? 0 : 1) : r / 2;
    return tables[t] + c->row[r] * g->channels;
}

/* The samples of a ray are close, but their rows still miss the cache: prefetch ahead. */
static inline void prefetch(const group_t *g, const float *x, int64_t k0, int64_t k1, int backward) {
    corners_t c;
    corners(g, x, &c);
    for (int r = 0; r < 6; ++r) {
        const float *row = row_of(g, g->table, &c, r);
        const float *drow = backward ? row_of(g, (const float *const *)g->dtable, &c, r) : 0;
        for (int64_t k = k0; k < k1; k += 16) {
            __builtin_prefetch(row + k, 0, 1);
            if (backward) __builtin_prefetch(drow + k, 1, 1);
        }
    }
}

typedef struct {
    const float *xyz; int64_t samples;
    const group_t *groups; int ngroups;
    float *out; int64_t ld; int reduce;   /* forward output, or the incoming gradient */
    const float *grad;
    int64_t begin, end;                   /* forward: this thread's samples */
    int *next_unit; int nunits;           /* backward: shared work-unit counter and units */
    const int *unit_group; const int64_t *unit_k0, *unit_k1;
} job_t;

/* forward: threads own sample ranges; out[s, off + k] = product_k, or out[s] = sum of all */
static void *forward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    float v[512];
    for (int64_t s = j->begin; s < j->end; ++s) {
        const float *x = j->xyz + 3 * s;
        float acc = 0.0f;
        for (int gi = 0; gi < j->ngroups; ++gi) {
            const group_t *g = &j->groups[gi];
            const int64_t C = g->channels;
            if (s + AHEAD < j->end) prefetch(g, x + 3 * AHEAD, 0, C, 0);
            corners_t c;
            corners(g, x, &c);
            for (int64_t kb = 0; kb < C; kb += 512) {
                const int64_t n = C - kb < 512 ? C - kb : 512;
                const float *restrict r0 = row_of(g, g->table, &c, 0) + kb, *restrict r1 = row_of(g, g->table, &c, 1) + kb;
                const float *restrict r2 = row_of(g, g->table, &c, 2) + kb, *restrict r3 = row_of(g, g->table, &c, 3) + kb;
                const float *restrict r4 = row_of(g, g->table, &c, 4) + kb, *restrict r5 = row_of(g, g->table, &c, 5) + kb;
                float *restrict vv = v;
                if (g->kind == 0) {
                    for (int64_t k = 0; k < n; ++k)
                        vv[k] = (c.w[0] * r0[k] + c.w[1] * r1[k] + c.w[2] * r2[k] + c.w[3] * r3[k]) * (c.w[4] * r4[k] + c.w[5] * r5[k]);
                } else {
                    for (int64_t k = 0; k < n; ++k)
                        vv[k] = (c.w[0] * r0[k] + c.w[1] * r1[k]) * (c.w[2] * r2[k] + c.w[3] * r3[k]) * (c.w[4] * r4[k] + c.w[5] * r5[k]);
                }
                if (j->reduce) {
                    for (int64_t k = 0; k < n; ++k) acc += vv[k];
                } else {
                    float *restrict o = j->out + s * j->ld + g->off + kb;
                    for (int64_t k = 0; k < n; ++k) o[k] = vv[k];
                }
            }
        }
        if (j->reduce) j->out[s] = acc;
    }
    return 0;
}

/* dst[k] += w * src[k] for one corner row (a corner without weight is skipped, which also
   keeps clamped duplicate rows from being touched twice). */
static inline void axpy(float *restrict dst, const float *restrict src, float w, int64_t n) {
    if (w == 0.0f) return;
    for (int64_t k = 0; k < n; ++k) dst[k] += w * src[k];
}

/* backward of one work unit: components k0 .. k1 of one group, over all samples in order */
static void backward_unit(const job_t *j, const group_t *g, int64_t k0, int64_t k1) {
    const int64_t C = g->channels, n = k1 - k0;
    float ga[BLOCK], gb[BLOCK], gc[BLOCK];
    for (int64_t s = 0; s < j->samples; ++s) {
        const float *x = j->xyz + 3 * s;
        if (s + AHEAD < j->samples) prefetch(g, x + 3 * AHEAD, k0, k1, 1);
        const float *gs = j->reduce ? j->grad + s : j->grad + s * j->ld + g->off + k0;
        if (j->reduce && *gs == 0.0f) continue;
        const float g0 = *gs;
        corners_t c;
        corners(g, x, &c);
        const float *restrict r0 = row_of(g, g->table, &c, 0) + k0, *restrict r1 = row_of(g, g->table, &c, 1) + k0;
        const float *restrict r2 = row_of(g, g->table, &c, 2) + k0, *restrict r3 = row_of(g, g->table, &c, 3) + k0;
        const float *restrict r4 = row_of(g, g->table, &c, 4) + k0, *restrict r5 = row_of(g, g->table, &c, 5) + k0;
        float *d[6];
        for (int r = 0; r < 6; ++r) d[r] = (float *)row_of(g, (const float *const *)g->dtable, &c, r) + k0;
        if (g->kind == 0) {
            float *restrict gp = ga, *restrict gl = gb;
            for (int64_t k = 0; k < n; ++k) {
                const float gg = j->reduce ? g0 : gs[k];
                gp[k] = gg * (c.w[4] * r4[k] + c.w[5] * r5[k]);
                gl[k] = gg * (c.w[0] * r0[k] + c.w[1] * r1[k] + c.w[2] * r2[k] + c.w[3] * r3[k]);
            }
            for (int r = 0; r < 4; ++r) axpy(d[r], gp, c.w[r], n);
            axpy(d[4], gl, c.w[4], n);
            axpy(d[5], gl, c.w[5], n);
        } else {
            float *restrict xa = ga, *restrict xb = gb, *restrict xc = gc;
            for (int64_t k = 0; k < n; ++k) {
                const float gg = j->reduce ? g0 : gs[k];
                const float va = c.w[0] * r0[k] + c.w[1] * r1[k];
                const float vb = c.w[2] * r2[k] + c.w[3] * r3[k];
                const float vd = c.w[4] * r4[k] + c.w[5] * r5[k];
                xa[k] = gg * vb * vd;
                xb[k] = gg * va * vd;
                xc[k] = gg * va * vb;
            }
            const float *bufs[3] = {xa, xb, xc};
            for (int m = 0; m < 3; ++m) {
                axpy(d[2 * m], bufs[m], c.w[2 * m], n);
                axpy(d[2 * m + 1], bufs[m], c.w[2 * m + 1], n);
            }
        }
    }
}

/* backward: threads take (group, 16-component block) units; each unit owns its gradient
   columns, so no two threads write the same cache line and the result is independent of the
   thread count and schedule. */
static void *backward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    for (;;) {
        const int u = __atomic_fetch_add(j->next_unit, 1, __ATOMIC_RELAXED);
        if (u >= j->nunits) break;
        backward_unit(j, &j->groups[j->unit_group[u]], j->unit_k0[u], j->unit_k1[u]);
    }
    return 0;
}

/* fn on each of threads jobs (size bytes apart), one thread each: the calling thread takes
   job 0, and a job whose thread could not be created runs inline. */
static void spawn(void *(*fn)(void *), char *jobs, size_t size, int threads) {
    pthread_t ids[MAX_THREADS];
    int started = 1;
    for (int t = 1; t < threads; ++t, ++started)
        if (pthread_create(&ids[t], 0, fn, jobs + t * size) != 0) break;
    fn(jobs);
    for (int t = 1; t < started; ++t) pthread_join(ids[t], 0);
    for (int t = started; t < threads; ++t) fn(jobs + t * size);
}

static int clamp_threads(int threads) {
    return threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
}

static int run(job_t *proto, int threads, int backward) {
    threads = clamp_threads(threads);
    job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        jobs[t] = *proto;
        jobs[t].begin = proto->samples * t / threads;
        jobs[t].end = proto->samples * (t + 1) / threads;
    }
    spawn(backward ? backward_job : forward_job, (char *)jobs, sizeof(job_t), threads);
    return 0;
}

#define MAX_CHANNELS 1024
#define MAX_UNITS (MAX_GROUPS * MAX_CHANNELS / BLOCK)

static int setup(job_t *job, const float *xyz, int64_t samples, const group_t *groups, int ngroups, int64_t ld, int reduce) {
    if (ngroups < 1 || ngroups > MAX_GROUPS) return -1;
    for (int gi = 0; gi < ngroups; ++gi)
        if (groups[gi].channels < 1 || groups[gi].channels > MAX_CHANNELS) return -1;
    memset(job, 0, sizeof *job);
    job->xyz = xyz; job->samples = samples; job->groups = groups; job->ngroups = ngroups;
    job->ld = ld; job->reduce = reduce;
    return 0;
}

int tf_features(const float *xyz, int64_t samples, const group_t *groups, int ngroups,
                float *out, int64_t ld, int reduce, int threads) {
    job_t job;
    if (setup(&job, xyz, samples, groups, ngroups, ld, reduce) != 0) return -1;
    job.out = out;
    return run(&job, threads, 0);
}

int tf_features_backward(const float *xyz, int64_t samples, const group_t *groups, int ngroups,
                         const float *grad, int64_t ld, int reduce, int threads) {
    job_t job;
    if (setup(&job, xyz, samples, groups, ngroups, ld, reduce) != 0) return -1;
    int *unit_group = (int *)malloc(MAX_UNITS * sizeof(int));
    int64_t *unit_k = (int64_t *)malloc(2 * MAX_UNITS * sizeof(int64_t));
    if (!unit_group || !unit_k) { free(unit_group); free(unit_k); return -1; }
    int next = 0, units = 0;
    /* block-major order: consecutive units (likely to run at the same time) touch different
       tables. (Blocks narrower than a cache line were measured slower: false sharing.) */
    const int64_t block = BLOCK;
    for (int64_t k0 = 0; k0 < MAX_CHANNELS; k0 += block)
        for (int gi = 0; gi < ngroups; ++gi) {
            if (k0 >= groups[gi].channels) continue;
            unit_group[units] = gi;
            unit_k[units] = k0;
            unit_k[MAX_UNITS + units] = k0 + block < groups[gi].channels ? k0 + block : groups[gi].channels;
            ++units;
        }
    job.grad = grad; job.next_unit = &next; job.nunits = units;
    job.unit_group = unit_group; job.unit_k0 = unit_k; job.unit_k1 = unit_k + MAX_UNITS;
    int status = run(&job, threads < units ? threads : units, 1);
    free(unit_group); free(unit_k);
    return status;
}

/* Trilinear interpolation of a dense channel-last grid [Z, Y, X, C] (inference only: the
   render cache of a factorised field, see FactorGrids.dense). Same corner rule as the factors
   (align_corners=True, zero padding), so interpolating the dense outer-product tensor equals
   the product of the interpolated factors. Threads own sample ranges. */
typedef struct {
    const float *grid; int64_t size[3], channels;
    const float *xyz; float *out; int64_t begin, end;
    const float *box;   /* NULL: xyz normalised; else world points, normalised as (p - box[a]) * box[3 + a] - 1 */
    int softplus; float shift; /* C == 1 only: out = softplus(value + shift) (threshold 20, as torch) */
} dense_job_t;

static void *dense_job(void *arg) {
    const dense_job_t *j = (const dense_job_t *)arg;
    const int64_t C = j->channels, X = j->size[0], Y = j->size[1], Z = j->size[2];
    for (int64_t s = j->begin; s < j->end; ++s) {
        float x[3];
        if (s + AHEAD < j->end) { /* the rows of a sample a few ahead: the grid is larger than the caches */
            cell_t ahead;
            dense_normalise(j->xyz + 3 * (s + AHEAD), j->box, x);
            dense_cell(x, X, Y, Z, &ahead);
            for (int r = 0; r < 4; ++r) {
                const float *row = j->grid + (ahead.base[r] + ahead.i0) * C;
                for (int64_t c = 0; c < 2 * C; c += 16) __builtin_prefetch(row + c, 0, 1);
            }
        }
        dense_normalise(j->xyz + 3 * s, j->box, x);
        float *restrict o = j->out + s * C;
        if (C == 1) { /* the density sum */
            o[0] = dense_scalar(j->grid, X, Y, Z, x, j->softplus, j->shift);
            continue;
        }
        cell_t cell;
        dense_cell(x, X, Y, Z, &cell);
        for (int64_t c = 0; c < C; ++c) o[c] = 0.0f;
        for (int r = 0; r < 4; ++r) {
            if (cell.w[r] == 0.0f) continue;
            const float *restrict r0 = j->grid + (cell.base[r] + cell.i0) * C;
            const float *restrict r1 = j->grid + (cell.base[r] + cell.i1) * C;
            const float w0 = cell.w[r] * cell.wi0, w1 = cell.w[r] * cell.wi1;
            for (int64_t c = 0; c < C; ++c) o[c] += w0 * r0[c] + w1 * r1[c];
        }
    }
    return 0;
}

int tf_trilinear(const float *grid, int64_t X, int64_t Y, int64_t Z, int64_t C,
                 const float *xyz, int64_t samples, float *out, int threads,
                 const float *box, int softplus, float shift) {
    if (C < 1 || X < 1 || Y < 1 || Z < 1 || (softplus && C != 1)) return -1;
    threads = clamp_threads(threads);
    dense_job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        dense_job_t job = {grid, {X, Y, Z}, C, xyz, out, samples * t / threads, samples * (t + 1) / threads, box, softplus, shift};
        jobs[t] = job;
    }
    spawn(dense_job, (char *)jobs, sizeof(dense_job_t), threads);
    return 0;
}

/* grad[i] += c * sign(x[i]) (the L1 regulariser's backward, in place) */
void tf_add_sign(int64_t n, const float *x, float *grad, float c) {
    for (int64_t i = 0; i < n; ++i) grad[i] += x[i] > 0.0f ? c : (x[i] < 0.0f ? -c : 0.0f);
}
