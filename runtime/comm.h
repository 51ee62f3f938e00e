/*
 * comm.h — the collectives seam of the training runtime: a small set of collectives
 * on host memory (barrier, broadcast, all-gather, gather to one rank, a deterministic
 * reduce-scatter and all-reduce, small reductions) behind an opaque handle, with an MPI backend
 * (comm_mpi.c) and a single-process backend (comm.c). A CUDA+NCCL backend plugs in
 * through the backend interface at the bottom of this file.
 *
 * Determinism. Every floating-point sum is taken in rank order, 0, 1, ..., W-1, one
 * element at a time: rank r's result for element i is
 *     ((x_0[i] + x_1[i]) + x_2[i]) + ... + x_{W-1}[i]      (float, round-to-nearest)
 * whatever the buffer size, the chunking, the thread count or MPI's choice of
 * algorithm. reduce_scatterv and allreduce therefore give the same bits for the same
 * element, which is what lets ZeRO stages 0-3 (which reduce gradients through
 * different calls and bucket sizes) produce bitwise-equal models. The price is that
 * no MPI reduction operator is used: segments are exchanged point to point and the
 * owner sums them (one pass over W streams).
 *
 * Errors. Every call returns dsckpt_status (0 = OK) with a message readable through
 * dsckpt_last_error(). Arguments are checked before any communication, so a bad
 * argument that all ranks pass alike fails on all ranks without a hang; arguments
 * that differ between ranks (counts, roots, sizes) are the caller's bug and may hang
 * or fail with DSCKPT_EMPI. After DSCKPT_EMPI the communicator is not usable any more:
 * call rt_comm_abort().
 *
 * Sizes. Counts are size_t and may exceed INT_MAX elements. Open MPI 4.1 (MPI 3.1)
 * has no large-count (MPI-4 "_c") routines, so the MPI backend never hands MPI a
 * message above the message cap (default 1 GiB, see rt_comm_set_max_message): large
 * broadcasts, gathers and exchanges go out in pieces.
 *
 * Thread-safety. A handle is used by one thread only (the training thread); MPI is
 * initialised with MPI_THREAD_FUNNELED, so no other thread of the process may call
 * MPI at all (the background checkpoint writer does not). The collectives may use
 * OpenMP internally for the local summation.
 */
#ifndef DS_RT_COMM_H
#define DS_RT_COMM_H

#include "dsckpt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rt_comm rt_comm;

/* Initialises MPI (MPI_Init_thread asking for MPI_THREAD_FUNNELED; EMPI if the
 * library offers less) unless the program already did, and opens a handle on a
 * duplicate of MPI_COMM_WORLD with errors returned rather than fatal. argc/argv may
 * be NULL. */
dsckpt_status rt_comm_open_mpi(int *argc, char ***argv, rt_comm **out);
/* A world of one rank without MPI: every collective is a local copy (or nothing). */
dsckpt_status rt_comm_open_self(rt_comm **out);
/* Frees the handle; finalizes MPI if rt_comm_open_mpi initialised it. NULL is a
 * no-op. Not collective in the self backend; collective in the MPI backend when it
 * finalizes. */
void rt_comm_close(rt_comm *c);

struct rt_device;
/* The engine's collectives by name (comm_open.c, dstrain's --comm): "mpi" sets *out
 * to NULL (use boot itself); "nccl" opens a NCCL communicator over boot's ranks on
 * dev, a CUDA device table (boot must outlive it; close it with rt_comm_close).
 * EINVAL for another name or a device that is not "cuda", EUNSUPPORTED in a build
 * without CUDA or NCCL. */
dsckpt_status rt_comm_open_named(const char *name, rt_comm *boot, const struct rt_device *dev, rt_comm **out);
/* Ends the whole job (MPI_Abort on the MPI backend, exit on the self backend); for
 * main() after a failure on one rank, so that the others do not wait forever. */
void rt_comm_abort(rt_comm *c, int code) __attribute__((noreturn));

int rt_comm_rank(const rt_comm *c);
int rt_comm_size(const rt_comm *c);
/* "mpi" or "self". */
const char *rt_comm_backend(const rt_comm *c);

