/*
 * http-echo: wasi:http/proxy component for Wisp's tests. Routes by path:
 *
 *   /echo              200, "METHOD PATH_WITH_QUERY\n", one "name: value\n"
 *                      per request header, "\n", then the request body
 *                      verbatim; response header x-wisp-echo: 1
 *   /sleep?ms=N        waits N ms (monotonic-clock subscribe-duration + poll),
 *                      then 200 "slept N\n"
 *   /outbound?url=URL  URL percent-encoded; outgoing GET to it, then 200
 *                      "upstream status S\n" + upstream body, or 502
 *                      "outbound error: <error-code variant>\n"
 *   /trap              traps (unreachable) before responding
 *   /loop              spins forever before responding
 *   /bomb              allocates and touches 1 MiB chunks until memory runs
 *                      out, then traps (never responds)
 *   /alloc?mib=N       allocates and touches N MiB, then 200 "allocated N MiB\n";
 *                      traps if the memory cannot be had
 *   /env?name=X        200 with the value of X (wasi:cli/environment),
 *                      or 404 "unset\n"
 *   /log?n=N&tag=T     writes "T out I\n" to stdout and "T err I\n" to stderr
 *                      for I in 0..N, one write per line, then 200 "logged N\n"
 *   anything else      200 "hello from wisp\n"
 *
 * Every response has content-type: text/plain.
 * Bindings: wit-bindgen c, world wisp:guests/http-echo (guests/wit).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_echo.h"

/* ---- small helpers ------------------------------------------------------ */

typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} buf_t;

static void buf_put(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        b->ptr = realloc(b->ptr, cap);
        if (!b->ptr)
            __builtin_trap();
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
}

static void buf_str(buf_t *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_u64(buf_t *b, uint64_t v) {
    char tmp[24];
    int i = sizeof tmp;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_put(b, tmp + i, sizeof tmp - i);
}

/* Value of query parameter `key` in `query` (no leading '?'), %XX-decoded,
 * as a fresh NUL-terminated string; NULL when absent. */
static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static char *query_param(const char *query, size_t qlen, const char *key) {
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < qlen) {
        size_t end = i;
        while (end < qlen && query[end] != '&')
            end++;
        if (end - i > klen && memcmp(query + i, key, klen) == 0 && query[i + klen] == '=') {
            const char *v = query + i + klen + 1;
            size_t vlen = end - (i + klen + 1);
            char *out = malloc(vlen + 1);
            if (!out)
                __builtin_trap();
            size_t o = 0;
            for (size_t j = 0; j < vlen; j++) {
                int hi, lo;
                if (v[j] == '%' && j + 2 < vlen && (hi = hexval(v[j + 1])) >= 0 && (lo = hexval(v[j + 2])) >= 0) {
                    out[o++] = (char)(hi * 16 + lo);
                    j += 2;
                } else {
                    out[o++] = v[j];
                }
            }
            out[o] = 0;
            return out;
        }
        i = end + 1;
    }
    return NULL;
}

static void drop_stream_error(wasi_io_streams_stream_error_t *e) {
    if (e->tag == WASI_IO_STREAMS_STREAM_ERROR_LAST_OPERATION_FAILED)
        wasi_io_error_error_drop_own(e->val.last_operation_failed);
}

/* Reads an input stream to its end into b. */
static void read_all(wasi_io_streams_own_input_stream_t in, buf_t *b) {
    wasi_io_streams_borrow_input_stream_t bin = wasi_io_streams_borrow_input_stream(in);
    for (;;) {
        http_echo_list_u8_t chunk;
        wasi_io_streams_stream_error_t err;
        if (!wasi_io_streams_method_input_stream_blocking_read(bin, 65536, &chunk, &err)) {
            drop_stream_error(&err);
            break;
        }
        if (chunk.len)
            buf_put(b, chunk.ptr, chunk.len);
        http_echo_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(in);
}

/* Reads a whole incoming body (which it consumes) into b. */
static void read_body(wasi_http_types_own_incoming_body_t body, buf_t *b) {
    wasi_http_types_own_input_stream_t in;
    if (wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(body), &in))
        read_all(in, b);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(body));
}

static void add_header(wasi_http_types_own_fields_t h, const char *name, const char *value) {
    wasi_http_types_field_name_t n = {(uint8_t *)name, strlen(name)};
    wasi_http_types_field_value_t v = {(uint8_t *)value, strlen(value)};
    wasi_http_types_header_error_t err;
    wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(h), &n, &v, &err);
}

