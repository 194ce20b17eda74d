/* y = x @ w^T + b for the model's linear layers, with w packed in panels of 24 output columns.
 *
 * During beam search each decode step multiplies 4 rows per image (one per beam) by every decoder
 * weight, 552 MB of fp32 for GPT-2. At one image the step is bound by how fast those weights
 * stream from memory; at a batch of 8 (32 rows) by arithmetic. The panel layout serves both:
 * a panel is k x 24 floats, contiguous, so one image reads the weights as a single sequential
 * stream (software prefetch keeps it ahead), and a block of 4 input rows x 24 columns keeps 12
 * accumulators in registers, with no horizontal sums, while the panel is reused from cache for
 * every further block of 4 rows. native.py packs the weights, compiles this file and checks it
 * against torch before anything uses it.
 *
 * Built with -mavx2 -mfma -fopenmp. The OpenMP runtime must be the one torch already uses
 * (native.py links against it and checks), so this shares torch's worker threads.
 */
#include <immintrin.h>

#define PANEL 24              /* output columns per panel: three 8-float vectors */
#define PREFETCH_AHEAD 1024   /* floats (4 KB) ahead of the panel rows being read */

/* x: (m, k); panels: (ceil(n / 24), k, 24), zero-padded past n; b: (n) or NULL; y: (m, n).
 * All contiguous fp32. */
void linear_panels(const float *x, long m, long k, const float *panels, const float *b, float *y,
                   long n, int threads) {
    long panel_count = (n + PANEL - 1) / PANEL;
    /* Two panels at a time, handed out as threads come free: in a server another thread can take
     * a core for a while, and a static split would leave the other core waiting at the end. */
    #pragma omp parallel for schedule(dynamic, 2) num_threads(threads)
    for (long p = 0; p < panel_count; p++) {
        const float *panel = panels + p * k * PANEL;
        long column = p * PANEL, width = n - column < PANEL ? n - column : PANEL;
        for (long g = 0; g < m; g += 4) {
            /* A last block of fewer than 4 rows repeats its last row; the copies are not written. */
            long last = m - 1;
            const float *x0 = x + g * k;
            const float *x1 = x + (g + 1 < last ? g + 1 : last) * k;
            const float *x2 = x + (g + 2 < last ? g + 2 : last) * k;
            const float *x3 = x + (g + 3 < last ? g + 3 : last) * k;
            __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00, c12 = c00;
            __m256 c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
            const float *w = panel;
            for (long i = 0; i < k; i++, w += PANEL) {
                if (g == 0) {  /* later blocks find the panel in cache */
                    _mm_prefetch((const char *)(w + PREFETCH_AHEAD), _MM_HINT_T0);
                    _mm_prefetch((const char *)(w + PREFETCH_AHEAD + 16), _MM_HINT_T0);
                }
                __m256 w0 = _mm256_loadu_ps(w), w1 = _mm256_loadu_ps(w + 8), w2 = _mm256_loadu_ps(w + 16);
                __m256 a = _mm256_broadcast_ss(x0 + i);
                c00 = _mm256_fmadd_ps(a, w0, c00); c01 = _mm256_fmadd_ps(a, w1, c01); c02 = _mm256_fmadd_ps(a, w2, c02);
                a = _mm256_broadcast_ss(x1 + i);
                c10 = _mm256_fmadd_ps(a, w0, c10); c11 = _mm256_fmadd_ps(a, w1, c11); c12 = _mm256_fmadd_ps(a, w2, c12);
                a = _mm256_broadcast_ss(x2 + i);
                c20 = _mm256_fmadd_ps(a, w0, c20); c21 = _mm256_fmadd_ps(a, w1, c21); c22 = _mm256_fmadd_ps(a, w2, c22);
                a = _mm256_broadcast_ss(x3 + i);
                c30 = _mm256_fmadd_ps(a, w0, c30); c31 = _mm256_fmadd_ps(a, w1, c31); c32 = _mm256_fmadd_ps(a, w2, c32);
            }
            float block[4][PANEL];
            _mm256_storeu_ps(block[0], c00); _mm256_storeu_ps(block[0] + 8, c01); _mm256_storeu_ps(block[0] + 16, c02);
            _mm256_storeu_ps(block[1], c10); _mm256_storeu_ps(block[1] + 8, c11); _mm256_storeu_ps(block[1] + 16, c12);
            _mm256_storeu_ps(block[2], c20); _mm256_storeu_ps(block[2] + 8, c21); _mm256_storeu_ps(block[2] + 16, c22);
            _mm256_storeu_ps(block[3], c30); _mm256_storeu_ps(block[3] + 8, c31); _mm256_storeu_ps(block[3] + 16, c32);
            for (long r = g; r < m && r < g + 4; r++) {
                float *row = y + r * n + column;
                for (long j = 0; j < width; j++) row[j] = block[r - g][j] + (b ? b[column + j] : 0.0f);
            }
        }
    }
}
