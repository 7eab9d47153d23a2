
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

#define MAX_TILE_PIXELS 1024
#define MAX_CHANNELS 32

/* Compositing layout: a tile's pixels are stored row by row with a row stride rounded up to 8
   (STRIDE), and every row is processed in whole blocks of 8 pixels (LANES), so the per-pixel
   loops have a constant trip count and compile to straight vector code. Pixels beyond the
   image edge ("phantoms") are computed and discarded: they start dead and are never written.
   A row's span [xa, xb) is covered by blocks starting at xa (shifted left at the row's end),
   with the lanes outside the span, or already done by the previous block, masked off. */
#define LANES 8
static const float IOTA[LANES] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f};

/* exp(x) for x <= 0 inlined into the vector loops (a call to the vector libm clobbers every
   register of the loop): Cephes' expf, range reduction by ln 2 and a degree-6 polynomial,
   relative error ~2e-7 (like CUDA's __expf that gsplat uses). Inputs below -87 give ~1.6e-38. */
static inline float exp_neg(float x) {
    x = x < -87.0f ? -87.0f : (x > 0.0f ? 0.0f : x);
    const float n = floorf(x * 1.44269504088896341f + 0.5f);
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* Columns [*xa, *xb) of a row (tile-local, clipped to [bx0, bx1)) where a Gaussian can reach
   alpha >= 1/255: sigma(dx) = 0.5 a dx^2 + b dx dy + 0.5 c dy^2 <= smax = log(255 o) is the
   interval dx in -k1 dy -+ sqrt(k2 dy^2 + k3) with k1 = b / a, k2 = (b^2 - a c) / a^2 and
   k3 = 2 smax / a (the span_t, set once per Gaussian), widened to whole pixels. smax carries a
   little slack, so float rounding never drops a pixel the per-pixel test would keep (the test
   still decides). */
typedef struct { float k1, k2, k3; } span_t;

static inline span_t span_setup(float a, float b, float c, float smax) {
    span_t sp;
    const float inv = a > 0.0f ? 1.0f / a : 0.0f;
    sp.k1 = b * inv; sp.k2 = (b * b - a * c) * inv * inv; sp.k3 = 2.0f * smax * inv;
    return sp;
}

/* Narrow the rows [*by0, *by1) to those whose pixel centres are within the ellipse's vertical
   extent |dy| <= ext = sqrt(-k3 / k2) (where k2 dy^2 + k3 >= 0), widened to whole pixels
   (ext < 0: no row; ext >= 1e29: unbounded, keep the box). */
static inline void rows_of_span(float ext, float my, int64_t y0, int64_t *by0, int64_t *by1) {
    if (ext >= 1e29f) return;
    if (ext < 0.0f) { *by1 = *by0; return; }
    const int64_t l = (int64_t)floorf(my - ext - 0.5f) - y0, h = (int64_t)ceilf(my + ext - 0.5f) + 1 - y0;
    if (l > *by0) *by0 = l;
    if (h < *by1) *by1 = h;
    if (*by1 < *by0) *by1 = *by0;
}

static inline void row_span(const span_t *sp, float mx, float dy, int64_t x0, int64_t bx0, int64_t bx1,
                            int64_t *xa, int64_t *xb) {
    const float half2 = sp->k2 * dy * dy + sp->k3;
    if (half2 < 0.0f) { *xa = *xb = bx0; return; }
    const float half = sqrtf(half2), centre = mx + sp->k1 * dy - 0.5f;
    const int64_t l = (int64_t)floorf(centre - half) - x0, h = (int64_t)ceilf(centre + half) + 1 - x0;
    *xa = l > bx0 ? l : bx0;
    *xb = h < bx1 ? h : bx1;
    if (*xb < *xa) *xb = *xa;
}

/* Per-rank records: the compositing kernels read each Gaussian's screen-space parameters from
   one packed row (mean, conic, opacity, depth, pixel box half-extent, colour) in depth order, so
   a tile's walk through its list reads memory forwards instead of gathering from seven arrays. */
#define REC_FIXED 13 /* mx, my, a, b, c, o, z, box half-extents x, y, span k1, k2, k3, vertical extent */
#define PREFETCH 8 /* list entries ahead: the next records are scattered, so fetch them early */
static float *pack_records(int64_t visible, const int64_t *order, const int32_t *radii, const float *means2d,
                           const float *conics, const float *opacities, const float *colors, int64_t channels,
                           const float *depths) {
    const int64_t rs = REC_FIXED + channels;
    float *records = (float *)malloc(sizeof(float) * rs * (visible > 0 ? visible : 1));
    if (!records) return NULL;
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < visible; ++r) {
        const int64_t g = order[r];
        float *rec = records + r * rs;
        rec[0] = means2d[2 * g]; rec[1] = means2d[2 * g + 1];
        rec[2] = conics[3 * g]; rec[3] = conics[3 * g + 1]; rec[4] = conics[3 * g + 2];
        rec[5] = opacities[g]; rec[6] = depths[g];
        rec[7] = (float)radii[2 * g] + 1.0f; rec[8] = (float)radii[2 * g + 1] + 1.0f;
        const span_t sp = span_setup(rec[2], rec[3], rec[4], logf(255.0f * rec[5]) + 0.01f);
        rec[9] = sp.k1; rec[10] = sp.k2; rec[11] = sp.k3;
        rec[12] = sp.k2 < 0.0f ? (-sp.k3 / sp.k2 >= 0.0f ? sqrtf(-sp.k3 / sp.k2) : -1.0f) : 1e30f;
        for (int64_t ch = 0; ch < channels; ++ch) rec[REC_FIXED + ch] = colors[g * channels + ch];
    }
    return records;
}

/* The pixel box of a record in tile-local coordinates (its radii plus a pixel), clipped. */
static inline void record_box(const float *rec, int64_t x0, int64_t y0, int64_t w, int64_t h,
                              int64_t *bx0, int64_t *bx1, int64_t *by0, int64_t *by1) {
    *bx0 = (int64_t)floorf(rec[0] - rec[7]) - x0; *bx1 = (int64_t)ceilf(rec[0] + rec[7]) - x0;
    *by0 = (int64_t)floorf(rec[1] - rec[8]) - y0; *by1 = (int64_t)ceilf(rec[1] + rec[8]) - y0;
    if (*bx0 < 0) *bx0 = 0;
    if (*by0 < 0) *by0 = 0;
    if (*bx1 > w) *bx1 = w;
    if (*by1 > h) *by1 = h;
}