/* Sends status + text/plain body (+ x-wisp-echo when echo) through out. */
static void respond(wasi_http_types_own_response_outparam_t out, uint16_t status,
                    const uint8_t *data, size_t len, int echo) {
    wasi_http_types_own_fields_t headers = wasi_http_types_constructor_fields();
    add_header(headers, "content-type", "text/plain");
    if (echo)
        add_header(headers, "x-wisp-echo", "1");
    wasi_http_types_own_outgoing_response_t resp = wasi_http_types_constructor_outgoing_response(headers);
    wasi_http_types_borrow_outgoing_response_t bresp = wasi_http_types_borrow_outgoing_response(resp);
    wasi_http_types_method_outgoing_response_set_status_code(bresp, status);
    wasi_http_types_own_outgoing_body_t body;
    if (!wasi_http_types_method_outgoing_response_body(bresp, &body))
        __builtin_trap();

    wasi_http_types_result_own_outgoing_response_error_code_t result = {.is_err = false, .val = {.ok = resp}};
    wasi_http_types_static_response_outparam_set(out, &result);

    wasi_http_types_own_output_stream_t stream;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(body), &stream)) {
        wasi_io_streams_borrow_output_stream_t bs = wasi_io_streams_borrow_output_stream(stream);
        size_t off = 0;
        while (off < len) {
            size_t n = len - off > 4096 ? 4096 : len - off; /* blocking-write-and-flush limit */
            http_echo_list_u8_t chunk = {(uint8_t *)data + off, n};
            wasi_io_streams_stream_error_t err;
            if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(bs, &chunk, &err)) {
                drop_stream_error(&err);
                break;
            }
            off += n;
        }
        wasi_io_streams_output_stream_drop_own(stream);
    }
    wasi_http_types_error_code_t ecode;
    if (!wasi_http_types_static_outgoing_body_finish(body, NULL, &ecode))
        wasi_http_types_error_code_free(&ecode);
}

static void respond_str(wasi_http_types_own_response_outparam_t out, uint16_t status, const char *s) {
    respond(out, status, (const uint8_t *)s, strlen(s), 0);
}

static void respond_buf(wasi_http_types_own_response_outparam_t out, uint16_t status, buf_t *b, int echo) {
    respond(out, status, b->ptr, b->len, echo);
    free(b->ptr);
}

static const char *method_name(const wasi_http_types_method_t *m) {
    static const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE",
                                  "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    return m->tag < sizeof names / sizeof names[0] ? names[m->tag] : NULL;
}

/* Names of the wasi:http/types error-code cases, in declaration order. */
static const char *const ERROR_CODE_NAMES[] = {
    "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
    "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
    "connection-terminated", "connection-timeout", "connection-read-timeout",
    "connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
    "TLS-certificate-error", "TLS-alert-received", "HTTP-request-denied",
    "HTTP-request-length-required", "HTTP-request-body-size", "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid", "HTTP-request-URI-too-long", "HTTP-request-header-section-size",
    "HTTP-request-header-size", "HTTP-request-trailer-section-size", "HTTP-request-trailer-size",
    "HTTP-response-incomplete", "HTTP-response-header-section-size", "HTTP-response-header-size",
    "HTTP-response-body-size", "HTTP-response-trailer-section-size", "HTTP-response-trailer-size",
    "HTTP-response-transfer-coding", "HTTP-response-content-coding", "HTTP-response-timeout",
    "HTTP-upgrade-failed", "HTTP-protocol-error", "loop-detected", "configuration-error",
    "internal-error",
};

static void respond_error_code(wasi_http_types_own_response_outparam_t out, wasi_http_types_error_code_t *e) {
    buf_t b = {0};
    buf_str(&b, "outbound error: ");
    if (e->tag < sizeof ERROR_CODE_NAMES / sizeof ERROR_CODE_NAMES[0])
        buf_str(&b, ERROR_CODE_NAMES[e->tag]);
    else {
        buf_str(&b, "error-code-");
        buf_u64(&b, e->tag);
    }
    buf_str(&b, "\n");
    wasi_http_types_error_code_free(e);
    respond_buf(out, 502, &b, 0);
}

/* ---- routes ------------------------------------------------------------- */

static void route_echo(wasi_http_types_own_incoming_request_t req,
                       wasi_http_types_own_response_outparam_t out,
                       const http_echo_string_t *pwq) {
    wasi_http_types_borrow_incoming_request_t breq = wasi_http_types_borrow_incoming_request(req);
    buf_t b = {0};

    wasi_http_types_method_t m;
    wasi_http_types_method_incoming_request_method(breq, &m);
    const char *mname = method_name(&m);
    if (mname)
        buf_str(&b, mname);
    else
        buf_put(&b, m.val.other.ptr, m.val.other.len);
    wasi_http_types_method_free(&m);
    buf_str(&b, " ");
    buf_put(&b, pwq->ptr, pwq->len);
    buf_str(&b, "\n");

    wasi_http_types_own_headers_t headers = wasi_http_types_method_incoming_request_headers(breq);
    wasi_http_types_list_tuple2_field_name_field_value_t entries;
    wasi_http_types_method_fields_entries(wasi_http_types_borrow_fields(headers), &entries);
    for (size_t i = 0; i < entries.len; i++) {
        buf_put(&b, entries.ptr[i].f0.ptr, entries.ptr[i].f0.len);
        buf_str(&b, ": ");
        buf_put(&b, entries.ptr[i].f1.ptr, entries.ptr[i].f1.len);
        buf_str(&b, "\n");
    }
    wasi_http_types_list_tuple2_field_name_field_value_free(&entries);
    wasi_http_types_fields_drop_own(headers);
    buf_str(&b, "\n");

    wasi_http_types_own_incoming_body_t body;
    if (wasi_http_types_method_incoming_request_consume(breq, &body))
        read_body(body, &b);
    wasi_http_types_incoming_request_drop_own(req);

    respond_buf(out, 200, &b, 1);
}

