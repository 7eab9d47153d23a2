
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* sin and cos of x for |x| <= 8192: Cody-Waite reduction by pi/2 in three parts and Cephes'
   sinf/cosf polynomials on [-pi/4, pi/4] (about 1 ulp), branch-free so the loop vectorises. */
static inline void sincos_reduced(float x, float *s, float *c) {
    const float j = rintf(x * 0.636619772367581343f);
    float r = x - j * 1.5703125f;
    r = r - j * 4.837512969970703125e-4f;
    r = r - j * 7.54978995489188216e-8f;
    const float r2 = r * r;
    const float sp = ((-1.9515295891e-4f * r2 + 8.3321608736e-3f) * r2 - 1.6666654611e-1f) * r2 * r + r;
    const float cp = ((2.443315711809948e-5f * r2 - 1.388731625493765e-3f) * r2 + 4.166664568298827e-2f) * r2 * r2 - 0.5f * r2 + 1.0f;
    const int q = (int)j & 3;
    float ss = (q & 1) ? cp : sp, cc = (q & 1) ? sp : cp;
    *s = (q & 2) ? -ss : ss;
    *c = ((q + 1) & 2) ? -cc : cc;
}

/* sin and cos of n contiguous values times scale (vectorised; |x| > 8192 and non-finite
   values are redone with libm afterwards). */
static void sincos_block(const float *restrict v, int64_t n, float scale, float *restrict s, float *restrict c) {
    int any_large = 0;
    #pragma omp simd reduction(|:any_large)
    for (int64_t i = 0; i < n; ++i) {
        const float x = v[i] * scale;
        sincos_reduced(x, &s[i], &c[i]);
        any_large |= !(fabsf(x) <= 8192.0f);
    }
    if (any_large)
        for (int64_t i = 0; i < n; ++i) {
            const float x = v[i] * scale;
            if (!(fabsf(x) <= 8192.0f)) { s[i] = sinf(x); c[i] = cosf(x); }
        }
}

/* PE of a row: out_sin[j F + k] = sin(2^k v_j), out_cos likewise (the official d-major layout);
   octave k + 1 from octave k by the double-angle formulas, sin/cos again every 4 octaves.
   s0, c0: the octave-k0 values of this row from sincos_block. */
static inline void expand_row(const float *s0, const float *c0, int64_t D, int64_t F, int64_t k0, float *out_sin, float *out_cos) {
    for (int64_t j = 0; j < D; ++j) {
        float ps = s0[j], pc = c0[j];
        out_sin[j * F + k0] = ps; out_cos[j * F + k0] = pc;
        for (int64_t k = k0 + 1; k < F && k < k0 + 4; ++k) {
            const float ns = 2.0f * ps * pc, nc = 1.0f - 2.0f * ps * ps;
            out_sin[j * F + k] = ns; out_cos[j * F + k] = nc;
            ps = ns; pc = nc;
        }
    }
}

#define ROWS 64

/* x[s] = [f (D), d (3), PE(f) sin (D F), cos (D F), PE(d) sin (3 V), cos (3 V)] */
void tf_shader_input(const float *f, const float *d, int64_t S, int64_t D, int64_t F, int64_t V, float *x) {
    const int64_t width = D + 3 + 2 * D * F + 6 * V;
    const int64_t blocks = (S + ROWS - 1) / ROWS;
    #pragma omp parallel
    {
        float *sf = (float *)malloc(sizeof(float) * ROWS * (D > 3 ? D : 3) * 2);
        float *cf = sf + ROWS * (D > 3 ? D : 3);
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            const int64_t s0 = b * ROWS, rows = S - s0 < ROWS ? S - s0 : ROWS;
            for (int64_t r = 0; r < rows; ++r) {
                float *row = x + (s0 + r) * width;
                const float *fs = f + (s0 + r) * D, *ds = d + 3 * (s0 + r);
                for (int64_t j = 0; j < D; ++j) row[j] = fs[j];
                row[D] = ds[0]; row[D + 1] = ds[1]; row[D + 2] = ds[2];
            }
            for (int64_t k0 = 0; k0 < F; k0 += 4) {
                sincos_block(f + s0 * D, rows * D, (float)(1LL << k0), sf, cf);
                for (int64_t r = 0; r < rows; ++r) {
                    float *row = x + (s0 + r) * width + D + 3;
                    expand_row(sf + r * D, cf + r * D, D, F, k0, row, row + D * F);
                }
            }
            for (int64_t k0 = 0; k0 < V; k0 += 4) {
                sincos_block(d + 3 * s0, rows * 3, (float)(1LL << k0), sf, cf);
                for (int64_t r = 0; r < rows; ++r) {
                    float *row = x + (s0 + r) * width + D + 3 + 2 * D * F;
                    expand_row(sf + 3 * r, cf + 3 * r, 3, V, k0, row, row + 3 * V);
                }
            }
        }
        free(sf);
    }
}
