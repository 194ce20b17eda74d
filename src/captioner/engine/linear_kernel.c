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
#include <stdlib.h>

#ifdef __AVX512F__
#define VECTOR __m512
#define WIDTH 16
#define ZERO _mm512_setzero_ps
#define LOAD _mm512_loadu_ps
#define STORE _mm512_storeu_ps
#define BROADCAST(p) _mm512_set1_ps(*(p))
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define BIG_BLOCK 8
#else
#define VECTOR __m256
#define WIDTH 8
#define ZERO _mm256_setzero_ps
#define LOAD _mm256_loadu_ps
#define STORE _mm256_storeu_ps
#define BROADCAST(p) _mm256_broadcast_ss(p)
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define BIG_BLOCK 4
#endif
#define PANEL (3 * WIDTH)
#define PREFETCH_AHEAD 1024 /* floats (4 KB) ahead of the panel rows being read, for one block */
#ifndef K_CHUNK
#define K_CHUNK 64 /* panel rows per chunk, for a few blocks */
#endif
#ifndef CHUNKED_MAX_BLOCKS
#define CHUNKED_MAX_BLOCKS 8
#endif

int panel_width(void) { return PANEL; }

/* ROWS rows of x times `count` rows of one panel (from w), into acc (ROWS x PANEL): stored where
 * first, else added. The loops over r are unrolled, so the 3 x ROWS accumulators stay in
 * registers. Meanwhile `fetch` panel rows from `prefetch` on are fetched into L2, one every
 * `every` rows computed: spread out, so that the memory works all along instead of queueing a
 * burst of requests at the start. */
