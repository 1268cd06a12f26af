/*
 * loadgen: the benchmark's client side, compiled so that it is not the bottleneck (one epoll loop).
 *
 *   loadgen HOST PORT PATH N SUBPROTOCOL [-b SOURCE_ADDR] [-s] [-e]
 *
 * Opens N WebSocket connections to one URL (SUBPROTOCOL "-" requests none; -b binds every connection to
 * a source address such as 127.0.0.2, since one address has ~28k ephemeral ports; -s speaks Engine.IO v4 /
 * Socket.IO over WebSocket: answer the open packet "0{..}" with "40", count a connection once "40" comes
 * back, answer ping "2" with "3"; -e is the upstream echo mode below).
 *
 * Fan-out mode counts text frames that carry the marker "#<index>:" (the benchmark's messages, whatever
 * envelope the server puts around them) and records, per message index, when the last copy arrived
 * (CLOCK_MONOTONIC, the clock of Python's time.monotonic()).
 *
 * Protocol with the driver (bench/run.py) on stdin/stdout, one line each:
 *   -> "READY"                      all N connections are upgraded (Socket.IO: connected to "/")
 *   <- "EXPECT <messages>"          start a round of <messages> fan-outs (indexes 0..messages-1)
 *   -> "GO", later "DONE <received> <cpu_s>" (CPU of this round), then <messages> lines "<index> <ns>"
 *   <- "ECHO <seconds>"             (-e) every connection sends a user event, waits for the reply sent
 *                                   back to it ("from":"server"), sends the next; for <seconds>, then
 *   -> "ECHOED <replies> <elapsed_s> <cpu_s> <p50_ms> <p99_ms>"
 *   <- "QUIT"
 * stdin is polled with the sockets, so server pings are answered (masked pongs) while the driver is idle.
 * On a reliable subprotocol every connection sends a sequenceAck every 300 messages (what the JS client
 * does). A connection closed by the server ends the process with code 1 (the driver reports it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF 16384
#define MAX_SAMPLES 4000000

typedef struct {
    int fd;
    int upgraded; /* HTTP 101 seen */
    int ready;    /* counted as connected (Socket.IO: "40" seen) */
    long last_seq, acked_seq;
    int64_t sent_ns; /* echo mode: when the outstanding event was sent, 0 if none */
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
static int reliable = 0, socketio = 0, echo = 0, ready_count = 0;

/* echo mode state */
static int echo_running = 0, echo_draining = 0;
static int64_t echo_start = 0, echo_end = 0;
static long echo_replies = 0, outstanding = 0, nsamples = 0;
static float *samples = NULL;

/* A masked client text frame (zero mask key: valid, and the payload stays as is). */
static void send_text(conn_t *c, const char *body, size_t len) {
    unsigned char frame[8 + 512];
    if (len > 512) len = 512;
    size_t hdr;
    frame[0] = 0x81;
    if (len < 126) {
        frame[1] = 0x80 | (unsigned char)len;
        hdr = 2;
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = (unsigned char)(len >> 8);
        frame[3] = (unsigned char)len;
        hdr = 4;
    }
    memset(frame + hdr, 0, 4);
    memcpy(frame + hdr + 4, body, len);
    if (write(c->fd, frame, hdr + 4 + len) < 0 && errno != EAGAIN) perror("write");
}

static void send_pong(int fd, const unsigned char *payload, size_t n) {
    unsigned char frame[2 + 4 + 125];
    if (n > 125) n = 125;
    frame[0] = 0x8A;
    frame[1] = 0x80 | (unsigned char)n;
    memset(frame + 2, 0, 4);
    memcpy(frame + 6, payload, n);
    if (write(fd, frame, 6 + n) < 0 && errno != EAGAIN) perror("pong");
}

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
        send_text(c, body, (size_t)len);
        c->acked_seq = c->last_seq;
    }
}

static const char EVENT[] = "{\"type\":\"event\",\"event\":\"echo\",\"dataType\":\"text\",\"data\":\"ping\"}";

