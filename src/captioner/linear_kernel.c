/* y = x @ w^T + b for the model's linear layers, with w packed in panels of PANEL output columns.
 *
 * During beam search each decode step multiplies 4 rows per image (one per beam) by every decoder
 * weight, 552 MB of fp32 for GPT-2. At one image the step is bound by how fast those weights
 * stream from memory; at a batch of 8 (32 rows) by arithmetic. The panel layout serves both:
 * a panel is k x PANEL floats, contiguous, so one image reads the weights as a single sequential
 * stream (software prefetch keeps it ahead), and a block of rows x PANEL columns keeps its
 * accumulators in registers, with no horizontal sums, while the panel is reused from cache for
 * every further block of rows. native.py packs the weights, compiles this file and checks it
 * against torch before anything uses it.
 *
 * Two builds of this one file: with -mavx512f, panels of 48 columns (three 16-float vectors) and
 * blocks of 8 rows (24 accumulators of the 32 registers); with -mavx2 -mfma only, panels of 24
 * (three 8-float vectors) and blocks of 4 rows (12 of 16). native.py asks panel_width() which.
 * Both with -fopenmp; the OpenMP runtime must be the one torch already uses (native.py links
 * against it and checks), so this shares torch's worker threads.
 */
#include <immintrin.h>

#ifdef __AVX512F__
#define VECTOR __m512
#define WIDTH 16
#define ZERO _mm512_setzero_ps
#define LOAD _mm512_loadu_ps
#define STORE _mm512_storeu_ps
#define BROADCAST(p) _mm512_set1_ps(*(p))
#define FMA _mm512_fmadd_ps
#define BIG_BLOCK 8
#else
#define VECTOR __m256
#define WIDTH 8
#define ZERO _mm256_setzero_ps
#define LOAD _mm256_loadu_ps
#define STORE _mm256_storeu_ps
#define BROADCAST(p) _mm256_broadcast_ss(p)
#define FMA _mm256_fmadd_ps
#define BIG_BLOCK 4
#endif
#define PANEL (3 * WIDTH)
#define PREFETCH_AHEAD 1024 /* floats (4 KB) ahead of the panel rows being read */

int panel_width(void) { return PANEL; }

/* ROWS rows of x times one panel: out[r][j] = sum_i xs[r][i] * panel[i][j]. The loops over r are
 * unrolled, so the 3 x ROWS accumulators stay in registers. */
#define BLOCK(ROWS)                                                                                \
    static inline void block_##ROWS(const float *const *xs, long k, const float *panel,           \
                                    int prefetch, float out[][PANEL]) {                            \
        VECTOR c[ROWS][3];                                                                         \
        _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; r++) c[r][0] = c[r][1] = c[r][2] = ZERO(); \
        const float *w = panel;                                                                    \
        for (long i = 0; i < k; i++, w += PANEL) {                                                 \
            if (prefetch) { /* later blocks find the panel in cache */                             \
                _Pragma("GCC unroll 3") for (int v = 0; v < PANEL; v += 16)                        \
                    _mm_prefetch((const char *)(w + PREFETCH_AHEAD + v), _MM_HINT_T0);              \
            }                                                                                      \
            VECTOR w0 = LOAD(w), w1 = LOAD(w + WIDTH), w2 = LOAD(w + 2 * WIDTH);                   \
            _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; r++) {                               \
                VECTOR a = BROADCAST(xs[r] + i);                                                   \
                c[r][0] = FMA(a, w0, c[r][0]);                                                     \
                c[r][1] = FMA(a, w1, c[r][1]);                                                     \
                c[r][2] = FMA(a, w2, c[r][2]);                                                     \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; r++) {                                   \
            STORE(out[r], c[r][0]); STORE(out[r] + WIDTH, c[r][1]); STORE(out[r] + 2 * WIDTH, c[r][2]); \
        }                                                                                          \
    }
BLOCK(4)
#if BIG_BLOCK == 8
BLOCK(8)
#endif

/* x: (m, k); panels: (ceil(n / PANEL), k, PANEL), zero-padded past n; b: (n) or NULL; y: (m, n).
 * All contiguous fp32. */
void linear_panels(const float *x, long m, long k, const float *panels, const float *b, float *y,
                   long n, int threads) {
    long panel_count = (n + PANEL - 1) / PANEL;
    /* Panels are handed out as threads come free: in a server another thread can take a core for
     * a while, and a static split would leave the other core waiting at the end. */
    #pragma omp parallel for schedule(dynamic, 48 / PANEL) num_threads(threads)
    for (long p = 0; p < panel_count; p++) {
        const float *panel = panels + p * k * PANEL;
        long column = p * PANEL, width = n - column < PANEL ? n - column : PANEL;
        for (long g = 0; g < m;) {
            /* Blocks of 8 rows where more than 4 are left (AVX-512), else of 4. A last block of
             * fewer rows repeats its last row; the copies are not written. */
            int rows = BIG_BLOCK == 8 && m - g > 4 ? 8 : 4;
            const float *xs[8];
            for (int r = 0; r < rows; r++) xs[r] = x + (g + r < m ? g + r : m - 1) * k;
            float out[8][PANEL];
#if BIG_BLOCK == 8
            if (rows == 8) block_8(xs, k, panel, g == 0, out); else
#endif
            block_4(xs, k, panel, g == 0, out);
            for (long r = g; r < m && r < g + rows; r++) {
                float *row = y + r * n + column;
                for (long j = 0; j < width; j++) row[j] = out[r - g][j] + (b ? b[column + j] : 0.0f);
            }
            g += rows;
        }
    }
}
