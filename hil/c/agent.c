/*
 * lipnet HIL device agent in C: answers each STATE datagram with the exported controller's ACTION.
 *
 * For boards without Python. Follows hil/PROTOCOL.md (version 1) exactly, like the Python agent (hil/device.py):
 * the same validation order and drop reasons, HELLO -> HELLO_ACK (JSON: dimensions, provider "c", integrity and
 * the controller's lipnet_info), STATS -> STATS_ACK (the counters as JSON), seq and t_host_ns echoed, t_device_ns
 * and compute_ns filled from CLOCK_MONOTONIC. Every multi-byte field is read and written byte by byte in
 * little-endian order, so the agent is correct on big-endian targets too (floats are assumed IEEE binary32).
 *
 * Build (with the controller.c and controller.h that `lipnet export --out controller.c` wrote):
 *     make -C hil/c CONTROLLER=/path/to/controller.c        (checks the source's sha256 first)
 * or by hand:
 *     cc -std=c99 -O2 -I/path/to -o lipnet-agent hil/c/agent.c /path/to/controller.c -lm
 * Run:
 *     ./lipnet-agent --listen 127.0.0.1:9870 [--no-realtime] [--busy-poll] [--json]
 * It prints one line "hil device: listening on HOST:PORT n_x=.. n_u=.. provider=c scheduling=.. integrity=.." and
 * serves until SIGINT/SIGTERM, then prints its counters (as JSON with --json) and exits 0; exit 2 on bad options
 * or a socket that cannot be bound. POSIX sockets only; no malloc on the packet path.
 */
#define _XOPEN_SOURCE 700

#include <errno.h>
#include <netdb.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef LIPNET_CONTROLLER_HEADER
#define LIPNET_CONTROLLER_HEADER "controller.h"
#endif
#include LIPNET_CONTROLLER_HEADER

#ifndef LIPNET_AGENT_VERIFIED
#define LIPNET_AGENT_VERIFIED 0
#endif

#define HEADER_SIZE 40
#define MAX_DIM 1024
#define MAX_DATAGRAM 65507
#define DEFAULT_PORT "9870"
enum { STATE = 1, ACTION = 2, HELLO = 3, HELLO_ACK = 4, STATS = 5, STATS_ACK = 6 };

/* Counters, in the order of the Python agent's (hil/device.py), then the drop reasons (hil/wire.py). */
enum {
    C_RECEIVED, C_ANSWERED, C_HELLO, C_STATS, C_ERRORS, C_SEND_ERRORS,
    C_TRUNCATED, C_OVERSIZED, C_BAD_MAGIC, C_BAD_VERSION, C_BAD_KIND, C_WRONG_DIM, C_NON_FINITE,
    C_POLICY_FALLBACK, N_COUNTERS
};
static const char *const counter_names[N_COUNTERS] = {
    "received", "answered", "hello", "stats", "errors", "send_errors",
    "truncated", "oversized", "bad_magic", "bad_version", "bad_kind", "wrong_dim", "non_finite",
    "policy_fallback"
};
static unsigned long long counters[N_COUNTERS];
static volatile sig_atomic_t stop_flag = 0;

static unsigned char rx[MAX_DATAGRAM + 1];      /* >= 65507 bytes: an oversized datagram is seen whole */
static unsigned char tx[HEADER_SIZE + 4 * LIPNET_N_U];
static unsigned char ack[MAX_DATAGRAM];
static char integrity[160];

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void wr16(unsigned char *p, uint16_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}

static void wr32(unsigned char *p, uint32_t v)
{
    int i;
    for (i = 0; i < 4; ++i)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    int i;
    for (i = 0; i < 8; ++i)
        p[i] = (unsigned char)(v >> (8 * i));
}