dsckpt_status rt_comm_barrier(rt_comm *c);
/* buf[0..bytes) of `root` is copied to every rank. */
dsckpt_status rt_comm_bcast(rt_comm *c, void *buf, size_t bytes, int root);
/* recv[r*bytes_per_rank ..] = send of rank r, for every r. In place when
 * send == recv + rank*bytes_per_rank; otherwise send and recv must not overlap. */
dsckpt_status rt_comm_allgather(rt_comm *c, const void *send, size_t bytes_per_rank, void *recv);
/* Gathers to `root` only: rank r's `bytes` bytes from send land at recv + counts[0] +
 * ... + counts[r-1] on the root (rank order, no gaps). counts (W entries, counts[r]
 * equal to rank r's `bytes`) and recv are read on the root only and may be NULL
 * elsewhere. On the root, send may be its own block of recv (in place); otherwise
 * send and recv must not overlap. A rank sends its block once and only the root
 * receives, so the bytes moved are the sum of the blocks, not W times it. Blocks
 * may exceed the message cap and INT_MAX: the gather runs in rounds of at most
 * cap/W bytes per rank (at most the cap arrives at the root per round), and the
 * root first broadcasts how many rounds (one 8-byte broadcast). */
dsckpt_status rt_comm_gatherv(rt_comm *c, const void *send, size_t bytes, int root, void *recv,
                              const size_t *counts);
/* rt_comm_gatherv with the same `bytes` on every rank (recv: W * bytes on the root):
 * every rank knows the rounds, so no broadcast precedes it. */
dsckpt_status rt_comm_gather(rt_comm *c, const void *send, size_t bytes, int root, void *recv);
/* Point to point, every rank with every other: send holds a block for each rank in
 * rank order, end to end (send_bytes[r] bytes for rank r); rank r's block for this
 * rank lands in recv after the blocks of the ranks before it (recv_bytes[r] bytes:
 * what rank r's send_bytes says for this rank). The two self blocks must have the
 * same size (a local copy). Host buffers only. Blocks over the message cap go in
 * rounds; every rank runs the rounds that the largest block of any rank needs (one
 * small all-reduce says how many). */
dsckpt_status rt_comm_exchangev(rt_comm *c, const void *send, const uint64_t *send_bytes, void *recv,
                                const uint64_t *recv_bytes);
/* send holds W consecutive segments, segment r having counts[r] floats (counts is
 * the same array on every rank). Rank r receives in recv[0..counts[r]) the sum over
 * ranks of segment r, in rank order (see above). In place when
 * recv == send + (counts[0] + ... + counts[rank-1]); otherwise recv must not overlap
 * send. Zero counts are allowed. */
dsckpt_status rt_comm_reduce_scatterv_f32(rt_comm *c, const float *send, const size_t *counts,
                                          float *recv);
/* buf[0..n) = the rank-order sum over ranks of buf, in place: a reduce-scatter over
 * the split counts[r] = n/W + (r < n%W) followed by an all-gather, so element i has
 * exactly the bits that reduce_scatterv gives for it. */
dsckpt_status rt_comm_allreduce_f32(rt_comm *c, float *buf, size_t n);
/* vals[0..n) = the rank-order sum over ranks, in double; for small vectors (losses,
 * norms, token counts): it gathers W*n values on every rank. */
dsckpt_status rt_comm_allreduce_f64(rt_comm *c, double *vals, size_t n);
/* vals[0..n) = the maximum over ranks; NaN on any rank gives NaN. Small vectors. */
dsckpt_status rt_comm_allreduce_max_f64(rt_comm *c, double *vals, size_t n);
/* *flag = the OR over ranks (overflow / inf-nan flags). */
dsckpt_status rt_comm_allreduce_or(rt_comm *c, bool *flag);

/* Accounting since open (or the last reset): wall-clock seconds spent inside the
 * collectives above (including their local summation) and the payload bytes this
 * rank handed to other ranks, counted as if delivered directly (W-1 copies for the
 * root of a broadcast or for an all-gather block; MPI's internal forwarding in trees
 * or rings is not seen). Either pointer may be NULL. */
void rt_comm_stats(const rt_comm *c, double *seconds, uint64_t *bytes_sent);
void rt_comm_stats_reset(rt_comm *c);

/* The largest single message handed to the backend, in bytes (default 1 GiB; at
 * least 64; larger values are clamped below INT_MAX). Every rank must set the same
 * value. Tests lower it to exercise the piecewise paths without gigabyte buffers. */
