/* Opus towards browsers, what each encoder setting costs and sounds like:
 * reads 8 kHz mono 16-bit speech (raw, as the gateway has it after G.711),
 * encodes it in 20 ms frames as the gateway does (VoIP application,
 * 16 kbit/s unless a third argument says otherwise) at every complexity and in CELT-only mode, decodes each back
 * to 8 kHz and writes it beside the input, so that a speech-quality
 * measure can compare the two (scripts/bench/opus-quality.sh runs PESQ).
 * Prints the encoder's time per frame for each setting.
 *
 *     cc -O2 scripts/bench/opus-quality.c -o /tmp/opus-quality -lopus
 *     /tmp/opus-quality speech-8k.raw out-dir
 *
 * Needs libopus's headers (Debian: libopus-dev).
 */
#include <opus/opus.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FRAME 160

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

/* Encodes and decodes `pcm` (frames * FRAME samples) with `complexity`
 * (-1: CELT-only, complexity 0) into out/<name>.raw; returns µs per frame
 * of encoding and stores the average packet size. */
static double run(const short *pcm, long frames, int complexity, int bitrate, const char *path, int *bytes) {
    int err;
    int app = complexity < 0 ? OPUS_APPLICATION_RESTRICTED_LOWDELAY : OPUS_APPLICATION_VOIP;
    OpusEncoder *enc = opus_encoder_create(8000, 1, app, &err);
    OpusDecoder *dec = opus_decoder_create(8000, 1, &err);
    if (!enc || !dec) {
        fprintf(stderr, "libopus: %s\n", opus_strerror(err));
        exit(1);
    }
    opus_encoder_ctl(enc, OPUS_SET_BITRATE(bitrate));
    opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(complexity < 0 ? 0 : complexity));
    FILE *out = fopen(path, "wb");
    if (!out) {
        perror(path);
        exit(1);
    }
    unsigned char packet[4000];
    short decoded[FRAME];
    double encoding = 0;
    long total = 0;
    for (long f = 0; f < frames; f++) {
        double t0 = now_us();
        int len = opus_encode(enc, pcm + f * FRAME, FRAME, packet, sizeof packet);
        encoding += now_us() - t0;
        if (len < 0) {
            fprintf(stderr, "encode: %s\n", opus_strerror(len));
            exit(1);
        }
        total += len;
        int n = opus_decode(dec, packet, len, decoded, FRAME, 0);
        if (n != FRAME) {
            fprintf(stderr, "decode: %d\n", n);
            exit(1);
        }
        fwrite(decoded, sizeof(short), FRAME, out);
    }
    fclose(out);
    opus_encoder_destroy(enc);
    opus_decoder_destroy(dec);
    *bytes = (int)(total / frames);
    return encoding / frames;
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s speech-8k-s16le.raw out-dir [bit rate, default 16000]\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    fseek(in, 0, SEEK_END);
    long frames = ftell(in) / (long)(sizeof(short) * FRAME);
    rewind(in);
    short *pcm = malloc(frames * FRAME * sizeof(short));
    if (!pcm || fread(pcm, sizeof(short) * FRAME, frames, in) != (size_t)frames) {
        fprintf(stderr, "cannot read %ld frames of %s\n", frames, argv[1]);
        return 1;
    }
    fclose(in);
    int bitrate = argc == 4 ? atoi(argv[3]) : 16000;
    printf("libopus %s, %ld frames of 20 ms\n", opus_get_version_string(), frames);
    char name[32], path[4096];
    for (int c = 10; c >= -1; c--) {
        int bytes;
        if (c < 0)
            snprintf(name, sizeof name, "celt");
        else
            snprintf(name, sizeof name, "complexity-%d", c);
        snprintf(path, sizeof path, "%s/%s.raw", argv[2], name);
        double us = run(pcm, frames, c, bitrate, path, &bytes);
        printf("%s %.1f us per frame, %d bytes per frame\n", name, us, bytes);
    }
    free(pcm);
    return 0;
}
