
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "trilinear.h"


static inline int occupied(const double *vo, const double *vs, int64_t k, const uint8_t *mask,
                           int64_t nx, int64_t ny, int64_t nz) {
    if (!mask) return 1; /* no occupancy grid: every sample */
    int64_t idx[3];
    const int64_t res[3] = {nx, ny, nz};
    for (int a = 0; a < 3; ++a) {
        const double v = vo[a] + (double)k * vs[a];
        int64_t i = (int64_t)v; /* truncation == floor for the non-negative coordinates */
        if (i < 0) i = 0;
        if (i > res[a] - 1) i = res[a] - 1;
        idx[a] = i;
    }
    return mask[(idx[0] * ny + idx[1]) * nz + idx[2]] != 0;
}

/* counts[j] = occupied samples of live ray j (rays[j], k in [first_k[j], first_k[j] + take[j])) */
int64_t tf_pack_count(int64_t n, const int64_t *rays, const int64_t *first_k, const int64_t *take,
                      const double *voxel_origin, const double *voxel_step, const uint8_t *mask,
                      int64_t nx, int64_t ny, int64_t nz, int64_t *counts) {
    int64_t total = 0;
    #pragma omp parallel for schedule(dynamic, 64) reduction(+:total)
    for (int64_t j = 0; j < n; ++j) {
        const int64_t r = rays[j];
        int64_t c = 0;
        if (!mask) c = take[j];
        else
            for (int64_t k = first_k[j]; k < first_k[j] + take[j]; ++k)
                c += occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz);
        counts[j] = c;
        total += c;
    }
    return total;
}

/* hit[r] = 1 if any sample k in [first_k[r], first_k[r] + take[r]) of ray r is occupied (early exit) */
int tf_any_occupied(int64_t n, const int64_t *first_k, const int64_t *take, const double *voxel_origin,
                    const double *voxel_step, const uint8_t *mask, int64_t nx, int64_t ny, int64_t nz, uint8_t *hit) {
    #pragma omp parallel for schedule(dynamic, 256)
    for (int64_t r = 0; r < n; ++r) {
        uint8_t any = 0;
        for (int64_t k = first_k[r]; k < first_k[r] + take[r] && !any; ++k)
            any = (uint8_t)occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz);
        hit[r] = any;
    }
    return 0;
}

/* the occupied samples, grouped by live ray in order: ray index, k, t and the point */
int tf_pack_fill(int64_t n, const int64_t *rays, const int64_t *first_k, const int64_t *take, const int64_t *starts,
                 const double *voxel_origin, const double *voxel_step, const uint8_t *mask, int64_t nx, int64_t ny, int64_t nz,
                 const float *t_start, const float *offsets, float step, const float *origins, const float *directions,
                 int64_t *out_rays, int64_t *out_k, float *out_t, float *out_points) {
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t j = 0; j < n; ++j) {
        const int64_t r = rays[j];
        int64_t m = starts[j];
        for (int64_t k = first_k[j]; k < first_k[j] + take[j]; ++k) {
            if (mask && !occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz)) continue;
            const float t = t_start[r] + ((float)k + offsets[r]) * step;
            out_rays[m] = r; out_k[m] = k; out_t[m] = t;
            for (int a = 0; a < 3; ++a) out_points[3 * m + a] = origins[3 * r + a] + t * directions[3 * r + a];
            ++m;
        }
    }
    return 0;
}

/* One marching round's transmittance and weights, per segment (the samples of one ray, in order):
   before_i = od[r] + sum_{j<i} tau_j, T_i = exp(-before_i) (float64, then float32),
   w_i = T_i (1 - exp(-tau_i)) (float32), and od[r] += sum tau over the segment. */
int tf_transmittance(int64_t nseg, const int64_t *seg_start, const int64_t *seg_len, const int64_t *seg_ray,
                     const float *tau, double *od, float *weight, float *trans) {
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t s = 0; s < nseg; ++s) {
        const int64_t r = seg_ray[s];
        double acc = od[r];
        for (int64_t i = seg_start[s]; i < seg_start[s] + seg_len[s]; ++i) {
            const float T = (float)exp(-acc);
            trans[i] = T;
            weight[i] = T * -expm1f(-tau[i]);
            acc += (double)tau[i];
        }
        od[r] = acc;
    }
    return 0;
}

/* Its backward: g_od holds dL/d od_out on entry and dL/d od_in on exit (for the segments' rays). */
int tf_transmittance_backward(int64_t nseg, const int64_t *seg_start, const int64_t *seg_len, const int64_t *seg_ray,
                              const float *tau, const float *weight, const float *trans, const float *g_w, const float *g_t,
                              double *g_od, float *g_tau) {
    #pragma omp parallel for schedule(dynamic, 64)
    for (int64_t s = 0; s < nseg; ++s) {
        const int64_t r = seg_ray[s];
        double carry = g_od[r];
        for (int64_t i = seg_start[s] + seg_len[s] - 1; i >= seg_start[s]; --i) {
            const double gw = g_w ? g_w[i] : 0.0, gt = g_t ? g_t[i] : 0.0;
            g_tau[i] = (float)(gw * (double)trans[i] * exp(-(double)tau[i]) + carry);
            carry -= gw * (double)weight[i] + gt * (double)trans[i];
        }
        g_od[r] = carry;
    }
    return 0;
}

/* ---- fused inference march over a dense density grid (march_dense) ----
   Rays are marched in fixed blocks of consecutive rays (scheduled dynamically); each block keeps
   its colour samples (weight > weight threshold) in a buffer of its own, and tf_march_collect
   concatenates them in block order, so the output does not depend on scheduling. */
