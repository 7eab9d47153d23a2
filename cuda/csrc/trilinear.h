/* align_corners=True corners of one axis: vertices i0, i1 (clamped into range) with weights
   w0, w1, zero for vertices outside [0, size) and for non-finite coordinates. */
static inline void axis_corners(float coord, int64_t size, int64_t *i0, int64_t *i1, float *w0, float *w1) {
    float p = (coord + 1.0f) * (0.5f * (float)(size - 1));
    if (!(p > -2.0f && p < (float)size + 1.0f)) { *i0 = *i1 = 0; *w0 = *w1 = 0.0f; return; }
    float f0 = floorf(p), frac = p - f0;
    int64_t a = (int64_t)f0, b = a + 1;
    *w0 = (a >= 0 && a < size) ? 1.0f - frac : 0.0f;
    *w1 = (b >= 0 && b < size) ? frac : 0.0f;
    *i0 = a < 0 ? 0 : (a >= size ? size - 1 : a);
    *i1 = b < 0 ? 0 : (b >= size ? size - 1 : b);
}

/* the four (z, y) rows of a sample's cell: row r = (a, b) starts at grid + base[r] * C, and the
   two x corners are at offsets i0 * C and i1 * C from it */
typedef struct { int64_t base[4], i0, i1; float w[4], wi0, wi1; } cell_t;

static inline void dense_cell(const float *x, int64_t X, int64_t Y, int64_t Z, cell_t *cell) {
    int64_t k[2], l[2];
    float wk[2], wl[2];
    axis_corners(x[0], X, &cell->i0, &cell->i1, &cell->wi0, &cell->wi1);
    axis_corners(x[1], Y, &k[0], &k[1], &wk[0], &wk[1]);
    axis_corners(x[2], Z, &l[0], &l[1], &wl[0], &wl[1]);
    for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) {
            cell->base[2 * a + b] = (l[a] * Y + k[b]) * X;
            cell->w[2 * a + b] = wl[a] * wk[b];
        }
}

/* World point p -> normalised x = (p - box[a]) * box[3 + a] - 1 (box NULL: p is normalised). */
static inline void dense_normalise(const float *p, const float *box, float *x) {
    if (!box) { x[0] = p[0]; x[1] = p[1]; x[2] = p[2]; return; }
    for (int a = 0; a < 3; ++a) x[a] = (p[a] - box[a]) * box[3 + a] - 1.0f;
}

/* One channel (C == 1) at normalised x, optionally softplus(value + shift) (threshold 20, as torch). */
static inline float dense_scalar(const float *grid, int64_t X, int64_t Y, int64_t Z, const float *x,
                                 int softplus, float shift) {
    cell_t cell;
    dense_cell(x, X, Y, Z, &cell);
    float acc = 0.0f;
    for (int r = 0; r < 4; ++r) {
        const float *row = grid + cell.base[r];
        acc += cell.w[r] * (cell.wi0 * row[cell.i0] + cell.wi1 * row[cell.i1]);
    }
    if (softplus) {
        acc += shift;
        acc = acc > 20.0f ? acc : log1pf(expf(acc));
    }
    return acc;
}