/* For each tile (parallel), composite its Gaussians (depth ranks ranks[offsets[t] ..
   offsets[t+1]), ascending, i.e. front to back; order[rank] = Gaussian) into its pixels, gsplat's
   rules:
   sigma = 0.5 (a dx^2 + c dy^2) + b dx dy, alpha = min(0.999, o exp(-sigma)),
   skip sigma < 0 or alpha < 1/255, stop before next T <= 1e-4.
   Each Gaussian visits only the rows of its box and, per row, the blocks of 8 pixels that
   overlap its ellipse (row_span); the per-pixel test is branch-free (masks as floats). A tile
   stops early once all its pixels are saturated (checked every 16 Gaussians). */
int tf_composite(int64_t width, int64_t height, int64_t tile, int64_t tiles_x, int64_t tiles_y,
                 const int64_t *offsets, const int32_t *ranks, const int64_t *order, int64_t visible,
                 const int32_t *radii, const float *means2d, const float *conics, const float *opacities,
                 const float *colors, int64_t channels, const float *depths,
                 const float *background, float *out_rgb, float *out_alpha, float *out_depth, int64_t *out_last) {
    if (tile * tile > MAX_TILE_PIXELS || tile > 32 || channels > MAX_CHANNELS || channels < 1) return -1;
    const int64_t ntiles = tiles_x * tiles_y, stride = (tile + LANES - 1) / LANES * LANES, rs = REC_FIXED + channels;
    for (int64_t t = 0; t < ntiles; ++t)
        if (offsets[t + 1] - offsets[t] >= (1 << 24)) return -3; /* positions are kept as exact floats */
    float *records = pack_records(visible, order, radii, means2d, conics, opacities, colors, channels, depths);
    if (!records) return -2;
    #pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t ty = t / tiles_x, tx = t % tiles_x;
        const int64_t x0 = tx * tile, y0 = ty * tile;
        const int64_t x1 = x0 + tile < width ? x0 + tile : width;
        const int64_t y1 = y0 + tile < height ? y0 + tile : height;
        const int64_t w = x1 - x0, h = y1 - y0, n = h * stride;
        const int64_t begin = offsets[t], end = offsets[t + 1];
        float T[MAX_TILE_PIXELS], live[MAX_TILE_PIXELS], px[MAX_TILE_PIXELS], py[MAX_TILE_PIXELS];
        float dep[MAX_TILE_PIXELS];
        float last[MAX_TILE_PIXELS]; /* list position where the pixel stopped (exact: lists < 2^24) */
        float rgb[MAX_CHANNELS][MAX_TILE_PIXELS];
        for (int64_t i = 0; i < n; ++i) {
            const int64_t xx = i % stride, yy = i / stride;
            T[i] = 1.0f; live[i] = xx < w ? 1.0f : 0.0f; dep[i] = 0.0f; last[i] = (float)(end - begin);
            px[i] = (float)(x0 + xx) + 0.5f; py[i] = (float)(y0 + yy) + 0.5f;
        }
        for (int64_t ch = 0; ch < channels; ++ch)
            for (int64_t i = 0; i < n; ++i) rgb[ch][i] = 0.0f;
        float row_live[32]; /* live pixels per row (recounted every 16 Gaussians): saturated rows are skipped */
        for (int64_t yy = 0; yy < h; ++yy) row_live[yy] = (float)w;
        for (int64_t k = begin; k < end; ++k) {
            const float *rec = records + (int64_t)ranks[k] * rs;
            if (k + PREFETCH < end) __builtin_prefetch(records + (int64_t)ranks[k + PREFETCH] * rs);
            const float kr = (float)(k - begin);
            const float mx = rec[0], my = rec[1], a = rec[2], b = rec[3], c = rec[4], o = rec[5], z = rec[6];
            const float *col = rec + REC_FIXED;
            int64_t bx0, bx1, by0, by1;
            record_box(rec, x0, y0, w, h, &bx0, &bx1, &by0, &by1);
            const span_t sp = {rec[9], rec[10], rec[11]};
            rows_of_span(rec[12], my, y0, &by0, &by1);
            for (int64_t yy = by0; yy < by1; ++yy) {
                if (row_live[yy] == 0.0f) continue;
                int64_t xa, xb;
                row_span(&sp, mx, my - py[yy * stride], x0, bx0, bx1, &xa, &xb);
                for (int64_t done = xa; done < xb;) {
                    const int64_t xs = done < stride - LANES ? done : stride - LANES;
                    const int64_t base = yy * stride + xs;
                    float wgt[LANES];
                    const float lane_lo = (float)(done - xs), lane_hi = (float)(xb - xs);
                    #pragma omp simd
                    for (int64_t j = 0; j < LANES; ++j) {
                        const int64_t i = base + j;
                        const float dx = mx - px[i], dy = my - py[i];
                        const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                        float alpha = o * exp_neg(-sigma);
                        alpha = alpha < 0.999f ? alpha : 0.999f;
                        const float lane = IOTA[j];
                        const float ok = (lane >= lane_lo && lane < lane_hi && sigma >= 0.0f && alpha >= (1.0f / 255.0f)) ? live[i] : 0.0f;
                        const float next = T[i] * (1.0f - alpha);
                        const float stop = (next <= 1e-4f) ? ok : 0.0f;
                        const float use = ok - stop;
                        live[i] -= stop;
                        last[i] += stop * (kr - last[i]);
                        wgt[j] = use * alpha * T[i];
                        dep[i] += wgt[j] * z;
                        T[i] = use > 0.0f ? next : T[i];
                    }
                    for (int64_t ch = 0; ch < channels; ++ch) {
                        const float cv = col[ch];
                        float *restrict dst = rgb[ch] + base;
                        #pragma omp simd
                        for (int64_t j = 0; j < LANES; ++j) dst[j] += wgt[j] * cv;
                    }
                    done = xs + LANES;
                }
            }
            if (((k - begin) & 15) == 15) { /* every 16 Gaussians: recount the live pixels per row */
                float any = 0.0f;
                for (int64_t yy = 0; yy < h; ++yy) {
                    float count = 0.0f;
                    for (int64_t xx = 0; xx < stride; ++xx) count += live[yy * stride + xx];
                    row_live[yy] = count;
                    any += count;
                }
                if (any == 0.0f) break;
            }
        }
        for (int64_t yy = 0; yy < h; ++yy)
            for (int64_t xx = 0; xx < w; ++xx) {
                const int64_t i = yy * stride + xx, p = (y0 + yy) * width + (x0 + xx);
                const float accum = 1.0f - T[i];
                for (int64_t ch = 0; ch < channels; ++ch)
                    out_rgb[p * channels + ch] = rgb[ch][i] + (background ? T[i] * background[ch] : 0.0f);
                out_alpha[p] = accum;
                out_depth[p] = dep[i] / (accum > 1e-10f ? accum : 1e-10f);
                if (out_last) out_last[p] = begin + (int64_t)last[i];
            }
    }
    free(records);
    return 0;
}

