/* hello: WASI preview1 command printing one fixed line. */
#include <stdio.h>

int main(void) {
    fputs("hello from wisp\n", stdout);
    return 0;
}
