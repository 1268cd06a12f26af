/*
 * loadgen: the benchmark's receiving side, compiled so that it is not the bottleneck.
 *
 * Opens N WebSocket connections to one URL, then counts text frames whose payload carries
 * "data":"<index>: (the broadcast benchmark's messages) and records, per message index, when the
 * last copy arrived (CLOCK_MONOTONIC, the clock of Python's time.monotonic()).
 *
 *   loadgen HOST PORT PATH N SUBPROTOCOL
 *
 * Protocol with the driver (bench/run.py) on stdin/stdout, one line each:
 *   -> "READY"                      all N connections are upgraded
 *   <- "EXPECT <messages>"          start a round of <messages> broadcasts (indexes 0..messages-1)
 *   -> "GO", later "DONE <received> <cpu_s>" (CPU of this round), followed by <messages> lines "<index> <last_receipt_ns>"
 *   <- "QUIT"
 * Server pings are answered with (masked) pongs; on a reliable subprotocol every connection sends a
 * sequenceAck every 300 messages (what the JS client does); other frames are ignored.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 65536

typedef struct {
    int fd;
    int upgraded;
    long last_seq, acked_seq;
    size_t len;
    unsigned char buf[BUF];
} conn_t;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static long expected_msgs = 0, received = 0;
static double cpu_at_start = 0;
static int64_t *last_receipt = NULL;

static int reliable = 0;

/* Reliable subprotocols: acknowledge the largest sequence id seen, every 300 messages. */
static void track_sequence(conn_t *c, const unsigned char *p, size_t n) {
    static const char key[] = "\"sequenceId\":";
    const unsigned char *hit = memmem(p, n, key, sizeof key - 1);
    if (!hit) return;
    long seq = 0;
    for (const unsigned char *d = hit + sizeof key - 1; d < p + n && *d >= '0' && *d <= '9'; d++)
        seq = seq * 10 + (*d - '0');
    if (seq > c->last_seq) c->last_seq = seq;
    if (c->last_seq - c->acked_seq >= 300) {
        char body[64];
        int len = snprintf(body, sizeof body, "{\"type\":\"sequenceAck\",\"sequenceId\":%ld}", c->last_seq);
        unsigned char frame[6 + 64];
        frame[0] = 0x81;
        frame[1] = 0x80 | (unsigned char)len;
        memset(frame + 2, 0, 4); /* zero mask key */
        memcpy(frame + 6, body, (size_t)len);
        if (write(c->fd, frame, 6 + (size_t)len) < 0 && errno != EAGAIN) perror("sequenceAck");
        c->acked_seq = c->last_seq;
    }
}

static void on_text(const unsigned char *p, size_t n) {
    static const char key[] = "\"data\":\"";
    const unsigned char *hit = memmem(p, n, key, sizeof key - 1);
    if (!hit) return;
    const unsigned char *d = hit + sizeof key - 1, *end = p + n;
    long index = 0;
    int digits = 0;
    while (d < end && *d >= '0' && *d <= '9') { index = index * 10 + (*d - '0'); d++; digits++; }
    if (!digits || d >= end || *d != ':' || index >= expected_msgs) return;
    last_receipt[index] = now_ns();
    received++;
}

static void send_pong(int fd, const unsigned char *payload, size_t n) {
    unsigned char frame[2 + 4 + 125];
    if (n > 125) n = 125;
    frame[0] = 0x8A;
    frame[1] = 0x80 | (unsigned char)n;
    memset(frame + 2, 0, 4); /* a zero mask key is valid and leaves the payload as is */
    memcpy(frame + 6, payload, n);
    if (write(fd, frame, 6 + n) < 0 && errno != EAGAIN) perror("pong");
}