static void route_sleep(wasi_http_types_own_response_outparam_t out, const char *q, size_t qlen) {
    char *ms_s = query_param(q, qlen, "ms");
    uint64_t ms = ms_s ? strtoull(ms_s, NULL, 10) : 0;
    free(ms_s);

    wasi_io_poll_own_pollable_t p = wasi_clocks_monotonic_clock_subscribe_duration(ms * 1000000ull);
    wasi_io_poll_borrow_pollable_t bp = wasi_io_poll_borrow_pollable(p);
    wasi_io_poll_list_borrow_pollable_t list = {&bp, 1};
    http_echo_list_u32_t ready;
    wasi_io_poll_poll(&list, &ready);
    http_echo_list_u32_free(&ready);
    wasi_io_poll_pollable_drop_own(p);

    buf_t b = {0};
    buf_str(&b, "slept ");
    buf_u64(&b, ms);
    buf_str(&b, "\n");
    respond_buf(out, 200, &b, 0);
}

static void route_outbound(wasi_http_types_own_response_outparam_t out, const char *q, size_t qlen) {
    char *url = query_param(q, qlen, "url");
    if (!url) {
        respond_str(out, 400, "missing url\n");
        return;
    }
    uint8_t scheme_tag;
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        scheme_tag = WASI_HTTP_TYPES_SCHEME_HTTP;
        rest = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        scheme_tag = WASI_HTTP_TYPES_SCHEME_HTTPS;
        rest = url + 8;
    } else {
        free(url);
        respond_str(out, 400, "bad url\n");
        return;
    }
    size_t alen = strcspn(rest, "/?");
    const char *path = rest + alen;

    wasi_http_types_own_outgoing_request_t req =
        wasi_http_types_constructor_outgoing_request(wasi_http_types_constructor_fields());
    wasi_http_types_borrow_outgoing_request_t breq = wasi_http_types_borrow_outgoing_request(req);
    wasi_http_types_scheme_t scheme = {.tag = scheme_tag};
    wasi_http_types_method_outgoing_request_set_scheme(breq, &scheme);
    http_echo_string_t authority = {(uint8_t *)rest, alen};
    wasi_http_types_method_outgoing_request_set_authority(breq, &authority);
    char *pq = *path == '/' ? strdup(path) : NULL;
    if (!pq) { /* "" or "?x" */
        pq = malloc(strlen(path) + 2);
        pq[0] = '/';
        strcpy(pq + 1, path);
    }
    http_echo_string_t pwq = {(uint8_t *)pq, strlen(pq)};
    wasi_http_types_method_outgoing_request_set_path_with_query(breq, &pwq);
    free(pq);
    free(url);

    wasi_http_types_own_future_incoming_response_t fut;
    wasi_http_types_error_code_t err;
    if (!wasi_http_outgoing_handler_handle(req, NULL, &fut, &err)) {
        respond_error_code(out, &err);
        return;
    }
    wasi_http_types_borrow_future_incoming_response_t bfut = wasi_http_types_borrow_future_incoming_response(fut);
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    while (!wasi_http_types_method_future_incoming_response_get(bfut, &got)) {
        wasi_io_poll_own_pollable_t p = wasi_http_types_method_future_incoming_response_subscribe(bfut);
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(p));
        wasi_io_poll_pollable_drop_own(p);
    }
    wasi_http_types_future_incoming_response_drop_own(fut);
    if (got.is_err) { /* response already taken: cannot happen here */
        respond_str(out, 500, "future already consumed\n");
        return;
    }
    if (got.val.ok.is_err) {
        respond_error_code(out, &got.val.ok.val.err);
        return;
    }
    wasi_http_types_own_incoming_response_t resp = got.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t bresp = wasi_http_types_borrow_incoming_response(resp);

    buf_t b = {0};
    buf_str(&b, "upstream status ");
    buf_u64(&b, wasi_http_types_method_incoming_response_status(bresp));
    buf_str(&b, "\n");
    wasi_http_types_own_incoming_body_t body;
    if (wasi_http_types_method_incoming_response_consume(bresp, &body))
        read_body(body, &b);
    wasi_http_types_incoming_response_drop_own(resp);
    respond_buf(out, 200, &b, 0);
}

