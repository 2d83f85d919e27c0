/* Exact mode's coding pass of one convolution layer, AVX-512 (golden/native.py builds it).
 *
 * The same values as golden.kernels.exact_conv_code without its float64 recomputation: per
 * image, the patch norms ‖x_patch‖₂ (the kernel window's box sum of the source's Σ_c x²,
 * rows then columns, in float32, then sqrt and the margin), and per channel row the float32
 * potential r = fl(fl(conv + w2 · x2) + B) / θ, its rounding tolerance
 * tol = (|B| + ‖x_patch‖₂ · ‖w_o‖₂ + |w2 · x2|) · g + |r| · e, the count k of thresholds r
 * reaches (the phase T − k, −1 for k = 0), the near flag (r within tol of the nearest
 * threshold below or above), the decoded value, and per pixel Σ_c dec² (channel order) and
 * the spikes. Sixteen neurons at a time: the thresholds are mask compares, the table
 * lookups (the thresholds around r, the decoded value, the phase) are register permutes
 * (gathers for tables of more than 32 entries). Compiled with -ffp-contract=off: every
 * product and sum rounds as the Numba kernel's do, so the outputs are bit for bit its.
 *
 * exact_conv_supported() says whether this build has the kernel (the compiler targeted
 * AVX-512); where it has not, the caller runs the Numba kernel.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>

int exact_conv_supported(void) { return 1; }

static inline __m512 lut_ps(__m512i k, const float *tab, __m512 t0, __m512 t1, int small)
{
    return small ? _mm512_permutex2var_ps(t0, k, t1) : _mm512_i32gather_ps(k, tab, 4);
}

static inline __m512i lut_epi32(__m512i k, const int32_t *tab, __m512i t0, __m512i t1,
                                int small)
{
    return small ? _mm512_permutex2var_epi32(t0, k, t1) : _mm512_i32gather_epi32(k, tab, 4);
}

/* The float64 recomputation of one flagged neuron (b, c, oy, ox): Numba's float64_count
 * (golden/kernels.py), operation for operation: bias, then the groups in order, the
 * convolution as four partial sums over the input channels (c mod 4), each in the order ky,
 * kx, c, then (s0 + s1) + (s2 + s3). Returns how many thresholds (th64, ascending) the
 * float64 potential over θ reaches. */
typedef struct {
    int kh, kw, sy, sx, py, px, h, wd, cin;
    const int16_t *sp;      /* (N, C_in, H, W) the source's phases, or */
    const double *x64;      /* (N, C_in, H, W) its values (the input layer) when not NULL */
    const double *table64;  /* the phases' values */
    const double *w64;      /* (C, kh, kw, C_in) */
    const int16_t *sp2;     /* the shortcut source's phases (N, C2, H2, W2) */
    int c2, h2, w2d, s2y, s2x;
    const double *table2_64, *w2_64, *bias64, *theta64, *th64;
    int conv_first, nt;
} recompute_t;

static int count64(const recompute_t *rc, int b, int c, int oy, int ox, int sc, int ci2, int q,
                   int per)
{
    double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
    const int cin = rc->cin;
    for (int ky = 0; ky < rc->kh; ky++) {
        int y = oy * rc->sy - rc->py + ky;
        if (y < 0 || y >= rc->h)
            continue;
        for (int kx = 0; kx < rc->kw; kx++) {
            int x = ox * rc->sx - rc->px + kx;
            if (x < 0 || x >= rc->wd)
                continue;
            const double *wrow = rc->w64 + (((size_t)c * rc->kh + ky) * rc->kw + kx) * cin;
            const size_t plane = (size_t)rc->h * rc->wd;
            const size_t at = (size_t)b * cin * plane + (size_t)y * rc->wd + x;
            int ci = 0;
            if (rc->x64) {
                const double *xv = rc->x64 + at;
                for (; ci + 4 <= cin; ci += 4) {
                    a0 += wrow[ci] * xv[ci * plane];
                    a1 += wrow[ci + 1] * xv[(ci + 1) * plane];
                    a2 += wrow[ci + 2] * xv[(ci + 2) * plane];
                    a3 += wrow[ci + 3] * xv[(ci + 3) * plane];
                }
                for (; ci < cin; ci++)
                    a0 += wrow[ci] * xv[ci * plane];
            } else {
                const int16_t *sv = rc->sp + at;
                const double *t = rc->table64 + 1;
                for (; ci + 4 <= cin; ci += 4) {
                    a0 += wrow[ci] * t[sv[ci * plane]];
                    a1 += wrow[ci + 1] * t[sv[(ci + 1) * plane]];
                    a2 += wrow[ci + 2] * t[sv[(ci + 2) * plane]];
                    a3 += wrow[ci + 3] * t[sv[(ci + 3) * plane]];
                }
                for (; ci < cin; ci++)
                    a0 += wrow[ci] * t[sv[ci * plane]];
            }
        }
    }
    double conv = (a0 + a1) + (a2 + a3);
    double sc64 = 0.0;
    if (sc)
        sc64 = rc->table2_64[rc->sp2[(((size_t)b * rc->c2 + ci2) * rc->h2 + (size_t)oy * rc->s2y) *
                                         rc->w2d + (size_t)ox * rc->s2x] + 1] * rc->w2_64[c];
    double b64 = rc->bias64[(size_t)c * per + q];
    double z64 = rc->conv_first ? (b64 + conv) + sc64 : (b64 + sc64) + conv;
    double r64 = z64 / rc->theta64[c];
    int k = 0;
    for (int j = 0; j < rc->nt; j++)
        k += r64 >= rc->th64[j];
    return k;
}

