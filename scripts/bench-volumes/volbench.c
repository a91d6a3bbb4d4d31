/* The file workloads of scripts/bench-volumes.sh, timed inside the container (so a VM's boot
 * is not counted): prints the elapsed nanoseconds of one workload on FILE.
 *   volbench write FILE     64 MiB in 1 MiB writes, then fsync
 *   volbench read FILE      the 64 MiB file in 1 MiB reads
 *   volbench randread FILE  4096 reads of 4 KiB at pseudo-random aligned offsets
 * Built static by the script (gcc -static), so any image can run it. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIZE (64u << 20)
#define CHUNK (1u << 20)
#define BLOCK 4096u
#define RANDOM_READS 4096u

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int fail(const char *what, const char *path) {
    perror(what);
    fprintf(stderr, "volbench: %s failed on %s\n", what, path);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: volbench write|read|randread FILE\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    static char buf[CHUNK];
    memset(buf, 0xa5, sizeof buf);
    uint64_t start, end;
    if (strcmp(mode, "write") == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return fail("open", path);
        start = now_ns();
        for (unsigned done = 0; done < SIZE; done += CHUNK)
            if (write(fd, buf, CHUNK) != (ssize_t)CHUNK) return fail("write", path);
        if (fsync(fd) != 0) return fail("fsync", path);
        end = now_ns();
        close(fd);
    } else if (strcmp(mode, "read") == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) return fail("open", path);
        start = now_ns();
        for (unsigned done = 0; done < SIZE; done += CHUNK)
            if (read(fd, buf, CHUNK) != (ssize_t)CHUNK) return fail("read", path);
        end = now_ns();
        close(fd);
    } else if (strcmp(mode, "randread") == 0) {
        int fd = open(path, O_RDONLY);
        if (fd < 0) return fail("open", path);
        uint32_t x = 2463534242u; /* xorshift32: the same offsets in every run */
        start = now_ns();
        for (unsigned i = 0; i < RANDOM_READS; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            off_t offset = (off_t)(x % (SIZE / BLOCK)) * BLOCK;
            if (pread(fd, buf, BLOCK, offset) != (ssize_t)BLOCK) return fail("pread", path);
        }
        end = now_ns();
        close(fd);
    } else {
        fprintf(stderr, "volbench: unknown workload %s\n", mode);
        return 2;
    }
    printf("%llu\n", (unsigned long long)(end - start));
    return 0;
}