static void route_env(wasi_http_types_own_response_outparam_t out, const char *q, size_t qlen) {
    char *name = query_param(q, qlen, "name");
    http_echo_list_tuple2_string_string_t env;
    wasi_cli_environment_get_environment(&env);
    buf_t b = {0};
    int found = 0;
    for (size_t i = 0; name && i < env.len; i++) {
        if (env.ptr[i].f0.len == strlen(name) && memcmp(env.ptr[i].f0.ptr, name, env.ptr[i].f0.len) == 0) {
            buf_put(&b, env.ptr[i].f1.ptr, env.ptr[i].f1.len);
            found = 1;
            break;
        }
    }
    http_echo_list_tuple2_string_string_free(&env);
    free(name);
    if (found)
        respond_buf(out, 200, &b, 0);
    else
        respond_str(out, 404, "unset\n");
}

static void route_log(wasi_http_types_own_response_outparam_t out, const char *q, size_t qlen) {
    char *n_s = query_param(q, qlen, "n");
    char *tag = query_param(q, qlen, "tag");
    long n = n_s ? strtol(n_s, NULL, 10) : 1;
    char line[256];
    for (long i = 0; i < n; i++) {
        /* One write per line: lines of concurrent instances never interleave. */
        int len = snprintf(line, sizeof line, "%s out %ld\n", tag ? tag : "log", i);
        if (write(1, line, (size_t)len) < 0)
            break;
        len = snprintf(line, sizeof line, "%s err %ld\n", tag ? tag : "log", i);
        if (write(2, line, (size_t)len) < 0)
            break;
    }
    free(n_s);
    free(tag);
    snprintf(line, sizeof line, "logged %ld\n", n);
    respond_str(out, 200, line);
}

static void bomb(void) {
    for (;;) {
        volatile uint8_t *p = malloc(1 << 20);
        if (!p)
            __builtin_trap();
        for (size_t i = 0; i < (1 << 20); i += 4096)
            p[i] = 1;
    }
}

static void route_alloc(wasi_http_types_own_response_outparam_t out, const char *q, size_t qlen) {
    char *mib_s = query_param(q, qlen, "mib");
    long mib = mib_s ? strtol(mib_s, NULL, 10) : 1;
    free(mib_s);
    volatile uint8_t *p = malloc((size_t)mib << 20);
    if (!p)
        __builtin_trap();
    for (size_t i = 0; i < ((size_t)mib << 20); i += 4096)
        p[i] = 1;
    char line[64];
    snprintf(line, sizeof line, "allocated %ld MiB\n", mib);
    respond_str(out, 200, line);
}

/* ---- entry point -------------------------------------------------------- */

static int path_is(const char *path, size_t plen, const char *want) {
    return plen == strlen(want) && memcmp(path, want, plen) == 0;
}

void exports_wasi_http_incoming_handler_handle(
    exports_wasi_http_incoming_handler_own_incoming_request_t req,
    exports_wasi_http_incoming_handler_own_response_outparam_t out) {
    http_echo_string_t pwq = {(uint8_t *)"/", 1};
    int own_pwq = wasi_http_types_method_incoming_request_path_with_query(
        wasi_http_types_borrow_incoming_request(req), &pwq);

    const char *path = (const char *)pwq.ptr;
    size_t plen = 0;
    while (plen < pwq.len && path[plen] != '?')
        plen++;
    const char *q = plen < pwq.len ? path + plen + 1 : "";
    size_t qlen = plen < pwq.len ? pwq.len - plen - 1 : 0;

    if (path_is(path, plen, "/echo")) {
        route_echo(req, out, &pwq);
    } else {
        wasi_http_types_incoming_request_drop_own(req);
        if (path_is(path, plen, "/sleep")) {
            route_sleep(out, q, qlen);
        } else if (path_is(path, plen, "/outbound")) {
            route_outbound(out, q, qlen);
        } else if (path_is(path, plen, "/trap")) {
            __builtin_trap();
        } else if (path_is(path, plen, "/loop")) {
            volatile int spin = 1;
            while (spin) {
            }
        } else if (path_is(path, plen, "/bomb")) {
            bomb();
        } else if (path_is(path, plen, "/alloc")) {
            route_alloc(out, q, qlen);
        } else if (path_is(path, plen, "/env")) {
            route_env(out, q, qlen);
        } else if (path_is(path, plen, "/log")) {
            route_log(out, q, qlen);
        } else {
            respond_str(out, 200, "hello from wisp\n");
        }
    }
    if (own_pwq)
        http_echo_string_free(&pwq);
}
