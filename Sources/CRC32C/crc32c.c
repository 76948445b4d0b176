#include "crc32c.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <string.h>

static int has_sse42(void) {
    static int cached = -1;
    if (cached < 0) {
        unsigned int eax, ebx, ecx, edx;
        cached = __get_cpuid(1, &eax, &ebx, &ecx, &edx) ? ((ecx & bit_SSE4_2) != 0) : 0;
    }
    return cached;
}

__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(uint32_t crc, const unsigned char *bytes, size_t length) {
    uint64_t state = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, bytes, 8);
        state = __builtin_ia32_crc32di(state, word);
        bytes += 8;
        length -= 8;
    }
    uint32_t small = (uint32_t)state;
    while (length > 0) {
        small = __builtin_ia32_crc32qi(small, *bytes);
        bytes++;
        length--;
    }
    return small;
}

uint32_t provision_crc32c_hardware(uint32_t crc, const void *bytes, size_t length, int *done) {
    if (!has_sse42()) {
        *done = 0;
        return 0;
    }
    *done = 1;
    return crc32c_sse42(crc, (const unsigned char *)bytes, length);
}
#else
uint32_t provision_crc32c_hardware(uint32_t crc, const void *bytes, size_t length, int *done) {
    (void)crc; (void)bytes; (void)length;
    *done = 0;
    return 0;
}
#endif
