/* Strivec's local CP tri-vector aggregation on the CPU, forward and backward
   (tensorfield/cuda/local_tensors.py; float64 reference: local_tensors_reference.py).

   P (sample, tensor) pairs, sorted by sample. Pair p reads, per axis a, the rows
   rows[a * P + p] and rows[a * P + p] + 1 of the line table a ([T * V, R], row-major) and mixes
   them linearly with frac[a * P + p]. Forward:

       out[s, r] += w_p * X_r Y_r Z_r          (or, with reduce, out[s] += w_p * sum_r X_r Y_r Z_r)

   threads split the pairs at sample boundaries, so no two threads write one output row.
   Backward (grad g[s, r] or g[s]): with G = w_p g,

       dX[row, r] += G Y_r Z_r (1 - fx),  dX[row + 1, r] += G Y_r Z_r fx   (and so on for Y, Z)

   threads split the components r, so no two threads write one float and the result does not
   depend on the thread count. The factors are re-interpolated, not stored. */

#include <math.h>
#include <stdint.h>
#include <pthread.h>

#define MAX_THREADS 32

typedef struct {
    int64_t pairs, components, begin, end;
    const int64_t *samples, *rows;
    const float *weights, *frac, *grad;
    const float *lines[3];
    float *dlines[3];
    float *out;
    int reduce;
} job_t;

static inline float mix(const float *lower, int64_t r, int64_t stride, float f) {
    return lower[r] + f * (lower[r + stride] - lower[r]);
}

static void *forward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t P = j->pairs, R = j->components;
    for (int64_t p = j->begin; p < j->end; ++p) {
        const float *x = j->lines[0] + j->rows[p] * R;
        const float *y = j->lines[1] + j->rows[P + p] * R;
        const float *z = j->lines[2] + j->rows[2 * P + p] * R;
        const float fx = j->frac[p], fy = j->frac[P + p], fz = j->frac[2 * P + p], w = j->weights[p];
        if (j->reduce) {
            float sum = 0.0f;
            for (int64_t r = 0; r < R; ++r) sum += mix(x, r, R, fx) * mix(y, r, R, fy) * mix(z, r, R, fz);
            j->out[j->samples[p]] += w * sum;
        } else {
            float *o = j->out + j->samples[p] * R;
            for (int64_t r = 0; r < R; ++r) o[r] += w * (mix(x, r, R, fx) * mix(y, r, R, fy) * mix(z, r, R, fz));
        }
    }
    return 0;
}

/* Backward of one (sample, tensor) pair over components [r_begin, r_end): with G = w g_r (g the
   sample's upstream row, or its one value with reduce), dX[row, r] += G Y_r Z_r (1 - fx) and
   dX[row + 1, r] += G Y_r Z_r fx, and so on for Y and Z (rx, ry, rz: the lower rows' offsets). */
static inline void scatter_pair(const float *x, const float *y, const float *z, float *const dlines[3],
                                int64_t rx, int64_t ry, int64_t rz, float fx, float fy, float fz, float w,
                                const float *grad, int reduce, int64_t r_begin, int64_t r_end, int64_t R) {
    for (int64_t r = r_begin; r < r_end; ++r) {
        const float g = w * (reduce ? grad[0] : grad[r]);
        const float X = mix(x, r, R, fx), Y = mix(y, r, R, fy), Z = mix(z, r, R, fz);
        const float gx = g * Y * Z, gy = g * X * Z, gz = g * X * Y;
        if (dlines[0]) { dlines[0][rx + r] += gx - gx * fx; dlines[0][rx + R + r] += gx * fx; }
        if (dlines[1]) { dlines[1][ry + r] += gy - gy * fy; dlines[1][ry + R + r] += gy * fy; }
        if (dlines[2]) { dlines[2][rz + r] += gz - gz * fz; dlines[2][rz + R + r] += gz * fz; }
    }
}

