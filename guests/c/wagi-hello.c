/* wagi-hello: minimal WAGI (CGI-style) module. */
#include <stdio.h>

int main(void) {
    fputs("Content-Type: text/plain\n\nhello from wisp\n", stdout);
    return 0;
}