typedef struct { int64_t count, capacity; int64_t *rays; float *points, *weights; } sample_buf_t;
typedef struct { int64_t nblocks, total; sample_buf_t *blocks; } march_result_t;

static int buf_push(sample_buf_t *b, int64_t ray, const float *p, float w) {
    if (b->count == b->capacity) {
        const int64_t cap = b->capacity ? 2 * b->capacity : 256;
        int64_t *r = (int64_t *)realloc(b->rays, (size_t)cap * sizeof(int64_t));
        if (!r) return -1;
        b->rays = r;
        float *pp = (float *)realloc(b->points, (size_t)cap * 3 * sizeof(float));
        if (!pp) return -1;
        b->points = pp;
        float *ww = (float *)realloc(b->weights, (size_t)cap * sizeof(float));
        if (!ww) return -1;
        b->weights = ww;
        b->capacity = cap;
    }
    b->rays[b->count] = ray;
    memcpy(b->points + 3 * b->count, p, 3 * sizeof(float));
    b->weights[b->count] = w;
    ++b->count;
    return 0;
}

/* Copies the colour samples into rays [M], points [M, 3], weights [M] (any may be NULL: free only)
   and frees the result. */
void tf_march_collect(void *handle, int64_t *rays, float *points, float *weights) {
    march_result_t *res = (march_result_t *)handle;
    if (!res) return;
    int64_t at = 0;
    for (int64_t b = 0; b < res->nblocks; ++b) {
        sample_buf_t *buf = res->blocks + b;
        if (buf->count) {
            if (rays) memcpy(rays + at, buf->rays, (size_t)buf->count * sizeof(int64_t));
            if (points) memcpy(points + 3 * at, buf->points, (size_t)buf->count * 3 * sizeof(float));
            if (weights) memcpy(weights + at, buf->weights, (size_t)buf->count * sizeof(float));
        }
        at += buf->count;
        free(buf->rays); free(buf->points); free(buf->weights);
    }
    free(res->blocks);
    free(res);
}

/* Per ray r, samples k in [k_begin[r], k_end[r]) at t = t_start + (k + u) step, in occupied voxels
   only (mask NULL: all); before each, T = exp(-optical depth) (float64 -> float32) and the ray
   stops once T < t_thr; sigma = trilinear(grid at (p - box) * scale - 1) (softplus if asked),
   tau = sigma * delta, w = T (1 - exp(-tau)); alpha = sum w, depth = sum w t (float32, sample
   order); samples with w > w_thr are kept for colour. Returns the handle for tf_march_collect
   (NULL when out of memory), the number of colour samples in *total and of density
   evaluations in *evaluated. */
void *tf_march_dense(int64_t R, int64_t block, int threads, const int64_t *k_begin, const int64_t *k_end,
                     const float *t_start, const float *offsets, float step, const float *origins, const float *dirs,
                     const double *voxel_origin, const double *voxel_step, const uint8_t *mask,
                     int64_t nx, int64_t ny, int64_t nz, const float *grid, int64_t X, int64_t Y, int64_t Z,
                     const float *box, int softplus, float shift, float delta, float w_thr, float t_thr,
                     float *out_alpha, float *out_depth, int64_t *evaluated, int64_t *total) {
    if (block < 1) block = 1;
    march_result_t *res = (march_result_t *)calloc(1, sizeof(march_result_t));
    if (!res) return 0;
    res->nblocks = (R + block - 1) / block;
    res->blocks = (sample_buf_t *)calloc((size_t)(res->nblocks > 0 ? res->nblocks : 1), sizeof(sample_buf_t));
    if (!res->blocks) { free(res); return 0; }
    int64_t count = 0;
    int failed = 0;
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads) reduction(+:count) reduction(|:failed)
    for (int64_t b = 0; b < res->nblocks; ++b) {
        sample_buf_t *buf = res->blocks + b;
        const int64_t r1 = (b + 1) * block < R ? (b + 1) * block : R;
        for (int64_t r = b * block; r < r1; ++r) {
            double od = 0.0;
            float acc = 0.0f, dep = 0.0f;
            const float *o = origins + 3 * r, *d = dirs + 3 * r;
            for (int64_t k = k_begin[r]; k < k_end[r]; ++k) {
                if (mask && !occupied(voxel_origin + 3 * r, voxel_step + 3 * r, k, mask, nx, ny, nz)) continue;
                const float T = (float)exp(-od);
                if (T < t_thr) break; /* T only falls: no later sample contributes */
                const float t = t_start[r] + ((float)k + offsets[r]) * step;
                float p[3], x[3];
                for (int a = 0; a < 3; ++a) p[a] = o[a] + t * d[a];
                dense_normalise(p, box, x);
                const float sigma = dense_scalar(grid, X, Y, Z, x, softplus, shift);
                ++count;
                const float tau = sigma * delta;
                const float w = T * -expm1f(-tau);
                acc += w;
                dep += w * t;
                if (w > w_thr && buf_push(buf, r, p, w)) failed = 1;
                od += (double)tau;
            }
            out_alpha[r] = acc;
            out_depth[r] = dep;
        }
    }
    int64_t m = 0;
    for (int64_t b = 0; b < res->nblocks; ++b) m += res->blocks[b].count;
    res->total = m;
    *total = m;
    *evaluated = count;
    if (failed) { tf_march_collect(res, 0, 0, 0); return 0; }
    return res;
}