static void *backward_job(void *arg) {
    const job_t *j = (const job_t *)arg;
    const int64_t P = j->pairs, R = j->components;
    for (int64_t p = 0; p < P; ++p) {
        const int64_t rx = j->rows[p] * R, ry = j->rows[P + p] * R, rz = j->rows[2 * P + p] * R;
        const float *x = j->lines[0] + rx, *y = j->lines[1] + ry, *z = j->lines[2] + rz;
        const float fx = j->frac[p], fy = j->frac[P + p], fz = j->frac[2 * P + p], w = j->weights[p];
        const int64_t s = j->samples[p];
        scatter_pair(x, y, z, j->dlines, rx, ry, rz, fx, fy, fz, w, j->reduce ? j->grad + s : j->grad + s * R, j->reduce, j->begin, j->end, R);
    }
    return 0;
}

/* fn on each job, one thread each; the calling thread takes job 0 and a job whose thread could
   not be created runs inline. */
static void spawn(void *(*fn)(void *), job_t *jobs, int threads) {
    pthread_t ids[MAX_THREADS];
    int started = 1;
    for (int t = 1; t < threads; ++t, ++started)
        if (pthread_create(&ids[t], 0, fn, jobs + t) != 0) break;
    fn(jobs);
    for (int t = 1; t < started; ++t) pthread_join(ids[t], 0);
    for (int t = started; t < threads; ++t) fn(jobs + t);
}

static int clamp_threads(int threads) {
    return threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
}

int tf_local_cp_forward(int64_t pairs, int64_t components, const int64_t *samples, const float *weights,
                        const int64_t *rows, const float *frac, const float *x, const float *y, const float *z,
                        int reduce, float *out, int threads) {
    if (pairs < 0 || components < 1) return 1;
    threads = clamp_threads(threads);
    job_t jobs[MAX_THREADS];
    int64_t start = 0;
    for (int t = 0; t < threads; ++t) {
        job_t *j = &jobs[t];
        j->pairs = pairs; j->components = components; j->samples = samples; j->rows = rows;
        j->weights = weights; j->frac = frac; j->grad = 0; j->out = out; j->reduce = reduce;
        j->lines[0] = x; j->lines[1] = y; j->lines[2] = z;
        j->dlines[0] = j->dlines[1] = j->dlines[2] = 0;
        int64_t end = t + 1 == threads ? pairs : pairs * (t + 1) / threads;
        while (end > start && end < pairs && samples[end] == samples[end - 1]) ++end;  /* whole samples */
        if (end < start) end = start;
        j->begin = start; j->end = end;
        start = end;
    }
    spawn(forward_job, jobs, threads);
    return 0;
}

int tf_local_cp_backward(int64_t pairs, int64_t components, const int64_t *samples, const float *weights,
                         const int64_t *rows, const float *frac, const float *x, const float *y, const float *z,
                         int reduce, const float *grad, float *dx, float *dy, float *dz, int threads) {
    if (pairs < 0 || components < 1) return 1;
    threads = clamp_threads(threads);
    if (threads > components) threads = (int)components;
    job_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        job_t *j = &jobs[t];
        j->pairs = pairs; j->components = components; j->samples = samples; j->rows = rows;
        j->weights = weights; j->frac = frac; j->grad = grad; j->out = 0; j->reduce = reduce;
        j->lines[0] = x; j->lines[1] = y; j->lines[2] = z;
        j->dlines[0] = dx; j->dlines[1] = dy; j->dlines[2] = dz;
        j->begin = components * t / threads;
        j->end = components * (t + 1) / threads;
    }
    spawn(backward_job, jobs, threads);
    return 0;
}

/* Neighbour lookup of one scale: for each point, the (at most) K tensors nearest to it among
   those whose closed cube |p - c|_inf <= h contains it, read from the candidates of its cell
   (table [cells, M], -1 padded, x-major cells of side `cell` from `origin`). Writes ids [S, K]
   (-1 where fewer) and distances [S, K], nearest first. Threads split the points. */
typedef struct {
    const float *points, *origin, *centres;
    const int64_t *table, *shape;
    int64_t begin, end, width, k;
    float cell, half;
    int64_t *ids;
    float *dist;
} lookup_t;

