/*
 * cast.h — element type conversion kernels used by consolidate and the runtime.
 *
 * fp32 -> bf16 and fp32 -> fp16 round to nearest, ties to even. NaN stays NaN
 * (sign kept, quiet bit set, top payload bits kept); fp16 overflow gives +-inf;
 * fp16 subnormals are produced exactly. The widening casts are exact.
 *
 * Every public entry point dispatches at run time to the fastest implementation
 * the CPU supports (AVX-512, AVX2+F16C, or plain C). The *_ref functions are the
 * plain C reference the fast paths are tested against bit for bit.
 * All functions are thread-safe; src and dst must not overlap.
 */
#ifndef DSCKPT_CAST_H
#define DSCKPT_CAST_H

#include <stddef.h>
#include <stdint.h>

void ds_cast_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
void ds_cast_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void ds_cast_bf16_to_f32(const uint16_t *src, float *dst, size_t n);
void ds_cast_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/* Plain C references. */
uint16_t ds_f32_to_bf16_ref(float f);
uint16_t ds_f32_to_f16_ref(float f);
float ds_bf16_to_f32_ref(uint16_t h);
float ds_f16_to_f32_ref(uint16_t h);
void ds_cast_f32_to_bf16_ref(const float *src, uint16_t *dst, size_t n);
void ds_cast_f32_to_f16_ref(const float *src, uint16_t *dst, size_t n);
void ds_cast_bf16_to_f32_ref(const uint16_t *src, float *dst, size_t n);
void ds_cast_f16_to_f32_ref(const uint16_t *src, float *dst, size_t n);

/* Which implementation the dispatcher picked: "avx512", "avx2" or "ref". */
const char *ds_cast_impl(void);

/* For tests: force an implementation ("avx512", "avx2", "ref"). Returns 0 on
 * success, -1 if the CPU does not support it (the choice is then unchanged). */
int ds_cast_force_impl(const char *name);

#endif /* DSCKPT_CAST_H */