/* Per-tile Gaussian lists, in two passes (the caller allocates ``ranks`` in between). */
static uint32_t depth_key(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

/* Tile rectangle [lo, hi) of Gaussian g (gsplat isect_tiles; tensorfield.cuda.rasterize.tile_rectangles):
   floor / ceil of (mean -+ radius) / tile, clipped to the grid; empty when culled (a radius 0). */
static inline int tile_rect(const float *means2d, const int32_t *radii, int64_t g, float tile,
                            int64_t tiles_x, int64_t tiles_y, int64_t *r) {
    if (radii[2 * g] <= 0 || radii[2 * g + 1] <= 0) return 0;
    const float cx = means2d[2 * g] / tile, cy = means2d[2 * g + 1] / tile;
    const float ex = (float)radii[2 * g] / tile, ey = (float)radii[2 * g + 1] / tile;
    int64_t v[4] = {(int64_t)floorf(cx - ex), (int64_t)floorf(cy - ey), (int64_t)ceilf(cx + ex), (int64_t)ceilf(cy + ey)};
    const int64_t limit[4] = {tiles_x, tiles_y, tiles_x, tiles_y};
    for (int i = 0; i < 4; ++i) r[i] = v[i] < 0 ? 0 : (v[i] > limit[i] ? limit[i] : v[i]);
    return r[0] < r[2] && r[1] < r[3];
}

/* Pass 1 (parallel): every Gaussian's rectangle into rects [N, 4] (x0, y0, x1, y1; zeros when
   culled) and the per-tile counts -> offsets [T + 1] (exclusive prefix sums); returns the total. */
int64_t tf_tile_count(int64_t count, const float *means2d, const int32_t *radii, int64_t tile,
                      int64_t tiles_x, int64_t tiles_y, int32_t *rects, int64_t *offsets) {
    const int64_t ntiles = tiles_x * tiles_y;
    const int threads = omp_get_max_threads();
    int64_t *counts = (int64_t *)calloc((size_t)(threads * ntiles + 1), sizeof(int64_t));
    if (!counts) return -1;
    #pragma omp parallel num_threads(threads)
    {
        int64_t *mine = counts + (int64_t)omp_get_thread_num() * ntiles;
        #pragma omp for schedule(static)
        for (int64_t g = 0; g < count; ++g) {
            int64_t r[4];
            int32_t *out = rects + 4 * g;
            if (!tile_rect(means2d, radii, g, (float)tile, tiles_x, tiles_y, r)) { out[0] = out[1] = out[2] = out[3] = 0; continue; }
            for (int i = 0; i < 4; ++i) out[i] = (int32_t)r[i];
            for (int64_t y = r[1]; y < r[3]; ++y)
                for (int64_t x = r[0]; x < r[2]; ++x) mine[y * tiles_x + x] += 1;
        }
    }
    offsets[0] = 0;
    for (int64_t t = 0; t < ntiles; ++t) {
        int64_t sum = 0;
        for (int th = 0; th < threads; ++th) sum += counts[th * ntiles + t];
        offsets[t + 1] = offsets[t] + sum;
    }
    free(counts);
    return offsets[ntiles];
}

/* Pass 2: a stable LSD radix sort of the depths of the Gaussians with a non-empty rectangle
   (float bits made order-preserving) gives ``order`` (depth rank -> Gaussian, ``visible``
   entries); the ranks are then appended to the tiles of their rectangles in rank order, the
   rank range split over threads (each thread's share of a tile's list follows the previous
   thread's), so every tile's list (``ranks[offsets[t] .. offsets[t+1])``) is ascending ranks,
   i.e. front to back. */
int tf_tile_fill(int64_t count, const float *depths, const int32_t *rects, int64_t tiles_x, int64_t tiles_y,
                 const int64_t *offsets, int32_t *ranks, int64_t *out_order, int64_t *out_visible) {
    const int64_t ntiles = tiles_x * tiles_y;
    int64_t visible = 0;
    for (int64_t g = 0; g < count; ++g) visible += rects[4 * g] < rects[4 * g + 2];
    const int threads = omp_get_max_threads();
    int64_t *cursor = (int64_t *)calloc((size_t)(threads * ntiles + 1), sizeof(int64_t));
    int64_t *order = (int64_t *)malloc(sizeof(int64_t) * 2 * (visible > 0 ? visible : 1));
    uint32_t *keys = (uint32_t *)malloc(sizeof(uint32_t) * 2 * (visible > 0 ? visible : 1));
    if (!cursor || !order || !keys) { free(cursor); free(order); free(keys); return -1; }
    int64_t *order_b = order + visible;
    uint32_t *keys_b = keys + visible;
    int64_t n = 0;
    for (int64_t g = 0; g < count; ++g) {
        if (rects[4 * g] >= rects[4 * g + 2]) continue;
        order[n] = g; keys[n] = depth_key(depths[g]); ++n;
    }
    for (int shift = 0; shift < 32; shift += 8) {
        int64_t histogram[257] = {0};
        for (int64_t i = 0; i < visible; ++i) histogram[((keys[i] >> shift) & 255u) + 1] += 1;
        if (histogram[((keys[0] >> shift) & 255u) + 1] == visible) continue; /* one bucket: order unchanged */
        for (int b = 0; b < 256; ++b) histogram[b + 1] += histogram[b];
        for (int64_t i = 0; i < visible; ++i) {
            const int64_t slot = histogram[(keys[i] >> shift) & 255u]++;
            keys_b[slot] = keys[i]; order_b[slot] = order[i];
        }
        uint32_t *tk = keys; keys = keys_b; keys_b = tk;
        int64_t *to = order; order = order_b; order_b = to;
    }
    const int64_t chunk = (visible + threads - 1) / threads;
    #pragma omp parallel num_threads(threads)
    {
        const int th = omp_get_thread_num();
        const int64_t first = th * chunk, stop = first + chunk < visible ? first + chunk : visible;
        int64_t *mine = cursor + (int64_t)th * ntiles;
        for (int64_t i = first; i < stop; ++i) {
            const int32_t *r = rects + 4 * order[i];
            for (int64_t y = r[1]; y < r[3]; ++y)
                for (int64_t x = r[0]; x < r[2]; ++x) mine[y * tiles_x + x] += 1;
        }
        #pragma omp barrier
        #pragma omp for schedule(static)
        for (int64_t t = 0; t < ntiles; ++t) { /* counts -> each thread's start in tile t's list */
            int64_t start = offsets[t];
            for (int k = 0; k < threads; ++k) {
                const int64_t c = cursor[k * ntiles + t];
                cursor[k * ntiles + t] = start;
                start += c;
            }
        }
        for (int64_t i = first; i < stop; ++i) {
            const int64_t g = order[i];
            const int32_t *r = rects + 4 * g;
            out_order[i] = g;
            for (int64_t y = r[1]; y < r[3]; ++y)
                for (int64_t x = r[0]; x < r[2]; ++x) ranks[mine[y * tiles_x + x]++] = (int32_t)i;
        }
    }
    *out_visible = visible;
    free(cursor);
    free(order < order_b ? order : order_b);
    free(keys < keys_b ? keys : keys_b);
    return 0;
}

/* Backward of tf_composite (gsplat's back-to-front replay). Per pixel: T_final = 1 - alpha, the
   stop index ``last`` (Gaussians k >= last were not composited), and the upstream gradients of
   the colour (v_rgb), of alpha (v_alpha, including what flows through the depth normalisation)
   and of the un-normalised depth sum (v_dnum). Each thread accumulates into its own per-rank
   partials; they are summed in thread order into ``grads`` [N, 7 + D] (mean x, mean y, conic a,
   b, c, opacity, depth, colour; rows of culled Gaussians are left as they are). Tiles are dealt
   round-robin to threads (static, 1: balanced, and the sums do not depend on scheduling). The
   same 8-pixel blocks as the forward pass; per-lane partial sums, reduced once per Gaussian. */
int tf_composite_backward(int64_t width, int64_t height, int64_t tile, int64_t tiles_x, int64_t tiles_y,
                          const int64_t *offsets, const int32_t *ranks, const int64_t *order, int64_t visible,
                          const int32_t *radii, const float *means2d, const float *conics, const float *opacities,
                          const float *colors, int64_t channels, const float *depths,
                          const float *background, const float *t_final, const int64_t *last_index,
                          const float *v_rgb, const float *v_alpha, const float *v_dnum,
                          int64_t nthreads, float *grads) {
    if (tile * tile > MAX_TILE_PIXELS || tile > 32 || channels > MAX_CHANNELS || channels < 1) return -1;
    const int64_t ntiles = tiles_x * tiles_y, gstride = 7 + channels, stride = (tile + LANES - 1) / LANES * LANES;
    const int64_t rs = REC_FIXED + channels;
    float *records = pack_records(visible, order, radii, means2d, conics, opacities, colors, channels, depths);
    float *partial = (float *)calloc((size_t)(nthreads * (visible > 0 ? visible : 1) * gstride), sizeof(float));
    if (!records || !partial) { free(records); free(partial); return -2; }
    #pragma omp parallel for schedule(static, 1) num_threads(nthreads)
    for (int64_t t = 0; t < ntiles; ++t) {
        float *mine = partial + (int64_t)omp_get_thread_num() * visible * gstride;
        const int64_t ty = t / tiles_x, tx = t % tiles_x;
        const int64_t x0 = tx * tile, y0 = ty * tile;
        const int64_t x1 = x0 + tile < width ? x0 + tile : width;
        const int64_t y1 = y0 + tile < height ? y0 + tile : height;
        const int64_t w = x1 - x0, h = y1 - y0, n = h * stride;
        const int64_t begin = offsets[t], end = offsets[t + 1];
        float T[MAX_TILE_PIXELS], tf[MAX_TILE_PIXELS], px[MAX_TILE_PIXELS], py[MAX_TILE_PIXELS];
        float va[MAX_TILE_PIXELS], vd[MAX_TILE_PIXELS], bufz[MAX_TILE_PIXELS];
        int32_t last[MAX_TILE_PIXELS];
        float vr[MAX_CHANNELS][MAX_TILE_PIXELS], buf[MAX_CHANNELS][MAX_TILE_PIXELS];
        for (int64_t i = 0; i < n; ++i) {
            const int64_t xx = i % stride, yy = i / stride;
            px[i] = (float)(x0 + xx) + 0.5f; py[i] = (float)(y0 + yy) + 0.5f;
            bufz[i] = 0.0f;
            if (xx >= w) { /* phantom: never composited */
                tf[i] = T[i] = 1.0f; last[i] = 0; va[i] = vd[i] = 0.0f;
                for (int64_t ch = 0; ch < channels; ++ch) { vr[ch][i] = 0.0f; buf[ch][i] = 0.0f; }
                continue;
            }
            const int64_t p = (y0 + yy) * width + (x0 + xx);
            tf[i] = t_final[p]; T[i] = t_final[p]; last[i] = (int32_t)(last_index[p] - begin);
            vd[i] = v_dnum[p];
            float vbg = 0.0f;
            for (int64_t ch = 0; ch < channels; ++ch) {
                vr[ch][i] = v_rgb[p * channels + ch];
                buf[ch][i] = 0.0f;
                if (background) vbg += background[ch] * vr[ch][i];
            }
            va[i] = v_alpha[p] - vbg; /* the background term enters with alpha */
        }
        int32_t row_last[32]; /* rows whose pixels all stopped before Gaussian k are skipped */
        for (int64_t yy = 0; yy < h; ++yy) {
            row_last[yy] = 0;
            for (int64_t xx = 0; xx < w; ++xx) row_last[yy] = last[yy * stride + xx] > row_last[yy] ? last[yy * stride + xx] : row_last[yy];
        }
        for (int64_t k = end - 1; k >= begin; --k) {
            const int64_t r = ranks[k];
            const float *rec = records + r * rs;
            if (k - PREFETCH >= begin) {
                __builtin_prefetch(records + (int64_t)ranks[k - PREFETCH] * rs);
                __builtin_prefetch(partial + ((int64_t)omp_get_thread_num() * visible + ranks[k - PREFETCH]) * gstride, 1);
            }
            const int32_t kr = (int32_t)(k - begin);
            const float mx = rec[0], my = rec[1], a = rec[2], b = rec[3], c = rec[4], o = rec[5], z = rec[6];
            const float *col = rec + REC_FIXED;
            int64_t bx0, bx1, by0, by1;
            record_box(rec, x0, y0, w, h, &bx0, &bx1, &by0, &by1);
            const span_t sp = {rec[9], rec[10], rec[11]};
            rows_of_span(rec[12], my, y0, &by0, &by1);
            float lmx[LANES] = {0}, lmy[LANES] = {0}, la[LANES] = {0}, lb[LANES] = {0}, lc[LANES] = {0};
            float lo_[LANES] = {0}, lz[LANES] = {0};
            float lcol[MAX_CHANNELS][LANES];
            for (int64_t ch = 0; ch < channels; ++ch)
                for (int64_t j = 0; j < LANES; ++j) lcol[ch][j] = 0.0f;
            int touched = 0;
            for (int64_t yy = by0; yy < by1; ++yy) {
                if (kr >= row_last[yy]) continue;
                int64_t xa, xb;
                row_span(&sp, mx, my - py[yy * stride], x0, bx0, bx1, &xa, &xb);
                for (int64_t done = xa; done < xb;) {
                    const int64_t xs = done < stride - LANES ? done : stride - LANES;
                    const int64_t base = yy * stride + xs;
                    float use[LANES], al[LANES], ra[LANES], wg[LANES], ee[LANES], vv[LANES], fr[LANES];
                    const float lane_lo = (float)(done - xs), lane_hi = (float)(xb - xs);
                    touched = 1;
                    #pragma omp simd
                    for (int64_t j = 0; j < LANES; ++j) {
                        const int64_t i = base + j;
                        const float dx = mx - px[i], dy = my - py[i];
                        const float sigma = 0.5f * (a * dx * dx + c * dy * dy) + b * dx * dy;
                        const float e = exp_neg(-sigma);
                        const float raw = o * e;
                        const float alpha = raw < 0.999f ? raw : 0.999f;
                        const float lane = IOTA[j];
                        const float u = (lane >= lane_lo && lane < lane_hi && kr < last[i] && sigma >= 0.0f && alpha >= 1.0f / 255.0f) ? 1.0f : 0.0f;
                        const float r = 1.0f / (1.0f - alpha);
                        T[i] = u > 0.0f ? T[i] * r : T[i];
                        use[j] = u; al[j] = alpha; ra[j] = r; ee[j] = e; vv[j] = 0.0f;
                        wg[j] = u * alpha * T[i];
                        fr[j] = raw < 0.999f ? u : 0.0f; /* the clamp passes no gradient */
                    }
                    for (int64_t ch = 0; ch < channels; ++ch) {
                        const float cv = col[ch];
                        float *restrict bb = buf[ch] + base;
                        const float *restrict rr = vr[ch] + base;
                        float *restrict lcc = lcol[ch];
                        #pragma omp simd
                        for (int64_t j = 0; j < LANES; ++j) {
                            vv[j] += use[j] * (cv * T[base + j] - bb[j] * ra[j]) * rr[j];
                            lcc[j] += wg[j] * rr[j];
                            bb[j] += wg[j] * cv;
                        }
                    }
                    #pragma omp simd
                    for (int64_t j = 0; j < LANES; ++j) {
                        const int64_t i = base + j;
                        const float dx = mx - px[i], dy = my - py[i];
                        lz[j] += wg[j] * vd[i];
                        const float v = vv[j] + use[j] * ((z * T[i] - bufz[i] * ra[j]) * vd[i] + tf[i] * ra[j] * va[i]);
                        bufz[i] += wg[j] * z;
                        const float vs = -al[j] * v * fr[j];
                        lo_[j] += ee[j] * v * fr[j];
                        la[j] += 0.5f * dx * dx * vs;
                        lb[j] += dx * dy * vs;
                        lc[j] += 0.5f * dy * dy * vs;
                        lmx[j] += (a * dx + b * dy) * vs;
                        lmy[j] += (c * dy + b * dx) * vs;
                    }
                    done = xs + LANES;
                }
            }
            if (!touched) continue;
            float s[7] = {0, 0, 0, 0, 0, 0, 0};
            for (int64_t j = 0; j < LANES; ++j) {
                s[0] += lmx[j]; s[1] += lmy[j]; s[2] += la[j]; s[3] += lb[j]; s[4] += lc[j]; s[5] += lo_[j]; s[6] += lz[j];
            }
            float *dst = mine + r * gstride;
            for (int q = 0; q < 7; ++q) dst[q] += s[q];
            for (int64_t ch = 0; ch < channels; ++ch) {
                float acc = 0.0f;
                for (int64_t j = 0; j < LANES; ++j) acc += lcol[ch][j];
                dst[7 + ch] += acc;
            }
        }
    }
    /* sum the threads' partials in a fixed order and scatter rank -> Gaussian */
    #pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t r = 0; r < visible; ++r) {
        float *out = grads + order[r] * gstride;
        for (int64_t q = 0; q < gstride; ++q) {
            float acc = 0.0f;
            for (int64_t th = 0; th < nthreads; ++th) acc += partial[(th * visible + r) * gstride + q];
            out[q] = acc;
        }
    }
    free(records);
    free(partial);
    return 0;
}