/* The (at most) k tensors nearest to p among those whose closed cube |p - c|_inf <= half contains
   it, read from the candidates of p's cell (table [cells, width], -1 padded, x-major cells of side
   `cell` from `origin`): ids / dist nearest first, by insertion. Returns how many were found. */
static int64_t nearest_containing(const float *p, const float *origin, float cell, const int64_t *shape,
                                  const int64_t *table, int64_t width, const float *centres, float half,
                                  int64_t k, int64_t *ids, float *dist) {
    int64_t found = 0, c[3];
    for (int a = 0; a < 3; ++a) {
        const float q = floorf((p[a] - origin[a]) / cell);
        if (!(q >= 0.0f) || q >= (float)shape[a]) return 0;
        c[a] = (int64_t)q;
    }
    const int64_t *candidates = table + ((c[0] * shape[1] + c[1]) * shape[2] + c[2]) * width;
    for (int64_t m = 0; m < width; ++m) {
        const int64_t t = candidates[m];
        if (t < 0) break;
        const float dx = p[0] - centres[3 * t], dy = p[1] - centres[3 * t + 1], dz = p[2] - centres[3 * t + 2];
        if (fabsf(dx) > half || fabsf(dy) > half || fabsf(dz) > half) continue;
        const float d = sqrtf(dx * dx + dy * dy + dz * dz);
        int64_t slot = found < k ? found++ : k;  /* insertion into the sorted list */
        if (slot == k) { if (d >= dist[k - 1]) continue; slot = k - 1; }
        while (slot > 0 && dist[slot - 1] > d) { dist[slot] = dist[slot - 1]; ids[slot] = ids[slot - 1]; --slot; }
        dist[slot] = d; ids[slot] = t;
    }
    return found;
}

static void *lookup_job(void *arg) {
    const lookup_t *j = (const lookup_t *)arg;
    for (int64_t s = j->begin; s < j->end; ++s) {
        int64_t *ids = j->ids + s * j->k;
        float *dist = j->dist + s * j->k;
        for (int64_t i = 0; i < j->k; ++i) { ids[i] = -1; dist[i] = 0.0f; }
        nearest_containing(j->points + 3 * s, j->origin, j->cell, j->shape, j->table, j->width, j->centres, j->half, j->k, ids, dist);
    }
    return 0;
}

int tf_local_neighbours(const float *points, int64_t samples, const float *origin, float cell, const int64_t *shape,
                        const int64_t *table, int64_t width, const float *centres, float half, int64_t k,
                        int64_t *ids, float *dist, int threads) {
    if (samples < 0 || k < 1 || width < 1) return 1;
    threads = clamp_threads(threads);
    lookup_t jobs[MAX_THREADS];
    pthread_t handles[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        lookup_t *j = &jobs[t];
        j->points = points; j->origin = origin; j->centres = centres; j->table = table; j->shape = shape;
        j->width = width; j->k = k; j->cell = cell; j->half = half; j->ids = ids; j->dist = dist;
        j->begin = samples * t / threads; j->end = samples * (t + 1) / threads;
    }
    int started = 1;
    for (int t = 1; t < threads; ++t, ++started)
        if (pthread_create(&handles[t], 0, lookup_job, jobs + t) != 0) break;
    lookup_job(jobs);
    for (int t = 1; t < started; ++t) pthread_join(handles[t], 0);
    for (int t = started; t < threads; ++t) lookup_job(jobs + t);
    return 0;
}

/* Fused query of one scale (lookup + weights + interpolation + CP product per sample, no pair
   list): for each point, the K nearest containing tensors as tf_local_neighbours finds them, their
   weights w_t = 1 / (d_t + eps) / max(1, sum w), and

       out[s, r] = sum_t w_t X_{t,r} Y_{t,r} Z_{t,r}    (reduce: out[s] = sum_r of that)

   with X = the x vector of tensor t linearly interpolated at its local coordinate
   (p_x - c_x + h) * cells / (2 h) (lower vertex clamped to [0, cells - 1]). When ids / weights
   are given they receive the chosen tensors (-1 padded) and normalised weights, which the backward
   takes (tf_local_query_backward). Threads split the points. */