/* Consume complete frames from c->buf; returns 0, or -1 when the connection is closed. */
static int parse_frames(conn_t *c) {
    size_t off = 0;
    for (;;) {
        size_t avail = c->len - off;
        if (avail < 2) break;
        unsigned char *f = c->buf + off;
        int opcode = f[0] & 0x0F;
        uint64_t plen = f[1] & 0x7F;
        size_t hdr = 2;
        if (plen == 126) {
            if (avail < 4) break;
            plen = ((uint64_t)f[2] << 8) | f[3];
            hdr = 4;
        } else if (plen == 127) {
            if (avail < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | f[2 + i];
            hdr = 10;
        }
        if (plen > BUF - 16) { fprintf(stderr, "frame too large for loadgen\n"); exit(1); }
        if (avail < hdr + plen) break;
        if (opcode == 0x1) {
            on_text(f + hdr, plen);
            if (reliable) track_sequence(c, f + hdr, plen);
        }
        else if (opcode == 0x9) send_pong(c->fd, f + hdr, plen);
        else if (opcode == 0x8) return -1;
        off += hdr + plen;
    }
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    return 0;
}

static int handshake_done(conn_t *c) {
    unsigned char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    if (c->len < 12 || memcmp(c->buf + 9, "101", 3) != 0) {
        fprintf(stderr, "upgrade refused: %.*s\n", (int)(end - c->buf), c->buf);
        exit(1);
    }
    size_t used = (size_t)(end - c->buf) + 4;
    memmove(c->buf, c->buf + used, c->len - used);
    c->len -= used;
    c->upgraded = 1;
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: loadgen HOST PORT PATH N SUBPROTOCOL\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3], *proto = argv[5];
    int port = atoi(argv[2]), n = atoi(argv[4]);
    reliable = strstr(proto, ".reliable.") != NULL;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");

    conn_t *conns = calloc((size_t)n, sizeof *conns);
    int ep = epoll_create1(0);
    if (!conns || ep < 0) die("setup");
    char req[8192];
    int reqlen = snprintf(req, sizeof req,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                          "Sec-WebSocket-Protocol: %s\r\n\r\n",
                          path, host, port, proto);
    int upgraded = 0, opened = 0;
    struct epoll_event events[1024];
    char line[256];
    int phase_ready = 0;
    for (;;) {
        /* at most 200 handshakes in flight, so the server's accept backlog never overflows */
        while (opened < n && opened - upgraded < 200) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0) die("socket");
            if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (write(fd, req, (size_t)reqlen) != reqlen) die("write upgrade");
            conns[opened].fd = fd;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[opened]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
            opened++;
        }
        if (!phase_ready && upgraded == n) {
            printf("READY\n");
            fflush(stdout);
            phase_ready = 1;
        }
        if (phase_ready && expected_msgs == 0) {
            if (!fgets(line, sizeof line, stdin) || strncmp(line, "QUIT", 4) == 0) break;
            long m = 0;
            if (sscanf(line, "EXPECT %ld", &m) != 1 || m <= 0) { fprintf(stderr, "bad command\n"); return 2; }
            free(last_receipt);
            last_receipt = calloc((size_t)m, sizeof *last_receipt);
            expected_msgs = m;
            received = 0;
            cpu_at_start = cpu_seconds();
            printf("GO\n");
            fflush(stdout);
        }
        int k = epoll_wait(ep, events, 1024, opened < n ? 10 : 1000);
        for (int e = 0; e < k; e++) {
            conn_t *c = events[e].data.ptr;
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && errno == EINTR) continue;
                fprintf(stderr, "connection closed by server\n");
                return 1;
            }
            c->len += (size_t)r;
            if (!c->upgraded) {
                if (!handshake_done(c)) continue;
                upgraded++;
            }
            if (parse_frames(c) < 0) { fprintf(stderr, "server closed a connection\n"); return 1; }
        }
        if (expected_msgs && received >= expected_msgs * (long)n) {
            printf("DONE %ld %.3f\n", received, cpu_seconds() - cpu_at_start);
            for (long i = 0; i < expected_msgs; i++) printf("%ld %lld\n", i, (long long)last_receipt[i]);
            fflush(stdout);
            expected_msgs = 0;
        }
    }
    for (int i = 0; i < n; i++) close(conns[i].fd);
    return 0;
}