/* ---------------------------------------------------------------------------- projection
   EWA projection of N Gaussians into one camera and their SH colours, forward and backward,
   exactly the float32 arithmetic of tensorfield.cuda.rasterize.project (gsplat's conventions).
   viewmat: 4x4 row-major world-to-camera; intr: fx, fy, cx, cy. Covariances come from
   scales + (w, x, y, z) quaternions, or as full 3x3 matrices (covars != NULL). */

static void sh_values(int64_t degree, float x, float y, float z, float *Y, float (*dY)[3]) {
    Y[0] = 0.2820947917738781f;
    if (dY) { dY[0][0] = dY[0][1] = dY[0][2] = 0.0f; }
    if (degree < 1) return;
    const float C1 = 0.48860251190292f;
    Y[1] = -C1 * y; Y[2] = C1 * z; Y[3] = -C1 * x;
    if (dY) {
        dY[1][0] = 0; dY[1][1] = -C1; dY[1][2] = 0;
        dY[2][0] = 0; dY[2][1] = 0; dY[2][2] = C1;
        dY[3][0] = -C1; dY[3][1] = 0; dY[3][2] = 0;
    }
    if (degree < 2) return;
    const float C = 0.5462742152960395f, B = -1.092548430592079f, D = 0.9461746957575601f, E = 0.3153915652525201f;
    const float z2 = z * z, c1 = x * x - y * y, s1 = 2.0f * x * y, bz = B * z;
    Y[4] = C * s1; Y[5] = bz * y; Y[6] = D * z2 - E; Y[7] = bz * x; Y[8] = C * c1;
    if (dY) {
        dY[4][0] = 2 * C * y; dY[4][1] = 2 * C * x; dY[4][2] = 0;
        dY[5][0] = 0; dY[5][1] = bz; dY[5][2] = B * y;
        dY[6][0] = 0; dY[6][1] = 0; dY[6][2] = 2 * D * z;
        dY[7][0] = bz; dY[7][1] = 0; dY[7][2] = B * x;
        dY[8][0] = 2 * C * x; dY[8][1] = -2 * C * y; dY[8][2] = 0;
    }
    if (degree < 3) return;
    const float F = -0.5900435899266435f, G = 1.445305721320277f, H = -2.285228997322329f, H0 = 0.4570457994644658f;
    const float P = 1.865881662950577f, Q = 1.119528997770346f;
    const float c2 = x * c1 - y * s1, s2 = x * s1 + y * c1, tc = H * z2 + H0, tb = G * z;
    Y[9] = F * s2; Y[10] = tb * s1; Y[11] = tc * y; Y[12] = z * (P * z2 - Q);
    Y[13] = tc * x; Y[14] = tb * c1; Y[15] = F * c2;
    if (dY) {
        dY[9][0] = F * 6 * x * y; dY[9][1] = F * 3 * c1; dY[9][2] = 0;
        dY[10][0] = tb * 2 * y; dY[10][1] = tb * 2 * x; dY[10][2] = G * s1;
        dY[11][0] = 0; dY[11][1] = tc; dY[11][2] = 2 * H * z * y;
        dY[12][0] = 0; dY[12][1] = 0; dY[12][2] = 3 * P * z2 - Q;
        dY[13][0] = tc; dY[13][1] = 0; dY[13][2] = 2 * H * z * x;
        dY[14][0] = tb * 2 * x; dY[14][1] = -tb * 2 * y; dY[14][2] = G * c1;
        dY[15][0] = F * 3 * c1; dY[15][1] = -F * 6 * x * y; dY[15][2] = 0;
    }
}