typedef struct {
    const float *points, *origin, *centres, *lines[3];
    const int64_t *table, *shape;
    int64_t begin, end, width, k, components, cells;
    int64_t r_begin, r_end;  /* backward: this thread's components */
    float cell, half, eps;
    int reduce;
    float *out, *weights_out;
    int64_t *ids_out;
    const float *grad;
    const int64_t *ids_in;
    const float *weights_in;
    float *dlines[3];
} query_t;

static inline int64_t local_vertex(float offset, float half, float scale, int64_t cells, float *frac) {
    const float position = (offset + half) * scale;
    float lower = floorf(position);
    if (lower < 0.0f) lower = 0.0f;
    if (lower > (float)(cells - 1)) lower = (float)(cells - 1);
    *frac = position - lower;
    return (int64_t)lower;
}

static void *query_job(void *arg) {
    const query_t *j = (const query_t *)arg;
    const int64_t K = j->k, R = j->components, V = j->cells + 1;
    const float scale = (float)j->cells / (2.0f * j->half);
    int64_t ids[64];
    float dist[64];
    for (int64_t s = j->begin; s < j->end; ++s) {
        const float *p = j->points + 3 * s;
        const int64_t found = nearest_containing(p, j->origin, j->cell, j->shape, j->table, j->width, j->centres, j->half, K, ids, dist);
        float w[64], total = 0.0f;
        for (int64_t i = 0; i < found; ++i) { w[i] = 1.0f / (dist[i] + j->eps); total += w[i]; }
        const float norm = total > 1.0f ? total : 1.0f;
        for (int64_t i = 0; i < found; ++i) w[i] = w[i] / norm;
        if (j->ids_out) {
            for (int64_t i = 0; i < K; ++i) {
                j->ids_out[s * K + i] = i < found ? ids[i] : -1;
                j->weights_out[s * K + i] = i < found ? w[i] : 0.0f;
            }
        }
        float *o = j->reduce ? j->out + s : j->out + s * R;
        if (j->reduce) *o = 0.0f; else for (int64_t r = 0; r < R; ++r) o[r] = 0.0f;
        for (int64_t i = 0; i < found; ++i) {
            const int64_t t = ids[i];
            float fx, fy, fz;
            const int64_t vx = local_vertex(p[0] - j->centres[3 * t], j->half, scale, j->cells, &fx);
            const int64_t vy = local_vertex(p[1] - j->centres[3 * t + 1], j->half, scale, j->cells, &fy);
            const int64_t vz = local_vertex(p[2] - j->centres[3 * t + 2], j->half, scale, j->cells, &fz);
            const float *x = j->lines[0] + (t * V + vx) * R, *y = j->lines[1] + (t * V + vy) * R, *z = j->lines[2] + (t * V + vz) * R;
            if (j->reduce) {
                float sum = 0.0f;
                for (int64_t r = 0; r < R; ++r) sum += mix(x, r, R, fx) * mix(y, r, R, fy) * mix(z, r, R, fz);
                *o += w[i] * sum;
            } else {
                const float wi = w[i];
                for (int64_t r = 0; r < R; ++r) o[r] += wi * (mix(x, r, R, fx) * mix(y, r, R, fy) * mix(z, r, R, fz));
            }
        }
    }
    return 0;
}

/* Backward of the fused query for the upstream grad ([S, R] or, with reduce, [S]): threads split
   the components, so no two threads write one float and the sums do not depend on the thread
   count. ids / weights are the forward's. */
