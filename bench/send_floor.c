/* The simulator's floor without Python: one send() per MQTT PUBLISH over many loopback TCP
 * connections, in C. bench/simulator.py (--only floor) compiles and runs it against the same
 * counting sink as the engine, so its CPU per send is the least any sender that keeps "one packet
 * per message" can pay on this machine.
 *
 *   send_floor PORT PACKETS_FILE MODE SECONDS
 *
 * PACKETS_FILE (written by bench/simulator.py with tbspark.mqtt.codec): u32 n, u32 len, PUBLISH
 * bytes, then n times (u32 len, CONNECT bytes) — one CONNECT per connection.
 * MODE "paced": every connection sends at 10 Hz, woken every 5 ms like the engine (n/20 sends per
 * wake-up); "burst": round robin over all connections back to back, no sleeping.
 * Prints one JSON line: sends, user and sys microseconds per send.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(2); }

static uint32_t rd32(FILE *f) {
    uint32_t v;
    if (fread(&v, 4, 1, f) != 1) die("packets file truncated");
    return v;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double tv_us(struct timeval tv) { return tv.tv_sec * 1e6 + tv.tv_usec; }

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: send_floor PORT PACKETS_FILE paced|burst SECONDS\n"); return 2; }
    int port = atoi(argv[1]);
    int paced = strcmp(argv[3], "paced") == 0;
    double seconds = atof(argv[4]);
    FILE *f = fopen(argv[2], "rb");
    if (!f) die("packets file");
    uint32_t n = rd32(f), plen = rd32(f);
    char *pub = malloc(plen);
    if (fread(pub, 1, plen, f) != plen) die("packets file truncated");
    int *fds = malloc(sizeof(int) * n);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char buf[64];
    for (uint32_t i = 0; i < n; i++) {
        uint32_t clen = rd32(f);
        char *con = malloc(clen);
        if (fread(con, 1, clen, f) != clen) die("packets file truncated");
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
        if (send(fd, con, clen, 0) != (ssize_t)clen) die("send CONNECT");
        size_t got = 0;  /* readiness: the CONNACK (4 bytes) */
        while (got < 4) {
            ssize_t r = recv(fd, buf + got, 4 - got, 0);
            if (r <= 0) die("recv CONNACK");
            got += r;
        }
        free(con);
        fds[i] = fd;
    }
    fclose(f);
    struct rusage r0, r1;
    long sends = 0, short_sends = 0;
    double t0 = now_s(), end = t0 + seconds;
    getrusage(RUSAGE_SELF, &r0);
    if (paced) {
        uint32_t per_wake = n / 20 ? n / 20 : 1, next = 0;  /* 10 Hz per connection, 5 ms wake-ups */
        double wake = t0;
        while (wake < end) {
            for (uint32_t k = 0; k < per_wake; k++) {
                ssize_t w = send(fds[next], pub, plen, MSG_DONTWAIT);
                if (w != (ssize_t)plen) short_sends++;
                sends++;
                next = (next + 1) % n;
            }
            wake += 0.005;
            double d = wake - now_s();
            if (d > 0) {
                struct timespec ts = {0, (long)(d * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
    } else {
        while (now_s() < end) {
            for (uint32_t i = 0; i < n; i++) {
                ssize_t w = send(fds[i], pub, plen, MSG_DONTWAIT);
                if (w != (ssize_t)plen) short_sends++;
                sends++;
            }
        }
    }
    getrusage(RUSAGE_SELF, &r1);
    double wall = now_s() - t0;
    for (uint32_t i = 0; i < n; i++) close(fds[i]);
    printf("{\"mode\": \"%s\", \"connections\": %u, \"sends\": %ld, \"short_sends\": %ld, "
           "\"wall_s\": %.3f, \"user_us_per_send\": %.3f, \"sys_us_per_send\": %.3f}\n",
           argv[3], n, sends, short_sends, wall,
           (tv_us(r1.ru_utime) - tv_us(r0.ru_utime)) / sends,
           (tv_us(r1.ru_stime) - tv_us(r0.ru_stime)) / sends);
    return 0;
}