static void quat_rotation(const float *q, float *qn, float *length, float *R) {
    const float l = sqrtf(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    const float inv = 1.0f / (l > 1e-12f ? l : 1e-12f);
    const float w = q[0] * inv, x = q[1] * inv, y = q[2] * inv, z = q[3] * inv;
    qn[0] = w; qn[1] = x; qn[2] = y; qn[3] = z; *length = l;
    R[0] = 1 - 2 * (y * y + z * z); R[1] = 2 * (x * y - w * z); R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z); R[4] = 1 - 2 * (x * x + z * z); R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y); R[7] = 2 * (y * z + w * x); R[8] = 1 - 2 * (x * x + y * y);
}

/* world covariance of Gaussian g; M = R diag(s) (returned for the backward pass) */
static void world_covariance(int64_t g, const float *scales, const float *quats, const float *covars,
                             float *S, float *M, float *R, float *qn, float *qlen) {
    if (covars) {
        for (int i = 0; i < 9; ++i) S[i] = covars[9 * g + i];
        return;
    }
    quat_rotation(quats + 4 * g, qn, qlen, R);
    const float *s = scales + 3 * g;
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) M[3 * i + j] = R[3 * i + j] * s[j];
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k)
            S[3 * i + k] = M[3 * i] * M[3 * k] + M[3 * i + 1] * M[3 * k + 1] + M[3 * i + 2] * M[3 * k + 2];
}