static float rdf32(const unsigned char *p)
{
    uint32_t bits = rd32(p);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static void wrf32(unsigned char *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    wr32(p, bits);
}

static int finite_bits(const unsigned char *p) { return (rd32(p) & 0x7f800000u) != 0x7f800000u; }

/* The 40-byte header (hil/PROTOCOL.md): magic, version, kind, n_x, n_u, flags, seq, t_host_ns, t_device_ns,
 * compute_ns, reserved. seq and t_host_ns are copied from the request. */
static void header(unsigned char *out, int kind, const unsigned char *req, uint64_t t_device, uint32_t compute)
{
    memcpy(out, "LPNH", 4);
    out[4] = 1;
    out[5] = (unsigned char)kind;
    wr16(out + 6, LIPNET_N_X);
    wr16(out + 8, LIPNET_N_U);
    wr16(out + 10, 0);
    memcpy(out + 12, req + 12, 4);  /* seq, as received (little-endian bytes) */
    memcpy(out + 16, req + 16, 8);  /* t_host_ns */
    wr64(out + 24, t_device);
    wr32(out + 32, compute);
    wr32(out + 36, 0);
}

static int json_counters(char *out, size_t size)
{
    size_t used = 0;
    int i, n;
    n = snprintf(out, size, "{");
    used += (size_t)n;
    for (i = 0; i < N_COUNTERS && used < size; ++i) {
        n = snprintf(out + used, size - used, "%s\"%s\":%llu", i ? "," : "", counter_names[i], counters[i]);
        used += (size_t)n;
    }
    if (used < size)
        used += (size_t)snprintf(out + used, size - used, "}");
    return used < size ? (int)used : (int)size - 1;
}

static const char *scheduling_mode(int wanted)
{
    struct sched_param sp;
    if (!wanted)
        return "normal";
    memset(&sp, 0, sizeof sp);
    sp.sched_priority = 50;  /* as hil/realtime.py: above ordinary threads, below the kernel's own */
    if (sched_setscheduler(0, SCHED_FIFO, &sp) == 0)
        return "fifo";
    if (setpriority(PRIO_PROCESS, 0, -10) == 0)
        return "nice";
    return "normal";
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--listen HOST:PORT] [--no-realtime] [--busy-poll] [--json]\n"
                    "  serves the compiled lipnet controller over UDP (hil/PROTOCOL.md); default 127.0.0.1:%s\n",
            argv0, DEFAULT_PORT);
    return 2;
}

