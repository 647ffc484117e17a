/*
 * echo: WASI preview1 command whose behaviour is picked by argv[1].
 *
 *   args A B ...    print every argv[1..] entry on its own line
 *   env NAME        print "NAME=value" (exit 0) or "NAME unset" (exit 3)
 *   cat PATH        copy the file to stdout        (error: exit 2)
 *   write PATH TEXT write TEXT (no newline added)  (error: exit 2)
 *   ls PATH         directory entries, sorted, one per line, without . and ..
 *   stdin           copy stdin to stdout
 *   exit N          exit with code N
 *   stderr TEXT     print TEXT and a newline to stderr
 *   sleep SECS      print "sleeping", then sleep (a long-running container)
 *
 * Errors are reported as "error: <strerror>" on stderr. Unknown or missing
 * mode: usage on stderr, exit 64.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int usage(void) {
    fputs("usage: echo args A.. | env NAME | cat PATH | write PATH TEXT | ls PATH"
          " | stdin | exit N | stderr TEXT | sleep SECS\n",
          stderr);
    return 64;
}

static int fail(void) {
    fprintf(stderr, "error: %s\n", strerror(errno));
    return 2;
}

static int copy(FILE *in, FILE *out) {
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        if (fwrite(buf, 1, n, out) != n)
            return fail();
    }
    if (ferror(in))
        return fail();
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int do_ls(const char *path) {
    DIR *d = opendir(path);
    if (!d)
        return fail();
    char **names = NULL;
    size_t len = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (len == cap) {
            cap = cap ? cap * 2 : 16;
            names = realloc(names, cap * sizeof *names);
            if (!names)
                return fail();
        }
        names[len] = strdup(e->d_name);
        if (!names[len])
            return fail();
        len++;
    }
    closedir(d);
    qsort(names, len, sizeof *names, cmp_str);
    for (size_t i = 0; i < len; i++)
        printf("%s\n", names[i]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return usage();
    const char *mode = argv[1];

    if (strcmp(mode, "args") == 0) {
        for (int i = 1; i < argc; i++)
            printf("%s\n", argv[i]);
        return 0;
    }
    if (strcmp(mode, "env") == 0 && argc == 3) {
        const char *v = getenv(argv[2]);
        if (!v) {
            printf("%s unset\n", argv[2]);
            return 3;
        }
        printf("%s=%s\n", argv[2], v);
        return 0;
    }
    if (strcmp(mode, "cat") == 0 && argc == 3) {
        FILE *f = fopen(argv[2], "rb");
        if (!f)
            return fail();
        int rc = copy(f, stdout);
        fclose(f);
        return rc;
    }
    if (strcmp(mode, "write") == 0 && argc == 4) {
        FILE *f = fopen(argv[2], "wb");
        if (!f)
            return fail();
        size_t n = strlen(argv[3]);
        if (fwrite(argv[3], 1, n, f) != n) {
            int rc = fail();
            fclose(f);
            return rc;
        }
        if (fclose(f) != 0)
            return fail();
        return 0;
    }
    if (strcmp(mode, "ls") == 0 && argc == 3)
        return do_ls(argv[2]);
    if (strcmp(mode, "stdin") == 0 && argc == 2)
        return copy(stdin, stdout);
    if (strcmp(mode, "exit") == 0 && argc == 3)
        exit(atoi(argv[2]));
    if (strcmp(mode, "sleep") == 0 && argc == 3) {
        puts("sleeping");
        fflush(stdout);
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    if (strcmp(mode, "stderr") == 0 && argc == 3) {
        fprintf(stderr, "%s\n", argv[2]);
        return 0;
    }
    return usage();
}