/* A S A^T for 3x3 row-major A, S */
static void sandwich(const float *A, const float *S, float *out) {
    float AS[9];
    for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) AS[3 * i + j] = A[3 * i] * S[j] + A[3 * i + 1] * S[3 + j] + A[3 * i + 2] * S[6 + j];
    for (int i = 0; i < 3; ++i)
        for (int k = 0; k < 3; ++k) out[3 * i + k] = AS[3 * i] * A[3 * k] + AS[3 * i + 1] * A[3 * k + 1] + AS[3 * i + 2] * A[3 * k + 2];
}

typedef struct {
    float fx, fy, cx, cy, width, height, near_plane, far_plane, eps2d;
    int antialiased;
} camera_t;

/* The shared forward arithmetic of one Gaussian's projection (everything but the colour). */
typedef struct {
    float tx, ty, tz, z, u, v, rx, ry, J00, J02, J11, J12;
    float Sc[9], a0, b, c0, a, c, det_orig, det, sd, comp;
    float m2x, m2y;
} proj_t;

static void project_one(const float *W, const float *t, const camera_t *cam, const float *mean, const float *S, proj_t *p) {
    p->tx = W[0] * mean[0] + W[1] * mean[1] + W[2] * mean[2] + t[0];
    p->ty = W[3] * mean[0] + W[4] * mean[1] + W[5] * mean[2] + t[1];
    p->tz = W[6] * mean[0] + W[7] * mean[1] + W[8] * mean[2] + t[2];
    p->z = fabsf(p->tz) > 1e-12f ? p->tz : 1e-12f;
    const float tan_x = 0.5f * cam->width / cam->fx, tan_y = 0.5f * cam->height / cam->fy;
    const float lox = -(cam->cx / cam->fx + 0.3f * tan_x), hix = (cam->width - cam->cx) / cam->fx + 0.3f * tan_x;
    const float loy = -(cam->cy / cam->fy + 0.3f * tan_y), hiy = (cam->height - cam->cy) / cam->fy + 0.3f * tan_y;
    p->rx = p->tx / p->z; p->ry = p->ty / p->z;
    p->u = p->rx < lox ? lox : (p->rx > hix ? hix : p->rx);
    p->v = p->ry < loy ? loy : (p->ry > hiy ? hiy : p->ry);
    p->J00 = cam->fx / p->z; p->J02 = -cam->fx * p->u / p->z;
    p->J11 = cam->fy / p->z; p->J12 = -cam->fy * p->v / p->z;
    sandwich(W, S, p->Sc);
    const float *Sc = p->Sc;
    const float r00 = p->J00 * Sc[0] + p->J02 * Sc[6], r01 = p->J00 * Sc[1] + p->J02 * Sc[7], r02 = p->J00 * Sc[2] + p->J02 * Sc[8];
    const float r11 = p->J11 * Sc[4] + p->J12 * Sc[7], r12 = p->J11 * Sc[5] + p->J12 * Sc[8];
    p->a0 = r00 * p->J00 + r02 * p->J02;
    p->b = r01 * p->J11 + r02 * p->J12;
    p->c0 = r11 * p->J11 + r12 * p->J12;
    p->m2x = cam->fx * p->tx / p->z + cam->cx;
    p->m2y = cam->fy * p->ty / p->z + cam->cy;
    p->det_orig = p->a0 * p->c0 - p->b * p->b;
    p->a = p->a0 + cam->eps2d; p->c = p->c0 + cam->eps2d;
    p->det = p->a * p->c - p->b * p->b;
    p->sd = p->det > 1e-10f ? p->det : 1e-10f;
    p->comp = 1.0f;
    if (cam->antialiased) {
        const float r = p->det_orig / p->sd;
        p->comp = r > 0.0f ? sqrtf(r) : 0.0f;
    }
}