int main(int argc, char **argv)
{
    const char *listen_at = "127.0.0.1:" DEFAULT_PORT;
    int realtime = 1, busy = 0, as_json = 0, i, fd, rc;
    char host[256], port[16], shown[INET6_ADDRSTRLEN];
    const char *colon;
    struct addrinfo hints, *res = NULL;
    struct sockaddr_storage bound, src;
    socklen_t bound_len = sizeof bound, src_len;
    struct sigaction sa;
    float x[LIPNET_N_X], u[LIPNET_N_U];
    const size_t state_size = HEADER_SIZE + 4 * LIPNET_N_X;
    int one = 1;
    const char *sched;

    for (i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--listen") && i + 1 < argc)
            listen_at = argv[++i];
        else if (!strcmp(argv[i], "--realtime"))
            realtime = 1;
        else if (!strcmp(argv[i], "--no-realtime"))
            realtime = 0;
        else if (!strcmp(argv[i], "--busy-poll"))
            busy = 1;
        else if (!strcmp(argv[i], "--json"))
            as_json = 1;
        else
            return usage(argv[0]);
    }
    /* HOST:PORT, HOST, :PORT or [v6]:PORT, as hil.device.parse_address */
    colon = strrchr(listen_at, ':');
    if (colon && strchr(listen_at, ':') != colon && listen_at[0] != '[')
        colon = NULL;  /* a bare IPv6 address without a port */
    if (colon) {
        size_t n = (size_t)(colon - listen_at);
        if (n >= sizeof host || strlen(colon + 1) >= sizeof port)
            return usage(argv[0]);
        memcpy(host, listen_at, n);
        host[n] = 0;
        strcpy(port, *(colon + 1) ? colon + 1 : DEFAULT_PORT);
    } else {
        if (strlen(listen_at) >= sizeof host)
            return usage(argv[0]);
        strcpy(host, listen_at);
        strcpy(port, DEFAULT_PORT);
    }
    if (host[0] == '[') {
        size_t n = strlen(host);
        if (n < 2 || host[n - 1] != ']')
            return usage(argv[0]);
        memmove(host, host + 1, n - 2);
        host[n - 2] = 0;
    }
    if (!host[0])
        strcpy(host, "127.0.0.1");
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "hil device: error: bad address %s: %s\n", listen_at, gai_strerror(rc));
        return 2;
    }
    fd = socket(res->ai_family, SOCK_DGRAM, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0
        || bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "hil device: error: cannot bind %s: %s\n", listen_at, strerror(errno));
        freeaddrinfo(res);
        return 2;
    }
    freeaddrinfo(res);
    getsockname(fd, (struct sockaddr *)&bound, &bound_len);
    if (bound.ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, shown, sizeof shown);
    else
        inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, shown, sizeof shown);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;  /* no SA_RESTART: a signal wakes recvfrom with EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (LIPNET_AGENT_VERIFIED)
        snprintf(integrity, sizeof integrity, "verified at build (source sha256 %.16s...)", lipnet_source_sha256);
    else
        snprintf(integrity, sizeof integrity, "unchecked (compiled in without the sha256 check; source sha256 "
                                              "%.16s...)", lipnet_source_sha256);
    /* Warm up: fault the code and the weights in before the first real packet. */
    memset(x, 0, sizeof x);
    for (i = 0; i < 10; ++i)
        lipnet_policy(x, u);
    sched = scheduling_mode(realtime);
    printf("hil device: listening on %s:%u n_x=%d n_u=%d provider=c scheduling=%s integrity=%s\n", shown,
           (unsigned)ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                       : ((struct sockaddr_in *)&bound)->sin_port),
           LIPNET_N_X, LIPNET_N_U, sched, LIPNET_AGENT_VERIFIED ? "verified" : "unchecked");
    fflush(stdout);

    while (!stop_flag) {
        ssize_t n;
        uint64_t t_rx, t_done;
        int kind, k;
        unsigned hx, hu;

        src_len = sizeof src;
        n = recvfrom(fd, rx, sizeof rx, busy ? MSG_DONTWAIT : 0, (struct sockaddr *)&src, &src_len);
        if (n < 0) {
            if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
                counters[C_ERRORS]++;  /* e.g. ICMP errors surfaced on the socket: never fatal */
            continue;
        }
        t_rx = now_ns();
        if (stop_flag)
            break;
        counters[C_RECEIVED]++;
        /* validation in hil/PROTOCOL.md's order */
        if (n < HEADER_SIZE) { counters[C_TRUNCATED]++; continue; }
        if (memcmp(rx, "LPNH", 4) != 0) { counters[C_BAD_MAGIC]++; continue; }
        if (rx[4] != 1) { counters[C_BAD_VERSION]++; continue; }
        kind = rx[5];
        if (kind < STATE || kind > STATS_ACK) { counters[C_BAD_KIND]++; continue; }
        hx = rd16(rx + 6);
        hu = rd16(rx + 8);
        if (hx > MAX_DIM || hu > MAX_DIM) { counters[C_WRONG_DIM]++; continue; }
        if (kind == STATE) {
            size_t size = HEADER_SIZE + 4 * (size_t)hx;
            if ((size_t)n < size) { counters[C_TRUNCATED]++; continue; }
            if ((size_t)n > size) { counters[C_OVERSIZED]++; continue; }
            if (hx != LIPNET_N_X || (size_t)n != state_size) { counters[C_WRONG_DIM]++; continue; }
            for (k = 0; k < LIPNET_N_X; ++k) {
                if (!finite_bits(rx + HEADER_SIZE + 4 * k))
                    break;
                x[k] = rdf32(rx + HEADER_SIZE + 4 * k);
            }
            if (k < LIPNET_N_X) { counters[C_NON_FINITE]++; continue; }
            if (lipnet_policy(x, u) != LIPNET_OK)
                counters[C_POLICY_FALLBACK]++;  /* overflow: the fallback action, never NaN */
            for (k = 0; k < LIPNET_N_U; ++k)
                wrf32(tx + HEADER_SIZE + 4 * k, u[k]);
            t_done = now_ns();
            header(tx, ACTION, rx, t_rx, t_done - t_rx > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)(t_done - t_rx));
            if (sendto(fd, tx, sizeof tx, 0, (struct sockaddr *)&src, src_len) < 0)
                counters[C_SEND_ERRORS]++;
            else
                counters[C_ANSWERED]++;
        } else if (kind == HELLO || kind == STATS) {
            int len;
            char *body = (char *)ack + HEADER_SIZE;
            size_t room = sizeof ack - HEADER_SIZE;
            if (kind == HELLO) {
                counters[C_HELLO]++;
                /* the agent's keys, then those of the controller's lipnet_info object (plant, dt, bound, ...) */
                len = snprintf(body, room, "{\"n_x\":%d,\"n_u\":%d,\"provider\":\"c\",\"protocol\":1,"
                               "\"requested_provider\":\"c\",\"fallback_reason\":null,\"integrity\":\"%s\","
                               "\"agent\":\"hil/c/agent.c\",\"source_sha256\":\"%s\",%s",
                               LIPNET_N_X, LIPNET_N_U, integrity, lipnet_source_sha256, lipnet_info + 1);
            } else {
                counters[C_STATS]++;
                len = json_counters(body, room);
            }
            if (len < 0 || (size_t)len >= room)
                len = 0;  /* cannot happen with these sizes; an empty payload is valid */
            header(ack, kind == HELLO ? HELLO_ACK : STATS_ACK, rx, 0, 0);
            if (sendto(fd, ack, HEADER_SIZE + (size_t)len, 0, (struct sockaddr *)&src, src_len) < 0)
                counters[C_SEND_ERRORS]++;
        } else {
            counters[C_BAD_KIND]++;  /* an ACTION or an ACK sent to the device: not for us */
        }
    }
    close(fd);
    if (as_json) {
        char line[1024];
        json_counters(line, sizeof line);
        printf("%s\n", line);
    } else {
        printf("hil device: stopped;");
        for (i = 0; i < N_COUNTERS; ++i)
            if (counters[i])
                printf(" %s=%llu", counter_names[i], counters[i]);
        printf("\n");
    }
    fflush(stdout);
    return 0;
}