/* The coding pass's arguments (exact_conv_rows's, less the recomputation's). */
typedef struct {
    int channels, oh, ow, h, wd, kh, kw, sy, sx, py, px;
    const float *zc, *bias, *babs, *sq_src, *wn;
    double norm_margin;
    const float *dec2, *w2;
    int c2, h2, w2d, s2y, s2x, off2, has2;
    const float *theta, *gs;
    float e;
    int nt;
    const float *pad, *tabk;
    const int32_t *phk;
    int16_t *phase;
    float *dec, *sq;
    int32_t *fired;
    int64_t *nflag;
} pass_t;

/* Images [b0, b1) of the pass: see the top of this file. */
static int rows(const recompute_t *rc, const pass_t *ps, int b0, int b1)
{
    const int channels = ps->channels, oh = ps->oh, ow = ps->ow, h = ps->h, wd = ps->wd;
    const int kh = ps->kh, kw = ps->kw, sy = ps->sy, sx = ps->sx, py = ps->py, px = ps->px;
    const float *zc = ps->zc, *bias = ps->bias, *babs = ps->babs, *sq_src = ps->sq_src;
    const float *wn = ps->wn, *dec2 = ps->dec2, *w2 = ps->w2, *theta = ps->theta, *gs = ps->gs;
    const double norm_margin = ps->norm_margin;
    const int c2 = ps->c2, h2 = ps->h2, w2d = ps->w2d, s2y = ps->s2y, s2x = ps->s2x;
    const int off2 = ps->off2, has2 = ps->has2, nt = ps->nt;
    const float e = ps->e, *pad = ps->pad, *tabk = ps->tabk;
    const int32_t *phk = ps->phk;
    int16_t *phase = ps->phase;
    float *dec = ps->dec, *sq = ps->sq;
    int32_t *fired = ps->fired;
    int64_t *nflag = ps->nflag;
    const int per = oh * ow;
    const int small = nt + 2 <= 32;
    float padx[32], tabx[32];
    int32_t phx[32];
    for (int i = 0; i < 32; i++) {
        padx[i] = i < nt + 2 ? pad[i] : INFINITY;
        tabx[i] = i < nt + 1 ? tabk[i] : 0.0f;
        phx[i] = i < nt + 1 ? phk[i] : -1;
    }
    const __m512 pad0 = _mm512_loadu_ps(padx), pad1 = _mm512_loadu_ps(padx + 16);
    const __m512 tab0 = _mm512_loadu_ps(tabx), tab1 = _mm512_loadu_ps(tabx + 16);
    const __m512i ph0 = _mm512_loadu_si512(phx), ph1 = _mm512_loadu_si512(phx + 16);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512 ve = _mm512_set1_ps(e);
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const int wp = (ow - 1) * sx + kw;
    float *pix = malloc(sizeof(float) * per);
    float *pbuf = malloc(sizeof(float) * per);
    float *acc = malloc(sizeof(float) * per);
    int32_t *hits = malloc(sizeof(int32_t) * per);
    float *hsum = malloc(sizeof(float) * (size_t)h * ow);
    float *rowp = malloc(sizeof(float) * wp);
    if (!pix || !pbuf || !acc || !hits || !hsum || !rowp) {
        free(pix), free(pbuf), free(acc), free(hits), free(hsum), free(rowp);
        return -2;
    }
    for (int b = b0; b < b1; b++) {
        if (rc->sp && !rc->x64) { /* the recomputation reads this image's source phases */
            const char *img = (const char *)(rc->sp + (size_t)b * rc->cin * rc->h * rc->wd);
            const size_t bytes = sizeof(int16_t) * (size_t)rc->cin * rc->h * rc->wd;
            for (size_t at = 0; at < bytes; at += 64)
                _mm_prefetch(img + at, _MM_HINT_T1);
        }
        /* ‖x_patch‖₂: rows (a zero-padded copy), then columns, then sqrt and the margin */
        for (int i = 0; i < wp; i++)
            rowp[i] = 0.0f;
        for (int y = 0; y < h; y++) {
            const float *src = sq_src + ((size_t)b * h + y) * wd;
            for (int i = px; i < px + wd && i < wp; i++)
                rowp[i] = src[i - px];
            float *hs = hsum + (size_t)y * ow;
            for (int ox = 0; ox < ow; ox++)
                hs[ox] = 0.0f;
            for (int kx = 0; kx < kw; kx++)
                for (int ox = 0; ox < ow; ox++)
                    hs[ox] += rowp[ox * sx + kx];
        }
        for (int oy = 0; oy < oh; oy++) {
            float *pr = pix + (size_t)oy * ow;
            for (int ox = 0; ox < ow; ox++)
                pr[ox] = 0.0f;
            for (int ky = 0; ky < kh; ky++) {
                int y = oy * sy - py + ky;
                if (y < 0 || y >= h)
                    continue;
                const float *hr = hsum + (size_t)y * ow;
                for (int ox = 0; ox < ow; ox++)
                    pr[ox] += hr[ox];
            }
            for (int ox = 0; ox < ow; ox++)
                pr[ox] = (float)((double)sqrtf(fmaxf(pr[ox], 0.0f)) * norm_margin);
        }
        for (int q = 0; q < per; q++)
            acc[q] = 0.0f, hits[q] = 0;
        int64_t flagged = 0;
        for (int c = 0; c < channels; c++) {
            const size_t row = ((size_t)b * channels + c) * per;
            const int ci2 = c - off2;
            const int sc = has2 && ci2 >= 0 && ci2 < c2;
            const float *xs = pbuf; /* the shortcut source's row, read at the output pixels */
            if (sc && s2y == 1 && s2x == 1 && w2d == ow && h2 >= oh) /* identity: in place */
                xs = dec2 + ((size_t)b * c2 + ci2) * h2 * w2d;
            else if (sc)
                for (int oy = 0; oy < oh; oy++) {
                    const float *xr = dec2 + (((size_t)b * c2 + ci2) * h2 + (size_t)oy * s2y) * w2d;
                    for (int ox = 0; ox < ow; ox++)
                        pbuf[oy * ow + ox] = xr[ox * s2x];
                }
            int rowflag = 0;
            const __m512 vtc = _mm512_set1_ps(theta[c]), vg = _mm512_set1_ps(gs[c]);
            const __m512 vwc = _mm512_set1_ps(wn[c]), vw2 = _mm512_set1_ps(sc ? w2[c] : 0.0f);
            const float *z = zc + row, *bb = bias + (size_t)c * per, *ba = babs + (size_t)c * per;
            for (int q = 0; q < per; q += 16) {
                const __mmask16 live = per - q >= 16 ? 0xffff : (__mmask16)((1u << (per - q)) - 1);
                __m512 v = _mm512_maskz_loadu_ps(live, z + q);
                __m512 m = _mm512_add_ps(_mm512_maskz_loadu_ps(live, ba + q),
                                         _mm512_mul_ps(_mm512_maskz_loadu_ps(live, pix + q), vwc));
                if (sc) {
                    __m512 p = _mm512_mul_ps(vw2, _mm512_maskz_loadu_ps(live, xs + q));
                    v = _mm512_add_ps(v, p);
                    m = _mm512_add_ps(m, _mm512_and_ps(p, sign));
                }
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(live, bb + q));
                __m512 r = _mm512_div_ps(v, vtc);
                __m512 tol = _mm512_add_ps(_mm512_mul_ps(m, vg),
                                           _mm512_mul_ps(_mm512_and_ps(r, sign), ve));
                __m512i k = _mm512_setzero_si512();
                for (int j = 0; j < nt; j++) {
                    __mmask16 ge = _mm512_cmp_ps_mask(r, _mm512_set1_ps(pad[j + 1]), _CMP_GE_OQ);
                    k = _mm512_mask_add_epi32(k, ge, k, one);
                }
                __m512 lo = lut_ps(k, pad, pad0, pad1, small);
                __m512 hi = lut_ps(_mm512_add_epi32(k, one), pad, pad0, pad1, small);
                __mmask16 near = _mm512_cmp_ps_mask(_mm512_sub_ps(r, lo), tol, _CMP_LE_OQ) |
                                 _mm512_cmp_ps_mask(_mm512_sub_ps(hi, r), tol, _CMP_LE_OQ);
                near &= live;
                if (near) { /* decided in float64 here, before the outputs */
                    int32_t kk[16];
                    _mm512_storeu_si512(kk, k);
                    for (unsigned bits = near; bits; bits &= bits - 1) {
                        int l = __builtin_ctz(bits), qq = q + l;
                        kk[l] = count64(rc, b, c, qq / ow, qq % ow, sc, ci2, qq, per);
                    }
                    k = _mm512_loadu_si512(kk);
                    rowflag += __builtin_popcount((unsigned)near);
                }
                __m512 d = lut_ps(k, tabk, tab0, tab1, small);
                __m512i ph = lut_epi32(k, phk, ph0, ph1, small);
                _mm512_mask_storeu_ps(dec + row + q, live, d);
                _mm256_mask_storeu_epi16(phase + row + q, live, _mm512_cvtepi32_epi16(ph));
                __m512 a = _mm512_maskz_loadu_ps(live, acc + q);
                _mm512_mask_storeu_ps(acc + q, live, _mm512_add_ps(a, _mm512_mul_ps(d, d)));
                __m512i hq = _mm512_maskz_loadu_epi32(live, hits + q);
                __mmask16 spk = _mm512_cmpgt_epi32_mask(k, _mm512_setzero_si512());
                _mm512_mask_storeu_epi32(hits + q, live, _mm512_mask_add_epi32(hq, spk, hq, one));
            }
            flagged += rowflag;
        }
        memcpy(sq + (size_t)b * per, acc, sizeof(float) * per);
        memcpy(fired + (size_t)b * per, hits, sizeof(int32_t) * per);
        nflag[b] = flagged;
    }
    free(pix), free(pbuf), free(acc), free(hits), free(hsum), free(rowp);
    return 0;
}
/* Every image, ``threads`` OpenMP threads over image ranges (the libgomp of Numba's "omp"
 * threading layer where that is the one loaded). Returns 0, or -2 where a thread could not
 * allocate its buffers. */