static void *query_backward_job(void *arg) {
    const query_t *j = (const query_t *)arg;
    const int64_t K = j->k, R = j->components, V = j->cells + 1, S = j->end;  /* every sample */
    const float scale = (float)j->cells / (2.0f * j->half);
    for (int64_t s = 0; s < S; ++s) {
        const float *p = j->points + 3 * s;
        for (int64_t i = 0; i < K; ++i) {
            const int64_t t = j->ids_in[s * K + i];
            if (t < 0) break;
            const float w = j->weights_in[s * K + i];
            float fx, fy, fz;
            const int64_t vx = local_vertex(p[0] - j->centres[3 * t], j->half, scale, j->cells, &fx);
            const int64_t vy = local_vertex(p[1] - j->centres[3 * t + 1], j->half, scale, j->cells, &fy);
            const int64_t vz = local_vertex(p[2] - j->centres[3 * t + 2], j->half, scale, j->cells, &fz);
            const int64_t rx = (t * V + vx) * R, ry = (t * V + vy) * R, rz = (t * V + vz) * R;
            const float *x = j->lines[0] + rx, *y = j->lines[1] + ry, *z = j->lines[2] + rz;
            scatter_pair(x, y, z, j->dlines, rx, ry, rz, fx, fy, fz, w, j->reduce ? j->grad + s : j->grad + s * R, j->reduce, j->r_begin, j->r_end, R);
        }
    }
    return 0;
}

static void run_query(void *(*fn)(void *), query_t *jobs, int threads) {
    pthread_t handles[MAX_THREADS];
    int started = 1;
    for (int t = 1; t < threads; ++t, ++started)
        if (pthread_create(&handles[t], 0, fn, jobs + t) != 0) break;
    fn(jobs);
    for (int t = 1; t < started; ++t) pthread_join(handles[t], 0);
    for (int t = started; t < threads; ++t) fn(jobs + t);
}

int tf_local_query(const float *points, int64_t samples, const float *origin, float cell, const int64_t *shape,
                   const int64_t *table, int64_t width, const float *centres, float half, int64_t k, float eps,
                   int64_t cells, int64_t components, const float *x, const float *y, const float *z, int reduce,
                   float *out, int64_t *ids, float *weights, int threads) {
    if (samples < 0 || k < 1 || k > 64 || width < 1 || cells < 1 || components < 1) return 1;
    if ((ids == 0) != (weights == 0)) return 1;
    threads = clamp_threads(threads);
    query_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        query_t *j = &jobs[t];
        j->points = points; j->origin = origin; j->centres = centres; j->table = table; j->shape = shape;
        j->lines[0] = x; j->lines[1] = y; j->lines[2] = z;
        j->width = width; j->k = k; j->components = components; j->cells = cells;
        j->cell = cell; j->half = half; j->eps = eps; j->reduce = reduce;
        j->out = out; j->ids_out = ids; j->weights_out = weights;
        j->begin = samples * t / threads; j->end = samples * (t + 1) / threads;
    }
    run_query(query_job, jobs, threads);
    return 0;
}

int tf_local_query_backward(const float *points, int64_t samples, const float *centres, float half, int64_t k,
                            int64_t cells, int64_t components, const float *x, const float *y, const float *z,
                            int reduce, const int64_t *ids, const float *weights, const float *grad,
                            float *dx, float *dy, float *dz, int threads) {
    if (samples < 0 || k < 1 || cells < 1 || components < 1) return 1;
    threads = clamp_threads(threads);
    if (threads > components) threads = (int)components;
    query_t jobs[MAX_THREADS];
    for (int t = 0; t < threads; ++t) {
        query_t *j = &jobs[t];
        j->points = points; j->centres = centres; j->half = half; j->k = k; j->cells = cells;
        j->components = components; j->lines[0] = x; j->lines[1] = y; j->lines[2] = z; j->reduce = reduce;
        j->ids_in = ids; j->weights_in = weights; j->grad = grad;
        j->dlines[0] = dx; j->dlines[1] = dy; j->dlines[2] = dz;
        j->begin = 0; j->end = samples;
        j->r_begin = components * t / threads; j->r_end = components * (t + 1) / threads;
    }
    run_query(query_backward_job, jobs, threads);
    return 0;
}
