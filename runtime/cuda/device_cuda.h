/*
 * device_cuda.h — the CUDA device table (device_cuda.c): device memory, one stream and
 * the CUDA twins of the training-step kernels (kernels/cuda/ds_cuda.h) behind the
 * rt_device interface of device.h. Built only with -DDSCKPT_CUDA=ON
 * (DSCKPT_HAVE_CUDA defined). Compiled, not run on a GPU yet (docs/gpu.md).
 */
#ifndef DSRT_DEVICE_CUDA_H
#define DSRT_DEVICE_CUDA_H

#include "device.h"

typedef struct dsc_ctx dsc_ctx;

/* A table on CUDA device `device` (its own stream and library handles). ECUDA when
 * there is no usable device, with CUDA's reason. One thread uses a table. */
dsckpt_status rt_device_cuda_open(int device, rt_device **out);
/* The table for local rank `local_rank`: device local_rank modulo the devices found. */
dsckpt_status rt_device_cuda_open_local(int local_rank, rt_device **out);
/* Waits for the stream and frees everything; NULL is a no-op. Every buffer from the
 * table's alloc must have been freed. */
void rt_device_cuda_close(rt_device *dev);
/* The table's CUDA stream (a cudaStream_t), for rt_comm_set_stream; NULL for a table
 * that is not a CUDA one. */
void *rt_device_cuda_stream(const rt_device *dev);
/* The kernels' context behind the table (snapshots, the NCCL backend's sums). */
dsc_ctx *rt_device_cuda_ctx(const rt_device *dev);

#endif /* DSRT_DEVICE_CUDA_H */
