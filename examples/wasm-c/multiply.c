/* Multiply in C: the numbers example's Multiply as a WASI command (docs/wasm.md).
 * The task's args object arrives as JSON on stdin ({"input": [item, k], ...}); the result
 * goes to stdout as JSON; stderr is the task log; a non-zero exit fails the task.
 * A real algorithm would use a JSON library; this one reads the two numbers after "input". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
    static char args[1 << 16];
    size_t length = fread(args, 1, sizeof args - 1, stdin);
    args[length] = '\0';
    char *input = strstr(args, "\"input\"");
    if (input == NULL || (input = strchr(input, '[')) == NULL) {
        fprintf(stderr, "multiply: the args have no input list\n");
        return 2;
    }
    char *end;
    double item = strtod(input + 1, &end);
    if (end == input + 1) {
        fprintf(stderr, "multiply takes numbers, got %.20s\n", input);
        return 2;
    }
    while (*end == ' ' || *end == ',') {
        end++;
    }
    double k = strtod(end, NULL);
    printf("%.17g\n", item * k);
    return 0;
}
