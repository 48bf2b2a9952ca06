/* Multiply in C with hkube's function ABI (docs/wasm.md, "The function ABI"): a WASI reactor
 * whose worker keeps one instance and calls hkube_start once per task.
 * - hkube_alloc(len) returns a buffer for the task's args object as JSON ({"input": [item,
 *   k], ...}); hkube fills it, then calls hkube_start(buffer, len), which frees it;
 * - the result goes to the import hkube.output as JSON, and hkube_start returns 0; a non-zero
 *   status fails the task with what was given to hkube.output;
 * - stdout and stderr are the task's log.
 * A real algorithm would use a JSON library; this one reads the two numbers after "input". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((import_module("hkube"), import_name("output")))
void hkube_output(const char *text, size_t length);

__attribute__((export_name("hkube_alloc")))
char *hkube_alloc(size_t length) {
    /* One more byte: hkube_start ends the text with a '\0' for strstr and strtod. */
    return malloc(length + 1);
}

static int fail(const char *message) {
    hkube_output(message, strlen(message));
    return 2;
}

__attribute__((export_name("hkube_start")))
int hkube_start(char *args, size_t length) {
    args[length] = '\0';
    char *input = strstr(args, "\"input\"");
    if (input == NULL || (input = strchr(input, '[')) == NULL) {
        free(args);
        return fail("multiply: the args have no input list");
    }
    char *end;
    double item = strtod(input + 1, &end);
    if (end == input + 1) {
        free(args);
        return fail("multiply takes numbers");
    }
    while (*end == ' ' || *end == ',') {
        end++;
    }
    double k = strtod(end, NULL);
    free(args);
    char result[32];
    int written = snprintf(result, sizeof result, "%.17g", item * k);
    hkube_output(result, (size_t)written);
    return 0;
}