static void echo_send(conn_t *c) {
    c->sent_ns = now_ns();
    outstanding++;
    send_text(c, EVENT, sizeof EVENT - 1);
}

static void on_echo_reply(conn_t *c) {
    if (!c->sent_ns) return;
    int64_t t = now_ns();
    outstanding--;
    if (echo_running && t <= echo_end) {
        echo_replies++;
        if (nsamples < MAX_SAMPLES) samples[nsamples++] = (float)((t - c->sent_ns) / 1e6);
    }
    c->sent_ns = 0;
    if (echo_running && t < echo_end) echo_send(c);
}

/* Fan-out messages carry "#<index>:" somewhere in the frame. */
static void on_marker(const unsigned char *p, size_t n) {
    const unsigned char *end = p + n, *hit = p;
    while ((hit = memchr(hit, '#', (size_t)(end - hit))) != NULL) {
        const unsigned char *d = hit + 1;
        long index = 0;
        int digits = 0;
        while (d < end && *d >= '0' && *d <= '9') { index = index * 10 + (*d - '0'); d++; digits++; }
        if (digits && d < end && *d == ':') {
            if (index < expected_msgs) {
                last_receipt[index] = now_ns();
                received++;
            }
            return;
        }
        hit = hit + 1;
    }
}

static void on_text(conn_t *c, const unsigned char *p, size_t n) {
    if (socketio) {
        if (n >= 1 && p[0] == '0') { send_text(c, "40", 2); return; }
        if (n >= 2 && p[0] == '4' && p[1] == '0') { if (!c->ready) { c->ready = 1; ready_count++; } return; }
        if (n == 1 && p[0] == '2') { send_text(c, "3", 1); return; }
    }
    if (echo) {
        if (memmem(p, n, "\"from\":\"server\"", 15)) on_echo_reply(c);
    } else if (expected_msgs) {
        on_marker(p, n);
    }
    if (reliable) track_sequence(c, p, n);
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
        if (opcode == 0x1) on_text(c, f + hdr, plen);
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
    if (!socketio) { c->ready = 1; ready_count++; }
    return 1;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void echo_report(void) {
    double elapsed = (echo_end - echo_start) / 1e9;
    double p50 = 0, p99 = 0;
    if (nsamples) {
        qsort(samples, (size_t)nsamples, sizeof *samples, cmp_float);
        p50 = samples[nsamples / 2];
        p99 = samples[(long)(nsamples * 0.99) < nsamples ? (long)(nsamples * 0.99) : nsamples - 1];
    }
    printf("ECHOED %ld %.3f %.3f %.3f %.3f\n", echo_replies, elapsed, cpu_seconds() - cpu_at_start, p50, p99);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: loadgen HOST PORT PATH N SUBPROTOCOL [-b SOURCE_ADDR] [-s] [-e]\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3], *proto = argv[5], *source = NULL;
    int port = atoi(argv[2]), n = atoi(argv[4]);
    for (int i = 6; i < argc; i++) {
        if (strcmp(argv[i], "-b") == 0 && i + 1 < argc) source = argv[++i];
        else if (strcmp(argv[i], "-s") == 0) socketio = 1;
        else if (strcmp(argv[i], "-e") == 0) echo = 1;
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    reliable = strstr(proto, ".reliable.") != NULL;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("inet_pton");
    struct sockaddr_in src = {.sin_family = AF_INET, .sin_port = 0};
    if (source && inet_pton(AF_INET, source, &src.sin_addr) != 1) die("inet_pton source");

    conn_t *conns = calloc((size_t)n, sizeof *conns);
    int ep = epoll_create1(0);
    if (!conns || ep < 0) die("setup");
    if (echo && !(samples = malloc(sizeof *samples * MAX_SAMPLES))) die("malloc");
    char proto_header[512] = "";
    if (strcmp(proto, "-") != 0) snprintf(proto_header, sizeof proto_header, "Sec-WebSocket-Protocol: %s\r\n", proto);
    char req[8192];
    int reqlen = snprintf(req, sizeof req,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
                          path, host, port, proto_header);

    /* stdin is polled too (data.ptr NULL), so pings are answered while the driver is quiet */
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event in_ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in_ev) < 0) die("epoll_ctl stdin");
    char line[256];
    size_t line_len = 0;

    int opened = 0, phase_ready = 0, quit = 0;
    struct epoll_event events[1024];
    while (!quit) {
        /* at most 200 handshakes in flight, so the server's accept backlog never overflows */
        while (opened < n && opened - ready_count < 200) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            if (fd < 0) die("socket");
            if (source) {
                int one = 1;
                setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
                if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
            }
            if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (write(fd, req, (size_t)reqlen) != reqlen) die("write upgrade");
            conns[opened].fd = fd;
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[opened]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
            opened++;
        }
        if (!phase_ready && ready_count == n) {
            printf("READY\n");
            fflush(stdout);
            phase_ready = 1;
        }
        int k = epoll_wait(ep, events, 1024, (opened < n || echo_running) ? 10 : 1000);
        for (int e = 0; e < k; e++) {
            conn_t *c = events[e].data.ptr;
            if (!c) { /* driver command(s) */
                ssize_t r = read(0, line + line_len, sizeof line - 1 - line_len);
                if (r == 0) { quit = 1; break; }
                if (r < 0) continue;
                line_len += (size_t)r;
                char *nl;
                while ((nl = memchr(line, '\n', line_len)) != NULL) {
                    *nl = 0;
                    long m = 0;
                    double secs = 0;
                    if (strncmp(line, "QUIT", 4) == 0) quit = 1;
                    else if (sscanf(line, "EXPECT %ld", &m) == 1 && m > 0) {
                        free(last_receipt);
                        last_receipt = calloc((size_t)m, sizeof *last_receipt);
                        expected_msgs = m;
                        received = 0;
                        cpu_at_start = cpu_seconds();
                        printf("GO\n");
                        fflush(stdout);
                    } else if (sscanf(line, "ECHO %lf", &secs) == 1 && secs > 0 && echo) {
                        echo_replies = nsamples = 0;
                        cpu_at_start = cpu_seconds();
                        echo_start = now_ns();
                        echo_end = echo_start + (int64_t)(secs * 1e9);
                        echo_running = 1;
                        for (int i = 0; i < n; i++) echo_send(&conns[i]);
                    } else { fprintf(stderr, "bad command: %s\n", line); return 2; }
                    size_t used = (size_t)(nl - line) + 1;
                    memmove(line, line + used, line_len - used);
                    line_len -= used;
                }
                continue;
            }
            ssize_t r = read(c->fd, c->buf + c->len, BUF - c->len);
            if (r <= 0) {
                if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                fprintf(stderr, "connection closed by server\n");
                return 1;
            }
            c->len += (size_t)r;
            if (!c->upgraded && !handshake_done(c)) continue;
            if (parse_frames(c) < 0) { fprintf(stderr, "server closed a connection\n"); return 1; }
        }
        if (expected_msgs && received >= expected_msgs * (long)n) {
            printf("DONE %ld %.3f\n", received, cpu_seconds() - cpu_at_start);
            for (long i = 0; i < expected_msgs; i++) printf("%ld %lld\n", i, (long long)last_receipt[i]);
            fflush(stdout);
            expected_msgs = 0;
        }
        if (echo_running && now_ns() >= echo_end) {
            /* stop sending; wait (at most 30 s) for the replies still on their way, then report */
            if (!echo_draining) echo_draining = 1;
            if (outstanding <= 0 || now_ns() > echo_end + 30000000000LL) {
                echo_running = echo_draining = 0;
                outstanding = 0;
                for (int i = 0; i < n; i++) conns[i].sent_ns = 0;
                echo_report();
            }
        }
    }
    for (int i = 0; i < opened; i++) close(conns[i].fd);
    return 0;
}
