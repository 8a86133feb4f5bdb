/* Opus encoder cost by complexity, as the gateway encodes towards browsers:
 * 8 kHz mono, VoIP application, 16 kbit/s, 20 ms frames of a voice-like
 * signal (a gliding, pulsing tone with noise).
 *
 *     cc -O2 scripts/bench/opus-complexity.c -o /tmp/opus-complexity -lopus -lm
 *     /tmp/opus-complexity
 *
 * That links Debian's libopus (libopus-dev, 1.3.1 on Debian 12). The
 * gateway links libopus 1.5 from libopus_sys's vendored sources (decision
 * 0028); to measure that one, build the gateway and replace `-lopus` with
 * `-I<out>/include <out>/lib/libopus.a`, <out> being
 * target-bench/release/build/libopus_sys-<hash>/out. Prints µs per frame and
 * the share of one core a stream takes, twice over (the second pass is the
 * one to read: the first warms caches and clocks).
 */
#include <math.h>
#include <opus/opus.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FRAMES 500
#define ROUNDS 6
static short pcm[FRAMES][160];

static double encode_us(int complexity, int *bytes) {
    int err;
    OpusEncoder *e = opus_encoder_create(8000, 1, OPUS_APPLICATION_VOIP, &err);
    opus_encoder_ctl(e, OPUS_SET_BITRATE(16000));
    opus_encoder_ctl(e, OPUS_SET_COMPLEXITY(complexity));
    unsigned char out[4000];
    long total = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < ROUNDS; r++)
        for (int f = 0; f < FRAMES; f++) total += opus_encode(e, pcm[f], 160, out, sizeof out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    opus_encoder_destroy(e);
    *bytes = (int)(total / (ROUNDS * FRAMES));
    return ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3) / (ROUNDS * FRAMES);
}

int main(void) {
    srand(1);
    for (int f = 0; f < FRAMES; f++)
        for (int i = 0; i < 160; i++) {
            double t = (f * 160 + i) / 8000.0;
            pcm[f][i] = (short)(6000 * sin(2 * M_PI * (200 + 100 * sin(t * 3)) * t) * (0.5 + 0.5 * sin(t * 5)) + (rand() % 400 - 200));
        }
    printf("libopus %s\n", opus_get_version_string());
    for (int pass = 1; pass <= 2; pass++)
        for (int c = 10; c >= 0; c--) {
            int bytes;
            double us = encode_us(c, &bytes);
            printf("pass %d complexity %2d: %6.1f us per 20 ms frame, %.2f %% of a core per stream, %d bytes a frame\n", pass, c, us, us / 200.0, bytes);
        }
    return 0;
}