dsckpt_status rt_comm_set_max_message(rt_comm *c, size_t bytes);

/* The stream (or other per-call context) that the backend ops receive from now on:
 * a CUDA stream for a NCCL backend, ignored by the MPI and self backends (NULL by
 * default). Buffers passed to the collectives must be memory that backend can reach:
 * host memory for MPI/self, device memory for a NCCL backend. */
void rt_comm_set_stream(rt_comm *c, void *stream);
void *rt_comm_stream(const rt_comm *c);

/* Lets a host backend (MPI, self) take the device buffers of table `dev`: bcast,
 * allgather, reduce_scatterv_f32 and allreduce_f32 copy such a buffer into host
 * staging (dev->alloc_host) through the table, run on the host, and copy the result
 * back; host buffers pass as before, and the bits are the host collectives'. NULL, or
 * a table whose memory is host memory, turns it off. `dev` must outlive the handle
 * or the next call. Not for a backend that reaches device memory itself (NCCL). */
void rt_comm_set_device(rt_comm *c, const struct rt_device *dev);

/* ---- Backend interface (comm.c, comm_mpi.c, a future NCCL backend) ----------------
 * A backend moves bytes; comm.c builds the public collectives on top (argument
 * checks, timing, piecewise splitting, the rank-order sums). Each op receives the
 * handle's stream (rt_comm_set_stream) and pieces of at most the message cap, and
 * returns dsckpt_status with ds_err set. */
typedef struct rt_comm_ops {
    const char *name;
    dsckpt_status (*barrier)(void *impl, void *stream);
    dsckpt_status (*bcast)(void *impl, void *stream, void *buf, size_t bytes, int root);
    /* Gather rank r's counts[r] bytes to recv + displs[r] on every rank; send is NULL
     * when rank's block is already in place. */
    dsckpt_status (*allgatherv)(void *impl, void *stream, const void *send, const size_t *counts,
                                const size_t *displs, void *recv);
    /* Point-to-point exchange: this rank sends send_bytes[r] bytes from sends[r] to
     * rank r and receives recv_bytes[r] bytes from rank r into recvs[r] (entries of 0
     * bytes are skipped; the self entry is a local copy). */
    dsckpt_status (*exchange)(void *impl, void *stream, const void *const *sends, const size_t *send_bytes,
                              void *const *recvs, const size_t *recv_bytes);
    /* Optional (NULL: comm.c exchanges segments and sums them on the host in rank
     * order). The reduce-scatter sum in one op: send holds W segments of counts[r]
     * floats; rank r gets their sum over ranks in recv[0..counts[r]) (recv may be the
     * rank's own segment of send). Counts are passed whole (not cut at the message
     * cap). A backend that fills it must say whether it keeps comm.c's rank-order
     * bits; a NCCL reduce-scatter does not promise them. */
    dsckpt_status (*reduce_scatter_sum)(void *impl, void *stream, const float *send, const size_t *counts,
                                        float *recv);
    /* Optional (NULL: comm.c sends the pieces to the root through `exchange`). One
     * round of a gather to `root`: this rank's `bytes` bytes from send; on the root,
     * rank r's counts[r] bytes land at recv + displs[r] (counts, displs and recv are
     * read on the root only; the root's own block is in place when send is NULL).
     * The round's counts sum to at most the message cap. */
    dsckpt_status (*gatherv)(void *impl, void *stream, const void *send, size_t bytes, int root, void *recv,
                             const size_t *counts, const size_t *displs);
    void (*abort)(void *impl, int code) __attribute__((noreturn));
    /* Frees impl (and finalizes whatever the backend initialised). */
    void (*close)(void *impl);
} rt_comm_ops;

/* Wraps a backend in a handle; on failure impl is closed through ops->close. */
dsckpt_status rt_comm_create(const rt_comm_ops *ops, void *impl, int rank, int size,
                             rt_comm **out);

/* The MPI backend's ops and state without a handle, for wrappers (the staged
 * device-buffer backend of runtime/cuda/comm_cuda.c): initialises MPI as
 * rt_comm_open_mpi does; the caller owns impl (ops->close frees it). */
dsckpt_status rt_comm_mpi_backend(int *argc, char ***argv, const rt_comm_ops **ops, void **impl, int *rank,
                                  int *size);

#endif /* DS_RT_COMM_H */