#define BLOCK(ROWS)                                                                                \
    static inline void block_##ROWS(const float *const *xs, long count, const float *w,           \
                                    const float *prefetch, long fetch, int every, int first,       \
                                    float (*acc)[PANEL]) {                                         \
        VECTOR c[ROWS][3];                                                                         \
        _Pragma("GCC unroll 8") for (int r = 0; r < ROWS; r++) {                                   \
            _Pragma("GCC unroll 3") for (int v = 0; v < 3; v++)                                    \
                c[r][v] = first ? ZERO() : LOAD(acc[r] + v * WIDTH);                               \
        }                                                                                          \
        int countdown = 1;                                                                         \
        for (long i = 0; i < count; i++, w += PANEL) {                                             \
            if (fetch > 0 && --countdown == 0) {                                                   \
                countdown = every;                                                                 \
                fetch--;                                                                           \
                _Pragma("GCC unroll 3") for (int v = 0; v < PANEL; v += 16) /* 64-byte lines */    \
                    _mm_prefetch((const char *)(prefetch + v), _MM_HINT_T1);                       \
                prefetch += PANEL;                                                                 \
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
            STORE(acc[r], c[r][0]); STORE(acc[r] + WIDTH, c[r][1]); STORE(acc[r] + 2 * WIDTH, c[r][2]); \
        }                                                                                          \
    }
BLOCK(4)
#if BIG_BLOCK == 8
BLOCK(8)
#endif

/* Rows from..to-1 of y's columns column..column+width-1: their sums (acc[0] is row `from`) plus
 * the bias. */
static inline void write_rows(float *y, long n, long column, long width, float (*acc)[PANEL],
                              long from, long to, const float *b) {
    if (width == PANEL) { /* every panel but maybe the last: whole vectors */
        VECTOR b0 = b ? LOAD(b + column) : ZERO(), b1 = b ? LOAD(b + column + WIDTH) : ZERO(),
               b2 = b ? LOAD(b + column + 2 * WIDTH) : ZERO();
        for (long r = from; r < to; r++) {
            float *row = y + r * n + column;
            const float *sums = acc[r - from];
            STORE(row, ADD(LOAD(sums), b0));
            STORE(row + WIDTH, ADD(LOAD(sums + WIDTH), b1));
            STORE(row + 2 * WIDTH, ADD(LOAD(sums + 2 * WIDTH), b2));
        }
        return;
    }
    for (long r = from; r < to; r++) {
        float *row = y + r * n + column;
        for (long j = 0; j < width; j++) row[j] = acc[r - from][j] + (b ? b[column + j] : 0.0f);
    }
}

/* x: (m, k); panels: (ceil(n / PANEL), k, PANEL), zero-padded past n; b: (n) or NULL; y: (m, n).
 * All contiguous fp32. Returns 0, or -1 where memory for the partial sums ran out. */
int linear_panels(const float *x, long m, long k, const float *panels, const float *b, float *y,
                  long n, int threads) {
    long panel_count = (n + PANEL - 1) / PANEL;
    /* Blocks of BIG_BLOCK rows, the last of 4 where no more are left: block j starts at row
     * j * BIG_BLOCK. A last block of fewer rows repeats its last row; the copies are not written. */
    long blocks = (m + BIG_BLOCK - 1) / BIG_BLOCK;
    /* How a panel meets the blocks, by how often it is reused:
     * - one block (one image's beams): the panel streams straight through, bound by memory,
     *   prefetched PREFETCH_AHEAD floats ahead;
     * - a few blocks (a batch of images' beams): K_CHUNK panel rows at a time go through every
     *   block, and each block prefetches its share of the next chunk. Memory then works during all
     *   of the arithmetic; streaming the whole panel in the first block left it idle during the
     *   others';
     * - many blocks (the encoder's 197 rows an image): bound by arithmetic; the whole panel goes
     *   through each block in turn, the first one prefetching (chunks were 10-40% slower here). */
    int chunked = blocks > 1 && blocks <= CHUNKED_MAX_BLOCKS;
    long chunk = chunked ? K_CHUNK : k;
    long partial_rows = chunked ? blocks * BIG_BLOCK : BIG_BLOCK;
    /* Chunked, the blocks' shares of the next chunk are fetched one row every `blocks` rows
     * computed, evenly over the whole chunk: fetched in a burst as each block began, they
     * competed with that block's own loads. */
    int every = chunked ? (int)blocks : 1;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|| : failed)
    {
        float (*acc)[PANEL] = malloc(sizeof(float) * PANEL * partial_rows);
        if (!acc) failed = 1;
        /* Panels are handed out as threads come free: in a server another thread can take a core
         * for a while, and a static split would leave the other core waiting at the end. */
        #pragma omp for schedule(dynamic, 48 / PANEL)
        for (long p = 0; p < panel_count; p++) {
            if (!acc) continue;
            const float *panel = panels + p * k * PANEL;
            long column = p * PANEL, width = n - column < PANEL ? n - column : PANEL;
            for (long start = 0; start < k; start += chunk) {
                long count = k - start < chunk ? k - start : chunk;
                const float *w = panel + start * PANEL;
                /* Past the panel's end this fetches the next panel: the next one handed out. */
                const float *next = w + (chunked ? count * PANEL : PREFETCH_AHEAD);
                long share = (count + blocks - 1) / blocks;
                for (long g = 0; g < m;) {
                    int rows = BIG_BLOCK == 8 && m - g > 4 ? 8 : 4;
                    long block = g / BIG_BLOCK;
                    const float *xs[8];
                    for (int r = 0; r < rows; r++) xs[r] = x + (g + r < m ? g + r : m - 1) * k + start;
                    const float *prefetch = chunked ? next + block * share * PANEL : next;
                    long fetch = chunked ? share : (block == 0 ? count : 0);
                    float (*out)[PANEL] = chunked ? acc + g : acc;
#if BIG_BLOCK == 8
                    if (rows == 8) block_8(xs, count, w, prefetch, fetch, every, start == 0, out); else
#endif
                    block_4(xs, count, w, prefetch, fetch, every, start == 0, out);
                    if (!chunked) /* whole panel done for these rows */
                        write_rows(y, n, column, width, out, g, g + rows < m ? g + rows : m, b);
                    g += rows;
                }
            }
            if (chunked) write_rows(y, n, column, width, acc, 0, m, b);
        }
        free(acc);
    }
    return failed ? -1 : 0;
}
