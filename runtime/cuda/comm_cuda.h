/*
 * comm_cuda.h — collectives on device memory (comm_cuda.c): a NCCL backend (one rank
 * per GPU) and the MPI backend with device buffers staged through page-locked host
 * memory (several ranks on one GPU). Both keep comm.c's rank-order sums bit for bit.
 * Built only with -DDSCKPT_CUDA=ON; the NCCL backend also needs NCCL
 * (DSCKPT_HAVE_NCCL). Compiled, not run on a GPU yet (docs/gpu.md).
 */
#ifndef DSRT_COMM_CUDA_H
#define DSRT_COMM_CUDA_H

#include "comm.h"
#include "device.h"

/* Like rt_comm_open_mpi, but the collectives also accept device buffers (copied
 * through pinned host staging). Host buffers pass straight to MPI. */
dsckpt_status rt_comm_open_mpi_staged(int *argc, char ***argv, rt_comm **out);

/* A NCCL communicator over the ranks of `boot` (an MPI or self handle, which must
 * stay open while the NCCL one is used: barriers and aborts go through it), with
 * rank 0's unique id broadcast over boot. dev is the rank's CUDA device table: the
 * handle's stream is set to the table's, and the reduce-scatter sums run on its
 * kernels context. EUNSUPPORTED in a build without NCCL. */
dsckpt_status rt_comm_open_nccl(rt_comm *boot, const rt_device *dev, rt_comm **out);


#endif /* DSRT_COMM_CUDA_H */
