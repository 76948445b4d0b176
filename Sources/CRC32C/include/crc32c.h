#ifndef PROVISION_CRC32C_H
#define PROVISION_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/// Continues a CRC-32C (Castagnoli) over `length` bytes with the SSE 4.2 instruction when the
/// processor has it. Returns 0 and sets *done to 0 when it does not, so the caller can fall back.
uint32_t provision_crc32c_hardware(uint32_t crc, const void *bytes, size_t length, int *done);

#endif