int tf_project(int64_t n, const float *means, const float *scales, const float *quats, const float *covars,
               const float *opacities, const float *coeffs, int64_t sh_degree, int64_t coeff_count, int64_t channels,
               const float *viewmat, const float *intr, int64_t width, int64_t height,
               double near_plane, double far_plane, double eps2d, int64_t antialiased,
               float *out_means2d, float *out_conics, float *out_depths, float *out_opacities,
               int32_t *out_radii, float *out_colors) {
    if (sh_degree > 3 || (sh_degree >= 0 && (coeff_count < (sh_degree + 1) * (sh_degree + 1) || channels > 32))) return -1;
    const float W[9] = {viewmat[0], viewmat[1], viewmat[2], viewmat[4], viewmat[5], viewmat[6], viewmat[8], viewmat[9], viewmat[10]};
    const float t[3] = {viewmat[3], viewmat[7], viewmat[11]};
    const camera_t cam = {intr[0], intr[1], intr[2], intr[3], (float)width, (float)height, (float)near_plane, (float)far_plane, (float)eps2d, (int)antialiased};
    const float campos[3] = {-(W[0] * t[0] + W[3] * t[1] + W[6] * t[2]), -(W[1] * t[0] + W[4] * t[1] + W[7] * t[2]),
                             -(W[2] * t[0] + W[5] * t[1] + W[8] * t[2])};
    #pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < n; ++g) {
        float S[9], M[9], R[9], qn[4], qlen;
        world_covariance(g, scales, quats, covars, S, M, R, qn, &qlen);
        proj_t p;
        project_one(W, t, &cam, means + 3 * g, S, &p);
        out_means2d[2 * g] = p.m2x; out_means2d[2 * g + 1] = p.m2y;
        out_conics[3 * g] = p.c / p.sd; out_conics[3 * g + 1] = -p.b / p.sd; out_conics[3 * g + 2] = p.a / p.sd;
        out_depths[g] = p.tz;
        const float op = opacities[g] * p.comp;
        out_opacities[g] = op;
        float extend = sqrtf(2.0f * logf(fmaxf(op / (1.0f / 255.0f), 1.0f)));
        extend = extend < 3.33f ? extend : 3.33f;
        const float radx = ceilf(extend * sqrtf(fmaxf(p.a, 0.0f))), rady = ceilf(extend * sqrtf(fmaxf(p.c, 0.0f)));
        int ok = p.det > 0.0f && p.tz > cam.near_plane && p.tz < cam.far_plane && op >= 1.0f / 255.0f && (radx > 0.0f || rady > 0.0f);
        ok = ok && p.m2x + radx > 0.0f && p.m2x - radx < cam.width && p.m2y + rady > 0.0f && p.m2y - rady < cam.height;
        out_radii[2 * g] = ok ? (int32_t)radx : 0;
        out_radii[2 * g + 1] = ok ? (int32_t)rady : 0;
        if (sh_degree >= 0) {
            float d[3] = {means[3 * g] - campos[0], means[3 * g + 1] - campos[1], means[3 * g + 2] - campos[2]};
            const float l = sqrtf(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
            const float inv = 1.0f / (l > 1e-12f ? l : 1e-12f);
            float Y[16];
            sh_values(sh_degree, d[0] * inv, d[1] * inv, d[2] * inv, Y, NULL);
            const int64_t bases = (sh_degree + 1) * (sh_degree + 1);
            const float *cf = coeffs + g * coeff_count * channels;
            for (int64_t ch = 0; ch < channels; ++ch) {
                float value = 0.0f;
                for (int64_t k = 0; k < bases; ++k) value += Y[k] * cf[k * channels + ch];
                value += 0.5f;
                out_colors[g * channels + ch] = value > 0.0f ? value : 0.0f;
            }
        }
    }
    return 0;
}

/* Backward of tf_project: upstream gradients of means2d, conics, depths, opacities and colours
   -> gradients of means, scales + quats (or covars), opacities and SH coefficients (written,
   not accumulated; any of the gradient pointers may be NULL when not needed). */
