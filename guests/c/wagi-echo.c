/*
 * wagi-echo: WAGI (CGI-style) WASI preview1 command.
 *
 * Headers: "Content-Type: text/plain", "X-Wagi: 1", and "Status: 201 Created"
 * when QUERY_STRING contains "status=201". Body lines: method=, path=, query=,
 * args= (argv[1..] joined by ","), x-test= ($HTTP_X_TEST), then "body=" and
 * all of stdin verbatim.
 * PATH_INFO "/exit": exit 1 without output. PATH_INFO "/loop": loop forever.
 * PATH_INFO "/split": a response-splitting attempt, framing headers of its own
 * ("Content-Length: 5", "Connection", "Transfer-Encoding") over "hello" and a
 * complete second HTTP response after it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *env(const char *name) {
    const char *v = getenv(name);
    return v ? v : "";
}

int main(int argc, char **argv) {
    const char *method = env("REQUEST_METHOD");
    const char *path = env("PATH_INFO");
    const char *query = env("QUERY_STRING");

    if (strcmp(path, "/exit") == 0)
        return 1;
    if (strcmp(path, "/split") == 0) {
        fputs("Content-Type: text/plain\nContent-Length: 5\n"
              "Connection: keep-alive\nTransfer-Encoding: identity\n\nhello",
              stdout);
        fputs("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged", stdout);
        return 0;
    }
    if (strcmp(path, "/loop") == 0) {
        volatile int spin = 1;
        while (spin) {
        }
    }

    fputs("Content-Type: text/plain\n", stdout);
    fputs("X-Wagi: 1\n", stdout);
    if (strstr(query, "status=201"))
        fputs("Status: 201 Created\n", stdout);
    fputs("\n", stdout);

    printf("method=%s\n", method);
    printf("path=%s\n", path);
    printf("query=%s\n", query);
    fputs("args=", stdout);
    for (int i = 1; i < argc; i++) {
        if (i > 1)
            fputc(',', stdout);
        fputs(argv[i], stdout);
    }
    fputc('\n', stdout);
    printf("x-test=%s\n", env("HTTP_X_TEST"));
    fputs("body=", stdout);

    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
        fwrite(buf, 1, n, stdout);
    return 0;
}