int exact_conv_rows(int threads, int n, int channels, int oh, int ow, const float *zc,
                    const float *bias, const float *babs, const float *sq_src, int h, int wd,
                    int kh, int kw, int sy, int sx, int py, int px, double norm_margin,
                    const float *wn, const float *dec2, int c2, int h2, int w2d, int s2y,
                    int s2x, int off2, const float *w2, int has2, const float *theta,
                    const float *gs, float e, int nt, const float *pad, const float *tabk,
                    const int32_t *phk, int16_t *phase, float *dec, float *sq, int32_t *fired,
                    int64_t *nflag, const int16_t *sp, const double *x64, int cin,
                    const double *table64, const double *w64, const int16_t *sp2,
                    const double *table2_64, const double *w2_64, const double *bias64,
                    const double *theta64, const double *th64, int conv_first)
{
    const recompute_t rc = {kh, kw, sy, sx, py, px, h, wd, cin, sp, x64, table64, w64, sp2,
                            c2, h2, w2d, s2y, s2x, table2_64, w2_64, bias64, theta64, th64,
                            conv_first, nt};
    const pass_t ps = {channels, oh, ow, h, wd, kh, kw, sy, sx, py, px, zc, bias, babs, sq_src,
                       wn, norm_margin, dec2, w2, c2, h2, w2d, s2y, s2x, off2, has2, theta, gs,
                       e, nt, pad, tabk, phk, phase, dec, sq, fired, nflag};
    int failed = 0;
    if (threads < 1)
        threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(| : failed)
    for (int t = 0; t < threads; t++) {
        int b0 = (int)((long)n * t / threads), b1 = (int)((long)n * (t + 1) / threads);
        failed |= rows(&rc, &ps, b0, b1) != 0;
    }
    return failed ? -2 : 0;
}
#else
int exact_conv_supported(void) { return 0; }
#endif
