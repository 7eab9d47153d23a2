
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

/* 4D rotation in (x, y, z, t): (L(ql) R(qr)) with both axes reversed (gaussian_math.rotation_4d) */
static void rotation4(const float *ql, const float *qr, float *R) {
    float la = ql[0], lb = ql[1], lc = ql[2], ld = ql[3];
    float nl = sqrtf(la * la + lb * lb + lc * lc + ld * ld); nl = 1.0f / (nl > 1e-12f ? nl : 1e-12f);
    la *= nl; lb *= nl; lc *= nl; ld *= nl;
    float p = qr[0], q = qr[1], r = qr[2], s = qr[3];
    float nr = sqrtf(p * p + q * q + r * r + s * s); nr = 1.0f / (nr > 1e-12f ? nr : 1e-12f);
    p *= nr; q *= nr; r *= nr; s *= nr;
    const float L[16] = {la, -lb, -lc, -ld, lb, la, -ld, lc, lc, ld, la, -lb, ld, -lc, lb, la};
    const float Q[16] = {p, q, r, s, -q, p, -s, r, -r, s, p, -q, -s, -r, q, p};
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            float acc = 0.0f;
            for (int k = 0; k < 4; ++k) acc += L[4 * i + k] * Q[4 * k + j];
            R[4 * (3 - i) + (3 - j)] = acc;
        }
}

/* temporal variance Sigma_44 and the full covariance (when cov != NULL) */
static float covariance4(const float *ls, float lst, const float *ql, const float *qr, float *cov) {
    float R[16];
    rotation4(ql, qr, R);
    const float s2[4] = {expf(2.0f * ls[0]), expf(2.0f * ls[1]), expf(2.0f * ls[2]), expf(2.0f * lst)};
    if (cov) {
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) {
                float acc = 0.0f;
                for (int k = 0; k < 4; ++k) acc += R[4 * i + k] * s2[k] * R[4 * j + k];
                cov[4 * i + j] = acc;
            }
        return cov[15];
    }
    float v = 0.0f;
    for (int k = 0; k < 4; ++k) v += R[12 + k] * R[12 + k] * s2[k];
    return v;
}

/* Pass 1: alive[g] = marginal > threshold; returns the count. */
int64_t tf_slice4d_cull(int64_t n, const float *times, const float *log_scales, const float *log_scale_t,
                        const float *quats_l, const float *quats_r, double time, double threshold, uint8_t *alive) {
    int64_t count = 0;
    #pragma omp parallel for schedule(static) reduction(+:count)
    for (int64_t g = 0; g < n; ++g) {
        const float var_t = covariance4(log_scales + 3 * g, log_scale_t[g], quats_l + 4 * g, quats_r + 4 * g, NULL);
        const float dt = (float)time - times[g];
        const int ok = expf(-0.5f * dt * dt / var_t) > (float)threshold;
        alive[g] = (uint8_t)ok;
        count += ok;
    }
    return count;
}

/* Pass 2: the survivors (index[m] = g, ascending) conditioned on t: means [M, 3], covariances
   [M, 3, 3], opacities sigmoid(logit) * marginal, dt = mu_t - t. */
int tf_slice4d_fill(int64_t m, const int64_t *index, const float *means, const float *times, const float *log_scales,
                    const float *log_scale_t, const float *quats_l, const float *quats_r, const float *opacity_logits,
                    double time, float *out_means, float *out_covs, float *out_opacities, float *out_dt) {
    #pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < m; ++r) {
        const int64_t g = index[r];
        float cov[16];
        const float var_t = covariance4(log_scales + 3 * g, log_scale_t[g], quats_l + 4 * g, quats_r + 4 * g, cov);
        const float dt = (float)time - times[g];
        const float shift = dt / var_t;
        for (int i = 0; i < 3; ++i) out_means[3 * r + i] = means[3 * g + i] + cov[4 * i + 3] * shift;
        for (int i = 0; i < 3; ++i)
            for (int j = 0; j < 3; ++j) out_covs[9 * r + 3 * i + j] = cov[4 * i + j] - cov[4 * i + 3] * cov[4 * j + 3] / var_t;
        const float marginal = expf(-0.5f * dt * dt / var_t);
        out_opacities[r] = marginal / (1.0f + expf(-opacity_logits[g]));
        out_dt[r] = -dt;
    }
    return 0;
}