int tf_project_backward(int64_t n, const float *means, const float *scales, const float *quats, const float *covars,
                        const float *opacities, const float *coeffs, int64_t sh_degree, int64_t coeff_count, int64_t channels,
                        const float *viewmat, const float *intr, int64_t width, int64_t height,
                        double eps2d, int64_t antialiased,
                        const float *v_means2d, const float *v_conics, const float *v_depths, const float *v_opacities,
                        const float *v_colors, float *g_means, float *g_scales, float *g_quats, float *g_covars,
                        float *g_opacities, float *g_coeffs) {
    if (sh_degree > 3 || (sh_degree >= 0 && (coeff_count < (sh_degree + 1) * (sh_degree + 1) || channels > 32))) return -1;
    const float W[9] = {viewmat[0], viewmat[1], viewmat[2], viewmat[4], viewmat[5], viewmat[6], viewmat[8], viewmat[9], viewmat[10]};
    const float t[3] = {viewmat[3], viewmat[7], viewmat[11]};
    const camera_t cam = {intr[0], intr[1], intr[2], intr[3], (float)width, (float)height, 0.0f, 0.0f, (float)eps2d, (int)antialiased};
    const float campos[3] = {-(W[0] * t[0] + W[3] * t[1] + W[6] * t[2]), -(W[1] * t[0] + W[4] * t[1] + W[7] * t[2]),
                             -(W[2] * t[0] + W[5] * t[1] + W[8] * t[2])};
    const float tan_x = 0.5f * cam.width / cam.fx, tan_y = 0.5f * cam.height / cam.fy;
    const float lox = -(cam.cx / cam.fx + 0.3f * tan_x), hix = (cam.width - cam.cx) / cam.fx + 0.3f * tan_x;
    const float loy = -(cam.cy / cam.fy + 0.3f * tan_y), hiy = (cam.height - cam.cy) / cam.fy + 0.3f * tan_y;
    #pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < n; ++g) {
        float S[9], M[9], R[9], qn[4], qlen;
        world_covariance(g, scales, quats, covars, S, M, R, qn, &qlen);
        proj_t p;
        project_one(W, t, &cam, means + 3 * g, S, &p);
        /* opacity (antialiasing compensation) */
        const float vop = v_opacities[g];
        if (g_opacities) g_opacities[g] = vop * p.comp;
        float v_sd = 0.0f, v_do = 0.0f;
        if (cam.antialiased && p.comp > 0.0f) {
            const float v_r = vop * opacities[g] * 0.5f / p.comp;
            v_do = v_r / p.sd;
            v_sd = -v_r * p.det_orig / (p.sd * p.sd);
        }
        /* conic = (c, -b, a) / sd */
        const float k0 = v_conics[3 * g], k1 = v_conics[3 * g + 1], k2 = v_conics[3 * g + 2];
        float v_a = k2 / p.sd, v_c = k0 / p.sd, v_b = -k1 / p.sd;
        v_sd += -(k0 * p.c - k1 * p.b + k2 * p.a) / (p.sd * p.sd);
        if (p.det >= 1e-10f) { v_a += v_sd * p.c; v_c += v_sd * p.a; v_b += -2.0f * p.b * v_sd; }
        v_a += v_do * p.c0; v_c += v_do * p.a0; v_b += -2.0f * p.b * v_do;
        /* cov2d = J Sc J^T with G = [[v_a, v_b/2], [v_b/2, v_c]] */
        const float G00 = v_a, G01 = 0.5f * v_b, G11 = v_c;
        const float *Sc = p.Sc;
        /* J rows: j0 = (J00, 0, J02), j1 = (0, J11, J12) */
        const float j0[3] = {p.J00, 0.0f, p.J02}, j1[3] = {0.0f, p.J11, p.J12};
        float vSc[9];
        for (int i = 0; i < 3; ++i)
            for (int k = 0; k < 3; ++k)
                vSc[3 * i + k] = G00 * j0[i] * j0[k] + G01 * (j0[i] * j1[k] + j1[i] * j0[k]) + G11 * j1[i] * j1[k];
        /* v_J = 2 G J Sc */
        float JS0[3], JS1[3];
        for (int k = 0; k < 3; ++k) {
            JS0[k] = p.J00 * Sc[k] + p.J02 * Sc[6 + k];
            JS1[k] = p.J11 * Sc[3 + k] + p.J12 * Sc[6 + k];
        }
        const float vJ00 = 2.0f * (G00 * JS0[0] + G01 * JS1[0]), vJ02 = 2.0f * (G00 * JS0[2] + G01 * JS1[2]);
        const float vJ11 = 2.0f * (G01 * JS0[1] + G11 * JS1[1]), vJ12 = 2.0f * (G01 * JS0[2] + G11 * JS1[2]);
        const float z = p.z, z2 = z * z;
        float v_z = -vJ00 * cam.fx / z2 + vJ02 * cam.fx * p.u / z2 - vJ11 * cam.fy / z2 + vJ12 * cam.fy * p.v / z2;
        const float v_u = -vJ02 * cam.fx / z, v_v = -vJ12 * cam.fy / z;
        float v_tx = 0.0f, v_ty = 0.0f, v_tz = 0.0f;
        if (p.rx >= lox && p.rx <= hix) { v_tx += v_u / z; v_z += -v_u * p.tx / z2; }
        if (p.ry >= loy && p.ry <= hiy) { v_ty += v_v / z; v_z += -v_v * p.ty / z2; }
        const float vm0 = v_means2d[2 * g], vm1 = v_means2d[2 * g + 1];
        v_tx += vm0 * cam.fx / z; v_z += -vm0 * cam.fx * p.tx / z2;
        v_ty += vm1 * cam.fy / z; v_z += -vm1 * cam.fy * p.ty / z2;
        v_tz += v_depths[g];
        if (fabsf(p.tz) > 1e-12f) v_tz += v_z;
        float gm[3];
        for (int i = 0; i < 3; ++i) gm[i] = W[i] * v_tx + W[3 + i] * v_ty + W[6 + i] * v_tz;
        /* v_S = W^T vSc W */
        float WT[9], vS[9];
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) WT[3 * i + j] = W[3 * j + i];
        sandwich(WT, vSc, vS);
        if (covars) {
            if (g_covars)
                for (int i = 0; i < 9; ++i) g_covars[9 * g + i] = vS[i];
        } else {
            /* S = M M^T, M = R diag(s): v_M = (vS + vS^T) M */
            float vM[9];
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) {
                    float acc = 0.0f;
                    for (int k = 0; k < 3; ++k) acc += (vS[3 * i + k] + vS[3 * k + i]) * M[3 * k + j];
                    vM[3 * i + j] = acc;
                }
            const float *s = scales + 3 * g;
            float vR[9];
            for (int j = 0; j < 3; ++j) {
                float acc = 0.0f;
                for (int i = 0; i < 3; ++i) { acc += vM[3 * i + j] * R[3 * i + j]; vR[3 * i + j] = vM[3 * i + j] * s[j]; }
                if (g_scales) g_scales[3 * g + j] = acc;
            }
            const float w = qn[0], x = qn[1], y = qn[2], zq = qn[3];
            float vq[4];
            vq[0] = 2 * (-zq * vR[1] + y * vR[2] + zq * vR[3] - x * vR[5] - y * vR[6] + x * vR[7]);
            vq[1] = 2 * (y * vR[1] + zq * vR[2] + y * vR[3] - 2 * x * vR[4] - w * vR[5] + zq * vR[6] + w * vR[7] - 2 * x * vR[8]);
            vq[2] = 2 * (-2 * y * vR[0] + x * vR[1] + w * vR[2] + x * vR[3] + zq * vR[5] - w * vR[6] + zq * vR[7] - 2 * y * vR[8]);
            vq[3] = 2 * (-2 * zq * vR[0] - w * vR[1] + x * vR[2] + w * vR[3] - 2 * zq * vR[4] + y * vR[5] + x * vR[6] + y * vR[7]);
            if (g_quats) {
                if (qlen > 1e-12f) {
                    const float dot = vq[0] * w + vq[1] * x + vq[2] * y + vq[3] * zq;
                    for (int i = 0; i < 4; ++i) g_quats[4 * g + i] = (vq[i] - qn[i] * dot) / qlen;
                } else {
                    for (int i = 0; i < 4; ++i) g_quats[4 * g + i] = vq[i] / 1e-12f;
                }
            }
        }
        if (sh_degree >= 0) {
            float d[3] = {means[3 * g] - campos[0], means[3 * g + 1] - campos[1], means[3 * g + 2] - campos[2]};
            const float l = sqrtf(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
            const float inv = 1.0f / (l > 1e-12f ? l : 1e-12f);
            const float nx = d[0] * inv, ny = d[1] * inv, nz = d[2] * inv;
            float Y[16], dY[16][3];
            sh_values(sh_degree, nx, ny, nz, Y, dY);
            const int64_t bases = (sh_degree + 1) * (sh_degree + 1);
            const float *cf = coeffs + g * coeff_count * channels;
            float *gc = g_coeffs ? g_coeffs + g * coeff_count * channels : NULL;
            float vY[16];
            for (int64_t k = 0; k < bases; ++k) vY[k] = 0.0f;
            for (int64_t ch = 0; ch < channels; ++ch) {
                float value = 0.0f;
                for (int64_t k = 0; k < bases; ++k) value += Y[k] * cf[k * channels + ch];
                const float vc = (value + 0.5f >= 0.0f) ? v_colors[g * channels + ch] : 0.0f;
                for (int64_t k = 0; k < bases; ++k) {
                    if (gc) gc[k * channels + ch] = Y[k] * vc;
                    vY[k] += cf[k * channels + ch] * vc;
                }
            }
            if (gc)
                for (int64_t k = bases * channels; k < coeff_count * channels; ++k) gc[k] = 0.0f;
            float vn[3] = {0.0f, 0.0f, 0.0f};
            for (int64_t k = 1; k < bases; ++k)
                for (int i = 0; i < 3; ++i) vn[i] += vY[k] * dY[k][i];
            if (l > 1e-12f) {
                const float dot = vn[0] * nx + vn[1] * ny + vn[2] * nz;
                gm[0] += (vn[0] - nx * dot) / l; gm[1] += (vn[1] - ny * dot) / l; gm[2] += (vn[2] - nz * dot) / l;
            } else {
                for (int i = 0; i < 3; ++i) gm[i] += vn[i] / 1e-12f;
            }
        }
        if (g_means)
            for (int i = 0; i < 3; ++i) g_means[3 * g + i] = gm[i];
    }
    return 0;
}
