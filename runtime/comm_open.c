/*
 * comm_open.c — the engine's collectives by name (comm.h): what dstrain's --comm
 * picks. "mpi" is the launcher's MPI handle itself (device buffers staged through
 * pinned host memory by rt_comm_set_device); "nccl" a NCCL communicator over it
 * (runtime/cuda/comm_cuda.c: one rank per GPU), in a build with CUDA and NCCL.
 */
#include "comm.h"

#include "device.h"
#include "internal.h"

#include <string.h>

#ifdef DSCKPT_HAVE_CUDA
#include "comm_cuda.h"
#endif

dsckpt_status rt_comm_open_named(const char *name, rt_comm *boot, const rt_device *dev, rt_comm **out) {
    if (!name || !boot || !dev || !out) return ds_err(DSCKPT_EINVAL, "rt_comm_open_named: NULL argument");
    *out = NULL;
    if (!strcmp(name, "mpi")) return DSCKPT_OK;
    if (strcmp(name, "nccl")) return ds_err(DSCKPT_EINVAL, "unknown collectives '%s' (mpi or nccl)", name);
    if (strcmp(dev->name, "cuda"))
        return ds_err(DSCKPT_EINVAL, "--comm nccl needs --device cuda (the device is %s)", dev->name);
#ifdef DSCKPT_HAVE_CUDA
    return rt_comm_open_nccl(boot, dev, out); /* EUNSUPPORTED in a build without NCCL */
#else
    return ds_err(DSCKPT_EUNSUPPORTED, "--comm nccl: this build has no CUDA (configure with -DDSCKPT_CUDA=ON "
                  "where nvcc and NCCL are found)");
#endif
}
